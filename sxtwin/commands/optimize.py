"""``sxtwin optimize``: optimal steady-state setpoints of a plant spec (IPOPT, exact derivatives)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from models.economics import EconomicAssumptions
from models.errors import InfeasibleError
from models.optimisation import Objective, OptimisationOptions, SetpointOptimiser
from models.prices import available_scenarios
from models.steady import SteadySolver
from sxtwin._output import EXIT_FAILED, emit, handle_errors, jsonable
from sxtwin.commands._common import load_flowsheet
from sxtwin.state_files import load_state, save_state


def optimize(
    spec: Annotated[Path, typer.Argument(help="Plant spec (TOML), e.g. models/plants/tb_dy.toml.")],
    objective: Annotated[
        Objective, typer.Option("--objective", help="margin (USD/h), reagent (USD/h at spec) or throughput (kg REO/h).")
    ] = Objective.MARGIN,
    from_state: Annotated[
        Path | None, typer.Option("--from", help="Current operating point: a state saved by `sxtwin steady --save`.")
    ] = None,
    prices: Annotated[
        str, typer.Option("--prices", help="Price scenario: china_domestic or ex_china.")
    ] = "china_domestic",
    circuit: Annotated[str | None, typer.Option("--circuit", help="Move only this circuit's variables.")] = None,
    move_hours: Annotated[
        float | None, typer.Option("--move-hours", help="Move limits: max_rate_per_h times this many hours.")
    ] = None,
    backoff: Annotated[
        float, typer.Option("--backoff", help="Fraction of the allowed impurity/loss kept in reserve (0-1).")
    ] = 0.0,
    oxalic_price: Annotated[
        float | None,
        typer.Option("--oxalic-acid-usd-per-kg", help="Oxalic acid price (the scenarios have none: NOT_FOUND)."),
    ] = None,
    capital_rate: Annotated[
        float,
        typer.Option(
            "--capital-rate", help="Cost of the capital held in the stage inventory, per year (ESTIMATED 0.10)."
        ),
    ] = 0.10,
    payback_hours: Annotated[
        float | None,
        typer.Option(
            "--inventory-payback-hours",
            help="Charge the inventory a move adds to the stages over this many hours (default: not charged).",
        ),
    ] = None,
    save: Annotated[Path | None, typer.Option("--save", help="Save the optimal steady state to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
) -> None:
    """Optimise the manipulated variables of SPEC from its current operating point."""
    t0 = time.perf_counter()
    with handle_errors(as_json):
        if prices not in available_scenarios():
            from models.errors import bad_value

            raise bad_value("prices", prices, available_scenarios())
        fs = load_flowsheet(spec)
        options = OptimisationOptions(
            objective=objective,
            price_scenario=prices,
            circuit=circuit,
            move_horizon_h=move_hours,
            spec_backoff=backoff,
            inventory_payback_h=payback_hours,
            economics=EconomicAssumptions(
                oxalic_acid_usd_per_kg=oxalic_price, inventory_capital_rate_per_year=capital_rate
            ),
        )
        solver = SteadySolver(fs)
        optimiser = SetpointOptimiser(fs, options, solver=solver)
        p = fs.parameter_vector()
        z0 = None
        if from_state is not None:
            z0, p, _ = load_state(from_state, fs)
        current = solver.solve(p, z0=z0, p0=None if z0 is None else p)
        try:
            result = optimiser.optimise(p, current=current)
        except InfeasibleError as err:
            message = err.message
            infeasible = {
                "status": "infeasible",
                "plant": fs.spec.plant.name,
                "wall_time_s": time.perf_counter() - t0,
                **err.to_dict(),
            }

            def human_infeasible() -> None:
                typer.echo(f"{fs.spec.plant.name}: INFEASIBLE - {message}")

            emit(infeasible, as_json, human_infeasible)
            raise typer.Exit(EXIT_FAILED) from None
        payload: dict[str, Any] = {
            "plant": fs.spec.plant.name,
            **result.to_dict(),
            "wall_time_s": time.perf_counter() - t0,
            "optimise_wall_time_s": result.wall_time_s,
            "current_steady_wall_time_s": current.wall_time_s,
            "condition_estimate": result.condition_estimate,
        }
        if result.success and save is not None:
            payload["saved"] = str(save_state(save, fs, result.z, result.parameters))

        def human() -> None:
            obj = result.objective
            typer.echo(
                f"{fs.spec.plant.name}: {result.status} ({obj.value}, {prices}) in {payload['wall_time_s']:.2f} s "
                f"(NLP build {result.build_time_s:.2f} s, IPOPT {result.solve_time_s:.2f} s, {result.iterations} it.)"
            )
            typer.echo(
                f"  objective {obj.value}: {result.current.objective_value:.4g} -> "
                f"{result.optimum.objective_value:.4g} {obj.unit}"
            )
            held_now, held_opt = result.current.inventory, result.optimum.inventory
            typer.echo(
                f"  stage inventory: {held_now.kg_reo:.4g} -> {held_opt.kg_reo:.4g} kg REO "
                f"({held_now.value_usd:.4g} -> {held_opt.value_usd:.4g} USD; charged "
                f"{result.optimum.inventory_charge:.4g} {obj.unit} at the optimum)"
            )
            typer.echo("  setpoints (current -> optimal):")
            for var in result.decision_variables:
                typer.echo(
                    f"    {var.name:<16} {result.current.setpoints[var.name]:10.4g} -> "
                    f"{result.optimum.setpoints[var.name]:10.4g} {var.unit}  [{var.min:g}, {var.max:g}]"
                )
            typer.echo("  products (current -> optimal):")
            for cur_k, opt_k in zip(result.current.kpis, result.optimum.kpis, strict=True):
                flag = "on spec" if opt_k.on_spec else "OFF SPEC"
                typer.echo(
                    f"    {opt_k.name:<12} purity {cur_k.purity:.5f} -> {opt_k.purity:.5f}  "
                    f"recovery {cur_k.recovery:.5f} -> {opt_k.recovery:.5f}  {flag}"
                )
            if result.active_constraints:
                typer.echo("  active constraints:")
                for a in result.active_constraints:
                    typer.echo(f"    {a.statement}")
            for w in result.warnings:
                typer.echo(f"  warning: {w}")
            if result.rests_on:
                typer.echo(
                    "  rests on non-measured values: "
                    + ", ".join(f"{r.parameter} ({r.cls.value})" for r in result.rests_on)
                )
            if "saved" in payload:
                typer.echo(f"  saved: {payload['saved']}")

        emit(jsonable(payload), as_json, human)
        if not result.success:
            raise typer.Exit(EXIT_FAILED)
