"""``sxtwin steady``: steady state of a plant spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from models.sensitivity import SensitivityAnalysis
from models.steady import SteadySolver
from sxtwin._output import EXIT_FAILED, emit, handle_errors
from sxtwin.commands._common import load_flowsheet, parse_sets
from sxtwin.state_files import load_state, save_state


def steady(
    spec: Annotated[Path, typer.Argument(help="Plant spec (TOML), e.g. models/plants/tb_dy.toml.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write stage-profile plots to this PNG.")] = None,
    save: Annotated[Path | None, typer.Option("--save", help="Save the solved state to this file.")] = None,
    from_state: Annotated[
        Path | None, typer.Option("--from", help="Warm start (and parameters) from a saved state.")
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Override a parameter: NAME=VALUE (MV name, tag or parameter).")
    ] = None,
    sensitivities: Annotated[
        bool, typer.Option("--sensitivities", help="Also print d(purity)/d(MV) and d(recovery)/d(MV).")
    ] = False,
    profiles: Annotated[bool, typer.Option("--profiles", help="Include stage profiles in the JSON.")] = False,
) -> None:
    """Solve the steady state from a cold start (or warm, with --from) and report products."""
    with handle_errors(as_json):
        fs = load_flowsheet(spec)
        z0 = None
        p = fs.parameter_vector()
        p0 = None
        if from_state is not None:
            z0, p, _ = load_state(from_state, fs)
            p0 = p.copy()  # the parameters the saved state solves: a walk from there if Newton fails
        for name, value in parse_sets(fs, sets or []).items():
            p[fs.parameters.index(name)] = value
        result = SteadySolver(fs).solve(p, z0=z0, p0=p0)
        payload: dict[str, Any] = {
            "status": result.status,
            "message": result.message,
            "plant": fs.spec.plant.name,
            "wall_time_s": result.wall_time_s,
            "method": result.method,
            "iterations": result.iterations,
            "continuation_steps": result.continuation_steps,
            "n_unknowns": fs.n_unknowns,
            "max_mass_balance_rel_error": result.max_mass_balance_rel_error,
            "products": [pr.to_dict() for pr in result.products],
            "streams": [
                {"name": s.name, "phase": s.phase, "flow_l_per_h": s.flow_l_per_h,
                 "composition_mol_per_l": s.composition_mol_per_l}
                for s in result.streams
            ],
            "rests_on": [r.to_dict() for r in result.rests_on],
            "extrapolated": list(result.extrapolated),
        }
        if profiles:
            payload["circuits"] = [c.to_dict() for c in result.circuits]
        if sensitivities and result.success:
            mvs = [m.variable for m in fs.spec.manipulated] or [
                n for n in fs.parameters.names if n.split(".", 1)[-1].endswith(("_l_per_h", "_mol_per_l"))
            ]
            payload["sensitivities"] = SensitivityAnalysis(fs).compute(result.z, p, mvs).to_dict()
        if result.success and save is not None:
            payload["saved"] = str(save_state(save, fs, result.z, p))
        if result.success and plot is not None:
            from sxtwin.plots import profile_plot

            payload["plot"] = str(profile_plot(result, plot))

        def human() -> None:
            typer.echo(f"{fs.spec.plant.name}: {result.status} in {result.wall_time_s:.2f} s "
                       f"({result.method}, {result.iterations} Newton iterations)")
            typer.echo(f"  max element mass-balance error {result.max_mass_balance_rel_error:.1e} (relative)")
            for pr in result.products:
                flag = "on spec" if pr.on_spec else "OFF SPEC"
                typer.echo(f"  {pr.name:<12} {pr.main_element:<10} purity {pr.purity:.5f}  recovery "
                           f"{pr.recovery:.4f}  {pr.flow_l_per_h:8.1f} L/h  {flag}")
            for note in result.extrapolated:
                typer.echo(f"  extrapolated: {note}")
            if result.rests_on:
                typer.echo("  rests on non-measured values: "
                           + ", ".join(f"{r.parameter} ({r.cls.value})" for r in result.rests_on[:12])
                           + (" ..." if len(result.rests_on) > 12 else ""))
            if "sensitivities" in payload:
                typer.echo("  sensitivities (per unit of each MV):")
                for prod, d in payload["sensitivities"].items():
                    for kpi in ("purity", "recovery"):
                        typer.echo(f"    d {prod} {kpi}: " + ", ".join(f"{k} {v:+.3g}" for k, v in d[kpi].items()))
            for key in ("saved", "plot"):
                if key in payload:
                    typer.echo(f"  {key}: {payload[key]}")

        emit(payload, as_json, human)
        if not result.success:
            raise typer.Exit(EXIT_FAILED)
