"""The tag list of a plant: which OPC UA variables a spec's instruments publish, where, in what unit.

Conventions (docs/opcua.md, section "Tags"):

- **Controllers** publish ``<TAG>.PV`` (measured), ``<TAG>.SP`` (setpoint, writable by operator
  and above) and ``<TAG>.MODE`` (``AUTO`` or ``MAN``, writable by operator and above). An
  instrument is a controller when its kind is ``flow_controller``, or when its ISA-5.1 letters
  after the first contain ``C`` (``AIC-111``, ``TIC-201``) and it measures a manipulated variable.
- **Transmitters** (``flow``, ``acidity``, ``level``, ``temperature``, and controllers' PVs)
  publish ``<TAG>.PV``.
- **Analysers** publish one variable per element, ``<TAG>.<El>`` (``AI-121.Dy``).

The tag is the node id's string identifier in the plant namespace (``ns=<urn:sxtwin:plant>;
s=AI-121.Dy``). Folders: ``Plant/<circuit>/<section>/<instrument>/<variable>``; the section of
an instrument is the section of its stage, of the stream it analyses (raffinate: extraction;
strip liquor: strip; loaded organic: the last section) or of the variable it measures (organic
flow and saponification: extraction; scrub flow, scrub acid, reflux: scrub; strip flow and acid,
organic bleed: strip). Instruments on an external feed go under ``Plant/Streams/<feed>``.

Engineering units are UNECE Recommendation 20 codes (:data:`UNITS`); values are converted from
the internal units (:mod:`models.units`) here, at the edge (:func:`to_engineering_units`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from models.elements import element
from models.errors import SpecError
from models.spec import InstrumentSpec, PlantSpec
from models.units import kelvin_to_celsius

__all__ = [
    "SECTION_OF_VARIABLE",
    "UNITS",
    "EngineeringUnit",
    "Quantity",
    "TagInfo",
    "TagRole",
    "is_controller",
    "plant_tags",
    "tags_markdown",
    "to_engineering_units",
]

UNECE_NAMESPACE: Final = "http://www.opcfoundation.org/UA/units/un/cefact"


@dataclass(frozen=True)
class EngineeringUnit:
    """A UNECE Rec. 20 unit as OPC UA's EUInformation wants it."""

    code: str
    display: str
    description: str

    @property
    def unit_id(self) -> int:
        """The EUInformation UnitId: the code's characters packed into an integer (Part 8, 5.6.3)."""
        out = 0
        for ch in self.code:
            out = (out << 8) | ord(ch)
        return out


#: Unit strings a spec may use for an instrument, and their UNECE codes.
UNITS: Final[dict[str, EngineeringUnit]] = {
    "L/h": EngineeringUnit("E32", "L/h", "litre per hour"),
    "mol/L": EngineeringUnit("C38", "mol/L", "mole per litre"),
    "g/L": EngineeringUnit("GL", "g/L", "gram per litre"),
    "mg/L": EngineeringUnit("M1", "mg/L", "milligram per litre"),
    "degC": EngineeringUnit("CEL", "°C", "degree Celsius"),
    "1": EngineeringUnit("C62", "1", "one (dimensionless)"),
    "%": EngineeringUnit("P1", "%", "percent"),
}

#: Section of a circuit variable (for placing its instruments).
SECTION_OF_VARIABLE: Final[dict[str, str]] = {
    "organic_flow_l_per_h": "extraction",
    "saponification": "extraction",
    "scrub_flow_l_per_h": "scrub",
    "scrub_acid_mol_per_l": "scrub",
    "reflux_fraction": "scrub",
    "strip_flow_l_per_h": "strip",
    "strip_acid_mol_per_l": "strip",
    "organic_bleed_fraction": "strip",
}


class TagRole(StrEnum):
    """What a tag is."""

    PV = "PV"
    SP = "SP"
    MODE = "MODE"
    ELEMENT = "element"


class Quantity(StrEnum):
    """The physical quantity behind a tag (decides the unit conversion)."""

    FLOW = "flow"
    CONCENTRATION = "concentration"
    ACIDITY = "acidity"
    TEMPERATURE = "temperature"
    LEVEL = "level"
    FRACTION = "fraction"
    MODE = "mode"


