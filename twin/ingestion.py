"""Ingestion: which tags the twin reads, and which values it may use.

Every incoming value is checked before use: Bad and Uncertain quality, NaN or infinite values,
values outside the instrument's range and stale values (older than ``stale_after_h``, plus the
instrument's delay and sample period, against the plant's published clock; setpoints, published on
change, excepted) are recorded with the reason and never used. A tag that stops updating turns
stale when its latest value is checked again against the clock (:meth:`Ingestor.recheck`).
Usable analyser values become estimator observations at their own sample time (late samples
included); usable controller PVs become the manipulated-variable inputs of the model. Lab assays
(ICP results with their sample time) enter the same way as late analyser samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from models.flowsheet import Flowsheet
from models.spec import InstrumentSpec
from twin.estimation import Observation
from twin.plant_io import TagValue

__all__ = ["Flag", "IngestResult", "Ingestor", "TagPlan"]


@dataclass(frozen=True)
class TagPlan:
    """One tag the twin reads: what it means for the model."""

    tag: str
    instrument: InstrumentSpec
    role: Literal["input", "setpoint", "observation", "monitor"]
    parameter: str | None = None
    range_min: float = -math.inf
    range_max: float = math.inf


@dataclass(frozen=True)
class Flag:
    """A value that was not used, and why."""

    tag: str
    reason: str
    value: float | str | None


@dataclass
class IngestResult:
    """What a batch of values produced."""

    observations: list[Observation] = field(default_factory=list)
    inputs: dict[str, float] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)


def is_controller(ins: InstrumentSpec) -> bool:
    """A controller has PV and SP: a flow controller, or ISA-5.1 letters with a C after the first
    (``AIC-111``, ``TIC-201``) on a manipulated variable (the same rule as the OPC UA tag list)."""
    letters = ins.tag.split("-", 1)[0]
    return ins.kind == "flow_controller" or (ins.variable is not None and "C" in letters[1:])


def plan_tags(fs: Flowsheet) -> tuple[TagPlan, ...]:
    """The tags of the spec's instruments and their roles."""
    out: list[TagPlan] = []
    mv_params = set(fs.parameters.names)
    for ins in fs.spec.instruments:
        lo, hi = ins.range_min, ins.range_max
        if ins.kind == "analyser":
            for s in ins.elements:
                out.append(TagPlan(f"{ins.tag}.{s}", ins, "observation", None, 0.0, hi))
        elif ins.variable in mv_params and is_controller(ins):
            out.append(TagPlan(f"{ins.tag}.PV", ins, "input", ins.variable, lo, hi))
            out.append(TagPlan(f"{ins.tag}.SP", ins, "setpoint", ins.variable, lo, hi))
        elif ins.kind == "acidity" and ins.variable in mv_params:
            out.append(TagPlan(f"{ins.tag}.PV", ins, "input", ins.variable, lo, hi))
        elif ins.kind == "acidity":
            out.append(TagPlan(f"{ins.tag}.PV", ins, "observation", None, lo, hi))
        else:
            out.append(TagPlan(f"{ins.tag}.PV", ins, "monitor", ins.variable, lo, hi))
    return tuple(out)


class Ingestor:
    """Checks values and turns the usable ones into model inputs and estimator observations."""

    def __init__(self, fs: Flowsheet, *, stale_after_h: float = 2.0) -> None:
        self.fs = fs
        self.plan = {p.tag: p for p in plan_tags(fs)}
        self.stale_after_h = stale_after_h
        self.latest: dict[str, TagValue] = {}
        self.flags: dict[str, Flag] = {}

    @property
    def tags(self) -> tuple[str, ...]:
        """Every tag to subscribe to."""
        return tuple(self.plan)

    def check(self, tv: TagValue, plant_now_h: float | None) -> str | None:
        """Why ``tv`` must not be used, or None when it may."""
        plan = self.plan.get(tv.tag)
        if plan is None:
            return "not a tag of this plant"
        if tv.quality.value != "good":
            return f"quality {tv.quality.value}"
        if isinstance(tv.value, str):
            return None if plan.role == "monitor" else "text value"
        v = float(tv.value)
        if not math.isfinite(v):
            return f"value {v!r} is not finite"
        if not plan.range_min <= v <= plan.range_max:
            return f"value {v:g} outside the instrument range [{plan.range_min:g}, {plan.range_max:g}]"
        # a setpoint is published when it changes: its age says nothing about its validity
        if plan.role != "setpoint" and plant_now_h is not None and tv.plant_time_h is not None:
            age = plant_now_h - tv.plant_time_h
            limit = self.stale_after_h + plan.instrument.delay_s / 3600.0 + plan.instrument.sample_period_s / 3600.0
            if age > limit:
                return f"stale: {age:.2f} h old (limit {limit:.2f} h)"
        return None

    def ingest(self, values: Sequence[TagValue], plant_now_h: float | None) -> IngestResult:
        """Check a batch; usable values become inputs and observations, the rest flags."""
        out = IngestResult()
        for tv in values:
            self.latest[tv.tag] = tv
            reason = self.check(tv, plant_now_h)
            if reason is not None:
                flag = Flag(tv.tag, reason, tv.value)
                self.flags[tv.tag] = flag
                out.flags.append(flag)
                continue
            self.flags.pop(tv.tag, None)
            plan = self.plan[tv.tag]
            if plan.role == "input" and plan.parameter is not None:
                out.inputs[plan.parameter] = float(tv.value)
            elif plan.role == "observation":
                t_s = tv.plant_time_h if tv.plant_time_h is not None else (plant_now_h or 0.0)
                out.observations.append(Observation(tv.tag, float(tv.value), t_s))
        return out

    def recheck(self, plant_now_h: float) -> list[Flag]:
        """Flag the latest values that have gone stale since they arrived (a tag that stopped
        updating sends nothing more to check); returns the new flags."""
        out = []
        for tag, tv in self.latest.items():
            if tag in self.flags:
                continue
            reason = self.check(tv, plant_now_h)
            if reason is not None:
                self.flags[tag] = Flag(tag, reason, tv.value)
                out.append(self.flags[tag])
        return out

    def lab_assay(self, tag: str, value_g_per_l: float, sample_time_h: float) -> Observation:
        """A lab result (ICP) for an analyser channel, used like a late analyser sample.

        Raises :class:`~models.errors.InputError` for an unknown channel or a bad value.
        """
        from models.errors import InputError

        plan = self.plan.get(tag)
        if plan is None or plan.role != "observation":
            allowed = ", ".join(t for t, p in self.plan.items() if p.role == "observation")
            raise InputError(f"tag: {tag!r} is not an analyser channel; allowed: {allowed}", field="tag")
        if not (math.isfinite(value_g_per_l) and value_g_per_l > 0.0):
            raise InputError(f"value: {value_g_per_l!r} must be a concentration > 0 g/L", field="value")
        if not math.isfinite(sample_time_h):
            raise InputError(f"sample_time_h: {sample_time_h!r} must be finite", field="sample_time_h")
        return Observation(tag, value_g_per_l, sample_time_h)
