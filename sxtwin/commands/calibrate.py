"""``sxtwin calibrate``: fit a mass-action chemistry system to batch equilibrium data.

Prints the fitted parameters with standard errors, the RMSE of log10 D (overall, per element,
per study), the cross-validated RMSE and the same figures for the uncalibrated system; optionally
a parity plot and the calibrated set as a catalogue entry + CSV with provenance
(see docs/calibration.md).
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from models._system_writer import catalogue_entry_toml, system_csv_text
from models.calibration import CalibrationOptions, CalibrationResult, Weighting, calibrate
from models.equilibrium_data import parse_llepe_csv
from models.errors import DataFileError
from models.parameters import load_system
from models.provenance import source
from sxtwin._output import emit, handle_errors

_DEFAULTS = CalibrationOptions()


def _command_line(data: Path, system: str, opts: CalibrationOptions, source_key: str) -> str:
    parts = [f"sxtwin calibrate {data.name} --system {system}"]
    parts.append("--fit-ph-slope" if opts.fit_ph_slope else "--fix-ph-slope")
    parts.append("--chloride" if opts.chloride_complexation else "--no-chloride")
    parts.append("--hcl-activity" if opts.hcl_activity else "--no-hcl-activity")
    parts.append("--re-activity" if opts.re_activity else "--no-re-activity")
    parts.append("--study-offsets" if opts.source_offsets else "--no-study-offsets")
    parts.append(f"--weighting {opts.weighting.value}")
    if opts.weighting is Weighting.ERROR_PROPAGATED:
        parts.append(f"--relative-error {opts.relative_concentration_error:g}")
    parts.append(f"--min-extracted {opts.min_extracted_fraction:g}")
    parts.append(f"--max-extracted {opts.max_extracted_fraction:g}")
    if source_key != "LLEPE":
        parts.append(f"--source-key {source_key}")
    return " ".join(parts)


def _save(result: CalibrationResult, directory: Path, key: str, command: str) -> dict[str, str]:
    date = datetime.date.today().isoformat()
    system = result.to_system(key, date=date, command=command)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / f"{stem}.csv"
    toml_path = directory / f"{stem}.toml"
    csv_path.write_text(system_csv_text(system), encoding="utf-8")
    comments = [
        f"Calibrated chemistry system {key}: {result.locus(date)}.",
        f"Reproduce with: {command} --save {directory} --key {key}",
        "Load with models.parameters.load_system_file(Path(this file)).",
    ]
    toml_path.write_text(
        catalogue_entry_toml(system, csv_path.name, table=False, comments=comments),
        encoding="utf-8",
    )
    return {"toml": str(toml_path), "csv": str(csv_path)}


def calibrate_cmd(
    data: Annotated[
        Path, typer.Argument(help="Batch equilibrium data, LLEPE column layout (CSV).")
    ],
    system: Annotated[
        str,
        typer.Option(
            "--system", help="Base chemistry system (starting values, baseline), e.g. P507-T21."
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a parity plot (PNG) here.")
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", help="Write the calibrated set (TOML entry + CSV) into this directory."
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Key of the saved system (default: <SYSTEM>-calibrated)."),
    ] = None,
    source_key: Annotated[
        str, typer.Option("--source-key", help="sources.toml key of the data compilation.")
    ] = "LLEPE",
    fit_ph_slope: Annotated[
        bool,
        typer.Option(
            "--fit-ph-slope/--fix-ph-slope",
            help="Fit the shared pH slope b (else keep the base value).",
        ),
    ] = _DEFAULTS.fit_ph_slope,
    chloride: Annotated[
        bool,
        typer.Option("--chloride/--no-chloride", help="Fit chloro-complexation log10 beta_Cl."),
    ] = _DEFAULTS.chloride_complexation,
    hcl_activity: Annotated[
        bool,
        typer.Option(
            "--hcl-activity/--no-hcl-activity", help="HCl activity correction (Zhao & Lei 1986)."
        ),
    ] = _DEFAULTS.hcl_activity,
    re_activity: Annotated[
        bool,
        typer.Option(
            "--re-activity/--no-re-activity",
            help="RE3+ activity coefficient in chloride (specific ion interaction theory, NEA-TDB).",
        ),
    ] = _DEFAULTS.re_activity,
    study_offsets: Annotated[
        bool,
        typer.Option(
            "--study-offsets/--no-study-offsets",
            help="Fit a level offset per study (nuisance, not saved).",
        ),
    ] = _DEFAULTS.source_offsets,
    weighting: Annotated[
        Weighting, typer.Option("--weighting", help="Point weights.", case_sensitive=False)
    ] = _DEFAULTS.weighting,
    relative_error: Annotated[
        float,
        typer.Option(
            "--relative-error", help="Relative concentration error for error-propagated weights."
        ),
    ] = _DEFAULTS.relative_concentration_error,
    min_extracted: Annotated[
        float,
        typer.Option("--min-extracted", help="Screen: smallest extracted fraction D/(1+D) kept."),
    ] = _DEFAULTS.min_extracted_fraction,
    max_extracted: Annotated[
        float,
        typer.Option("--max-extracted", help="Screen: largest extracted fraction D/(1+D) kept."),
    ] = _DEFAULTS.max_extracted_fraction,
    cv_folds: Annotated[
        int, typer.Option("--cv-folds", help="k of the k-fold CV for single-study elements.")
    ] = _DEFAULTS.cv_folds,
    cv_seed: Annotated[
        int, typer.Option("--cv-seed", help="Seed of the k-fold assignment.")
    ] = _DEFAULTS.cv_seed,
) -> None:
    """Fit SYSTEM's mass-action parameters to the batch equilibrium DATA."""
    with handle_errors(as_json):
        source(source_key)
        try:
            text = data.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataFileError(
                f"{data}: cannot read: {exc.strerror or exc}", field="data"
            ) from None
        except UnicodeDecodeError as exc:
            raise DataFileError(f"{data}: not UTF-8 text: {exc.reason}", field="data") from None
        dataset = parse_llepe_csv(text, where=data.name, source_key=source_key)
        base = load_system(system)
        opts = CalibrationOptions(
            fit_ph_slope=fit_ph_slope,
            chloride_complexation=chloride,
            hcl_activity=hcl_activity,
            re_activity=re_activity,
            source_offsets=study_offsets,
            weighting=weighting,
            relative_concentration_error=relative_error,
            min_extracted_fraction=min_extracted,
            max_extracted_fraction=max_extracted,
            cv_folds=cv_folds,
            cv_seed=cv_seed,
        )
        result = calibrate(dataset, base, opts)
        command = _command_line(data, system, opts, source_key)
        payload: dict[str, Any] = {**result.to_dict(), "command": command}
        if plot is not None:
            from sxtwin.plots import parity_plot

            payload["plot"] = str(parity_plot(result, plot))
        if save is not None:
            payload["saved"] = _save(result, save, key or f"{system}-calibrated", command)

        def human() -> None:
            _print_human(result, payload)

        emit(payload, as_json, human)