@dataclass(frozen=True)
class TagInfo:
    """One published variable.

    Attributes
    ----------
    tag
        Node id string, e.g. ``FIC-101.SP``.
    instrument
        The instrument's tag (``FIC-101``).
    role
        PV, SP, MODE or an analyser element.
    kind
        The instrument kind of the spec.
    folder
        Browse names below ``Plant`` (``("TbDy", "scrub")`` or ``("Streams", "feed")``).
    unit
        The spec's unit string (a key of :data:`UNITS`); empty for MODE.
    eu_range
        The EURange; for a setpoint, the writable range (manipulated bounds within the
        instrument range).
    instrument_range
        The instrument's range.
    writable
        SP and MODE are writable (operator and above).
    description
        From the spec.
    quantity
        For the unit conversion.
    variable
        The flowsheet parameter measured or set (controllers, transmitters on a variable).
    element
        The element (analysers).
    rate_limit_per_h
        Setpoints: the manipulated variable's ``max_rate_per_h`` (None: no limit).
    sample_period_s, delay_s, noise_rel, detection_limit
        Instrument behaviour, from the spec (engineering units for the limit).
    """

    tag: str
    instrument: str
    role: TagRole
    kind: str
    folder: tuple[str, ...]
    unit: str
    eu_range: tuple[float, float]
    instrument_range: tuple[float, float]
    writable: bool
    description: str
    quantity: Quantity
    variable: str | None = None
    element: str | None = None
    rate_limit_per_h: float | None = None
    sample_period_s: float = 1.0
    delay_s: float = 0.0
    noise_rel: float = 0.0
    detection_limit: float = 0.0

    @property
    def engineering_unit(self) -> EngineeringUnit | None:
        """The UNECE unit (None for MODE)."""
        return UNITS.get(self.unit)


_ISA_RE: Final = re.compile(r"^([A-Z]{1,4})-")


def is_controller(ins: InstrumentSpec, spec: PlantSpec) -> bool:
    """Whether an instrument is a controller (publishes SP and MODE): a ``flow_controller``, or a
    tag whose ISA letters after the first contain ``C`` measuring a manipulated variable."""
    if ins.kind == "flow_controller":
        return True
    m = _ISA_RE.match(ins.tag)
    letters = m.group(1) if m else ""
    manipulated = {mv.variable for mv in spec.manipulated}
    return "C" in letters[1:] and ins.variable is not None and ins.variable in manipulated


def _quantity(ins: InstrumentSpec) -> Quantity:
    if ins.kind in ("flow_controller", "flow"):
        if ins.variable is not None and not ins.variable.endswith("_l_per_h"):
            return Quantity.FRACTION
        return Quantity.FLOW
    if ins.kind == "acidity":
        if ins.variable is not None and not ins.variable.endswith("_mol_per_l"):
            return Quantity.FRACTION
        return Quantity.ACIDITY
    if ins.kind == "temperature":
        return Quantity.TEMPERATURE
    if ins.kind == "level":
        return Quantity.LEVEL
    return Quantity.CONCENTRATION


_ALLOWED_UNITS: Final[dict[Quantity, tuple[str, ...]]] = {
    Quantity.FLOW: ("L/h",),
    Quantity.FRACTION: ("1", "%"),
    Quantity.ACIDITY: ("mol/L",),
    Quantity.TEMPERATURE: ("degC",),
    Quantity.LEVEL: ("%", "1"),
    Quantity.CONCENTRATION: ("g/L", "mg/L", "mol/L"),
}


def _folder(ins: InstrumentSpec, spec: PlantSpec) -> tuple[str, ...]:
    if ins.circuit is not None and ins.stage is not None:
        c = spec.circuit(ins.circuit)
        j = ins.stage - 1
        if j < c.extraction_stages:
            section = "extraction"
        elif j < c.extraction_stages + c.scrub_stages:
            section = "scrub"
        else:
            section = "strip"
        return (ins.circuit, section)
    if ins.stream is not None:
        circuit, outlet = ins.stream.split(".", 1) if "." in ins.stream else (ins.stream, "")
        if outlet == "":
            return ("Streams", circuit)
        c = spec.circuit(circuit)
        if outlet == "raffinate":
            return (circuit, "extraction")
        if outlet == "strip_liquor":
            return (circuit, "strip")
        last = "strip" if c.strip_stages else ("scrub" if c.scrub_stages else "extraction")
        return (circuit, last)
    if ins.variable is not None:
        owner, field = ins.variable.split(".", 1)
        if owner in {c.name for c in spec.circuits}:
            return (owner, SECTION_OF_VARIABLE.get(field, "extraction"))
        return ("Streams", owner)
    if ins.circuit is not None:
        return (ins.circuit,)
    return ()


