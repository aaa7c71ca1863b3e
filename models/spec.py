"""Plant specs: the TOML description of a solvent-extraction flowsheet, validated on load.

The format is documented in ``docs/spec.md``. A spec names feeds, circuits (sections and stage
counts, stage volumes, chemistry, flows, acids, saponification, reflux, bleed), products with
their specs, manipulated variables with bounds, and the instruments the OPC UA layer exposes.
Units are part of every field name; conversion to internal units happens here, at the edge.

Validation happens at construction and every error names the field (``circuits[0].feed``), the
bad value and what is allowed (:class:`models.errors.SpecError`).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.chemistry import (
    ChemistrySystem,
    ElementParameters,
    Extractant,
    Family,
    Medium,
)
from models.elements import ELEMENTS, composition_oxide_pct_to_mole_fractions, element
from models.errors import SpecError, TwinError
from models.parameters import available_systems, load_system
from models.provenance import Provenance, ProvenanceClass
from models.units import celsius_to_kelvin, vol_pct_to_mol_per_l

__all__ = [
    "CIRCUIT_OUTLETS",
    "ChemistrySpec",
    "CircuitSpec",
    "FeedSpec",
    "InstrumentSpec",
    "ManipulatedSpec",
    "PlantSpec",
    "ProductSpec",
    "load_spec",
    "parse_spec",
]

CIRCUIT_OUTLETS = ("raffinate", "strip_liquor", "loaded_organic", "barren_organic")
"""Streams a circuit can produce: ``<circuit>.<outlet>``."""

PosFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
Purity = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InlineChemistry(_Model):
    """A chemistry system defined inside the spec (analytic checks, design studies).

    ``log10_d`` (constant D) or ``log10_beta`` (separation factors, relative to any reference)
    per element; provenance is class CONSTRUCTED, source SPEC.
    """

    family: Literal["constant_d", "separation_factor"]
    medium: Literal["chloride", "sulfate", "nitrate"] = "chloride"
    log10_d: dict[str, float] = Field(default_factory=dict)
    log10_beta: dict[str, float] = Field(default_factory=dict)
    protons_released: NonNegFloat = 0.0
    y_cap_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    log10_k_h: float | None = None
    note: str = ""

    @model_validator(mode="after")
    def _check(self) -> InlineChemistry:
        values = self.log10_d if self.family == "constant_d" else self.log10_beta
        key = "log10_d" if self.family == "constant_d" else "log10_beta"
        if not values:
            raise ValueError(f"{key} must give a value for every element of the plant")
        for s, v in values.items():
            if s not in ELEMENTS:
                raise ValueError(f"{key}.{s}: unknown element; allowed: {', '.join(ELEMENTS)}")
            if not math.isfinite(v):
                raise ValueError(f"{key}.{s}: {v} is not finite")
        return self

    def to_system(self, name: str) -> ChemistrySystem:
        """Build the :class:`ChemistrySystem` this inline definition describes."""
        prov = Provenance("SPEC", f"inline chemistry of {name}", ProvenanceClass.CONSTRUCTED, self.note)
        table = self.log10_d if self.family == "constant_d" else self.log10_beta
        elements = {
            s: ElementParameters(
                log10_k=v,
                ph_slope=0.0,
                extractant_order=0.0,
                protons_released=self.protons_released,
                dimers_per_ion=float(ELEMENTS[s].charge),
            )
            for s, v in table.items()
        }
        provenance = {f"log10_k.{s}": prov for s in table}
        return ChemistrySystem(
            key=f"inline:{name}",
            description=f"inline {self.family} chemistry of {name}",
            family=Family(self.family),
            medium=Medium(self.medium),
            extractant=Extractant("inline", 306.42, 0.95),
            elements=elements,
            y_cap_fraction=self.y_cap_fraction,
            log10_k_h=self.log10_k_h if self.log10_k_h is not None else -math.inf,
            provenance=provenance,
        )


class ChemistrySpec(_Model):
    """Chemistry of a circuit: a shipped system (or inline definition) and the extractant.

    Exactly one of ``extractant_mol_per_l`` (formal monomer) or ``extractant_vol_pct`` is given.
    """

    system: str | None = None
    inline: InlineChemistry | None = None
    extractant_mol_per_l: PosFloat | None = None
    extractant_vol_pct: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    temperature_c: Annotated[float, Field(ge=0.0, le=95.0)] = 25.0

    @model_validator(mode="after")
    def _check(self) -> ChemistrySpec:
        if (self.system is None) == (self.inline is None):
            raise ValueError("give exactly one of 'system' (a shipped key) or 'inline'")
        if self.system is not None and self.system not in available_systems():
            raise ValueError(f"system {self.system!r} is unknown; available: {', '.join(available_systems())}")
        if (self.extractant_mol_per_l is None) == (self.extractant_vol_pct is None):
            raise ValueError("give exactly one of 'extractant_mol_per_l' or 'extractant_vol_pct'")
        return self

    def build(self, name: str) -> ChemistrySystem:
        """The chemistry system."""
        if self.inline is not None:
            return self.inline.to_system(name)
        assert self.system is not None  # checked in _check
        return load_system(self.system)

    def extractant_concentration(self, system: ChemistrySystem) -> float:
        """Extractant, formal monomer mol/L."""
        if self.extractant_mol_per_l is not None:
            return self.extractant_mol_per_l
        assert self.extractant_vol_pct is not None
        return vol_pct_to_mol_per_l(
            self.extractant_vol_pct, system.extractant.molar_mass_g_per_mol, system.extractant.density_kg_per_l
        )

    @property
    def temperature_k(self) -> float:
        """Temperature, K."""
        return celsius_to_kelvin(self.temperature_c)


class FeedSpec(_Model):
    """An external feed stream.

    ``composition`` is in % of TREO on oxide basis (``oxide_pct_treo``), mole fractions, or mol/L
    per element (``mol_per_l``, then no total is given). Impurities (Al, Ca, Fe, Sc) and Na are
    given separately in mol/L. An organic feed is a loaded organic (its metals in mol/L of organic).
    """

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    phase: Literal["aqueous", "organic"] = "aqueous"
    flow_l_per_h: PosFloat
    acidity_mol_per_l: PosFloat = 0.01
    composition_basis: Literal["oxide_pct_treo", "mole_fraction", "mol_per_l"] = "oxide_pct_treo"
    composition: dict[str, NonNegFloat] = Field(default_factory=dict)
    basket: str | None = None
    total_reo_mol_per_l: PosFloat | None = None
    total_reo_g_per_l: PosFloat | None = None
    impurities_mol_per_l: dict[str, NonNegFloat] = Field(default_factory=dict)
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> FeedSpec:
        if (self.basket is None) == (not self.composition):
            raise ValueError("give exactly one of 'composition' or 'basket' (a shipped feed basket)")
        if self.basket is not None:
            from models.feeds import available_feeds

            if self.basket not in available_feeds():
                raise ValueError(f"basket {self.basket!r} is unknown; available: {', '.join(available_feeds())}")
            if self.composition_basis != "oxide_pct_treo":
                raise ValueError("a basket is given in % of TREO: leave composition_basis at 'oxide_pct_treo'")
        for s in list(self.composition) + list(self.impurities_mol_per_l):
            if s not in ELEMENTS:
                raise ValueError(f"composition: unknown element {s!r}; allowed: {', '.join(ELEMENTS)}")
        if self.composition_basis == "mol_per_l":
            if self.total_reo_mol_per_l is not None or self.total_reo_g_per_l is not None:
                raise ValueError("with composition_basis = 'mol_per_l' give no total")
        elif (self.total_reo_mol_per_l is None) == (self.total_reo_g_per_l is None):
            raise ValueError("give exactly one of 'total_reo_mol_per_l' or 'total_reo_g_per_l'")
        if self.composition and sum(self.composition.values()) <= 0.0:
            raise ValueError("composition: all values are zero")
        return self

    def oxide_pct_treo(self) -> dict[str, float]:
        """The composition in % of TREO (from the basket when one is named)."""
        if self.basket is not None:
            from models.feeds import load_feed

            return load_feed(self.basket).oxide_pct_treo()
        return dict(self.composition)

    def concentrations_mol_per_l(self) -> dict[str, float]:
        """Metal concentrations of the stream, mol/L (of its own phase)."""
        if self.composition_basis == "mol_per_l":
            out = dict(self.composition)
        else:
            if self.composition_basis == "oxide_pct_treo":
                frac = composition_oxide_pct_to_mole_fractions(self.oxide_pct_treo())
            else:
                tot = sum(self.composition.values())
                frac = {s: v / tot for s, v in self.composition.items()}
            if self.total_reo_mol_per_l is not None:
                total = self.total_reo_mol_per_l
            else:
                assert self.total_reo_g_per_l is not None
                g_per_mol = sum(frac[s] * element(s).oxide_g_per_mol_element for s in frac)
                total = self.total_reo_g_per_l / g_per_mol
            out = {s: f * total for s, f in frac.items()}
        for s, c in self.impurities_mol_per_l.items():
            out[s] = out.get(s, 0.0) + c
        return {s: c for s, c in out.items() if c > 0.0}


class CircuitSpec(_Model):
    """One separation circuit (a cut): extraction, scrub and strip sections of mixer-settlers.

    Stages are numbered along the organic path: extraction 1..n, scrub n+1..n+m, strip
    n+m+1..n+m+k. The aqueous feed enters at ``feed_stage`` (default n, the last extraction
    stage); an organic feed joins the organic entering the first scrub stage.

    ``feed_acidity_mol_per_l`` adjusts a feed taken from another circuit's aqueous outlet (a
    strip liquor, usually several mol/L of spent strip acid) to this free acidity before it enters:
    the excess is neutralised with NH3 (a weaker liquor is topped up with HCl), both costed by
    :mod:`models.economics`. None: the liquor enters as it leaves the upstream circuit.

    ``stage_efficiency`` (0.3 < E <= 1): the Murphree efficiency of every stage on the organic
    phase; the organic concentrations then become unknowns of each stage (docs/model.md,
    section 3). None (default): equilibrium stages. A plant's efficiency is fitted to its
    profiles, never measured directly: every result lists it as ESTIMATED in ``rests_on``.
    """

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    feed: str
    chemistry: ChemistrySpec
    extraction_stages: Annotated[int, Field(ge=1, le=500)]
    scrub_stages: Annotated[int, Field(ge=0, le=500)] = 0
    strip_stages: Annotated[int, Field(ge=0, le=500)] = 0
    feed_stage: Annotated[int, Field(ge=1)] | None = None
    mixer_volume_l: PosFloat
    settler_volume_l: PosFloat
    organic_flow_l_per_h: PosFloat
    saponification: Fraction = 0.0
    organic_bleed_fraction: Fraction = 0.0
    scrub_flow_l_per_h: NonNegFloat = 0.0
    scrub_acid_mol_per_l: NonNegFloat = 0.0
    reflux_fraction: Fraction = 0.0
    strip_flow_l_per_h: NonNegFloat = 0.0
    strip_acid_mol_per_l: NonNegFloat = 0.0
    feed_acidity_mol_per_l: PosFloat | None = None
    stage_efficiency: Annotated[float, Field(gt=0.3, le=1.0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> CircuitSpec:
        if self.feed_stage is not None and self.feed_stage > self.extraction_stages + self.scrub_stages:
            raise ValueError(
                f"feed_stage {self.feed_stage} is outside the cascade; allowed 1.."
                f"{self.extraction_stages + self.scrub_stages} (extraction + scrub stages)"
            )
        if self.scrub_stages > 0 and self.scrub_flow_l_per_h <= 0.0 and self.reflux_fraction <= 0.0:
            raise ValueError("a scrub section needs scrub_flow_l_per_h > 0 or reflux_fraction > 0")
        if self.strip_stages > 0 and (self.strip_flow_l_per_h <= 0.0 or self.strip_acid_mol_per_l <= 0.0):
            raise ValueError("a strip section needs strip_flow_l_per_h > 0 and strip_acid_mol_per_l > 0")
        if self.reflux_fraction > 0.0 and (self.strip_stages == 0 or self.scrub_stages == 0):
            raise ValueError("reflux_fraction > 0 needs both a scrub and a strip section")
        return self

    @property
    def n_stages(self) -> int:
        """Total stages."""
        return self.extraction_stages + self.scrub_stages + self.strip_stages

    @property
    def feed_stage_index(self) -> int:
        """0-based index of the aqueous feed stage."""
        return (self.feed_stage or self.extraction_stages) - 1

    def outlets(self) -> tuple[str, ...]:
        """The outlet streams this circuit produces."""
        out = ["raffinate"]
        if self.strip_stages > 0:
            out.append("strip_liquor")
        else:
            out.append("loaded_organic")
        return tuple(out)


class ProductSpec(_Model):
    """A product stream and its specification (purity on REO basis, recovery, both 0-1).

    ``main_element`` is one symbol (a single oxide such as Dy2O3) or a list (a group product
    such as an La-Nd concentrate): purity is then the group's oxide share of TREO and recovery
    the group's moles in the product over the group's moles fed.
    """

    name: str
    stream: str
    main_element: str | tuple[str, ...]
    purity_min: Purity | None = None
    recovery_min: Purity | None = None
    grade: str = ""

    @model_validator(mode="after")
    def _check(self) -> ProductSpec:
        for s in self.main_elements:
            if s not in ELEMENTS:
                raise ValueError(f"main_element: unknown element {s!r}; allowed: {', '.join(ELEMENTS)}")
        return self

    @property
    def main_elements(self) -> tuple[str, ...]:
        """The main element(s) as a tuple."""
        return (self.main_element,) if isinstance(self.main_element, str) else tuple(self.main_element)


class ManipulatedSpec(_Model):
    """A manipulated variable: ``variable`` is ``<circuit>.<field>`` or ``<feed>.flow_l_per_h``."""

    name: str
    variable: str
    min: float
    max: float
    max_rate_per_h: PosFloat | None = None

    @model_validator(mode="after")
    def _check(self) -> ManipulatedSpec:
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min >= self.max:
            raise ValueError(f"bounds [{self.min}, {self.max}] must be finite with min < max")
        return self


InstrumentKind = Literal["flow_controller", "flow", "acidity", "level", "temperature", "analyser"]


class InstrumentSpec(_Model):
    """An instrument the plant exposes (see docs/tags.md for naming).

    Flow controllers and transmitters measure a variable (``variable``: a manipulated-variable
    path); analysers measure element concentrations at a stage (``circuit``, ``stage`` 1-based
    along the organic path, ``phase``) or in a product ``stream``.
    """

    tag: str = Field(pattern=r"^[A-Z]{1,4}-\d{2,4}[A-Z]?$")
    kind: InstrumentKind
    description: str = ""
    variable: str | None = None
    circuit: str | None = None
    stage: Annotated[int, Field(ge=1)] | None = None
    phase: Literal["aqueous", "organic"] = "aqueous"
    stream: str | None = None
    elements: tuple[str, ...] = ()
    unit: str = ""
    range_min: float = 0.0
    range_max: float = 1.0
    sample_period_s: NonNegFloat = 1.0
    delay_s: NonNegFloat = 0.0
    noise_rel: NonNegFloat = 0.0
    detection_limit: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> InstrumentSpec:
        if self.range_min >= self.range_max:
            raise ValueError(f"range [{self.range_min}, {self.range_max}] must have min < max")
        if self.kind == "analyser":
            if not self.elements:
                raise ValueError("an analyser needs 'elements'")
            for s in self.elements:
                if s not in ELEMENTS:
                    raise ValueError(f"elements: unknown element {s!r}; allowed: {', '.join(ELEMENTS)}")
            if (self.stream is None) == (self.circuit is None or self.stage is None):
                raise ValueError("an analyser needs either 'stream', or 'circuit' and 'stage'")
        elif self.kind in ("flow_controller", "flow") and self.variable is None:
            raise ValueError(f"a {self.kind} needs 'variable'")
        return self


class PlantInfo(_Model):
    """Name and description."""

    name: str
    description: str = ""


class PlantSpec(_Model):
    """A whole plant: feeds, circuits, products, manipulated variables, instruments."""

    plant: PlantInfo
    feeds: tuple[FeedSpec, ...]
    circuits: tuple[CircuitSpec, ...]
    products: tuple[ProductSpec, ...] = ()
    manipulated: tuple[ManipulatedSpec, ...] = ()
    instruments: tuple[InstrumentSpec, ...] = ()

    @model_validator(mode="after")
    def _check_graph(self) -> PlantSpec:
        _check_unique("feeds", [f.name for f in self.feeds])
        _check_unique("circuits", [c.name for c in self.circuits])
        _check_unique("products", [p.name for p in self.products])
        _check_unique("instruments", [i.tag for i in self.instruments])
        if not self.circuits:
            raise ValueError("circuits: a plant needs at least one circuit")
        streams = self.stream_names()
        feeders: dict[str, str] = {}
        for i, c in enumerate(self.circuits):
            if c.feed not in streams:
                raise _SpecFieldError(
                    f"circuits[{i}].feed", f"stream {c.feed!r} does not exist; streams: {', '.join(sorted(streams))}"
                )
            adjustable = "." in c.feed and c.feed.split(".")[1] in ("raffinate", "strip_liquor")
            if c.feed_acidity_mol_per_l is not None and not adjustable:
                raise _SpecFieldError(
                    f"circuits[{i}].feed_acidity_mol_per_l",
                    f"{c.feed_acidity_mol_per_l!r} is not allowed for feed {c.feed!r}: only a feed taken from "
                    "another circuit's raffinate or strip liquor can be acidity-adjusted (set an external "
                    "feed's acidity_mol_per_l instead)",
                )
            if c.feed in feeders:
                raise _SpecFieldError(
                    f"circuits[{i}].feed", f"stream {c.feed!r} already feeds circuit {feeders[c.feed]!r}"
                )
            feeders[c.feed] = c.name
        # every circuit must trace back to an external feed ("a circuit fed by nothing")
        feed_names = {f.name for f in self.feeds}
        by_name = {c.name: c for c in self.circuits}
        for i, c in enumerate(self.circuits):
            seen: set[str] = set()
            cur = c
            while cur.feed not in feed_names:
                upstream = cur.feed.split(".")[0]
                if upstream in seen:
                    raise _SpecFieldError(
                        f"circuits[{i}].feed",
                        f"circuit {c.name!r} is fed by nothing: its feed chain loops back to "
                        f"{upstream!r} without an external feed",
                    )
                seen.add(upstream)
                cur = by_name[upstream]
        for i, p in enumerate(self.products):
            if p.stream not in streams:
                raise _SpecFieldError(
                    f"products[{i}].stream",
                    f"stream {p.stream!r} does not exist; streams: {', '.join(sorted(streams))}",
                )
        variables = self.variable_names()
        for i, m in enumerate(self.manipulated):
            if m.variable not in variables:
                raise _SpecFieldError(
                    f"manipulated[{i}].variable",
                    f"{m.variable!r} is not a manipulated variable; allowed: {', '.join(sorted(variables))}",
                )
        circuits = {c.name: c for c in self.circuits}
        for i, ins in enumerate(self.instruments):
            if ins.variable is not None and ins.variable not in variables:
                raise _SpecFieldError(f"instruments[{i}].variable", f"{ins.variable!r} is not a plant variable")
            if ins.circuit is not None:
                if ins.circuit not in circuits:
                    raise _SpecFieldError(f"instruments[{i}].circuit", f"unknown circuit {ins.circuit!r}")
                if ins.stage is not None and ins.stage > circuits[ins.circuit].n_stages:
                    raise _SpecFieldError(
                        f"instruments[{i}].stage",
                        f"stage {ins.stage} is outside circuit {ins.circuit!r} (1..{circuits[ins.circuit].n_stages})",
                    )
            if ins.stream is not None and ins.stream not in streams:
                raise _SpecFieldError(f"instruments[{i}].stream", f"stream {ins.stream!r} does not exist")
        return self

    def stream_names(self) -> set[str]:
        """Every stream name: external feeds and circuit outlets."""
        out = {f.name for f in self.feeds}
        for c in self.circuits:
            out |= {f"{c.name}.{o}" for o in c.outlets()}
        return out

    def variable_names(self) -> set[str]:
        """Paths of everything a manipulated variable or flow instrument may refer to."""
        out = set()
        for f in self.feeds:
            out |= {f"{f.name}.flow_l_per_h", f"{f.name}.acidity_mol_per_l"}
        for c in self.circuits:
            out |= {f"{c.name}.{v}" for v in CIRCUIT_VARIABLES}
            if c.feed_acidity_mol_per_l is not None:
                out.add(f"{c.name}.feed_acidity_mol_per_l")
        return out

    def circuit(self, name: str) -> CircuitSpec:
        """A circuit by name."""
        for c in self.circuits:
            if c.name == name:
                return c
        raise SpecError(f"unknown circuit {name!r}", field="circuit")

    def feed(self, name: str) -> FeedSpec:
        """A feed by name."""
        for f in self.feeds:
            if f.name == name:
                return f
        raise SpecError(f"unknown feed {name!r}", field="feed")


CIRCUIT_VARIABLES = (
    "organic_flow_l_per_h",
    "scrub_flow_l_per_h",
    "scrub_acid_mol_per_l",
    "strip_flow_l_per_h",
    "strip_acid_mol_per_l",
    "saponification",
    "reflux_fraction",
    "organic_bleed_fraction",
)
"""Circuit fields that may be manipulated (``<circuit>.<field>``)."""


class _SpecFieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _check_unique(what: str, names: list[str]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _SpecFieldError(what, f"repeated names {dup}")


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_spec(data: Mapping[str, Any], *, where: str = "spec") -> PlantSpec:
    """Validate a spec given as a mapping; raise :class:`SpecError` naming the field."""
    try:
        spec = PlantSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _format_loc(tuple(p for p in err["loc"] if p not in ("function-after",)))
        msg = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        inner = msg.split(": ", 1)
        if inner[0].startswith(("circuits[", "products[", "manipulated[", "instruments[", "feeds")) and len(inner) == 2:
            field, msg = inner[0], inner[1]
        shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
        raise SpecError(f"{where}: {field or 'spec'}: {msg}{shown}", field=field or None) from None
    except TwinError as exc:
        raise SpecError(f"{where}: {exc.message}", field=exc.field) from None
    # element symbols in compositions with a chemistry lacking them are checked when building
    return spec


def load_spec(path: str | Path) -> PlantSpec:
    """Read and validate a TOML plant spec."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{p}: cannot read spec: {exc.strerror}", field="path") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{p}: malformed TOML: {exc}", field="toml") from None
    return parse_spec(data, where=str(p))
