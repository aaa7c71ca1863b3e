"""Study files: the TOML description of an offline setpoint study, validated on load.

A study names a plant spec (path relative to the study file), a kind and the section for that
kind. Kinds:

- ``sweep``: a grid (or zip) of parameter values; each case a steady solve or an optimisation;
- ``scenarios``: named sets of parameter changes, price scenarios and feed baskets;
- ``pareto``: epsilon-constraint optimisations over a grid of purity and recovery minima of one
  product (minimum reagent cost or maximum margin at each point);
- ``capacity``: the largest feed rate the plant takes at spec (throughput objective), optionally
  per scenario;
- ``stage_design``: the fewest stages per section of one circuit that meet every product spec,
  started from the countercurrent-theory estimate;
- ``robustness``: Monte Carlo over uncertain parameters at fixed setpoints, giving the
  probability that the products meet spec.

The format is documented in ``docs/studies.md``; every error names the field (``sweep.parameters[1].values``).
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.errors import SpecError
from models.optimisation import Objective
from models.prices import available_scenarios

__all__ = [
    "CapacitySpec",
    "ParameterRange",
    "ParetoSpec",
    "ProductLimits",
    "RobustnessSpec",
    "ScenarioSpec",
    "SplitAdjustSpec",
    "StageDesignSpec",
    "StudyInfo",
    "StudyKind",
    "StudySpec",
    "SweepSpec",
    "UncertainParameter",
    "XuEstimateSpec",
    "load_study",
    "parse_study",
]

StudyKind = Literal["sweep", "scenarios", "pareto", "capacity", "stage_design", "robustness"]
Fraction01 = Annotated[float, Field(gt=0.0, lt=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_prices(name: str | None) -> None:
    if name is not None and name not in available_scenarios():
        raise ValueError(f"prices: {name!r} is unknown; available: {', '.join(available_scenarios())}")


class StudyInfo(_Model):
    """The ``[study]`` table.

    ``plant`` is a plant spec path, relative to the study file. ``action`` says what each case of
    a sweep or scenario set does (a steady solve at the given setpoints, or an optimisation with
    ``objective``). ``chain_length`` groups consecutive cases into chains that warm-start each
    other on one worker.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    kind: StudyKind
    plant: str
    description: str = ""
    action: Literal["steady", "optimise"] = "steady"
    objective: Objective = Objective.MARGIN
    prices: str = "china_domestic"
    chain_length: Annotated[int, Field(ge=1, le=10_000)] = 10

    @model_validator(mode="after")
    def _check(self) -> StudyInfo:
        _check_prices(self.prices)
        return self


class ParameterRange(_Model):
    """One swept parameter: explicit ``values`` or ``start``/``stop``/``num`` (linear)."""

    name: str
    values: tuple[float, ...] | None = None
    start: float | None = None
    stop: float | None = None
    num: Annotated[int, Field(ge=1, le=100_000)] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParameterRange:
        ranged = (self.start, self.stop, self.num)
        if (self.values is None) == all(v is None for v in ranged):
            raise ValueError("give either 'values' or 'start', 'stop' and 'num'")
        if self.values is None and any(v is None for v in ranged):
            raise ValueError("a range needs all of 'start', 'stop' and 'num'")
        if self.values is not None and not self.values:
            raise ValueError("values: empty")
        for v in self.points():
            if not math.isfinite(v):
                raise ValueError(f"values: {v!r} is not finite")
        return self

    def points(self) -> tuple[float, ...]:
        """The values swept."""
        if self.values is not None:
            return tuple(float(v) for v in self.values)
        assert self.start is not None
        assert self.stop is not None
        assert self.num is not None
        if self.num == 1:
            return (float(self.start),)
        step = (self.stop - self.start) / (self.num - 1)
        return tuple(self.start + i * step for i in range(self.num))


class SweepSpec(_Model):
    """``[sweep]``: ``grid`` (cartesian product, last parameter fastest) or ``zip`` (paired)."""

    mode: Literal["grid", "zip"] = "grid"
    parameters: tuple[ParameterRange, ...]

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if not self.parameters:
            raise ValueError("parameters: at least one parameter")
        if self.mode == "zip" and len({len(p.points()) for p in self.parameters}) != 1:
            raise ValueError("mode 'zip' needs the same number of values for every parameter")
        return self


