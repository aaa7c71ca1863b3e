"""Benchmark of the setpoint optimiser and of studies on Dask; prints a table.

Measured in one run, on this machine:

1. tb_dy optimisation, cold: a new optimiser (NLP build: residual, KPIs, economics, IPOPT with
   exact Hessian) and its solve from the design steady state (solved beforehand, reported
   separately); per objective. Targets: under 2 s cold, under 0.5 s warm.
2. tb_dy re-optimisation, warm: after a small disturbance (feed Tb +0.5 %) from the previous
   optimum: the steady state at the disturbed point (warm) and the optimisation started from the
   previous NLP point and multipliers. The first warm call builds the warm-start IPOPT (once per
   optimiser); the next one (another +0.5 %) is what a twin re-optimising every cycle pays.
3. hree_refinery optimisation (cold), if the plant spec is present.
4. A study of 200 steady cases (tb_dy near its design point) on 1 and on 2 local Dask workers.

Usage: ``.venv/bin/python benchmarks/optimisation.py [--quick] [--skip-hree]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.errors import TwinError  # noqa: E402
from models.flowsheet import build_flowsheet  # noqa: E402
from models.optimisation import Objective, OptimisationOptions, SetpointOptimiser  # noqa: E402
from models.spec import load_spec  # noqa: E402
from models.steady import SteadySolver  # noqa: E402

PLANTS = ROOT / "models" / "plants"
rows: list[tuple[str, str, str]] = []


def row(what: str, value: str, note: str = "") -> None:
    rows.append((what, value, note))
    print(f"  {what:<58} {value:>14}  {note}", flush=True)


def bench_tb_dy(objectives: list[Objective]) -> None:
    fs = build_flowsheet(load_spec(PLANTS / "tb_dy.toml"))
    solver = SteadySolver(fs)
    t = time.perf_counter()
    design = solver.solve()
    row("tb_dy design steady state (cold, not in the figures below)", f"{time.perf_counter() - t:.2f} s")
    for obj in objectives:
        t = time.perf_counter()
        opt = SetpointOptimiser(fs, OptimisationOptions(objective=obj), solver=solver)
        res = opt.optimise(design.parameters.values, current=design)
        total = time.perf_counter() - t
        ok = "ok" if res.success else res.status
        row(f"tb_dy {obj.value}: NLP build", f"{res.build_time_s:.2f} s")
        row(f"tb_dy {obj.value}: IPOPT solve ({res.iterations} it.)", f"{res.solve_time_s:.2f} s", ok)
        row(f"tb_dy {obj.value}: cold total (build+solve+verify)", f"{total:.2f} s", "target < 2 s")
        # warm: a small disturbance of the feed from the optimum
        p = res.parameters.copy()
        i = fs.parameters.index("feed.conc_mol_per_l.Tb")
        p[i] *= 1.005
        t = time.perf_counter()
        cur = solver.solve(p, z0=res.z, p0=res.parameters)
        t_steady = time.perf_counter() - t
        t = time.perf_counter()
        try:
            res2 = opt.optimise(p, current=cur, warm=res)
            t_opt = time.perf_counter() - t
            row(f"tb_dy {obj.value}: warm re-opt., steady at disturbed point", f"{t_steady:.2f} s", cur.method)
            row(
                f"tb_dy {obj.value}: warm re-opt., IPOPT ({res2.iterations} it.)",
                f"{res2.solve_time_s:.2f} s",
                "ok" if res2.success else res2.status,
            )
            row(
                f"tb_dy {obj.value}: first warm re-opt. total (opt.+verify)", f"{t_opt:.2f} s",
                f"incl. {res2.build_time_s:.2f} s building the warm-start IPOPT (once per optimiser)",
            )
            # the twin's case: the optimiser re-used (warm IPOPT built), another small disturbance
            p3 = res2.parameters.copy()
            p3[i] *= 1.005
            cur3 = solver.solve(p3, z0=res2.z, p0=res2.parameters)
            t = time.perf_counter()
            res3 = opt.optimise(p3, current=cur3, warm=res2)
            t_opt3 = time.perf_counter() - t
            row(
                f"tb_dy {obj.value}: next warm re-opt., IPOPT ({res3.iterations} it.)",
                f"{res3.solve_time_s:.2f} s",
                "ok" if res3.success else res3.status,
            )
            row(f"tb_dy {obj.value}: next warm re-opt. total (opt.+verify)", f"{t_opt3:.2f} s", "target < 0.5 s")
            row(f"tb_dy {obj.value}: warm/cold ratio (optimise calls)", f"{t_opt3 / max(total, 1e-9):.2f}")
        except TwinError as exc:
            row(f"tb_dy {obj.value}: warm re-opt.", "failed", exc.message[:60])


def bench_hree(objective: Objective, max_iter: int) -> None:
    path = PLANTS / "hree_refinery.toml"
    if not path.is_file():
        row("hree_refinery", "absent")
        return
    fs = build_flowsheet(load_spec(path))
    solver = SteadySolver(fs)
    t = time.perf_counter()
    design = solver.solve()
    row(
        f"hree_refinery design steady state ({fs.n_unknowns} unknowns)",
        f"{time.perf_counter() - t:.2f} s",
        design.method,
    )
    t = time.perf_counter()
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=objective, max_iter=max_iter), solver=solver)
    try:
        res = opt.optimise(design.parameters.values, current=design)
        total = time.perf_counter() - t
        row(f"hree_refinery {objective.value}: NLP build", f"{res.build_time_s:.2f} s")
        row(
            f"hree_refinery {objective.value}: IPOPT ({res.iterations} it.)",
            f"{res.solve_time_s:.2f} s",
            f"{res.status}, from the {res.start}",
        )
        row(f"hree_refinery {objective.value}: cold total", f"{total:.2f} s")
    except TwinError as exc:
        row(
            f"hree_refinery {objective.value}",
            f"{time.perf_counter() - t:.2f} s",
            f"{type(exc).__name__}: {exc.message[:70]}",
        )


STUDY = """
[study]
name = "bench_sweep"
kind = "sweep"
plant = "{plant}"
chain_length = 20

