"""``sxtwin study``: run an offline setpoint study (sweep, scenarios, Pareto, capacity, stage design,
robustness) on Dask and write its results, plots and summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from models.errors import InputError
from sxtwin._output import EXIT_FAILED, emit, handle_errors
from twin.studies import StudyRunOptions, run_study_file


def study(
    study_file: Annotated[Path, typer.Argument(help="Study file (TOML), e.g. models/studies/tb_dy_stage_design.toml.")],
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler", help="Address of a running Dask scheduler (default: SXTWIN_DASK_SCHEDULER, else local)."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes of the local cluster.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default: study-<name> in the current directory).")
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Skip the PNG plots.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
) -> None:
    """Run STUDY_FILE; cases already saved in the output directory are not recomputed."""
    with handle_errors(as_json):
        if workers is not None and workers < 1:
            raise InputError(f"workers: {workers!r} is not allowed; expected an integer >= 1", field="workers")
        if scheduler is None:
            from twin.settings import Settings

            scheduler = Settings().dask_scheduler
        from twin.study_spec import load_study

        spec, _ = load_study(study_file)
        out_dir = out if out is not None else Path(f"study-{spec.study.name}")
        result = run_study_file(
            study_file,
            StudyRunOptions(out_dir=out_dir, scheduler=scheduler, workers=workers, progress=True, plots=not no_plots),
        )
        status = "ok" if result.n_failed < result.n_cases else "failed"
        if result.findings.get("feasible") is False:
            status = "infeasible"
        payload: dict[str, Any] = {"status": status, **result.to_dict()}

        def human() -> None:
            typer.echo(
                f"{result.name} ({result.kind}): {result.n_cases} cases, {result.n_computed} computed, "
                f"{result.n_reused} reused, {result.n_failed} failed/infeasible in {result.wall_time_s:.1f} s "
                f"on {result.workers} worker(s)"
            )
            typer.echo(f"  summary: {result.files.get('summary')}")
            for k, v in sorted(result.files.items()):
                if k != "summary":
                    typer.echo(f"  {k}: {v}")

        emit(payload, as_json, human)
        if payload["status"] != "ok":
            raise typer.Exit(EXIT_FAILED)
