"""Print the table of calibration variants in docs/calibration.md (markdown).

Each row calibrates ``P507-T21`` to the LLEPE PC88A-HCl data with one set of
:class:`models.calibration.CalibrationOptions` and reports the RMSE of log10 D in-sample (with the
per-study offsets when fitted), of the fitted set itself (without offsets), cross-validated, and
of the uncalibrated literature set on the same points, plus the shared parameters.

Run from the repository root::

    .venv/bin/python tools/calibration_variants.py          # the rows of the docs table
    .venv/bin/python tools/calibration_variants.py --all    # every combination (64 fits)
    .venv/bin/python tools/calibration_variants.py --per-study  # one study at a time
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
from typing import Any

from models.calibration import CalibrationOptions, Weighting, calibrate
from models.equilibrium_data import load_llepe_data
from models.parameters import load_system

NO_SCREEN: dict[str, Any] = {"min_extracted_fraction": 0.0, "max_extracted_fraction": 1.0}
PLAIN: dict[str, Any] = {
    "hcl_activity": False,
    "re_activity": False,
    "source_offsets": False,
    "fit_ph_slope": False,
}
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("a, n (b = 3)", {**NO_SCREEN, **PLAIN}),
    ("a, n, b", {**NO_SCREEN, **PLAIN, "fit_ph_slope": True}),
    (
        "a, n, b, beta_Cl",
        {**NO_SCREEN, **PLAIN, "fit_ph_slope": True, "chloride_complexation": True},
    ),
    ("a, n (b = 3), beta_Cl", {**NO_SCREEN, **PLAIN, "chloride_complexation": True}),
    ("a, n (b = 3), HCl activity", {**NO_SCREEN, **PLAIN, "hcl_activity": True}),
    ("a, n, b, HCl activity", {**NO_SCREEN, **PLAIN, "hcl_activity": True, "fit_ph_slope": True}),
    (
        "a, n (b = 3), error weights",
        {**NO_SCREEN, **PLAIN, "weighting": Weighting.ERROR_PROPAGATED},
    ),
    ("a, n (b = 3), offsets", {**NO_SCREEN, **PLAIN, "source_offsets": True}),
    ("a, n, b, offsets", {**NO_SCREEN, **PLAIN, "fit_ph_slope": True, "source_offsets": True}),
    (
        "a, n, b, offsets, error weights",
        {
            **NO_SCREEN,
            **PLAIN,
            "fit_ph_slope": True,
            "source_offsets": True,
            "weighting": Weighting.ERROR_PROPAGATED,
        },
    ),
    (
        "a, n, b, offsets, HCl activity",
        {**NO_SCREEN, **PLAIN, "fit_ph_slope": True, "source_offsets": True, "hcl_activity": True},
    ),
    (
        "a, n, b, offsets, beta_Cl",
        {
            **NO_SCREEN,
            **PLAIN,
            "fit_ph_slope": True,
            "source_offsets": True,
            "chloride_complexation": True,
        },
    ),
    ("screen: a, n (b = 3)", {**PLAIN}),
    ("screen: a, n (b = 3), offsets", {**PLAIN, "source_offsets": True}),
    ("screen: a, n, b, beta_Cl", {**PLAIN, "fit_ph_slope": True, "chloride_complexation": True}),
    ("screen: a, n, b, offsets", {**PLAIN, "fit_ph_slope": True, "source_offsets": True}),
    (
        "screen: a, n, b, offsets, beta_Cl, HCl activity",
        {"re_activity": False, "fit_ph_slope": True, "source_offsets": True, "chloride_complexation": True},
    ),
    ("screen: a, n, b, offsets, HCl activity (P507-HCl)", {"re_activity": False}),
    ("screen: a, n, b, RE3+ activity", {**PLAIN, "fit_ph_slope": True, "re_activity": True}),
    (
        "screen: a, n, b, offsets, RE3+ activity",
        {**PLAIN, "fit_ph_slope": True, "source_offsets": True, "re_activity": True},
    ),
    ("screen: a, n (b = 3), offsets, HCl + RE3+ activity", {"fit_ph_slope": False}),
    ("**default**: screen, a, n, b, offsets, HCl + RE3+ activity (P507-HCl-SIT)", {}),
]


def _fmt(value: float, se: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f} ± {se:.2f}" if math.isfinite(se) else f"{value:.2f}"


def row(label: str, options: dict[str, Any]) -> str:
    """One markdown table row."""
    data, base = load_llepe_data(), load_system("P507-T21")
    r = calibrate(data, base, CalibrationOptions(**options))
    p, e = r.parameters, r.std_errors
    b = _fmt(p["ph_slope"], e["ph_slope"]) if "ph_slope" in p else "3 (fixed)"
    beta = _fmt(p["log10_beta_cl"], e["log10_beta_cl"]) if "log10_beta_cl" in p else "-"
    offsets = r.options.source_offsets
    return (
        f"| {label} | {r.n_points} | {r.rmse.overall:.3f} | "
        f"{r.system_rmse.overall:.3f}" + ("" if offsets else " (same)") + " | "
        f"{r.cv_rmse.overall:.3f} | {r.baseline.overall:.3f} | "
        f"{_fmt(p['extractant_order'], e['extractant_order'])} | {b} | {beta} | "
        f"{', '.join(r.at_bounds) or '-'} |"
    )


def per_study() -> None:
    """Fit a, n and b to each study alone (screened, uniform weights, no offsets), without and
    with both activity corrections."""
    data, base = load_llepe_data(), load_system("P507-T21")
    sys.stdout.write(
        "| study | N | elements | h0 range, M | HCl + RE3+ activity | RMSE | n | b |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    for study in data.sources:
        points = tuple(p for p in data.points if p.source == study)
        one = dataclasses.replace(data, points=points)
        h0 = sorted({p.feed_acidity_mol_per_l for p in points})
        for act in (False, True):
            opts = CalibrationOptions(source_offsets=False, hcl_activity=act, re_activity=act, cv_folds=2)
            r = calibrate(one, base, opts)
            p, e = r.parameters, r.std_errors
            sys.stdout.write(
                f"| {study} | {r.n_points} | {', '.join(r.rmse.by_element)} | "
                f"{h0[0]:.2g}-{h0[-1]:.2g} | {'on' if act else 'off'} | {r.rmse.overall:.3f} | "
                f"{_fmt(p['extractant_order'], e['extractant_order'])} | "
                f"{_fmt(p['ph_slope'], e['ph_slope'])} |\n"
            )


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every combination of the options")
    parser.add_argument("--per-study", action="store_true", help="fit each study alone")
    args = parser.parse_args(argv)
    if args.per_study:
        per_study()
        return 0
    rows = ROWS
    if args.all:
        rows = []
        for screen, w, act, cl, b, off in itertools.product(
            (False, True), Weighting, (False, True), (False, True), (False, True), (False, True)
        ):
            label = f"{'screen' if screen else 'all'} {w.value} act={int(act)} cl={int(cl)} b={int(b)} off={int(off)}"
            options: dict[str, Any] = {
                "weighting": w,
                "hcl_activity": act,
                "re_activity": act,
                "chloride_complexation": cl,
                "fit_ph_slope": b,
                "source_offsets": off,
                **({} if screen else NO_SCREEN),
            }
            rows.append((label, options))
    sys.stdout.write(
        "| variant | N | RMSE in-sample | RMSE of the set (no offsets) | CV RMSE | "
        "literature RMSE | n | b | log10 beta_Cl | at a bound |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for label, options in rows:
        sys.stdout.write(row(label, options) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
