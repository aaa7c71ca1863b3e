"""Time the cascade workloads and compare with two SciPy baselines on the same equations.

Workloads, per plant (``models/plants/<plant>.toml``; a missing spec is skipped with a message):

- **steady cold**: a fresh process builds the flowsheet and solves the steady state from the
  start-up state (imports are not timed; each repeat runs in its own process so no cache helps);
- **steady warm**: re-solve after +0.2 % organic flow from the previous solution,
  ``SteadySolver.solve(p1, z0=previous.z, p0=p0)``;
- **dynamics 24 h**: ``DynamicModel.simulate(z_steady, 24.0)`` with a +5 % step of the spec's first
  manipulated variable at 1 h; the first run (which builds the IDAS integrator) and a repeat.

Baselines solve the same residual, :meth:`models.residual.Residual.evaluate` with
``jacobian=False``, from the same start (the start-up state for cold, the design solution for
warm); no second model is written:

- **naive**: ``scipy.optimize.root(method="hybr")``, MINPACK's dense forward-difference Jacobian
  with Broyden updates (``xtol=1e-12``);
- **strong**: ``scipy.optimize.least_squares(method="trf")`` with ``jac_sparsity`` = the sparsity
  pattern of our exact Jacobian (grouped finite differences, LSMR trust-region steps; SciPy's
  default tolerances).

A baseline counts as converged when the max-norm of the steady residual is at most
``ACCEPT_RESIDUAL`` (ours solves to 1e-11). One that stops earlier is reported as failed with its
final residual; one still running at its time budget as DNF with the best residual it reached.
Each baseline runs in its own process with a time budget (and a hard kill a little later).

Run: ``.venv/bin/python benchmarks/cascade.py`` (``--quick`` for a smoke run, ``--help``).
Compiled code: the stage-balance assembly's Numba kernels (models/_assembly.py, compiled when
first imported on a machine, then loaded from their disk cache at import) and the stage
functions generated as C by CasADi and compiled by the system's C compiler (models/_codegen.py,
at their first solve, then loaded from their disk cache). A plant's first run on a machine (both
caches empty) and a second run on the filled caches are timed apart, in fresh processes, and
reported under the table; the steady cold rows are timed with the caches filled, as every run
after the first on a machine is, and do not time imports. The LU is LAPACK's and SuperLU's. The
first dynamic run includes building the IDAS integrator and is shown apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLANTS_DIR = ROOT / "models" / "plants"
DEFAULT_PLANTS = ("tb_dy", "hree_refinery")
ACCEPT_RESIDUAL = 1e-8
"""A baseline has converged when max |R| <= this (relative balance errors; ours reaches 1e-11)."""
WARM_STEP = 1.002
"""Warm start: organic flow times this (+0.2 %)."""
DYN_STEP = 1.05
"""Dynamics: the first manipulated variable times this at 1 h (clamped to its bounds)."""
DENSE_MEMORY_LIMIT_BYTES = 4e9
"""The naive baseline is not started when MINPACK's dense n x n arrays would exceed this."""

TARGETS = {
    "steady_cold_s": 1.0,
    "steady_warm_s": 0.1,
    "dynamics_24h_s": 2.0,
    "naive_ratio": 100.0,
    "strong_ratio": 10.0,
}
"""Targets (issue: benchmarks, step 2/6), defined on hree_refinery."""


# ===================================================================== child processes
def _quiet() -> None:
    """Baselines wander through overflows; keep the output clean."""
    import numpy as np

    warnings.simplefilter("ignore")
    np.seterr(all="ignore")


def _build(spec: Path) -> Any:
    from models.flowsheet import build_flowsheet
    from models.spec import load_spec

    return build_flowsheet(load_spec(spec))


def _organic_flow_name(fs: Any) -> str:
    for mv in fs.spec.manipulated:
        if mv.variable.endswith(".organic_flow_l_per_h"):
            return str(mv.variable)
    return f"{fs.circuits[0].name}.organic_flow_l_per_h"


def _residual_norm(res: Any, z: Any, p: Any) -> float:
    import numpy as np

    r, _ = res.evaluate(z, p, jacobian=False)
    return float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else math.inf