[sweep]
[[sweep.parameters]]
name = "organic_flow"
start = 990.0
stop = 1010.0
num = {n1}
[[sweep.parameters]]
name = "strip_flow"
start = 147.0
stop = 153.0
num = 20
"""


def bench_study(n1: int) -> None:
    from twin.studies import StudyRunOptions, run_study_file

    tmp = Path(tempfile.mkdtemp(prefix="sxtwin-bench-"))
    try:
        study = tmp / "study.toml"
        study.write_text(STUDY.format(plant=PLANTS / "tb_dy.toml", n1=n1))
        times = {}
        for workers in (1, 2):
            out = tmp / f"out{workers}"
            t = time.perf_counter()
            res = run_study_file(study, StudyRunOptions(out_dir=out, workers=workers, progress=False, plots=False))
            wall = time.perf_counter() - t
            import json

            base = json.loads((out / "cases" / "base.json").read_text())["result"]["wall_time_s"]
            case_times = res.table["wall_time_s"].to_numpy(dtype=float)
            times[workers] = wall
            row(
                f"study: {res.n_cases} steady cases, {workers} worker(s), wall",
                f"{wall:.1f} s",
                f"base {base:.1f} s, case median {np.median(case_times):.2f} s, failed {res.n_failed}",
            )
        row("study speed-up 2 workers vs 1 (same run)", f"{times[1] / times[2]:.2f}x", f"{os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one objective, a 100-case study")
    ap.add_argument("--skip-hree", action="store_true", help="skip hree_refinery")
    ap.add_argument("--hree-objective", default="reagent", choices=[o.value for o in Objective])
    ap.add_argument("--hree-max-iter", type=int, default=150, help="IPOPT iteration limit for hree_refinery")
    args, _ = ap.parse_known_args()  # run_all.py passes the same arguments to every script
    print("sxtwin optimisation benchmark", flush=True)
    objectives = [Objective.REAGENT] if args.quick else [Objective.MARGIN, Objective.REAGENT]
    bench_tb_dy(objectives)
    if not args.skip_hree:
        bench_hree(Objective(args.hree_objective), args.hree_max_iter)
    bench_study(5 if args.quick else 10)
    print("\n| measurement | value | note |\n| --- | --- | --- |")
    for what, value, note in rows:
        print(f"| {what} | {value} | {note} |")


if __name__ == "__main__":
    main()
