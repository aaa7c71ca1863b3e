"""What a Dask worker runs for a study case, with per-process caches.

Every worker process builds each plant layout once (flowsheet, steady solver, economics,
optimisers, keyed by a hash of the spec data) and warm-starts each case from the case before it
in its chain (or from the study's base state): a steady warm start from a neighbouring point takes
a fraction of a second where a cold start takes seconds. Stage-design candidates change the layout;
they start from the nearest evaluated candidate, resampled section by section onto the new stage
counts (:func:`resample_state`).

Tasks and results are plain JSON-ready dicts so that they travel to remote workers and are
saved as they are.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from typing import Any

import numpy as np

from models.capacity import CapacityOptions, feed_capacity
from models.economics import Economics
from models.errors import InfeasibleError, TwinError
from models.flowsheet import Flowsheet, build_flowsheet
from models.optimisation import Objective, OptimisationOptions, SetpointOptimiser
from models.spec import parse_spec
from models.steady import SteadyResult, SteadySolver

__all__ = ["apply_structure", "layout_signature", "plant_key", "resample_state", "solve_case"]

_PLANTS: dict[str, tuple[Flowsheet, SteadySolver]] = {}
_ECONOMICS: dict[tuple[str, str], Economics] = {}
_OPTIMISERS: dict[tuple[str, str, str, tuple[float, float]], SetpointOptimiser] = {}


def plant_key(plant: dict[str, Any], structure: dict[str, Any] | None = None) -> str:
    """A stable hash of a plant's spec data and structural changes."""
    blob = json.dumps({"plant": plant, "structure": structure or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def apply_structure(plant: dict[str, Any], structure: dict[str, Any] | None) -> dict[str, Any]:
    """The plant data with stage counts (``circuits: {name: {field: value}}``) and feed baskets
    (``baskets: {feed: basket}``) replaced."""
    if not structure:
        return plant
    data = copy.deepcopy(plant)
    data["instruments"] = []  # studies need no instruments, and stage-bound ones may not fit a new layout
    for name, fields in (structure.get("circuits") or {}).items():
        for c in data["circuits"]:
            if c["name"] == name:
                c.update(fields)
    for feed, basket in (structure.get("baskets") or {}).items():
        for f in data["feeds"]:
            if f["name"] == feed:
                f["basket"] = basket
                f["composition"] = {}
                f["composition_basis"] = "oxide_pct_treo"
    return data


def _plant(plant: dict[str, Any], structure: dict[str, Any] | None) -> tuple[str, Flowsheet, SteadySolver]:
    key = plant_key(plant, structure)
    if key not in _PLANTS:
        fs = build_flowsheet(parse_spec(apply_structure(plant, structure), where="study plant"))
        _PLANTS[key] = (fs, SteadySolver(fs))
    fs, solver = _PLANTS[key]
    return key, fs, solver


def layout_signature(fs: Flowsheet) -> list[list[Any]]:
    """Circuits, elements and section stage counts: what a state vector's layout depends on."""
    return [[c.name, list(c.elements), c.n_extraction, c.n_scrub, c.n_strip, c.nv] for c in fs.circuits]


def resample_state(z_old: np.ndarray, layout_old: list[list[Any]], fs: Flowsheet) -> np.ndarray | None:
    """Map a state of another stage layout onto ``fs``, section by section, by linear interpolation
    in the normalised stage position. Returns None when the circuits or elements differ."""
    old = {c[0]: c for c in layout_old}
    z = np.zeros(fs.n_unknowns)
    offset_old = 0
    offsets: dict[str, int] = {}
    for c in layout_old:
        offsets[c[0]] = offset_old
        offset_old += (c[2] + c[3] + c[4]) * c[5]
    for lay in fs.circuits:
        if lay.name not in old or list(old[lay.name][1]) != list(lay.elements) or old[lay.name][5] != lay.nv:
            return None
        _, _, n0, m0, k0, nv = old[lay.name]
        blk = z_old[offsets[lay.name] : offsets[lay.name] + (n0 + m0 + k0) * nv].reshape(n0 + m0 + k0, nv)
        sections_old = [(0, n0), (n0, n0 + m0), (n0 + m0, n0 + m0 + k0)]
        sections_new = [
            (0, lay.n_extraction),
            (lay.n_extraction, lay.strip_first),
            (lay.strip_first, lay.n_stages),
        ]
        new_blk = np.zeros((lay.n_stages, nv))
        for (a0, b0), (a1, b1) in zip(sections_old, sections_new, strict=True):
            n_new = b1 - a1
            if n_new == 0:
                continue
            if b0 == a0:  # section absent before: copy the nearest old stage
                src = blk[min(a0, len(blk) - 1)]
                new_blk[a1:b1] = src
                continue
            x_old = (np.arange(b0 - a0) + 0.5) / (b0 - a0)
            x_new = (np.arange(n_new) + 0.5) / n_new
            for v in range(nv):
                new_blk[a1:b1, v] = np.interp(x_new, x_old, blk[a0:b0, v])
        z[lay.offset : lay.offset + lay.size] = new_blk.ravel()
    return z


def _parameters(fs: Flowsheet, overrides: dict[str, float]) -> np.ndarray:
    names: dict[str, float] = {}
    by_mv = {m.name: m.variable for m in fs.spec.manipulated}
    for name, value in overrides.items():
        names[by_mv.get(name, name)] = value
    return fs.parameter_vector(names)


def _economics(key: str, fs: Flowsheet, prices: str) -> Economics:
    if (key, prices) not in _ECONOMICS:
        _ECONOMICS[(key, prices)] = Economics(fs, prices)
    return _ECONOMICS[(key, prices)]


def _steady_record(fs: Flowsheet, res: SteadyResult, econ: Economics) -> dict[str, Any]:
    out: dict[str, Any] = {"kpis": {}, "on_spec": True}
    for pr in res.products:
        out["kpis"][pr.name] = {
            "purity": pr.purity,
            "recovery": pr.recovery,
            "purity_min": pr.purity_min,
            "recovery_min": pr.recovery_min,
            "on_spec": pr.on_spec,
        }
        out["on_spec"] = out["on_spec"] and pr.on_spec
    b = econ.evaluate(res.z, res.parameters.values)
    out["economics"] = {
        "margin_usd_per_h": b.margin_usd_per_h,
        "revenue_usd_per_h": b.revenue_usd_per_h,
        "reagent_cost_usd_per_h": b.reagent_cost_usd_per_h,
        "feed_reo_kg_per_h": b.feed_reo_kg_per_h,
    }
    loading = [float(np.nanmax(c.loading_fraction)) for c in res.circuits if np.isfinite(c.loading_fraction).any()]
    out["max_loading_fraction"] = max(loading) if loading else math.nan
    return out


def _warm_start(
    fs: Flowsheet, warm: dict[str, Any] | None, base: dict[str, Any] | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    sig = layout_signature(fs)
    for cand in (warm, base):
        if not cand or cand.get("z") is None:
            continue
        z = np.asarray(cand["z"], dtype=float)
        p = np.asarray(cand["p"], dtype=float) if cand.get("p") is not None else None
        if p is not None and p.shape != (len(fs.parameters),):
            p = None
        if cand.get("layout") == sig:
            return z, p
        z_new = resample_state(z, cand.get("layout") or [], fs)
        if z_new is not None:
            return z_new, None
    return None, None


def _split_balance(res: SteadyResult) -> tuple[float, float]:
    """(difference, minimum) of the products' purity slacks ln((1 - purity_min)/(1 - purity)):
    positive slack = on spec; the difference is what a split parameter trades."""
    slacks = []
    for pr in res.products:
        if pr.purity_min is not None:
            slacks.append(math.log((1.0 - pr.purity_min) / max(1.0 - pr.purity, 1e-300)))
    if len(slacks) < 2:
        return 0.0, min(slacks) if slacks else 0.0
    return slacks[0] - slacks[-1], min(slacks)


def _balance_split(
    fs: Flowsheet, solver: SteadySolver, res: SteadyResult, adjust: dict[str, Any]
) -> tuple[SteadyResult, dict[str, Any]]:
    """Bisection on one parameter (a reflux or flow that moves the product split) until the first
    and last products with a purity spec have equal slack: the layout is then judged at the split
    that suits it best (countercurrent theory assumes the split the purities imply)."""
    name = adjust["parameter"]
    i = fs.parameters.index(name)
    lo, hi = float(adjust["low"]), float(adjust["high"])
    p = res.parameters.values.copy()
    best = res
    cache: dict[float, SteadyResult] = {}

    def at(v: float, start: SteadyResult) -> SteadyResult:
        if v not in cache:
            q = p.copy()
            q[i] = v
            cache[v] = solver.solve(q, z0=start.z, p0=start.parameters.values)
        return cache[v]

    r_lo, r_hi = at(lo, res), at(hi, res)
    if not (r_lo.success and r_hi.success):
        return res, {"parameter": name, "status": "endpoint solve failed"}
    g_lo, g_hi = _split_balance(r_lo)[0], _split_balance(r_hi)[0]
    if g_lo * g_hi > 0:  # no balance inside: keep the better end
        best = max((r_lo, r_hi), key=lambda r: _split_balance(r)[1])
        return best, {"parameter": name, "value": float(best.parameters.values[i]), "status": "at a bound"}
    prev = r_lo if abs(g_lo) < abs(g_hi) else r_hi
    for _ in range(int(adjust.get("iterations", 24))):
        mid = 0.5 * (lo + hi)
        r_mid = at(mid, prev)
        if not r_mid.success:
            break
        g_mid = _split_balance(r_mid)[0]
        prev = r_mid
        if (g_mid > 0) == (g_hi > 0):
            hi, g_hi = mid, g_mid
        else:
            lo, g_lo = mid, g_mid
        best = r_mid
        if hi - lo < float(adjust.get("tol", 1e-7)):
            break
    return best, {
        "parameter": name,
        "value": float(best.parameters.values[i]),
        "status": "balanced",
        "solves": len(cache),
    }


def _optimiser(
    key: str, fs: Flowsheet, solver: SteadySolver, task: dict[str, Any], objective: str
) -> SetpointOptimiser:
    """The worker's optimiser of this plant for the task's objective, prices and feed range."""
    prices = task.get("prices", "china_domestic")
    # the feed range matters to the throughput objective only (it makes the feeds decision variables)
    feed_range = tuple(task.get("feed_range", (0.1, 5.0))) if objective == "throughput" else (0.1, 5.0)
    okey = (key, Objective(objective).value, prices, (float(feed_range[0]), float(feed_range[1])))
    if okey not in _OPTIMISERS:
        options = OptimisationOptions(
            objective=Objective(objective), price_scenario=prices, throughput_feed_range=okey[3]
        )
        _OPTIMISERS[okey] = SetpointOptimiser(fs, options, solver=solver)
    return _OPTIMISERS[okey]


def solve_case(task: dict[str, Any], warm: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one study case (see module docstring). Never raises for a failed computation: the result
    says ``status`` = ``failed`` or ``infeasible`` with the message."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"id": task["id"], "labels": task.get("labels", {}), "status": "failed"}
    try:
        key, fs, solver = _plant(task["plant"], task.get("structure"))
        p = _parameters(fs, task.get("overrides", {}))
        z0, p0 = _warm_start(fs, warm, task.get("base"))
        if z0 is not None and p0 is None:
            p0 = None
        res = solver.solve(p, z0=z0, p0=p0 if z0 is not None else None)
        if res.success and task.get("adjust"):
            res, trail = _balance_split(fs, solver, res, task["adjust"])
            out["adjust"] = trail
        out["steady_wall_time_s"] = res.wall_time_s
        out["steady_method"] = res.method
        if not res.success:
            out["message"] = res.message
            return out
        econ = _economics(key, fs, task.get("prices", "china_domestic"))
        out.update(_steady_record(fs, res, econ))
        out["z"] = res.z.tolist()
        out["p"] = res.parameters.values.tolist()
        out["layout"] = layout_signature(fs)
        out["status"] = "ok"
        out["n_stages"] = {c.name: [c.n_extraction, c.n_scrub, c.n_strip] for c in fs.circuits}
        if task.get("action") == "capacity":
            opt = _optimiser(key, fs, solver, task, "reagent")
            cap = feed_capacity(
                opt,
                res,
                CapacityOptions(
                    feed_range=tuple(task["feed_range"]),
                    rel_tol=float(task.get("rel_tol", 0.02)),
                    max_wall_s=task.get("max_wall_s"),
                ),
                specs=task.get("specs") or None,
                bound_overrides=task.get("bound_overrides") or None,
            )
            out["capacity"] = cap.to_dict()
            if not cap.success:
                # infeasible only where the elastic problem proved a spec out of reach; a walk whose
                # solves did not converge (or ran out of time) has failed, and says so
                out["status"] = "infeasible" if any(step.infeasible for step in cap.steps) else "failed"
                out["message"] = cap.reason
                return out
            assert cap.optimum is not None
            final = cap.optimum.steady
            if final is not None:
                out.update(_steady_record(fs, final, econ))
                out["z"] = final.z.tolist()
                out["p"] = final.parameters.values.tolist()
        if task.get("action") == "optimise":
            opt = _optimiser(key, fs, solver, task, task.get("objective", "margin"))
            specs = task.get("specs") or None
            try:
                r = opt.optimise(p, current=res, specs=specs, bound_overrides=task.get("bound_overrides") or None)
            except InfeasibleError as exc:
                out["status"] = "infeasible"
                out["message"] = exc.message
                out["infeasible"] = exc.details
                return out
            out["optimisation"] = {
                "success": r.success,
                "objective": r.objective.value,
                "objective_unit": r.objective.unit,
                "objective_value": r.optimum.objective_value,
                "current_objective_value": r.current.objective_value,
                "setpoints": r.setpoints,
                "iterations": r.iterations,
                "solve_time_s": r.solve_time_s,
                "active_constraints": [a.to_dict() for a in r.active_constraints],
                "warnings": list(r.warnings),
            }
            if not r.success:
                out["status"] = "failed"
                out["message"] = r.message
                return out
            final = r.steady if r.steady is not None else None
            if final is not None:
                out.update(_steady_record(fs, final, econ))
                out["z"] = final.z.tolist()
                out["p"] = final.parameters.values.tolist()
            out["kpis_optimum"] = {k.name: {"purity": k.purity, "recovery": k.recovery} for k in r.optimum.kpis}
            out["economics"] = {
                "margin_usd_per_h": r.optimum.economics.margin_usd_per_h,
                "revenue_usd_per_h": r.optimum.economics.revenue_usd_per_h,
                "reagent_cost_usd_per_h": r.optimum.economics.reagent_cost_usd_per_h,
                "feed_reo_kg_per_h": r.optimum.economics.feed_reo_kg_per_h,
            }
    except TwinError as exc:
        out["status"] = "failed"
        out["message"] = exc.message
    except Exception as exc:  # a bug or a numerical breakdown in one case must not stop a study
        out["status"] = "failed"
        out["message"] = f"{type(exc).__name__}: {exc}"
    finally:
        out["wall_time_s"] = time.perf_counter() - t0
    return out