class ScenarioSpec(_Model):
    """A named scenario: parameter changes (``set``), a price scenario, feed baskets by feed name."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    set: dict[str, float] = Field(default_factory=dict)
    prices: str | None = None
    baskets: dict[str, str] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ScenarioSpec:
        _check_prices(self.prices)
        if self.baskets:
            from models.feeds import available_feeds

            for feed, basket in self.baskets.items():
                if basket not in available_feeds():
                    raise ValueError(
                        f"baskets.{feed}: {basket!r} is unknown; available: {', '.join(available_feeds())}"
                    )
        return self


class ParetoSpec(_Model):
    """``[pareto]``: epsilon-constraint grid of one product's purity and recovery minima."""

    product: str
    purity: tuple[float, ...]
    recovery: tuple[float, ...] = ()
    objective: Objective = Objective.REAGENT

    @model_validator(mode="after")
    def _check(self) -> ParetoSpec:
        for name, values in (("purity", self.purity), ("recovery", self.recovery)):
            for v in values:
                if not 0.0 < v < 1.0:
                    raise ValueError(f"{name}: {v!r} must be between 0 and 1")
        if not self.purity:
            raise ValueError("purity: at least one value")
        if self.objective is Objective.THROUGHPUT:
            raise ValueError("objective: use 'reagent' or 'margin' for a Pareto front")
        return self


class ProductLimits(_Model):
    """Product specification minima that replace the plant spec's for a study (fractions 0-1)."""

    purity_min: Fraction01 | None = None
    recovery_min: Fraction01 | None = None

    @model_validator(mode="after")
    def _check(self) -> ProductLimits:
        if self.purity_min is None and self.recovery_min is None:
            raise ValueError("give purity_min, recovery_min or both")
        return self


class CapacitySpec(_Model):
    """``[capacity]``: the largest feed at spec, once at the plant's point or per scenario.

    Feed flows move over ``feed_range`` times their current value; with ``release_feed_bounds``
    (default) that replaces the bounds of feed-flow manipulated variables too, so the answer is the
    plant's capacity rather than the operating window's.

    ``method``: ``throughput`` solves the throughput objective of the optimiser in one NLP (its
    multipliers say what relaxing each limit is worth in kg REO/h); ``continuation`` walks the
    feed up with fixed-feed reagent-cost optimisations and bisects to ``rel_tol``
    (:mod:`models.capacity`): for chained circuits, where the single NLP does not converge.
    ``max_wall_s`` bounds each continuation case: a deadline, at which a running optimisation
    stops and no new one starts.
    ``specs`` (product name to ``purity_min`` / ``recovery_min``) replace the plant spec's minima
    for the capacity: a capacity at purity alone can be bought by sending most of a valuable
    element elsewhere, which a recovery minimum rules out.
    """

    scenarios: tuple[ScenarioSpec, ...] = ()
    feed_range: tuple[float, float] = (0.1, 5.0)
    release_feed_bounds: bool = True
    method: Literal["throughput", "continuation"] = "throughput"
    rel_tol: float = Field(default=0.02, gt=0.0, lt=1.0)
    max_wall_s: float | None = Field(default=None, gt=0.0)
    specs: dict[str, ProductLimits] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> CapacitySpec:
        lo, hi = self.feed_range
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < 1.0 < hi):
            raise ValueError(f"feed_range: {list(self.feed_range)!r} is not allowed; expected 0 < low < 1 < high")
        return self


class XuEstimateSpec(_Model):
    """Inputs of the countercurrent-theory start (``models.countercurrent.xu_design``).

    ``heavy`` are the more extractable (A) elements, ``light`` the less extractable (B);
    purities default to the products' ``purity_min`` of the circuit's two outlets.
    """

    heavy: tuple[str, ...]
    light: tuple[str, ...]
    beta_extraction: Annotated[float, Field(gt=1.0)]
    beta_scrub: Annotated[float, Field(gt=1.0)]
    s: Annotated[float, Field(gt=0.0)] | None = None
    w: Annotated[float, Field(gt=0.0)] | None = None
    feed: Literal["aqueous", "organic"] = "aqueous"
    purity_a: Fraction01 | None = None
    purity_b: Fraction01 | None = None
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> XuEstimateSpec:
        if (self.s is None) == (self.w is None):
            raise ValueError("give exactly one of 's' (extraction amount) or 'w' (scrub amount)")
        return self


class SplitAdjustSpec(_Model):
    """A parameter that moves the product split (a reflux fraction, a flow), adjusted per candidate
    layout by bisection in [low, high] so that the circuit's two products have equal purity slack."""

    parameter: str
    low: float
    high: float
    tol: Annotated[float, Field(gt=0.0)] = 1e-7
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> SplitAdjustSpec:
        if not self.low < self.high:
            raise ValueError("adjust: low must be below high")
        return self