def _print_human(result: CalibrationResult, payload: dict[str, Any]) -> None:
    echo = typer.echo
    echo(
        f"calibrated {result.base.key} to {result.n_points} points of {result.data.name} "
        f"({', '.join(result.studies)})"
    )
    echo(f"  options: {result.options.describe()}")
    for e in result.excluded:
        echo(f"  excluded {e.count}: {e.reason}")
    echo(
        f"  IPOPT {result.status}, {result.iterations} iterations, "
        f"{result.wall_time_s:.2f} s (cross-validation included)"
    )
    echo("  parameters (value ± standard error):")
    for name, value in result.parameters.items():
        echo(f"    {name:28s} {value:9.4f} ± {result.std_errors[name]:.4f}")
    for name, value in result.fixed.items():
        echo(f"    {name:28s} {value:9.4f} (fixed)")
    echo(
        "  RMSE of log10 D          overall  "
        + "  ".join(f"{s:>5s}" for s in result.rmse.by_element)
    )
    rows = [("calibrated, in-sample", result.rmse)]
    if result.options.source_offsets:
        rows.append(("calibrated, no offsets", result.system_rmse))
    rows += [
        ("calibrated, cross-valid.", result.cv_rmse),
        (f"literature {result.base.key}", result.baseline),
    ]
    for label, m in rows:
        echo(
            f"    {label:24s} {m.overall:6.3f}  "
            + "  ".join(f"{m.by_element[s]:5.3f}" for s in result.rmse.by_element)
        )
    if "plot" in payload:
        echo(f"  parity plot: {payload['plot']}")
    if "saved" in payload:
        echo(f"  saved: {payload['saved']['toml']} + {payload['saved']['csv']}")
