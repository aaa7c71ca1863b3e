"""Scenarios for the simulated plant: timed disturbances and faults, from a TOML file.

A scenario is a list of events, each at a plant time counted from the moment the scenario is
loaded (``at_h``), most with a duration (``duration_h``; omitted: until the plant is reset)::

    [scenario]
    name = "xrf-maintenance"
    description = "The E10 analyser goes down, then the scrub pump trips"

    [[events]]
    kind = "analyser_outage"      # the analyser's values turn Bad (BadOutOfService)
    tag = "AI-121"
    at_h = 1.0
    duration_h = 4.0

    [[events]]
    kind = "pump_trip"            # the actual flow of a flow loop falls to 0
    tag = "FIC-103"
    at_h = 6.0
    duration_h = 2.0

    [[events]]
    kind = "stuck_valve"          # the actual flow stays where it is, whatever the SP
    tag = "FIC-102"
    at_h = 10.0
    duration_h = 8.0

    [[events]]
    kind = "sensor_bias"          # the instrument reads off by `bias` (engineering units);
    tag = "FIC-101"               #   `element` picks one element of an analyser
    bias = 5.0
    at_h = 12.0

    [[events]]
    kind = "feed_composition"     # a step of the feed basket, % of TREO (total REO unchanged)
    feed = "feed"
    composition = { Gd = 0.05, Tb = 25.0, Dy = 74.8, Ho = 0.15 }
    at_h = 24.0

    [[events]]
    kind = "extractant_drift"     # the circuit loses extractant at `rate_per_day` (fraction per
    circuit = "TbDy"              #   day, compounded) while the event lasts; the loss stays after
    rate_per_day = 0.01
    at_h = 48.0
    duration_h = 168.0

Loading validates every event against the plant (tags, feeds, elements) and raises
:class:`~models.errors.SpecError` naming the field (``events[2].tag``) and what is allowed. Each
event start and end is raised as an OPC UA event of type ``ScenarioEventType`` and recorded in the
historian.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from models.errors import SpecError
from models.flowsheet import Flowsheet

__all__ = ["Scenario", "ScenarioEvent", "ScenarioKind", "load_scenario", "parse_scenario", "parse_scenario_text"]


class ScenarioKind(StrEnum):
    """What a scenario event does."""

    FEED_COMPOSITION = "feed_composition"
    PUMP_TRIP = "pump_trip"
    ANALYSER_OUTAGE = "analyser_outage"
    SENSOR_BIAS = "sensor_bias"
    STUCK_VALVE = "stuck_valve"
    EXTRACTANT_DRIFT = "extractant_drift"


@dataclass(frozen=True)
class ScenarioEvent:
    """One timed event.

    Attributes
    ----------
    kind
        What happens.
    at_h
        Plant hours after the scenario is loaded.
    duration_h
        How long it lasts, h (``None``: until reset).
    tag
        The instrument (pump trip, stuck valve, outage, bias).
    element
        Sensor bias on one element of an analyser (``None``: every element).
    bias
        Sensor bias in the instrument's engineering unit.
    feed
        The feed whose basket steps (feed composition).
    concentrations_mol_per_l
        Feed composition: parameter name (``feed.conc_mol_per_l.Tb``) to its new value.
    circuit
        The circuit whose extractant drifts (extractant drift).
    rate_per_day
        Extractant drift: fraction of the extractant lost per day while the event lasts.
    message
        A sentence for the operator log.
    """

    kind: ScenarioKind
    at_h: float
    duration_h: float | None = None
    tag: str | None = None
    element: str | None = None
    bias: float = 0.0
    feed: str | None = None
    concentrations_mol_per_l: Mapping[str, float] = field(default_factory=dict)
    circuit: str | None = None
    rate_per_day: float = 0.0
    message: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "concentrations_mol_per_l", MappingProxyType(dict(self.concentrations_mol_per_l)))

    @property
    def end_h(self) -> float:
        """Plant hours after loading when the event ends (inf: never)."""
        return math.inf if self.duration_h is None else self.at_h + self.duration_h

    @property
    def target(self) -> str:
        """What the event acts on (a tag or a feed)."""
        return self.tag or self.feed or self.circuit or "plant"

    def describe(self) -> str:
        """A sentence for logs and OPC UA events."""
        if self.message:
            return self.message
        if self.kind is ScenarioKind.FEED_COMPOSITION:
            return f"feed {self.feed}: basket step"
        if self.kind is ScenarioKind.EXTRACTANT_DRIFT:
            return f"{self.circuit}: extractant loss {100.0 * self.rate_per_day:g} %/day"
        if self.kind is ScenarioKind.SENSOR_BIAS:
            on = f"{self.tag}.{self.element}" if self.element else str(self.tag)
            return f"{on}: sensor bias {self.bias:+g}"
        return f"{self.tag}: {self.kind.value.replace('_', ' ')}"

    def extractant_factor(self, rel_h: float) -> float:
        """Extractant drift: the factor on the extractant ``rel_h`` hours after loading (1 before
        the event starts; the loss reached at its end stays)."""
        days = (min(rel_h, self.end_h) - self.at_h) / 24.0
        return (1.0 - self.rate_per_day) ** days if days > 0.0 else 1.0


@dataclass(frozen=True)
class Scenario:
    """A named list of events, ordered by start time."""

    name: str
    description: str
    events: tuple[ScenarioEvent, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "name": self.name,
            "description": self.description,
            "events": [
                {"kind": e.kind.value, "at_h": e.at_h, "duration_h": e.duration_h, "target": e.target}
                for e in self.events
            ],
        }


_EVENT_KEYS = {
    "kind", "at_h", "duration_h", "tag", "element", "bias", "feed", "composition", "circuit", "rate_per_day", "message"
}


def _number(value: Any, fld: str, where: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise SpecError(f"{where}: {fld}: {value!r} is not allowed; expected a finite number", field=fld)
    if minimum is not None and float(value) < minimum:
        raise SpecError(f"{where}: {fld}: {value!r} is not allowed; expected a number >= {minimum:g}", field=fld)
    return float(value)


def parse_scenario(data: Mapping[str, Any], fs: Flowsheet, *, where: str = "scenario") -> Scenario:
    """Validate a scenario mapping (a parsed TOML file) against a plant."""
    spec = fs.spec
    extra = sorted(set(data) - {"scenario", "events"})
    if extra:
        raise SpecError(f"{where}: unknown section(s) {extra}; allowed: scenario, events", field=extra[0])
    head = data.get("scenario", {})
    if not isinstance(head, Mapping):
        raise SpecError(f"{where}: scenario must be a table", field="scenario")
    raw = data.get("events", [])
    if not isinstance(raw, list):
        raise SpecError(f"{where}: events must be an array of tables ([[events]])", field="events")
    instruments = {i.tag: i for i in spec.instruments}
    feeds = {f.name: f for f in spec.feeds}
    events: list[ScenarioEvent] = []
    for k, ev in enumerate(raw):
        at = f"events[{k}]"
        if not isinstance(ev, Mapping):
            raise SpecError(f"{where}: {at} must be a table", field=at)
        unknown = sorted(set(ev) - _EVENT_KEYS)
        if unknown:
            raise SpecError(
                f"{where}: {at}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(_EVENT_KEYS))}",
                field=f"{at}.{unknown[0]}",
            )
        try:
            kind = ScenarioKind(str(ev.get("kind")))
        except ValueError:
            raise SpecError(
                f"{where}: {at}.kind: {ev.get('kind')!r} is not allowed; expected one of "
                f"{', '.join(k.value for k in ScenarioKind)}",
                field=f"{at}.kind",
            ) from None
        at_h = _number(ev.get("at_h"), f"{at}.at_h", where, minimum=0.0)
        duration = ev.get("duration_h")
        duration_h = None if duration is None else _number(duration, f"{at}.duration_h", where, minimum=0.0)
        kw: dict[str, Any] = {
            "kind": kind,
            "at_h": at_h,
            "duration_h": duration_h,
            "message": str(ev.get("message", "")),
        }
        if kind is ScenarioKind.FEED_COMPOSITION:
            feed = ev.get("feed")
            if feed not in feeds:
                raise SpecError(
                    f"{where}: {at}.feed: {feed!r} is not allowed; expected one of {', '.join(feeds)}",
                    field=f"{at}.feed",
                )
            comp = ev.get("composition")
            if not isinstance(comp, Mapping) or not comp:
                raise SpecError(f"{where}: {at}.composition: expected a table of % TREO per element", field=at)
            pct = {str(s): _number(v, f"{at}.composition.{s}", where, minimum=0.0) for s, v in comp.items()}
            tracked = {n.rsplit(".", 1)[1] for n in fs.parameters.names if n.startswith(f"{feed}.conc_mol_per_l.")}
            bad = sorted(set(pct) - tracked)
            if bad or sum(pct.values()) <= 0.0 or feeds[feed].composition_basis != "oxide_pct_treo":
                raise SpecError(
                    f"{where}: {at}.composition: elements must be among {', '.join(sorted(tracked))} "
                    f"(got {', '.join(bad) or 'no positive share'}) for a feed given in % TREO",
                    field=f"{at}.composition",
                )
            conc = feeds[feed].model_copy(update={"composition": pct, "basket": None}).concentrations_mol_per_l()
            kw["feed"] = feed
            kw["concentrations_mol_per_l"] = {f"{feed}.conc_mol_per_l.{s}": conc.get(s, 0.0) for s in tracked}
        elif kind is ScenarioKind.EXTRACTANT_DRIFT:
            circuits = [c.name for c in spec.circuits if f"{c.name}.extractant_mol_per_l" in fs.parameters]
            circuit = ev.get("circuit")
            if circuit not in circuits:
                raise SpecError(
                    f"{where}: {at}.circuit: {circuit!r} is not allowed; expected one of {', '.join(circuits)}",
                    field=f"{at}.circuit",
                )
            rate = _number(ev.get("rate_per_day"), f"{at}.rate_per_day", where, minimum=0.0)
            if rate >= 1.0:
                raise SpecError(
                    f"{where}: {at}.rate_per_day: {rate!r} is not allowed; expected a fraction per day in [0, 1)",
                    field=f"{at}.rate_per_day",
                )
            kw["circuit"] = circuit
            kw["rate_per_day"] = rate
        else:
            tag = ev.get("tag")
            ins = instruments.get(tag) if isinstance(tag, str) else None
            if ins is None:
                raise SpecError(
                    f"{where}: {at}.tag: {tag!r} is not an instrument of {spec.plant.name}; "
                    f"instruments: {', '.join(instruments)}",
                    field=f"{at}.tag",
                )
            kw["tag"] = tag
            if kind in (ScenarioKind.PUMP_TRIP, ScenarioKind.STUCK_VALVE):
                manipulated = {mv.variable for mv in spec.manipulated}
                if ins.variable is None or ins.variable not in manipulated or not ins.variable.endswith("_l_per_h"):
                    allowed = [
                        i.tag
                        for i in spec.instruments
                        if i.variable in manipulated and (i.variable or "").endswith("_l_per_h")
                    ]
                    raise SpecError(
                        f"{where}: {at}.tag: {tag} is not a flow loop on a manipulated flow; allowed: "
                        f"{', '.join(allowed)}",
                        field=f"{at}.tag",
                    )
            elif kind is ScenarioKind.ANALYSER_OUTAGE and ins.kind != "analyser":
                raise SpecError(
                    f"{where}: {at}.tag: {tag} is a {ins.kind}, not an analyser; analysers: "
                    f"{', '.join(i.tag for i in spec.instruments if i.kind == 'analyser')}",
                    field=f"{at}.tag",
                )
            elif kind is ScenarioKind.SENSOR_BIAS:
                kw["bias"] = _number(ev.get("bias"), f"{at}.bias", where)
                el = ev.get("element")
                if el is not None:
                    if el not in ins.elements:
                        raise SpecError(
                            f"{where}: {at}.element: {el!r} is not measured by {tag}; allowed: "
                            f"{', '.join(ins.elements) or 'none (not an analyser)'}",
                            field=f"{at}.element",
                        )
                    kw["element"] = el
        events.append(ScenarioEvent(**kw))
    events.sort(key=lambda e: e.at_h)
    return Scenario(
        name=str(head.get("name", Path(where).stem if where != "scenario" else "scenario")),
        description=str(head.get("description", "")),
        events=tuple(events),
    )


def parse_scenario_text(text: str, fs: Flowsheet, *, where: str = "scenario") -> Scenario:
    """Parse and validate scenario TOML text (what the ``LoadScenario`` method receives)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{where}: malformed TOML: {exc}", field="scenario") from None
    return parse_scenario(data, fs, where=where)


def load_scenario(path: str | Path, fs: Flowsheet) -> Scenario:
    """Read and validate a scenario TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{p}: cannot read scenario: {exc.strerror}", field="scenario") from None
    return parse_scenario_text(text, fs, where=str(p))
