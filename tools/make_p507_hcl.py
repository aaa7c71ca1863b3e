"""Reproduce the shipped chemistry sets ``P507-HCl`` and ``P507-HCl-SIT`` (``models/data/``).

What it does (see docs/calibration.md):

1. calibrates ``P507-T21`` to the LLEPE PC88A-HCl compilation with the default
   :class:`models.calibration.CalibrationOptions` (with ``--re-activity``: the same fit as
   ``sxtwin calibrate models/data/llepe_pc88a_hcl.csv --system P507-T21``, giving
   ``P507-HCl-SIT``; without: the same fit without the RE3+ activity term, ``--no-re-activity``,
   giving ``P507-HCl``, the design basis of the example plants): La, Ce, Pr, Nd, Sm, Dy, Y and the
   shared n and b become DERIVED values;
2. adds Eu, Gd, Tb (INTERPOLATED in T21) and Ho, Er, Tm, Yb, Lu (ESTIMATED in T21) as T21 values
   shifted to the chloride level (:func:`models.calibration.extend_by_shift`, rule
   ``interpolated`` unless ``--shift-rule mean``), keeping their class and saying "shifted";
3. keeps T21's Na (saponification counter-ion) rows and the extractant constants;
4. writes the CSV (``--out``, default the shipped file) and prints the catalogue entry.

Run from the repository root::

    .venv/bin/python tools/make_p507_hcl.py --date 2026-11-27
    .venv/bin/python tools/make_p507_hcl.py --re-activity --date 2026-11-28
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from models._system_writer import catalogue_entry_toml, system_csv_text
from models.calibration import CalibrationOptions, ShiftRule, calibrate, extend_by_shift
from models.equilibrium_data import load_llepe_data
from models.parameters import load_system

ADDED = ("Eu", "Gd", "Tb", "Ho", "Er", "Tm", "Yb", "Lu", "Na")
DESCRIPTION = (
    "P507 (PC88A, HEH/EHP) in HCl: La, Ce, Pr, Nd, Sm, Dy, Y and the shared n and b fitted to "
    "the LLEPE chloride batch data (level of the average study); Eu, Gd, Tb (interpolated) and "
    "Ho-Lu (estimated) are Tanaka (2021) values shifted to that level; Na from P507-T21."
)
SETS = {
    False: ("P507-HCl", DESCRIPTION, "p507_hcl.csv"),
    True: (
        "P507-HCl-SIT",
        DESCRIPTION.replace("in HCl:", "in HCl with the RE3+ activity coefficient (SIT):"),
        "p507_hcl_sit.csv",
    ),
}
"""Key, description and file of the set fitted without / with the RE3+ activity term."""


def build(date: str, rule: ShiftRule, re_activity: bool = False) -> tuple[str, str]:
    """The CSV text of P507-HCl (or P507-HCl-SIT) and a report of what was fitted and shifted."""
    command = (
        "python tools/make_p507_hcl.py"
        + (" --re-activity" if re_activity else "")
        + ("" if rule is ShiftRule.INTERPOLATED else f" --shift-rule {rule.value}")
    )
    key, description, file = SETS[re_activity]
    literature = load_system("P507-T21")
    result = calibrate(load_llepe_data(), literature, CalibrationOptions(re_activity=re_activity))
    fitted = result.to_system(key, description=description, date=date, command=command)
    system, offsets, shifts = extend_by_shift(fitted, literature, ADDED, rule=rule, command=command)
    lines = [
        f"{key}: {result.locus(date)}",
        f"  RMSE log10 D: in-sample {result.rmse.overall:.3f} (with study offsets), "
        f"set as saved {result.system_rmse.overall:.3f}, cross-validated "
        f"{result.cv_rmse.overall:.3f}; P507-T21 {result.baseline.overall:.3f}",
        "  offsets a(calibrated) - a(T21): "
        + ", ".join(f"{s} {v:+.3f}" for s, v in offsets.items()),
    ]
    for sh in shifts:
        basis = ", ".join(f"{w:.2f} {c}" for c, w in sh.weights.items())
        lines.append(f"  {sh.element}: shifted by {sh.offset:+.3f} ({basis})")
    lines.append("")
    lines.append(catalogue_entry_toml(system, file, table=True))
    return system_csv_text(system), "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--date", default=datetime.date.today().isoformat(), help="ISO date of the fit"
    )
    parser.add_argument(
        "--shift-rule",
        choices=[r.value for r in ShiftRule],
        default=ShiftRule.INTERPOLATED.value,
        help="how unfitted elements are moved to the chloride level",
    )
    parser.add_argument(
        "--re-activity",
        action="store_true",
        help="fit with the RE3+ activity coefficient (the calibration default): P507-HCl-SIT",
    )
    parser.add_argument("--out", type=Path, help="CSV to write (default: the shipped file of the set)")
    args = parser.parse_args(argv)
    data_dir = Path(__file__).resolve().parent.parent / "models" / "data"
    out = args.out or data_dir / SETS[args.re_activity][2]
    text, report = build(args.date, ShiftRule(args.shift_rule), args.re_activity)
    out.write_text(text, encoding="utf-8")
    sys.stdout.write(report + f"\nwrote {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