def plant_mass_balance(fs: Any, res: Any, z: Any, p: Any) -> float:
    """Largest relative element-balance error of the whole plant, from its boundary streams.

    In: fresh metal (feeds, saponification Na). Out: every outlet that does not feed another
    circuit. The same function judges our solution and the baselines'.
    """
    import numpy as np

    if not np.all(np.isfinite(z)):
        return math.inf
    fv = res.flows(p)
    states = res.local(z, p, jacobian=False)
    fed_streams = {c.spec.feed for c in fs.circuits}
    inflow: dict[str, float] = {}
    outflow: dict[str, float] = {}
    for c, st in enumerate(states):
        fresh = (fv.fresh_aq[c] + fv.fresh_org[c]).sum(axis=1)
        for i, s in enumerate(st.lay.elements):
            inflow[s] = inflow.get(s, 0.0) + float(fresh[i])
    for o in fs.outlets:
        if o.name in fed_streams:
            continue
        st = states[o.circuit]
        conc = st.x if o.phase == "aq" else st.y
        w = fv.weights[o.weight]
        for i, s in enumerate(st.lay.elements):
            outflow[s] = outflow.get(s, 0.0) + float(conc[i, o.stage] * w)
    errs = [abs(inflow[s] - outflow.get(s, 0.0)) / inflow[s] for s in inflow if inflow[s] > 0.0]
    err = max(errs, default=0.0)
    return err if math.isfinite(err) else math.inf


def child_cold(spec: Path) -> dict[str, Any]:
    """Ours, cold: build + solve in this (fresh) process; imports are done before the clock starts."""
    from models.steady import SteadySolver

    t0 = time.perf_counter()
    fs = _build(spec)
    solver = SteadySolver(fs)
    result = solver.solve()
    wall = time.perf_counter() - t0
    p = fs.parameter_vector()
    return {
        "time_s": wall,
        "success": bool(result.success),
        "method": result.method,
        "iterations": result.iterations,
        "continuation_steps": result.continuation_steps,
        "n_unknowns": fs.n_unknowns,
        "residual": _residual_norm(solver.residual, result.z, p),
        "mass_balance": plant_mass_balance(fs, solver.residual, result.z, p),
    }


def child_session(spec: Path, repeats: int, state_file: Path) -> dict[str, Any]:
    """Ours, warm and dynamics (one process); saves the design solution for the warm baselines."""
    import numpy as np

    from models.dynamics import DynamicModel, Move
    from models.steady import SteadySolver

    fs = _build(spec)
    solver = SteadySolver(fs)
    p0 = fs.parameter_vector()
    base = solver.solve(p0)
    if not base.success:
        return {"error": f"design steady state not found: {base.message}"}
    flow = _organic_flow_name(fs)
    p1 = fs.parameter_vector({flow: p0[fs.parameters.index(flow)] * WARM_STEP})
    np.savez(state_file, z0=base.z, p0=p0, p1=p1)
    warm_times, warm = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        warm = solver.solve(p1, z0=base.z, p0=p0)
        warm_times.append(time.perf_counter() - t0)
    assert warm is not None
    # dynamics: +5 % step of the first manipulated variable at 1 h
    if fs.spec.manipulated:
        mv = fs.spec.manipulated[0]
        name, label = mv.variable, mv.name
        value = min(max(p0[fs.parameters.index(name)] * DYN_STEP, mv.min), mv.max)
    else:
        name = label = flow
        value = p0[fs.parameters.index(flow)] * DYN_STEP
    moves = [Move(name, 1.0, float(value))]
    model = DynamicModel(fs)
    dyn_times, dyn_ok, dyn_msg = [], True, "ok"
    for _ in range(1 + max(1, repeats)):
        t0 = time.perf_counter()
        try:
            run = model.simulate(base.z, 24.0, p0, moves)
            dyn_ok = dyn_ok and run.success
        except Exception as exc:  # reported, not hidden
            dyn_ok, dyn_msg = False, f"{type(exc).__name__}: {exc}"
        dyn_times.append(time.perf_counter() - t0)
    return {
        "design_iterations": base.iterations,
        "warm_times_s": warm_times,
        "warm_success": bool(warm.success),
        "warm_method": warm.method,
        "warm_iterations": warm.iterations,
        "warm_residual": _residual_norm(solver.residual, warm.z, p1),
        "warm_mass_balance": plant_mass_balance(fs, solver.residual, warm.z, p1),
        "dyn_step": f"{label} {100 * (DYN_STEP - 1):+.0f} % at 1 h",
        "dyn_first_s": dyn_times[0],
        "dyn_repeat_s": statistics.median(dyn_times[1:]),
        "dyn_success": dyn_ok,
        "dyn_message": dyn_msg,
    }


