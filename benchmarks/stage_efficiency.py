"""The soft sensor on a plant whose stages do not reach equilibrium (issue #6: a stage-efficiency
factor among the estimated parameters).

The plant is tb_dy with a Murphree stage efficiency of ``--efficiency`` (default 0.9), at its own
steady state. Two estimators read its instruments every ``--step-h`` plant hours (instrument
noise, seeded): one on the equilibrium model (tb_dy as it is: it cannot represent the plant), one
on the Murphree model starting at efficiency 1 (it estimates the efficiency with the other
parameters). Printed every ``--report-h``: the soft sensor's largest |error in log10
concentration| at the stages and elements above 1e-4 of the stage's TREO, the share of those
points within 0.1 decade, the share inside the 95 % band, the estimated efficiency, and the
updates whose state correction the model could not integrate from (the estimator then keeps the
parameters and drops the correction, docs/twin.md).

    .venv/bin/python benchmarks/stage_efficiency.py [--efficiency 0.9] [--hours 72] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.dynamics import DynamicModel  # noqa: E402
from models.elements import element  # noqa: E402
from models.flowsheet import Flowsheet, build_flowsheet  # noqa: E402
from models.residual import Residual  # noqa: E402
from models.spec import parse_spec  # noqa: E402
from models.steady import SteadySolver  # noqa: E402
from twin.estimation import Estimator, Observation  # noqa: E402


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "state correction was dropped" in record.getMessage():
            self.dropped += 1


def _plant_spec(efficiency: float | None) -> dict[str, Any]:
    data = tomllib.loads((ROOT / "models" / "plants" / "tb_dy.toml").read_text())
    if efficiency is not None:
        data["circuits"][0]["stage_efficiency"] = efficiency
    return data


def _estimator(fs: Flowsheet) -> Estimator:
    solver = SteadySolver(fs)
    p0 = fs.parameter_vector()
    return Estimator(fs, solver.solve(p0).z, p0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--efficiency", type=float, default=0.9)
    ap.add_argument("--hours", type=float, default=72.0)
    ap.add_argument("--step-h", type=float, default=0.5)
    ap.add_argument("--report-h", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="24 plant hours")
    args = ap.parse_args()
    if args.quick:
        args.hours = min(args.hours, 24.0)

    fs_plant = build_flowsheet(parse_spec(_plant_spec(1.0)))
    solver = SteadySolver(fs_plant)
    p_design = fs_plant.parameter_vector()
    truth = fs_plant.parameter_vector({"TbDy.stage_efficiency": args.efficiency})
    z_true = solver.solve(truth, z0=solver.solve(p_design).z, p0=p_design).z
    plant = DynamicModel(fs_plant)
    state = plant.initial_state(z_true, truth)
    res = Residual(fs_plant)
    estimators = {
        "equilibrium model": _estimator(build_flowsheet(parse_spec(_plant_spec(None)))),
        "Murphree model, E from 1": _estimator(fs_plant),
    }
    counters = {name: _Count() for name in estimators}
    est_log = logging.getLogger("twin.estimation")

    def reading(z: np.ndarray, ch: Any) -> float:
        st = res.local(z, truth, jacobian=False)[0]
        if ch.kind == "acidity":
            return float(st.acid[ch.stage])
        i = st.lay.elements.index(ch.element)
        conc = (st.x if ch.phase == "aqueous" else st.y)[i, ch.stage]
        return float(conc * element(ch.element).atomic_weight_g_per_mol)

    def accuracy(est: Estimator, z: np.ndarray) -> tuple[float, float, float]:
        st = res.local(z, truth, jacobian=False)[0]
        c = est.snapshot().circuits[0]
        sig = st.x > 1e-4 * st.x.sum(axis=0)
        err = np.abs(np.log10(c.aqueous_mol_per_l) - np.log10(st.x))[sig]
        cover = ((st.x >= c.aqueous_low) & (st.x <= c.aqueous_high))[sig]
        return float(err.max()), float(np.mean(err <= 0.1)), float(cover.mean())

    rng = np.random.default_rng(args.seed)
    rows: list[tuple[float, str, tuple[float, float, float], str, int]] = []
    wall = dict.fromkeys(estimators, 0.0)
    t = 0.0
    n_steps = round(args.hours / args.step_h)
    every = max(1, round(args.report_h / args.step_h))
    for k in range(n_steps + 1):
        if k > 0:
            t += args.step_h
            state = plant.advance(state, truth, args.step_h)
            noise = {}
            for name, est in estimators.items():
                obs = []
                for ch in est.channels:
                    noise.setdefault(ch.tag, math.exp(rng.normal(0.0, ch.noise_rel)))
                    obs.append(Observation(ch.tag, reading(state.z, ch) * noise[ch.tag], t))
                est_log.addHandler(counters[name])
                t0 = time.perf_counter()
                est.predict(t)
                est.update(obs)
                wall[name] += time.perf_counter() - t0
                est_log.removeHandler(counters[name])
        if k % every == 0:
            for name, est in estimators.items():
                params = est.snapshot().parameters
                eff = params.get("TbDy.stage_efficiency_change")
                shown = "-" if eff is None else f"{1.0 + eff:.3f}"
                rows.append((t, name, accuracy(est, state.z), shown, counters[name].dropped))
    print(
        f"tb_dy, plant Murphree efficiency {args.efficiency}, {args.hours:g} plant h, "
        f"updates every {args.step_h:g} h, seed {args.seed}"
    )
    print()
    print("| plant h | estimator | max abs dlog10 | share <= 0.1 | 95 % coverage | efficiency | corrections dropped |")
    print("|---|---|---|---|---|---|---|")
    for t_h, name, (mx, share, cov), shown, dropped in rows:
        print(f"| {t_h:g} | {name} | {mx:.3f} | {100 * share:.1f} % | {100 * cov:.1f} % | {shown} | {dropped} |")
    print()
    for name, w in wall.items():
        print(f"{name}: {w / n_steps * 1e3:.1f} ms per predict + update (mean of {n_steps})")


if __name__ == "__main__":
    main()