def plant_tags(spec: PlantSpec) -> tuple[TagInfo, ...]:
    """Every published variable of a spec, in spec order (instrument by instrument).

    Raises
    ------
    models.errors.SpecError
        An instrument whose unit is not allowed for its kind (the message names the field and
        the allowed units), or a transmitter without anything to measure.
    """
    bounds = {mv.variable: mv for mv in spec.manipulated}
    out: list[TagInfo] = []
    for i, ins in enumerate(spec.instruments):
        quantity = _quantity(ins)
        allowed = _ALLOWED_UNITS[quantity]
        if ins.unit not in allowed:
            raise SpecError(
                f"instruments[{i}].unit: {ins.unit!r} is not allowed for {ins.tag} ({ins.kind}); "
                f"allowed: {', '.join(allowed)}",
                field=f"instruments[{i}].unit",
            )
        if ins.kind in ("acidity", "temperature") and ins.variable is None and ins.stage is None:
            raise SpecError(
                f"instruments[{i}]: {ins.tag} ({ins.kind}) needs 'variable', or 'circuit' and 'stage'",
                field=f"instruments[{i}]",
            )
        folder = _folder(ins, spec)
        rng = (ins.range_min, ins.range_max)
        common = {
            "instrument": ins.tag,
            "kind": ins.kind,
            "folder": folder,
            "instrument_range": rng,
            "description": ins.description,
            "quantity": quantity,
            "sample_period_s": ins.sample_period_s,
            "delay_s": ins.delay_s,
            "noise_rel": ins.noise_rel,
            "detection_limit": ins.detection_limit,
        }
        if ins.kind == "analyser":
            for s in ins.elements:
                out.append(
                    TagInfo(
                        tag=f"{ins.tag}.{s}",
                        role=TagRole.ELEMENT,
                        unit=ins.unit,
                        eu_range=rng,
                        writable=False,
                        element=s,
                        **common,  # type: ignore[arg-type]
                    )
                )
            continue
        out.append(
            TagInfo(
                tag=f"{ins.tag}.PV",
                role=TagRole.PV,
                unit=ins.unit,
                eu_range=rng,
                writable=False,
                variable=ins.variable,
                **common,  # type: ignore[arg-type]
            )
        )
        if is_controller(ins, spec):
            assert ins.variable is not None  # a controller has a variable (checked by is_controller/spec)
            mv = bounds.get(ins.variable)
            lo, hi = rng
            if mv is not None:
                lo, hi = max(lo, mv.min), min(hi, mv.max)
                if lo >= hi:
                    raise SpecError(
                        f"instruments[{i}]: {ins.tag} range [{ins.range_min}, {ins.range_max}] does not overlap "
                        f"the bounds [{mv.min}, {mv.max}] of manipulated variable {mv.name!r}",
                        field=f"instruments[{i}].range_min",
                    )
            out.append(
                TagInfo(
                    tag=f"{ins.tag}.SP",
                    role=TagRole.SP,
                    unit=ins.unit,
                    eu_range=(lo, hi),
                    writable=True,
                    variable=ins.variable,
                    rate_limit_per_h=mv.max_rate_per_h if mv is not None else None,
                    **common,  # type: ignore[arg-type]
                )
            )
            out.append(
                TagInfo(
                    tag=f"{ins.tag}.MODE",
                    role=TagRole.MODE,
                    unit="",
                    eu_range=(0.0, 0.0),
                    writable=True,
                    variable=ins.variable,
                    **{**common, "quantity": Quantity.MODE},  # type: ignore[arg-type]
                )
            )
    return tuple(out)