class StageDesignSpec(_Model):
    """``[stage_design]``: fewest stages per section of ``circuit`` that meet every product spec.

    ``parallel_probes`` candidate counts are evaluated at once in each search step (0: one per
    worker); ``reference`` holds known stage counts (a real plant's) to compare the design with;
    ``set`` changes parameters for every candidate; ``purity_min`` replaces products' purity
    specifications (by product name); ``adjust`` balances the product split per candidate.
    """

    circuit: str
    sections: tuple[Literal["extraction", "scrub", "strip"], ...] = ("extraction", "scrub")
    start: dict[str, int] = Field(default_factory=dict)
    xu: XuEstimateSpec | None = None
    max_stages: Annotated[int, Field(ge=2, le=500)] = 200
    min_stages: Annotated[int, Field(ge=1, le=500)] = 1
    parallel_probes: Annotated[int, Field(ge=0, le=64)] = 0
    reference: dict[str, int] = Field(default_factory=dict)
    reference_source: str = ""
    adjust: SplitAdjustSpec | None = None
    set: dict[str, float] = Field(default_factory=dict)
    purity_min: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> StageDesignSpec:
        if not self.sections:
            raise ValueError("sections: at least one")
        for k in self.start:
            if k not in self.sections:
                raise ValueError(f"start.{k}: not one of the designed sections {list(self.sections)}")
        if self.xu is None and any(s not in self.start for s in self.sections):
            raise ValueError("give 'xu' (countercurrent-theory estimate) or a start for every section")
        return self


class UncertainParameter(_Model):
    """One uncertain parameter: uniform on [low, high] or normal(mean, sd), with where it comes from."""

    parameter: str
    distribution: Literal["uniform", "normal"] = "uniform"
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    sd: Annotated[float, Field(gt=0.0)] | None = None
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> UncertainParameter:
        if self.distribution == "uniform":
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError("a uniform distribution needs low < high")
        elif self.mean is None or self.sd is None:
            raise ValueError("a normal distribution needs mean and sd")
        return self


class RobustnessSpec(_Model):
    """``[robustness]``: Monte Carlo at fixed setpoints (``design``, ``optimum`` or a mapping)."""

    samples: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    seed: int = 1
    setpoints: Literal["design", "optimum"] | dict[str, float] = "design"
    uncertain: tuple[UncertainParameter, ...]

    @model_validator(mode="after")
    def _check(self) -> RobustnessSpec:
        if not self.uncertain:
            raise ValueError("uncertain: at least one parameter")
        return self


class StudySpec(_Model):
    """A whole study file."""

    study: StudyInfo
    sweep: SweepSpec | None = None
    scenarios: tuple[ScenarioSpec, ...] = ()
    pareto: ParetoSpec | None = None
    capacity: CapacitySpec | None = None
    stage_design: StageDesignSpec | None = None
    robustness: RobustnessSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        needs = {
            "sweep": self.sweep,
            "scenarios": self.scenarios or None,
            "pareto": self.pareto,
            "capacity": self.capacity,
            "stage_design": self.stage_design,
            "robustness": self.robustness,
        }
        kind = self.study.kind
        if needs[kind] is None:
            table = "[[scenarios]]" if kind == "scenarios" else f"[{kind}]"
            raise ValueError(f"{kind}: a study of kind {kind!r} needs a {table} section")
        _check_unique([s.name for s in self.scenarios], "scenarios")
        if self.capacity is not None:
            _check_unique([s.name for s in self.capacity.scenarios], "capacity.scenarios")
        return self


def _check_unique(names: list[str], where: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: repeated names {dup}")


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def parse_study(data: dict[str, Any], *, where: str = "study") -> StudySpec:
    """Validate a study given as a mapping; :class:`SpecError` names the field."""
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _loc(tuple(p for p in err["loc"] if p != "function-after"))
        msg = str(err["msg"]).removeprefix("Value error, ")
        inner = re.match(r"^([A-Za-z_][A-Za-z0-9_.\[\]]*): (.*)$", msg)
        if inner and " " not in inner.group(1):
            field = f"{field}.{inner.group(1)}" if field else inner.group(1)
            msg = inner.group(2)
        value = err.get("input")
        shown = "" if isinstance(value, (dict, list, tuple)) else f" (got {value!r})"
        raise SpecError(f"{where}: {field or 'study'}: {msg}{shown}", field=field or None) from None


def load_study(path: str | Path) -> tuple[StudySpec, Path]:
    """Read a study file; returns the study and the resolved plant spec path."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{p}: cannot read study: {exc.strerror}", field="path") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{p}: malformed TOML: {exc}", field="toml") from None
    spec = parse_study(data, where=str(p))
    plant = (p.parent / spec.study.plant).resolve()
    if not plant.is_file():
        raise SpecError(
            f"{p}: study.plant: {spec.study.plant!r} is not a file (relative to the study)", field="study.plant"
        )
    return spec, plant
