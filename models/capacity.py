"""Capacity of a plant configuration by continuation in the feed rate.

The largest feed a configuration takes with every product on spec is the throughput objective of
:mod:`models.optimisation`. On a single circuit IPOPT solves that problem directly. On a chain of
circuits designed at their split points it does not: the whole hree_refinery, started from its
reagent-cost optimum, ran 1,339 iterations in 600 s without converging. A larger feed moves every
cut at once, and the purities are steep in the flows there.

This module walks the feed instead, as an engineer would: every external feed flow is scaled by
one factor *s* (the basket stays the same), and at each *s* the fixed-feed problem of the given
optimiser (reagent cost or margin at spec, every other manipulated variable free) is solved,
warm-started from the last feed that met spec. Steps grow while they succeed; after the first
failure the feed is bisected (geometric mean) until the bracket [last at spec, first not reached]
is narrower than ``rel_tol``. Each warm step fails fast (no cold retry, no elastic diagnosis): a
step that does not converge counts as not reached, so the upper end of the bracket is where the
continuation stopped, and the result says why.

What limits the capacity is read at the last feed at spec: the manipulated variables at their
bounds and the equipment limits (loading, O/A, settler) that are active there. Product
specifications are active at every reagent-cost optimum, whatever the feed, so they are listed
apart.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.errors import InfeasibleError, InputError
from models.kpi import meets
from models.optimisation import ConstraintKind, Objective, OptimisationResult, SetpointOptimiser
from models.steady import SteadyResult

__all__ = ["CapacityOptions", "CapacityResult", "CapacityStep", "feed_capacity"]

log = logging.getLogger(__name__)

SPEC_KINDS = (ConstraintKind.PURITY, ConstraintKind.RECOVERY)


@dataclass(frozen=True)
class CapacityOptions:
    """Settings of the feed-rate continuation.

    Attributes
    ----------
    feed_range
        Lowest and highest feed, as multiples of the current feed flows.
    rel_tol
        The search stops when the bracket's ends differ by less than this fraction.
    first_step, max_step
        Relative feed increase of the first upward step, and the largest (steps double after
        each success until the first failure).
    max_solves
        Most fixed-feed optimisations in one search.
    max_wall_s
        Time budget of the whole walk, seconds (None: no limit): no optimisation starts after it,
        and one running then stops at its next IPOPT iteration (``optimise(deadline=...)``). The
        result is the bracket reached, and says so; a solve stopped by the budget is no evidence
        about its feed and does not close the bracket.
    """

    feed_range: tuple[float, float] = (0.1, 5.0)
    rel_tol: float = 0.02
    first_step: float = 0.1
    max_step: float = 0.4
    max_solves: int = 30
    max_wall_s: float | None = None

    def __post_init__(self) -> None:
        lo, hi = self.feed_range
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= 1.0 <= hi):
            raise InputError(
                f"feed_range: {self.feed_range!r} is not allowed; expected 0 < low <= 1 <= high",
                field="feed_range",
            )
        if not 0.0 < self.rel_tol < 1.0:
            raise InputError(f"rel_tol: {self.rel_tol!r} is not allowed; expected 0 < value < 1", field="rel_tol")
        if not 0.0 < self.first_step <= self.max_step:
            raise InputError(
                f"first_step: {self.first_step!r} is not allowed; expected 0 < first_step <= max_step "
                f"({self.max_step!r})",
                field="first_step",
            )
        if self.max_wall_s is not None and not (math.isfinite(self.max_wall_s) and self.max_wall_s > 0):
            raise InputError(
                f"max_wall_s: {self.max_wall_s!r} is not allowed; expected a number > 0 or None", field="max_wall_s"
            )
        if self.max_solves < 1:
            raise InputError(f"max_solves: {self.max_solves!r} is not allowed; expected >= 1", field="max_solves")


@dataclass(frozen=True)
class CapacityStep:
    """One fixed-feed optimisation of the search."""

    feed_scale: float
    at_spec: bool
    feed_reo_kg_per_h: float  # nan when not reached
    iterations: int
    wall_time_s: float
    message: str
    infeasible: bool = False  # the elastic problem proved a specification out of reach at this feed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "feed_scale": self.feed_scale,
            "at_spec": self.at_spec,
            "feed_reo_kg_per_h": None if math.isnan(self.feed_reo_kg_per_h) else self.feed_reo_kg_per_h,
            "iterations": self.iterations,
            "wall_time_s": self.wall_time_s,
            "message": self.message,
            "infeasible": self.infeasible,
        }


@dataclass(frozen=True)
class CapacityResult:
    """The largest feed at spec found by the continuation.

    Attributes
    ----------
    success
        A feed at spec was found.
    feed_scale
        Capacity over the current feed (the bracket's lower end; nan without success).
    bracket
        (largest feed scale at spec, smallest not reached); the upper end is ``inf`` when the top
        of ``feed_range`` was reached at spec.
    feed_reo_kg_per_h, current_feed_reo_kg_per_h
        Rare earth fed at capacity and now (oxide basis).
    feed_flows_l_per_h
        Each external feed's flow at capacity.
    limited_by
        Manipulated-variable bounds and equipment limits active at capacity, or ``feed_range max``.
    specs_at_limit
        Product specifications active at capacity.
    reason
        Why the search stopped, in words.
    optimum
        The fixed-feed optimisation at capacity (setpoints, KPIs, active constraints).
    steps
        Every fixed-feed optimisation tried, in order.
    """

    success: bool
    feed_scale: float
    bracket: tuple[float, float]
    feed_reo_kg_per_h: float
    current_feed_reo_kg_per_h: float
    feed_flows_l_per_h: dict[str, float]
    limited_by: tuple[str, ...]
    specs_at_limit: tuple[str, ...]
    reason: str
    optimum: OptimisationResult | None
    steps: tuple[CapacityStep, ...]
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "success": self.success,
            "feed_scale": None if math.isnan(self.feed_scale) else self.feed_scale,
            "bracket": [None if not math.isfinite(b) else b for b in self.bracket],
            "feed_reo_kg_per_h": None if math.isnan(self.feed_reo_kg_per_h) else self.feed_reo_kg_per_h,
            "current_feed_reo_kg_per_h": self.current_feed_reo_kg_per_h,
            "feed_flows_l_per_h": self.feed_flows_l_per_h,
            "limited_by": list(self.limited_by),
            "specs_at_limit": list(self.specs_at_limit),
            "reason": self.reason,
            "setpoints": self.optimum.setpoints if self.optimum is not None else {},
            "kpis": [k.to_dict() for k in self.optimum.optimum.kpis] if self.optimum is not None else [],
            "steps": [s.to_dict() for s in self.steps],
            "wall_time_s": self.wall_time_s,
        }


def _meets_specs(result: OptimisationResult, specs: Mapping[str, Mapping[str, float | None]] | None) -> bool:
    """Every product at the verified optimum meets its minima, ``specs`` replacing the plant's."""
    for k in result.optimum.kpis:
        over = (specs or {}).get(k.name, {})
        purity_min = over.get("purity_min", k.purity_min)
        recovery_min = over.get("recovery_min", k.recovery_min)
        if not (meets(k.purity, purity_min) and meets(k.recovery, recovery_min)):
            return False
    return True


def feed_capacity(
    optimiser: SetpointOptimiser,
    current: SteadyResult,
    options: CapacityOptions | None = None,
    *,
    specs: Mapping[str, Mapping[str, float | None]] | None = None,
    bound_overrides: Mapping[str, float] | None = None,
) -> CapacityResult:
    """The largest common multiple of the external feed flows at which ``optimiser`` meets spec.

    Parameters
    ----------
    optimiser
        A fixed-feed optimiser of the plant (objective ``reagent`` or ``margin``; its manipulated
        feed flows, if any, are held at each step's feed).
    current
        The steady state at the current operating point (scale 1).
    options
        Range, tolerance and step sizes.
    specs, bound_overrides
        As in :meth:`SetpointOptimiser.optimise`.

    Raises
    ------
    InputError
        The optimiser's objective moves the feed itself (throughput), or the plant has no
        external feed.
    """
    t0 = time.perf_counter()
    opts = options or CapacityOptions()
    if optimiser.options.objective is Objective.THROUGHPUT:
        raise InputError(
            "objective: 'throughput' moves the feed itself; the capacity continuation needs a fixed-feed "
            "objective ('reagent' or 'margin')",
            field="objective",
        )
    fs = optimiser.fs
    feed_idx = [fs.parameters.index(f"{f.name}.flow_l_per_h") for f in fs.spec.feeds]
    if not feed_idx:
        raise InputError("feeds: the plant has no external feed to scale", field="feeds")
    if not current.success:
        raise InputError("current: the steady state at the current point was not found", field="current")
    if any(v.parameter in {fs.parameters.names[i] for i in feed_idx} for v in optimiser.variables):
        raise InputError(
            "optimiser: its decision variables include a feed flow; use the 'reagent' objective or a spec "
            "whose feed flows are not manipulated",
            field="objective",
        )
    p_cur = current.parameters.values.copy()
    f_cur = p_cur[feed_idx].copy()
    lo, hi = opts.feed_range
    steps: list[CapacityStep] = []
    deadline = t0 + opts.max_wall_s if opts.max_wall_s is not None else None

    def expired() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    def attempt(scale: float, base: OptimisationResult | None) -> tuple[OptimisationResult | None, str]:
        t = time.perf_counter()
        p = (base.parameters if base is not None else p_cur).copy()
        p[feed_idx] = scale * f_cur
        result: OptimisationResult | None = None
        iterations = 0
        infeasible = False
        if base is None and scale == 1.0:
            steady = current
        elif base is None:
            steady = optimiser.steady_solver.solve(p, z0=current.z, p0=p_cur)
        else:
            steady = optimiser.steady_solver.solve(p, z0=base.z, p0=base.parameters)
        if not steady.success:
            message = f"steady state not found at {scale:.4g} x the feed"
        else:
            try:
                result = optimiser.optimise(
                    p, current=steady, specs=specs, bound_overrides=bound_overrides, warm=base,
                    fallback=base is None, deadline=deadline,
                )
                iterations = result.iterations
                if not result.success:
                    message = result.message
                    result = None
                elif not _meets_specs(result, specs):
                    message = "a product is off spec at the verified optimum"
                    result = None
                else:
                    message = "at spec"
            except InfeasibleError as exc:
                message, infeasible = exc.message, True
        reo = result.optimum.economics.feed_reo_kg_per_h if result is not None else math.nan
        took = time.perf_counter() - t
        steps.append(CapacityStep(scale, result is not None, reo, iterations, took, message, infeasible))
        log.info("capacity walk: %.4g x the feed: %s (%d it., %.1f s)", scale, message, iterations, took)
        return result, message

    best: tuple[float, OptimisationResult] | None = None
    fail: tuple[float, str] | None = None
    scale, step = 1.0, opts.first_step
    out_of_time = False
    while len(steps) < opts.max_solves:
        if steps and expired():
            out_of_time = True
            break
        result, message = attempt(scale, best[1] if best is not None else None)
        if result is None and expired():  # stopped by the deadline: no evidence about this feed
            out_of_time = True
            break
        if result is not None:
            best = (scale, result)
            if scale >= hi:
                break
        else:
            fail = (scale, message)
        if best is None:  # not at spec at the current feed: search downwards
            if scale <= lo:
                break
            scale = max(lo, 0.5 * scale)
        elif fail is None:  # upwards while every step succeeds, doubling the step
            if len(steps) > 1:
                step = min(2.0 * step, opts.max_step)
            scale = min(hi, best[0] * (1.0 + step))
        else:
            if fail[0] / best[0] - 1.0 <= opts.rel_tol:
                break
            scale = math.sqrt(best[0] * fail[0])
    wall = time.perf_counter() - t0
    # the feed's REO is linear in the scale (same basket): the current feed's, from any step at spec
    current_reo = best[1].current.economics.feed_reo_kg_per_h / best[0] if best is not None else math.nan
    budget = ""
    if out_of_time:
        budget = f"the time budget ({opts.max_wall_s:g} s) ran out after {len(steps)} optimisations; "
    if best is None:
        tried = "no feed tried so far" if out_of_time else f"no feed between {lo:g} and 1 x the current feed"
        reason = f"{budget}{tried} met spec" + (
            f"; at the lowest tried ({fail[0]:.4g} x): {fail[1]}" if fail is not None else ""
        )
        return CapacityResult(
            success=False,
            feed_scale=math.nan,
            bracket=(math.nan, fail[0] if fail else math.nan),
            feed_reo_kg_per_h=math.nan,
            current_feed_reo_kg_per_h=current_reo,
            feed_flows_l_per_h={},
            limited_by=(),
            specs_at_limit=(),
            reason=reason,
            optimum=None,
            steps=tuple(steps),
            wall_time_s=wall,
        )
    s_best, r_best = best
    if s_best >= hi:
        bracket = (s_best, math.inf)
        limited: tuple[str, ...] = ("feed_range max",)
        reason = f"the top of the feed range ({hi:g} x the current feed) is at spec"
    else:
        bracket = (s_best, fail[0] if fail is not None else math.nan)
        limited = tuple(a.name for a in r_best.active_constraints if a.kind not in SPEC_KINDS)
        if fail is not None:
            reason = f"{budget}at {fail[0]:.4g} x the current feed: {fail[1]}"
        elif out_of_time:
            reason = f"{budget}the capacity is at least {s_best:.4g} x the current feed"
        else:
            reason = f"stopped after {opts.max_solves} optimisations"
    specs_active = tuple(a.name for a in r_best.active_constraints if a.kind in SPEC_KINDS)
    flows = {f.name: float(s_best * f_cur[k]) for k, f in enumerate(fs.spec.feeds)}
    return CapacityResult(
        success=True,
        feed_scale=s_best,
        bracket=bracket,
        feed_reo_kg_per_h=r_best.optimum.economics.feed_reo_kg_per_h,
        current_feed_reo_kg_per_h=current_reo,
        feed_flows_l_per_h=flows,
        limited_by=limited,
        specs_at_limit=specs_active,
        reason=reason,
        optimum=r_best,
        steps=tuple(steps),
        wall_time_s=wall,
    )
