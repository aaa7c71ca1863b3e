"""The safety gate: the conditions under which the twin may write a setpoint.

A closed-loop write happens only when every condition holds, and the gate says which failed
otherwise (the twin then holds the last good setpoints and records why):

- closed loop is enabled by an operator and was allowed at start (``--allow-closed-loop``);
- the estimator is healthy and was updated recently from Good data (fresh);
- the optimisation behind the proposal succeeded;
- each new setpoint lies within the manipulated variable's bounds and moves no more than
  ``max_rate_per_h`` times the hours since that variable last moved (move limit), and at most
  ``max_rate_per_h x WRITE_HORIZON_H`` in one write (the plant's own rate rule).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from models.spec import ManipulatedSpec

__all__ = ["WRITE_HORIZON_H", "GateDecision", "SafetyGate"]

WRITE_HORIZON_H: Final = 1.0
"""Hours of each variable's ``max_rate_per_h`` that one write may move (the plant's rate rule).
The advisor limits its proposals to the same move, so that the point written is the point the
optimiser evaluated (a larger proposal clipped per variable is a point nobody checked)."""


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer: allowed, the (possibly clipped) setpoints, and the reasons to hold."""

    allowed: bool
    setpoints: dict[str, float]
    reasons: tuple[str, ...] = ()
    clipped: dict[str, float] = field(default_factory=dict)


@dataclass
class SafetyGate:
    """Applies the rules in the module docstring.

    Attributes
    ----------
    manipulated
        The spec's manipulated variables (bounds and rate limits), by parameter name.
    max_data_age_h
        Largest plant-time age of the estimator's last update from Good data.
    """

    manipulated: Mapping[str, ManipulatedSpec]
    max_data_age_h: float = 2.0
    last_move_h: dict[str, float] = field(default_factory=dict)

    def check(
        self,
        *,
        proposed: Mapping[str, float],
        current: Mapping[str, float],
        plant_time_h: float,
        closed_loop_enabled: bool,
        closed_loop_allowed: bool,
        estimator_healthy: bool,
        last_update_h: float | None,
        solve_ok: bool,
    ) -> GateDecision:
        """Decide; moves beyond a rate limit are clipped to it (and said so), never exceeded."""
        reasons: list[str] = []
        if not closed_loop_allowed:
            reasons.append("closed loop was not allowed at start (--allow-closed-loop)")
        if not closed_loop_enabled:
            reasons.append("closed loop is not enabled (advisory mode)")
        if not estimator_healthy:
            reasons.append("the estimator is not healthy")
        if last_update_h is None or plant_time_h - last_update_h > self.max_data_age_h:
            age = "never" if last_update_h is None else f"{plant_time_h - last_update_h:.2f} h ago"
            reasons.append(f"no fresh Good data: last estimator update {age}")
        if not solve_ok:
            reasons.append("the optimisation did not succeed")
        out: dict[str, float] = {}
        clipped: dict[str, float] = {}
        for name, value in proposed.items():
            mv = self.manipulated.get(name)
            if mv is None:
                reasons.append(f"{name} is not a manipulated variable")
                continue
            if not math.isfinite(value):
                reasons.append(f"{name}: proposed value {value!r} is not finite")
                continue
            if not mv.min <= value <= mv.max:
                reasons.append(f"{name}: {value:g} outside [{mv.min:g}, {mv.max:g}]")
                continue
            now = current.get(name)
            target = value
            if now is not None and mv.max_rate_per_h is not None:
                since = plant_time_h - self.last_move_h.get(name, -math.inf)
                allowed = mv.max_rate_per_h * min(max(since, 0.0), WRITE_HORIZON_H)
                if abs(value - now) > allowed:
                    target = now + math.copysign(allowed, value - now)
                    clipped[name] = target
            out[name] = target
        return GateDecision(allowed=not reasons, setpoints=out, reasons=tuple(reasons), clipped=clipped)

    def record_move(self, name: str, plant_time_h: float) -> None:
        """Remember when a variable was last written (for the move limit)."""
        self.last_move_h[name] = plant_time_h
