"""``sxtwin simulate``: dynamics of a plant spec over plant hours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from models.dynamics import DynamicModel, DynamicOptions, Move
from models.errors import ConvergenceError
from models.steady import SteadySolver, startup_state
from sxtwin._output import emit, handle_errors
from sxtwin.commands._common import load_flowsheet, parse_moves
from sxtwin.state_files import load_state, save_state

STARTUP_SAPONIFICATION_RAMP_H = 48.0
"""On a start-up, saponification is brought up from 0 over this many hours (as operators do)."""


def simulate(
    spec: Annotated[Path, typer.Argument(help="Plant spec (TOML).")],
    hours: Annotated[float, typer.Option("--hours", help="Plant hours to simulate.")],
    from_state: Annotated[Path | None, typer.Option("--from", help="Start from a saved state.")] = None,
    start: Annotated[
        str, typer.Option("--start", help="Without --from: 'steady' (the design steady state) or 'startup'.")
    ] = "steady",
    step: Annotated[
        list[str] | None, typer.Option("--step", help="TAG=VALUE@HOURS (step) or TAG=VALUE@HOURS/RAMP_H (ramp).")
    ] = None,
    output_interval: Annotated[float, typer.Option("--every", help="Reporting interval, h.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write product trends to this PNG.")] = None,
    save: Annotated[Path | None, typer.Option("--save", help="Save the final state to this file.")] = None,
) -> None:
    """Integrate the plant DAE (SUNDIALS IDAS) with steps and ramps of manipulated variables."""
    with handle_errors(as_json):
        if start not in ("steady", "startup"):
            from models.errors import InputError

            raise InputError(f"start: {start!r} is not allowed; use 'steady' or 'startup'", field="start")
        if not (output_interval > 0.0 and output_interval <= hours):
            from models.errors import InputError

            raise InputError(
                f"every: {output_interval!r} h is not allowed; expected an interval > 0 and <= --hours",
                field="every",
            )
        mode: Literal["steady", "startup"] = "steady" if start == "steady" else "startup"
        fs = load_flowsheet(spec)
        moves: list[Move] = parse_moves(fs, step or [])
        p = fs.parameter_vector()
        if from_state is not None:
            z0, p, _ = load_state(from_state, fs)
        elif mode == "steady":
            sol = SteadySolver(fs).solve(p)
            if not sol.success:
                raise ConvergenceError(f"initial steady state not found: {sol.message}")
            z0 = sol.z
        else:
            sap = [n for n in fs.parameters.names if n.endswith(".saponification")]
            target = {n: p[fs.parameters.index(n)] for n in sap}
            for n in sap:
                p[fs.parameters.index(n)] = 0.0
            z0 = startup_state(fs, p)
            moves = [Move(n, 0.0, v, STARTUP_SAPONIFICATION_RAMP_H) for n, v in target.items() if v > 0] + moves
        model = DynamicModel(fs, DynamicOptions(output_interval_h=output_interval))
        result = model.simulate(z0, hours, p=p, moves=moves)
        payload: dict[str, Any] = {
            "status": "ok" if result.success else "failed",
            "plant": fs.spec.plant.name,
            "wall_time_s": result.wall_time_s,
            "plant_hours": result.plant_hours,
            "times_h": result.times_h.tolist(),
            "products": {
                name: {"purity": result.product_purity[name].tolist(),
                       "recovery": result.product_recovery[name].tolist()}
                for name in result.product_purity
            },
            "moves": [{"parameter": m.parameter, "at_h": m.at_h, "value": m.value, "ramp_h": m.ramp_h} for m in moves],
        }
        if save is not None:
            payload["saved"] = str(save_state(save, fs, result.final_z, result.parameters[-1],
                                              plant_hours=result.plant_hours))
        if plot is not None:
            from sxtwin.plots import trends_plot

            payload["plot"] = str(trends_plot(result, plot))

        def human() -> None:
            typer.echo(f"{fs.spec.plant.name}: {result.plant_hours:g} plant hours in {result.wall_time_s:.2f} s")
            for name in result.product_purity:
                pur, rec = result.product_purity[name], result.product_recovery[name]
                typer.echo(
                    f"  {name:<12} purity {pur[0]:.5f} -> {pur[-1]:.5f}   recovery {rec[0]:.4f} -> {rec[-1]:.4f}"
                )
            for key in ("saved", "plot"):
                if key in payload:
                    typer.echo(f"  {key}: {payload[key]}")

        emit(payload, as_json, human)
