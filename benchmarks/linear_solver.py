"""The steady solver's linear algebra: band LU per circuit (models/_banded.py) against SuperLU.

Both on the same Jacobians in one run: the factorisation of the plant's Jacobian in a pseudo-time
step of the cold start (10 h) and at its steady state, then the cold steady solve with
``SteadyOptions(linear_solver=...)`` set to each (the band LU serves the pseudo-time steps;
steady Newton solves keep SuperLU, docs/model.md section 6). Medians of ``--repeats``; the ratio
is SuperLU's time over the band LU's.

    .venv/bin/python benchmarks/linear_solver.py [--plants tb_dy,hree_refinery] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as spla

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models._banded import factorise  # noqa: E402
from models.flowsheet import build_flowsheet  # noqa: E402
from models.spec import load_spec  # noqa: E402
from models.steady import SteadyOptions, SteadySolver, startup_state  # noqa: E402


def _median_s(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plants", default="tb_dy,hree_refinery")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    t_run = time.perf_counter()
    print(f"{'plant':14s} {'workload':44s} {'band s':>9s} {'superlu s':>10s} {'ratio':>6s}  notes")
    print("-" * 100)
    for plant in args.plants.split(","):
        fs = build_flowsheet(load_spec(ROOT / "models" / "plants" / f"{plant}.toml"))
        p = fs.parameter_vector()
        band = SteadySolver(fs, SteadyOptions(linear_solver="band"))
        superlu = SteadySolver(fs, SteadyOptions(linear_solver="superlu"))
        # factorisations: a pseudo-time step of the cold start (10 h) and the steady Jacobian
        fv = band.residual.flows(p)
        z0 = startup_state(fs, p)
        prev = band.residual.holdups(band.residual.local(z0, p, jacobian=False), fv)
        solved = band.solve(p)
        for label, z, dt, pr in (
            ("LU, pseudo-time step 10 h", z0, 10.0, prev),
            ("LU, steady at the solution", solved.z, np.inf, None),
        ):
            _, jac = band.residual.evaluate(z, p, fv=fv, dt_h=dt, previous=pr)
            plan = band._lu_plan(jac)
            t_b = _median_s(lambda jac=jac, plan=plan: factorise(jac, plan), 20 * args.repeats)
            t_s = _median_s(lambda jac=jac: spla.splu(jac, permc_spec="NATURAL"), 20 * args.repeats)
            shape = (
                f"n={jac.shape[0]}, {len(fs.circuits)} circuit(s), border "
                + "/".join(str(b.border.size) for _, _, b, _ in plan.blocks)
                if plan
                else "no plan"
            )
            print(f"{plant:14s} {label:44s} {t_b:9.5f} {t_s:10.5f} {t_s / t_b:5.2f}x  {shape}")
        # cold solves, each solver in its own right (model built, as in benchmarks/cascade.py)
        results = {}
        for name, options in (("band", band.options), ("superlu", superlu.options)):
            cold = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                r = SteadySolver(
                    build_flowsheet(load_spec(ROOT / "models" / "plants" / f"{plant}.toml")), options
                ).solve()
                cold.append(time.perf_counter() - t0)
            results[name] = (statistics.median(cold), r.iterations, r.success, r.z)
        tb, ts = results["band"][0], results["superlu"][0]
        dz = float(np.max(np.abs(results["band"][3] - results["superlu"][3])))
        print(
            f"{plant:14s} {'steady cold (build + solve)':44s} {tb:9.4f} {ts:10.4f} {ts / tb:5.2f}x  "
            f"iterations {results['band'][1]} / {results['superlu'][1]}, converged {results['band'][2]} / "
            f"{results['superlu'][2]}, max |dz| {dz:.1e}"
        )
    load = os.getloadavg()[0]
    print(
        f"\nrun: benchmarks/linear_solver.py --plants {args.plants} --repeats {args.repeats}; "
        f"{time.perf_counter() - t_run:.0f} s; python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"load average {load:.2f} at end"
    )


if __name__ == "__main__":
    main()
