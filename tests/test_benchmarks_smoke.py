"""Smoke tests of the benchmarks: ``--quick`` on tb_dy prints the expected tables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_quick(script: str, *args: str, timeout: float) -> str:
    """Run ``benchmarks/<script> --quick [args]``; its standard output (it must exit 0)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _cell(header: str, row: str, column: str, width: int) -> str:
    """A right-aligned cell of the fixed-width table."""
    end = header.index(column) + len(column)
    return row[end - width : end].strip()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cascade_benchmark_quick_prints_the_table() -> None:
    out = _run_quick("cascade.py", "--plants", "tb_dy,no_such_plant", timeout=600)
    header = next(line for line in out.splitlines() if line.startswith("plant"))
    for column in ("ours s", "naive s", "strong s", "naive/ours", "strong/ours", "max|R|", "mass bal.", "target"):
        assert column in header
    rows = [line for line in out.splitlines() if line.startswith("tb_dy ")]
    workloads = ("steady cold", "steady warm", "dynamics 24 h, first run", "dynamics 24 h, repeat")
    assert len(rows) == len(workloads)
    for row, workload in zip(rows, workloads, strict=True):
        assert workload in row
        ours = _cell(header, row, "ours s", 8)
        assert re.fullmatch(r"\d+\.\d+", ours), f"our solve failed or was not timed: {row}"
        assert row.rstrip().endswith(("met", "MISSED"))
    for row in rows[:2]:  # steady rows: both baselines reported, each a time, a failure or a DNF
        for column in ("naive s", "strong s"):
            assert re.fullmatch(r"\d+\.\d+|fail@\d+\.\d+|DNF>5|not run", _cell(header, row, column, 11)), row
        start = header.index("max|R|")
        residuals = row[start : start + 29].split(" / ")
        assert len(residuals) == 3, row
        assert float(residuals[0]) < 1e-9, row  # ours converged to the solver's tolerance
    assert "targets (defined on hree_refinery" in out
    assert "hree_refinery: NOT MEASURED" in out
    assert "skipped no_such_plant" in out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_estimator_benchmark_quick_times_updates_and_agrees_with_its_baseline() -> None:
    """``benchmarks/estimator.py --quick`` (tb_dy) prints every phase with a verdict, and its two
    ways to the quasi-steady sensitivities (AD + sparse LU, finite differences of steady solves)
    agree."""
    out = _run_quick("estimator.py", timeout=300)
    rows = [line for line in out.splitlines() if line.startswith(("steady ", "after "))]
    assert len(rows) == 2, out
    assert "(quasi-steady)" in rows[0], out
    assert "(dynamic sens.)" in rows[1], out
    for row in rows:
        assert re.search(r"< 0\.5 s (met|MISSED)", row), row
    agree = re.search(r"largest difference ([0-9.e+-]+) of each column", out)
    assert agree is not None, out
    assert float(agree.group(1)) < 1e-3