class _BudgetExceeded(Exception):
    pass


def child_baseline(kind: str, spec: Path, state_file: Path | None, budget_s: float) -> dict[str, Any]:
    """A SciPy baseline on our residual; ``kind`` is ``naive`` or ``strong``."""
    import numpy as np
    import scipy.optimize as so

    from models.residual import Residual
    from models.steady import startup_state

    _quiet()
    warm = state_file is not None
    pattern = None
    if warm:
        # the warm solve is timed alone, as ours: model, residual functions and the Jacobian's
        # sparsity pattern (structure, independent of the point) are ready before the clock starts
        assert state_file is not None
        data = np.load(state_file)
        z0, p = data["z0"], data["p1"]
        fs = _build(spec)
        res = Residual(fs)
        _, pattern = res.evaluate(z0, p)
        t0 = time.perf_counter()
    else:
        t0 = time.perf_counter()  # cold: build + solve, as ours
        fs = _build(spec)
        res = Residual(fs)
        p = fs.parameter_vector()
        z0 = startup_state(fs, p)
    n = fs.n_unknowns
    if kind == "naive" and 1.5 * 8.0 * n * n > DENSE_MEMORY_LIMIT_BYTES:
        return {
            "status": "skipped",
            "time_s": math.nan,
            "message": f"dense {n} x {n} Jacobian needs {1.5 * 8.0 * n * n / 1e9:.1f} GB",
            "residual": math.nan,
            "mass_balance": math.nan,
        }
    fv = res.flows(p)
    best = {"norm": math.inf, "z": z0, "nfev": 0}

    def fun(z: Any) -> Any:
        best["nfev"] += 1
        r, _ = res.evaluate(z, p, fv=fv, jacobian=False)
        norm = float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else math.inf
        if norm < best["norm"]:
            best["norm"], best["z"] = norm, np.array(z)
        if time.perf_counter() - t0 > budget_s:
            raise _BudgetExceeded
        return r

    message = ""
    try:
        if kind == "naive":
            sol = so.root(fun, z0, method="hybr", options={"xtol": 1e-12})
        else:
            if pattern is None:
                _, pattern = res.evaluate(z0, p, fv=fv)
            pattern = pattern.copy()
            pattern.data[:] = 1.0
            sol = so.least_squares(fun, z0, jac_sparsity=pattern, method="trf")
        z_end, message = sol.x, " ".join(str(sol.message).split())
        wall = time.perf_counter() - t0
        norm = _residual_norm(res, z_end, p)
        status = "converged" if norm <= ACCEPT_RESIDUAL else "failed"
    except _BudgetExceeded:
        wall = budget_s
        z_end, norm, status = best["z"], float(best["norm"]), "dnf"
        message = f"did not finish within {budget_s:g} s"
    return {
        "status": status,
        "time_s": wall,
        "message": message,
        "nfev": best["nfev"],
        "residual": norm,
        "mass_balance": plant_mass_balance(fs, res, z_end, p),
    }


def child_first(spec: Path) -> dict[str, Any]:
    """Import time of Numba, then of the compiled assembly (compiled, or loaded from the cache),
    then a cold build + solve (which compiles the stage functions when their cache is empty)."""
    t0 = time.perf_counter()
    import numba  # noqa: F401

    t1 = time.perf_counter()
    import models._assembly  # noqa: F401

    t2 = time.perf_counter()
    from models.steady import SteadySolver

    t3 = time.perf_counter()
    result = SteadySolver(_build(spec)).solve()
    return {
        "numba_import_s": t1 - t0,
        "kernels_s": t2 - t1,
        "cold_s": time.perf_counter() - t3,
        "success": bool(result.success),
    }


def run_child(args: argparse.Namespace) -> None:
    spec = Path(args.spec)
    if args.child == "first":
        out = child_first(spec)
    elif args.child == "cold":
        out = child_cold(spec)
    elif args.child == "session":
        out = child_session(spec, args.repeats, Path(args.state))
    else:
        kind, start = args.child.split("-")
        out = child_baseline(kind, spec, Path(args.state) if start == "warm" else None, args.budget_s)
    sys.stdout.write(json.dumps(out) + "\n")


