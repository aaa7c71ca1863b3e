"""Run every benchmark script in this folder in turn (``make bench``).

Every ``benchmarks/*.py`` except this file and private ``_*.py`` modules is run with the same
Python, one after the other (benchmarks must not compete for the CPUs), with the arguments given
here passed on (for example ``--quick``). Each script prints its own table; the exit status is
non-zero when any script fails.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    """The benchmark scripts, in name order."""
    return sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))


def main(argv: list[str]) -> int:
    failed = []
    for script in scripts():
        print(f"=== {script.relative_to(HERE.parent)} {' '.join(argv)}".rstrip(), flush=True)
        t0 = time.perf_counter()
        code = subprocess.run([sys.executable, str(script), *argv], cwd=HERE.parent, check=False).returncode
        print(f"=== {script.name}: exit {code} after {time.perf_counter() - t0:.0f} s\n", flush=True)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