def to_engineering_units(value: float, tag: TagInfo) -> float:
    """A value in internal units (mol/L, L/h, K, fraction) in the tag's engineering unit."""
    q = tag.quantity
    if q is Quantity.CONCENTRATION:
        if tag.unit == "mol/L":
            return value
        assert tag.element is not None
        g_per_l = value * element(tag.element).atomic_weight_g_per_mol
        return g_per_l * 1000.0 if tag.unit == "mg/L" else g_per_l
    if q is Quantity.TEMPERATURE:
        return kelvin_to_celsius(value)
    if tag.unit == "%" and q in (Quantity.FRACTION, Quantity.LEVEL):
        return 100.0 * value
    return value


def from_engineering_units(value: float, tag: TagInfo) -> float:
    """Inverse of :func:`to_engineering_units` (for setpoints written in engineering units)."""
    q = tag.quantity
    if q is Quantity.CONCENTRATION:
        if tag.unit == "mol/L":
            return value
        assert tag.element is not None
        g_per_l = value / 1000.0 if tag.unit == "mg/L" else value
        return g_per_l / element(tag.element).atomic_weight_g_per_mol
    if q is Quantity.TEMPERATURE:
        return value + 273.15
    if tag.unit == "%" and q in (Quantity.FRACTION, Quantity.LEVEL):
        return value / 100.0
    return value


def _fmt(x: float) -> str:
    return f"{x:g}"


def tags_markdown(spec: PlantSpec) -> str:
    """The tag list of a plant as Markdown (``docs/tags.md`` is this for tb_dy)."""
    tags = plant_tags(spec)
    lines = [
        f"# OPC UA tags of plant `{spec.plant.name}`",
        "",
        "<!-- generated by `sxtwin plant models/plants/tb_dy.toml --tags`; "
        "tests/opcua/test_tags.py fails when this file and the generator differ -->",
        "",
        f"{spec.plant.description}",
        "",
        "Namespace `urn:sxtwin:plant`; the tag is the string node id (`ns=<index of urn:sxtwin:plant>;s=<tag>`). "
        "Units are UNECE Rec. 20 codes in `EngineeringUnits`; `EURange` of a setpoint is its writable range. "
        "Conventions: [opcua.md](opcua.md).",
        "",
        f"{len(tags)} tags.",
        "",
        "| tag | browse path below Plant | kind | unit (UNECE) | EURange | access | rate limit | "
        "sample / delay | description |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in tags:
        eu = t.engineering_unit
        unit = f"{eu.display} ({eu.code})" if eu is not None else "-"
        rng = f"{_fmt(t.eu_range[0])} .. {_fmt(t.eu_range[1])}" if t.role is not TagRole.MODE else "AUTO, MAN"
        access = "read, write (operator+)" if t.writable else "read"
        rate = f"{_fmt(t.rate_limit_per_h)} {t.unit}/h" if t.rate_limit_per_h is not None else "-"
        if t.role in (TagRole.SP, TagRole.MODE):
            timing = "on change"
        elif t.kind == "analyser" or t.delay_s > 0:
            timing = f"{_fmt(t.sample_period_s)} s / {_fmt(t.delay_s)} s"
        else:
            timing = "each plant step"
        path = "/".join([*t.folder, t.instrument, t.tag.rsplit(".", 1)[1]])
        lines.append(
            f"| `{t.tag}` | {path} | {t.kind} {t.role.value} | {unit} | {rng} | {access} | {rate} | {timing} | "
            f"{t.description} |"
        )
    lines += [
        "",
        "Plant-wide variables (`Plant/`): `PlantTime` (DateTime, the plant clock stamped on every value), "
        "`PlantHours` (Double, h since the run epoch), `Speed` (Double, plant seconds per wall second), "
        "`Paused` (Boolean), `RunEpoch` (DateTime), `LagHours` (Double, how far the plant is behind "
        "wall time x speed), `Scenario` (String). Trainer only (`Plant/Trainer/`): `TrueState` (String, JSON) "
        "and the methods `LoadScenario`, `ClearScenario`, `Pause`, `SetSpeed`, `Reset`.",
        "",
    ]
    return "\n".join(lines)