# ===================================================================== orchestration
@dataclass
class Row:
    """One line of the table."""

    plant: str
    workload: str
    ours_s: float
    ours_ok: bool = True
    naive: dict[str, Any] | None = None
    strong: dict[str, Any] | None = None
    ours_residual: float = math.nan
    ours_mass_balance: float = math.nan
    target_s: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _spawn(argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return {"status": "dnf", "killed": True, "time_s": timeout_s, "message": f"killed after {timeout_s:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "time_s": math.nan, "message": f"exit {proc.returncode}: {tail}"}
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def _progress(msg: str) -> None:
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


def bench_plant(name: str, opts: argparse.Namespace) -> list[Row]:
    spec = PLANTS_DIR / f"{name}.toml"
    if not spec.exists():
        _progress(f"{name}: skipped, {spec.relative_to(ROOT)} not found")
        return []
    rows: list[Row] = []
    # one untimed process first: it compiles what the caches of compiled code lack (the first
    # run on a machine, reported apart), so that every timed process starts as later runs do
    _progress(f"{name}: steady cold, untimed (fills the caches of compiled code)")
    _spawn(["--child", "cold", "--spec", str(spec)], opts.child_timeout_s)
    colds = []
    for k in range(opts.repeats):
        _progress(f"{name}: steady cold {k + 1}/{opts.repeats} (fresh process)")
        colds.append(_spawn(["--child", "cold", "--spec", str(spec)], opts.child_timeout_s))
    good = [c for c in colds if "success" in c]
    if not good:
        _progress(f"{name}: cold solve failed: {colds[-1].get('message')}")
        rows.append(Row(name, "steady cold (build+solve)", math.nan, False, note=str(colds[-1].get("message"))))
        return rows
    cold_t = statistics.median(c["time_s"] for c in good)
    last = good[-1]
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "design.npz"
        _progress(f"{name}: steady warm and 24 h dynamics")
        sess = _spawn(
            ["--child", "session", "--spec", str(spec), "--repeats", str(opts.repeats), "--state", str(state)],
            opts.child_timeout_s,
        )
        base: dict[str, dict[str, Any]] = {}
        for kind in ("naive", "strong"):
            budget = opts.naive_budget_s if kind == "naive" else opts.strong_budget_s
            if name != "tb_dy" and kind == "naive":
                budget = min(budget, opts.naive_budget_other_s)
            for start in ("cold", "warm"):
                if start == "warm" and not state.exists():
                    base[f"{kind}-{start}"] = {"status": "error", "time_s": math.nan, "message": "no design state"}
                    continue
                _progress(f"{name}: {kind} baseline, {start} start (budget {budget:g} s)")
                argv = ["--child", f"{kind}-{start}", "--spec", str(spec), "--budget-s", str(budget)]
                if start == "warm":
                    argv += ["--state", str(state)]
                base[f"{kind}-{start}"] = _spawn(argv, budget + opts.child_timeout_s)
    rows.append(
        Row(
            name,
            f"steady cold (build+solve, n={last['n_unknowns']})",
            cold_t,
            all(c["success"] for c in good),
            base["naive-cold"],
            base["strong-cold"],
            last["residual"],
            last["mass_balance"],
            TARGETS["steady_cold_s"],
            note=f"{last['method']}, {last['iterations']} Newton its, {last['continuation_steps']} steps; "
            f"median of {len(good)}: " + ", ".join(f"{c['time_s']:.2f}" for c in good) + " s",
        )
    )
    if "error" in sess or "warm_times_s" not in sess:
        rows.append(Row(name, "steady warm / dynamics", math.nan, False, note=str(sess.get("error", sess))))
        return rows
    rows.append(
        Row(
            name,
            f"steady warm (+{100 * (WARM_STEP - 1):.1f} % organic flow)",
            statistics.median(sess["warm_times_s"]),
            sess["warm_success"],
            base["naive-warm"],
            base["strong-warm"],
            sess["warm_residual"],
            sess["warm_mass_balance"],
            TARGETS["steady_warm_s"],
            note=f"{sess['warm_method']}, {sess['warm_iterations']} Newton its",
        )
    )
    rows.append(
        Row(
            name,
            "dynamics 24 h, first run",
            sess["dyn_first_s"],
            sess["dyn_success"],
            target_s=TARGETS["dynamics_24h_s"],
            note=f"step {sess['dyn_step']}; includes building the IDAS integrator; {sess['dyn_message']}",
        )
    )
    rows.append(
        Row(
            name,
            "dynamics 24 h, repeat",
            sess["dyn_repeat_s"],
            sess["dyn_success"],
            target_s=TARGETS["dynamics_24h_s"],
            note="same run, integrator reused",
        )
    )
    return rows


# ===================================================================== table
def _fmt_t(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _fmt_e(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.1e}"


def _cell(b: dict[str, Any] | None) -> str:
    if b is None:
        return "-"
    st = b.get("status")
    if st == "converged":
        return _fmt_t(b["time_s"])
    if st == "dnf":
        return f"DNF>{b['time_s']:g}"
    if st == "failed":
        return f"fail@{_fmt_t(b['time_s'])}"
    if st == "skipped":
        return "not run"
    return "error"


def _ratio(b: dict[str, Any] | None, ours: float) -> tuple[str, float | None, bool]:
    """Text, value (a lower bound for DNF) and whether the baseline failed outright."""
    if b is None or not math.isfinite(ours) or ours <= 0:
        return "-", None, False
    st = b.get("status")
    if st == "converged":
        v = b["time_s"] / ours
        return f"{v:.0f}x" if v >= 10 else f"{v:.1f}x", v, False
    if st == "dnf":
        v = b["time_s"] / ours
        return f">{v:.0f}x", v, False
    if st in ("failed", "skipped"):
        return "no sol.", None, True
    return "-", None, False


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def render(rows: list[Row], opts: argparse.Namespace, started: float, load: tuple[float, float]) -> str:
    out: list[str] = []
    pw = max([len("plant"), *(len(r.plant) for r in rows)])
    head = (
        f"{'plant':<{pw}} {'workload':<40} {'ours s':>8} {'naive s':>11} {'strong s':>11} "
        f"{'naive/ours':>10} {'strong/ours':>11}  {'max|R| ours / naive / strong':<29}  "
        f"{'mass bal. ours / naive / strong':<29}  target"
    )
    out.append(head)
    out.append("-" * len(head))
    for r in rows:
        nr, _, _ = _ratio(r.naive, r.ours_s)
        sr, _, _ = _ratio(r.strong, r.ours_s)
        steady = r.naive is not None
        res = (
            f"{_fmt_e(r.ours_residual)} / {_fmt_e(r.naive.get('residual', math.nan))} / "
            f"{_fmt_e(r.strong.get('residual', math.nan))}"
            if steady and r.naive is not None and r.strong is not None
            else "-"
        )
        mb = (
            f"{_fmt_e(r.ours_mass_balance)} / {_fmt_e(r.naive.get('mass_balance', math.nan))} / "
            f"{_fmt_e(r.strong.get('mass_balance', math.nan))}"
            if steady and r.naive is not None and r.strong is not None
            else "-"
        )
        ours = _fmt_t(r.ours_s) + ("" if r.ours_ok else "!")
        tgt = "-"
        if r.target_s is not None and math.isfinite(r.ours_s):
            tgt = f"<{r.target_s:g} s {_mark(r.ours_ok and r.ours_s < r.target_s)}"
        out.append(
            f"{r.plant:<{pw}} {r.workload:<40} {ours:>8} {_cell(r.naive):>11} {_cell(r.strong):>11} "
            f"{nr:>10} {sr:>11}  {res:<29}  {mb:<29}  {tgt}"
        )
    out.append("")
    out.append("notes:")
    for r in rows:
        out.append(f"  {r.plant} {r.workload}: {r.note}")
        for kind, b in (("naive", r.naive), ("strong", r.strong)):
            if b is not None:
                nfev = f", {b['nfev']} residual evaluations" if "nfev" in b else ""
                out.append(f"    {kind}: {b.get('status')}{nfev}; {b.get('message', '')}")
    out.append("")
    out.append("targets (defined on hree_refinery; every benchmarked plant shown):")
    plants = sorted({r.plant for r in rows}, key=lambda p: (p != "hree_refinery", p))
    if "hree_refinery" not in plants:
        out.append("  hree_refinery: NOT MEASURED (models/plants/hree_refinery.toml missing or failed)")
    for plant in plants:
        mine = [r for r in rows if r.plant == plant]
        for r in mine:
            if r.target_s is not None and math.isfinite(r.ours_s):
                ok = r.ours_ok and r.ours_s < r.target_s
                out.append(f"  {plant}: {r.workload}: {_fmt_t(r.ours_s)} s < {r.target_s:g} s: {_mark(ok)}")
            for kind, b, goal in (
                ("naive", r.naive, TARGETS["naive_ratio"]),
                ("strong", r.strong, TARGETS["strong_ratio"]),
            ):
                if b is None:
                    continue
                text, value, failed = _ratio(b, r.ours_s)
                if failed:
                    verdict = f"no ratio: the {kind} baseline found no solution ({b.get('status')})"
                elif value is None:
                    verdict = "not measured"
                else:
                    bound = "at least " if b.get("status") == "dnf" else ""
                    verdict = f"{bound}{text}: " + _mark(value >= goal)
                out.append(f"  {plant}: {r.workload.split(' (')[0]} >= {goal:g}x {kind}: {verdict}")
    out.append("")
    out.append(
        f"run: {' '.join(['benchmarks/cascade.py', *sys.argv[1:]])}; "
        f"{time.perf_counter() - started:.0f} s; python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    out.append(
        f"budgets: naive {opts.naive_budget_s:g} s (tb_dy), {opts.naive_budget_other_s:g} s (others); "
        f"strong {opts.strong_budget_s:g} s; converged = max|R| <= {ACCEPT_RESIDUAL:g}; "
        "'!' after a time = our solve did not succeed"
    )
    out.append(
        "compiled code: the assembly's Numba kernels (models/_assembly.py, compiled on import) and the "
        "stage functions in C (models/_codegen.py, compiled at their first solve); first run on a "
        "machine = empty caches, then the same in a second fresh process (imports are not timed in 'steady cold'):"
    )
    for plant, (first, cached) in getattr(opts, "first_build", {}).items():
        out.append(
            f"  {plant}: first run: kernels compiled {first.get('kernels_s', math.nan):.2f} s, cold solve "
            f"{first.get('cold_s', math.nan):.2f} s (stage functions compiled); cached: kernels loaded "
            f"{cached.get('kernels_s', math.nan):.2f} s (+ {cached.get('numba_import_s', math.nan):.2f} s "
            f"importing Numba), cold solve {cached.get('cold_s', math.nan):.2f} s"
        )
    return "\n".join(out)


def measure_first_build(spec: Path, timeout_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """A plant's first run on a machine (empty caches of compiled code), then a second run that
    loads what the first compiled, each in a fresh process."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": f"{cache}/numba", "SXTWIN_CODEGEN_DIR": f"{cache}/codegen"}
        first = _spawn(["--child", "first", "--spec", str(spec)], timeout_s, env)
        cached = _spawn(["--child", "first", "--spec", str(spec)], timeout_s, env)
    return first, cached


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--plants", default=",".join(DEFAULT_PLANTS), help="comma-separated plant names")
    ap.add_argument("--quick", action="store_true", help="smoke run: tb_dy, one repeat, 5 s budgets")
    ap.add_argument("--repeats", type=int, default=3, help="cold processes and warm/dynamic repeats (median)")
    ap.add_argument("--naive-budget-s", type=float, default=600.0, help="naive baseline budget on tb_dy, s")
    ap.add_argument(
        "--naive-budget-other-s", type=float, default=120.0, help="naive baseline budget on larger plants, s"
    )
    ap.add_argument("--strong-budget-s", type=float, default=600.0, help="strong baseline budget, s")
    ap.add_argument("--child-timeout-s", type=float, default=900.0, help="hard limit on a child process, s")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--state", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--budget-s", type=float, default=600.0, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.child:
        run_child(opts)
        return 0
    if opts.quick:
        if opts.plants == ",".join(DEFAULT_PLANTS):
            opts.plants = "tb_dy"
        opts.repeats = 1
        opts.naive_budget_s = opts.naive_budget_other_s = opts.strong_budget_s = 5.0
        opts.child_timeout_s = 300.0
    started = time.perf_counter()
    load = os.getloadavg()
    rows: list[Row] = []
    opts.first_build = {}
    for name in [p.strip() for p in opts.plants.split(",") if p.strip()]:
        if (PLANTS_DIR / f"{name}.toml").exists():
            _progress(f"{name}: first run with empty caches of compiled code, then cached (fresh processes)")
            opts.first_build[name] = measure_first_build(PLANTS_DIR / f"{name}.toml", opts.child_timeout_s)
    for name in [p.strip() for p in opts.plants.split(",") if p.strip()]:
        rows += bench_plant(name, opts)
    for name in [p.strip() for p in opts.plants.split(",") if p.strip()]:
        if not (PLANTS_DIR / f"{name}.toml").exists():
            print(f"skipped {name}: models/plants/{name}.toml not found")
    print(render(rows, opts, started, (load[0], load[1])))
    if opts.json is not None:
        opts.json.write_text(json.dumps([asdict(r) for r in rows], indent=2, default=str))
    return 0 if rows and all(r.ours_ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
