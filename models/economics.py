r"""Operating economics of a flowsheet: product value and reagent cost per hour, in CasADi.

For a plant state :math:`(z, p)` and a price scenario (:mod:`models.prices`), in USD/h:

- **product value** :math:`V = \sum_\mathrm{products}\sum_{i \in \mathrm{main}} F_i\,\mu_i\,c_i`
  with :math:`F_i` the metal flux of main element *i* in the product stream (mol/h),
  :math:`\mu_i` its oxide mass per mole of element (kg/mol) and :math:`c_i` the scenario price
  of that oxide (USD/kg). Only the main element(s) are valued, at the price of the grade the
  product specification guarantees (the optimiser holds purity at or above ``purity_min``);
  impurities carried along earn nothing. An intermediate cut (for example the Tb-rich raffinate
  of ``tb_dy``) is valued at its main oxide's price, i.e. as if its polishing were free.
- **reagent cost**, per circuit:

  * HCl for scrub and strip: :math:`(W c_W + S c_S)\,M_\mathrm{HCl}` at the ``HCl_100pct`` price
    (the feed's own acidity is bought upstream and not counted);
  * saponification base: :math:`G\,s\,C_\mathrm{HA}` mol/h of NaOH (or NH3), one per HA
    neutralised, at ``NaOH_100pct`` (``NH3``);
  * organic losses (entrainment and solubility in the aqueous outflows):
    :math:`\lambda\,Q_\mathrm{aq}` L/h of organic with :math:`\lambda` litres lost per m3 of
    aqueous leaving the circuit, its extractant (``C_HA M_ext``, kg/L) at the ``P507`` price and
    its diluent (volume fraction :math:`1 - C_\mathrm{HA} M_\mathrm{ext}/\rho_\mathrm{ext}`,
    density :math:`\rho_\mathrm{dil}`) at the ``kerosene`` price;
  * feed acidity adjustment, for a circuit fed with another circuit's liquor adjusted to
    ``feed_acidity_mol_per_l`` (:math:`a^*`): :math:`F\,(a_\mathrm{up} - a^*)` mol/h of NH3 at
    the ``NH3`` price when the liquor is stronger (the usual case: spent strip acid), or of HCl
    when it is weaker; :math:`a_\mathrm{up}` is the upstream outlet's acidity (a state), so the
    cost follows the upstream strip. The dosing volume is neglected (anhydrous NH3 or
    concentrated acid);
  * oxalic acid for precipitating every product: :math:`1.5\,F_\mathrm{RE}` mol/h
    (RE2(C2O4)3, stoichiometric) as the dihydrate.

Assumptions (each with its provenance in :meth:`Economics.assumptions`):

- organic loss 0.1 L per m3 of aqueous outflow (100 ppm v/v): **ESTIMATED** (rule: the order of
  the entrainment-plus-solubility losses of hydrometallurgical SX circuits, recalled and not
  sourced; no rare-earth plant figure was retrieved). Replace with the plant's make-up records.
- diluent density 0.80 kg/L: **ESTIMATED** (rule: aliphatic kerosene, recalled).
- oxalic acid 1.5 mol per mol RE: **DERIVED** (stoichiometry, chemistry_notes.md 4.3).
- oxalic acid price: **NOT_FOUND** in both shipped scenarios. The cost is then **excluded** from
  the total and a warning says so in every result (a zero cost would flatter a design; an
  invented price would be worse). Give ``oxalic_acid_usd_per_kg`` to include it; the result then
  marks that price as user-supplied (class SPEC).
- molar masses HCl 36.458, NaOH 39.997, NH3 17.031, H2C2O4·2H2O 126.065 g/mol: DERIVED from
  CIAAW 2021 atomic weights.
- every extractant is priced at the scenario's ``P507`` price (the only extractant quote; itself
  ESTIMATED), with a warning for systems whose extractant is not P507.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

import casadi as ca
import numpy as np
import numpy.typing as npt

from models.elements import element
from models.errors import InputError
from models.flowsheet import Flowsheet
from models.kpi import ProductKpis
from models.prices import PriceScenario, PriceStatus, load_scenario
from models.provenance import Provenance, ProvenanceClass
from models.stage import StageModel
from models.units import G_PER_KG, L_PER_M3

__all__ = [
    "EconomicAssumptions",
    "Economics",
    "EconomicsBreakdown",
    "NamedAssumption",
    "SaponificationBase",
    "exit_streams",
    "main_element_flux",
]

Array = npt.NDArray[np.float64]

HCL_G_PER_MOL = 36.458
NAOH_G_PER_MOL = 39.997
NH3_G_PER_MOL = 17.031
OXALIC_DIHYDRATE_G_PER_MOL = 126.065


class SaponificationBase(StrEnum):
    """The base bought for saponification (both neutralise one HA per mole)."""

    NAOH = "NaOH"
    NH3 = "NH3"


@dataclass(frozen=True)
class EconomicAssumptions:
    """Reagent-use assumptions of the operating economics (module docstring gives provenance).

    Attributes
    ----------
    saponification_base
        NaOH (priced as ``NaOH_100pct``) or NH3 (``NH3``).
    organic_loss_l_per_m3_aqueous
        Organic lost per m3 of aqueous leaving a circuit, L/m3 (ESTIMATED 0.1, i.e. 100 ppm v/v).
    diluent_density_kg_per_l
        Diluent (kerosene) density, kg/L (ESTIMATED 0.80).
    oxalic_acid_mol_per_mol_re
        Oxalic acid per mole of rare earth precipitated (stoichiometric 1.5).
    oxalic_acid_usd_per_kg
        Oxalic acid dihydrate price, USD/kg, supplied by the user; None uses the scenario's price
        and, the scenario having none (NOT_FOUND), excludes the cost with a warning.
    inventory_capital_rate_per_year
        Cost of the capital tied up in the rare earth held in the stages, per year (fraction of
        its value). ESTIMATED 0.10: the discount rate rare-earth project studies use (Bear Lodge
        NI 43-101 pre-feasibility study, 2014: NPV at 10 %); a plant uses its own rate.
    """

    saponification_base: SaponificationBase = SaponificationBase.NAOH
    organic_loss_l_per_m3_aqueous: float = 0.1
    diluent_density_kg_per_l: float = 0.80
    oxalic_acid_mol_per_mol_re: float = 1.5
    oxalic_acid_usd_per_kg: float | None = None
    inventory_capital_rate_per_year: float = 0.10

    def __post_init__(self) -> None:
        for name in (
            "organic_loss_l_per_m3_aqueous",
            "diluent_density_kg_per_l",
            "oxalic_acid_mol_per_mol_re",
            "inventory_capital_rate_per_year",
        ):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0.0):
                raise InputError(f"{name}: {v!r} is not allowed; expected a finite number >= 0", field=name)
        if self.oxalic_acid_usd_per_kg is not None and not (
            np.isfinite(self.oxalic_acid_usd_per_kg) and self.oxalic_acid_usd_per_kg >= 0.0
        ):
            raise InputError(
                f"oxalic_acid_usd_per_kg: {self.oxalic_acid_usd_per_kg!r} is not allowed; expected a number >= 0",
                field="oxalic_acid_usd_per_kg",
            )
        if not isinstance(self.saponification_base, SaponificationBase):
            try:
                object.__setattr__(self, "saponification_base", SaponificationBase(self.saponification_base))
            except ValueError:
                raise InputError(
                    f"saponification_base: {self.saponification_base!r} is not allowed; expected NaOH or NH3",
                    field="saponification_base",
                ) from None


@dataclass(frozen=True)
class NamedAssumption:
    """One number the economics use, with its unit and provenance."""

    name: str
    value: float | None
    unit: str
    provenance: Provenance

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "value": self.value, "unit": self.unit, **self.provenance.to_dict()}


@dataclass(frozen=True)
class EconomicsBreakdown:
    """Product value and reagent costs at one plant state, USD/h.

    Attributes
    ----------
    scenario
        Price scenario name.
    revenue_by_product
        Product name -> value of its main element(s), USD/h.
    cost_by_item
        Reagent item (``TbDy.HCl_scrub``, ``TbDy.NaOH_saponification``, ``oxalic_acid`` ...) -> USD/h.
    excluded
        Items left out of the total because they have no price (each named in ``warnings``).
    feed_reo_kg_per_h
        Rare-earth oxide entering with external feeds, kg/h.
    """

    scenario: str
    revenue_by_product: dict[str, float]
    cost_by_item: dict[str, float]
    excluded: tuple[str, ...]
    feed_reo_kg_per_h: float
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def revenue_usd_per_h(self) -> float:
        """Total product value, USD/h."""
        return float(sum(self.revenue_by_product.values()))

    @property
    def reagent_cost_usd_per_h(self) -> float:
        """Total priced reagent cost, USD/h."""
        return float(sum(self.cost_by_item.values()))

    @property
    def margin_usd_per_h(self) -> float:
        """Product value minus priced reagent cost, USD/h."""
        return self.revenue_usd_per_h - self.reagent_cost_usd_per_h

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "scenario": self.scenario,
            "margin_usd_per_h": self.margin_usd_per_h,
            "revenue_usd_per_h": self.revenue_usd_per_h,
            "reagent_cost_usd_per_h": self.reagent_cost_usd_per_h,
            "revenue_by_product_usd_per_h": self.revenue_by_product,
            "cost_by_item_usd_per_h": self.cost_by_item,
            "excluded_costs": list(self.excluded),
            "feed_reo_kg_per_h": self.feed_reo_kg_per_h,
        }


def exit_streams(flowsheet: Flowsheet) -> tuple[str, ...]:
    """Outlets that leave the plant (not fed to another circuit)."""
    fed = {c.feed for c in flowsheet.spec.circuits}
    return tuple(o.name for o in flowsheet.outlets if o.name not in fed)


def main_element_flux(
    flowsheet: Flowsheet, kpis: ProductKpis, z: ca.MX, p: ca.MX, stream: str, elements: tuple[str, ...]
) -> dict[str, ca.MX]:
    r"""Flux of each of ``elements`` in product ``stream``, mol/h, written as feed minus the other exits.

    At a steady state the plant balance makes :math:`F_\mathrm{product} = F_\mathrm{fed} -
    \sum_\mathrm{other\ exits} F`, so both forms have the same value; this one has small
    derivatives (the losses are small), so that an optimiser cannot buy product value with a
    slightly violated balance of the main element (the direct form's gradient is the whole product
    flux, thousands of USD/h per unit of ln x). A product stream that feeds another circuit is read
    directly.
    """
    exits = exit_streams(flowsheet)
    if stream not in exits:
        els, flux = kpis.outlet_flux(z, p, stream)
        return {s: flux[i] for i, s in enumerate(els) if s in elements}
    out: dict[str, ca.MX] = {s: kpis.feed_flux(p, s) for s in elements}
    for other in exits:
        if other == stream:
            continue
        els, flux = kpis.outlet_flux(z, p, other)
        for i, s in enumerate(els):
            if s in out:
                out[s] = out[s] - flux[i]
    return out


class Economics:
    """Product value and reagent cost of a flowsheet as CasADi expressions (module docstring).

    Parameters
    ----------
    flowsheet
        The plant.
    scenario
        A price scenario name (``china_domestic``, ``ex_china``) or a loaded scenario.
    assumptions
        Reagent-use assumptions.
    """

    def __init__(
        self,
        flowsheet: Flowsheet,
        scenario: str | PriceScenario = "china_domestic",
        assumptions: EconomicAssumptions | None = None,
    ) -> None:
        self.fs = flowsheet
        self.scenario = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.assumptions_in = assumptions or EconomicAssumptions()
        self.kpis = ProductKpis(flowsheet)
        warnings: list[str] = []
        excluded: list[str] = []
        a = self.assumptions_in
        # reagent prices (USD/kg); None when not priced
        self._hcl = self._price("HCl_100pct", warnings)
        base = "NaOH_100pct" if a.saponification_base is SaponificationBase.NAOH else "NH3"
        self._base = self._price(base, warnings)
        self._base_g_per_mol = NAOH_G_PER_MOL if a.saponification_base is SaponificationBase.NAOH else NH3_G_PER_MOL
        adjusted = any(c.feed_acidity_mol_per_l is not None for c in flowsheet.spec.circuits)
        self._nh3 = self._price("NH3", warnings) if adjusted else None
        self._extractant = self._price("P507", warnings)
        self._diluent = self._price("kerosene", warnings)
        if a.oxalic_acid_usd_per_kg is not None:
            self._oxalic: float | None = a.oxalic_acid_usd_per_kg
        else:
            self._oxalic = self._price("oxalic_acid", [])
            if self._oxalic is None and self.fs.spec.products:
                excluded.append("oxalic_acid")
                warnings.append(
                    f"oxalic acid has no price in scenario {self.scenario.name!r} (NOT_FOUND): its cost "
                    f"({a.oxalic_acid_mol_per_mol_re:g} mol per mol RE precipitated) is EXCLUDED from the reagent "
                    "cost and the margin; give oxalic_acid_usd_per_kg to include it"
                )
        for lay in flowsheet.circuits:
            name = lay.system.extractant.name.upper()
            if "P507" not in name and "PC88A" not in name and lay.spec.chemistry.inline is None:
                warnings.append(
                    f"{lay.name}: extractant {lay.system.extractant.name} priced at the scenario's P507 price "
                    "(no quote for it; ESTIMATED)"
                )
        for ps in flowsheet.spec.products:
            for s in ps.main_elements:
                sp = self.scenario.price(element(s).oxide)
                if sp.status is PriceStatus.NOT_FOUND:
                    warnings.append(
                        f"product {ps.name}: {element(s).oxide} has no price in scenario {self.scenario.name!r} "
                        f"(NOT_FOUND); valued at {sp.usd_per_kg or 0.0:g} USD/kg"
                    )
        self.warnings: tuple[str, ...] = tuple(dict.fromkeys(warnings))
        self.excluded: tuple[str, ...] = tuple(excluded)

    def _price(self, product: str, warnings: list[str]) -> float | None:
        sp = self.scenario.price(product)
        if sp.usd_per_kg is None:
            warnings.append(f"{product} has no price in scenario {self.scenario.name!r} (NOT_FOUND); cost excluded")
            return None
        return float(sp.usd_per_kg)

    # ------------------------------------------------------------------ symbolic
    @cached_property
    def item_names(self) -> tuple[str, ...]:
        """Names of the priced cost items, in the order of the ``costs`` output."""
        return tuple(
            name
            for name, _ in self._cost_terms(ca.MX.sym("z", self.fs.n_unknowns), ca.MX.sym("p", len(self.fs.parameters)))
        )

    def _cost_terms(self, z: ca.MX, p: ca.MX) -> list[tuple[str, ca.MX]]:
        fs = self.fs
        a = self.assumptions_in

        def P(name: str) -> ca.MX:
            return p[fs.parameters.index(name)]

        terms: list[tuple[str, ca.MX]] = []
        weights = fs.flows_function(p)[0]
        for lay in fs.circuits:
            c = lay.name
            if self._hcl is not None:
                kg = HCL_G_PER_MOL / G_PER_KG
                terms.append(
                    (f"{c}.HCl_scrub", P(f"{c}.scrub_flow_l_per_h") * P(f"{c}.scrub_acid_mol_per_l") * kg * self._hcl)
                )
                if lay.n_strip > 0:
                    terms.append(
                        (
                            f"{c}.HCl_strip",
                            P(f"{c}.strip_flow_l_per_h") * P(f"{c}.strip_acid_mol_per_l") * kg * self._hcl,
                        )
                    )
            if self._base is not None and "Na" in lay.elements:
                mol = P(f"{c}.organic_flow_l_per_h") * P(f"{c}.saponification") * P(f"{c}.extractant_mol_per_l")
                terms.append(
                    (
                        f"{c}.{a.saponification_base.value}_saponification",
                        mol * self._base_g_per_mol / G_PER_KG * self._base,
                    )
                )
            if lay.spec.feed_acidity_mol_per_l is not None:
                terms.extend(self._adjustment_terms(z, p, lay.index))
            # organic lost with the aqueous leaving this circuit (raffinate, strip liquor)
            aq_out = sum(
                (weights[o.weight] for o in fs.outlets if o.circuit == lay.index and o.phase == "aq"), ca.MX(0.0)
            )
            lost_l_per_h = a.organic_loss_l_per_m3_aqueous * aq_out / L_PER_M3
            ext = lay.system.extractant
            ext_kg_per_l = P(f"{c}.extractant_mol_per_l") * ext.molar_mass_g_per_mol / G_PER_KG
            dil_frac = 1.0 - ext_kg_per_l / ext.density_kg_per_l
            if self._extractant is not None:
                terms.append((f"{c}.extractant_loss", lost_l_per_h * ext_kg_per_l * self._extractant))
            if self._diluent is not None:
                terms.append(
                    (f"{c}.diluent_loss", lost_l_per_h * dil_frac * a.diluent_density_kg_per_l * self._diluent)
                )
        if self._oxalic is not None:
            re_mol: ca.MX = ca.MX(0.0)
            for ps in fs.spec.products:
                els, flux = self.kpis.outlet_flux(z, p, ps.stream)
                for i, s in enumerate(els):
                    if element(s).in_treo:
                        re_mol = re_mol + flux[i]
            oxalic_kg: ca.MX = re_mol * (a.oxalic_acid_mol_per_mol_re * OXALIC_DIHYDRATE_G_PER_MOL / G_PER_KG)
            terms.append(("oxalic_acid", oxalic_kg * self._oxalic))
        return terms

    def _adjustment_terms(self, z: ca.MX, p: ca.MX, circuit: int) -> list[tuple[str, ca.MX]]:
        """NH3 (or HCl) that brings circuit ``circuit``'s feed liquor to its set acidity, USD/h."""
        fs = self.fs
        lay = fs.circuits[circuit]
        link = next(lk for lk in fs.links if lk.target == circuit and not lk.carries_acid)
        src = fs.circuits[link.source]
        zk = z[src.offset + link.source_stage * src.nv : src.offset + (link.source_stage + 1) * src.nv]

        def P(name: str) -> ca.MX:
            return p[fs.parameters.index(name)]

        delta = ca.vertcat(*[P(f"{src.name}.ln_d_offset.{s}") for s in src.elements])
        _, acid, _ = StageModel(src).values(
            zk, P(f"{src.name}.extractant_mol_per_l"), P(f"{src.name}.temperature_k"), delta
        )
        excess = fs.flows_function(p)[0][link.weight] * (acid - P(f"{lay.name}.feed_acidity_mol_per_l"))
        terms = []
        if self._nh3 is not None:
            terms.append(
                (f"{lay.name}.NH3_feed_adjustment", ca.fmax(excess, 0.0) * NH3_G_PER_MOL / G_PER_KG * self._nh3)
            )
        if self._hcl is not None:
            terms.append(
                (f"{lay.name}.HCl_feed_adjustment", ca.fmax(-excess, 0.0) * HCL_G_PER_MOL / G_PER_KG * self._hcl)
            )
        return terms

    def _revenue_terms(self, z: ca.MX, p: ca.MX) -> list[tuple[str, ca.MX]]:
        out = []
        for ps in self.fs.spec.products:
            fluxes = main_element_flux(self.fs, self.kpis, z, p, ps.stream, ps.main_elements)
            value = ca.MX(0.0)
            for s, flux in fluxes.items():
                el = element(s)
                price = self.scenario.usd_per_kg(el.oxide) or 0.0
                value = value + flux * el.oxide_g_per_mol_element / G_PER_KG * price
            out.append((ps.name, value))
        return out

    def feed_reo_kg_per_h(self, p: ca.MX) -> ca.MX:
        """Rare-earth oxide entering with external feeds, kg/h (symbolic in ``p``)."""
        fs = self.fs
        total = ca.MX(0.0)
        for f in fs.spec.feeds:
            flow = p[fs.parameters.index(f"{f.name}.flow_l_per_h")]
            for s in f.concentrations_mol_per_l():
                el = element(s)
                if el.in_treo:
                    conc = p[fs.parameters.index(f"{f.name}.conc_mol_per_l.{s}")]
                    total = total + flow * conc * el.oxide_g_per_mol_element / G_PER_KG
        return total

    @cached_property
    def function(self) -> ca.Function:
        """``(z, p) -> (revenue, costs, margin, feed_reo)``: USD/h per product, USD/h per item, USD/h, kg/h."""
        z = ca.MX.sym("z", self.fs.n_unknowns)
        p = ca.MX.sym("p", len(self.fs.parameters))
        rev = self._revenue_terms(z, p)
        cost = self._cost_terms(z, p)
        rv = ca.vertcat(*[e for _, e in rev]) if rev else ca.MX(0, 1)
        cv = ca.vertcat(*[e for _, e in cost]) if cost else ca.MX(0, 1)
        margin = ca.sum1(rv) - ca.sum1(cv) if rev or cost else ca.MX(0.0)
        return ca.Function(
            "economics",
            [z, p],
            [rv, cv, margin, self.feed_reo_kg_per_h(p)],
            ["z", "p"],
            ["revenue", "costs", "margin", "feed_reo"],
        )

    def evaluate(self, z: Array, p: Array) -> EconomicsBreakdown:
        """The breakdown at a (solved) state."""
        rv, cv, _, feed = self.function(np.asarray(z, dtype=float), np.asarray(p, dtype=float))
        rev = np.asarray(rv, dtype=float).ravel()
        cost = np.asarray(cv, dtype=float).ravel()
        return EconomicsBreakdown(
            scenario=self.scenario.name,
            revenue_by_product={ps.name: float(rev[i]) for i, ps in enumerate(self.fs.spec.products)},
            cost_by_item={n: float(cost[i]) for i, n in enumerate(self.item_names)},
            excluded=self.excluded,
            feed_reo_kg_per_h=float(np.asarray(feed).ravel()[0]),
            warnings=self.warnings,
        )

    # ---------------------------------------------------------------- provenance
    def assumptions(self) -> tuple[NamedAssumption, ...]:
        """Every number the economics rest on besides the scenario prices, with provenance."""
        a = self.assumptions_in
        est = ProvenanceClass.ESTIMATED
        der = ProvenanceClass.DERIVED
        out = [
            NamedAssumption(
                "organic_loss_l_per_m3_aqueous",
                a.organic_loss_l_per_m3_aqueous,
                "L organic / m3 aqueous",
                Provenance(
                    "SHARED_NOTES",
                    "models/economics.py",
                    est,
                    "rule: order of entrainment + solubility losses in hydrometallurgical SX (100 ppm v/v), "
                    "recalled, not sourced; replace with plant make-up records",
                ),
            ),
            NamedAssumption(
                "diluent_density_kg_per_l",
                a.diluent_density_kg_per_l,
                "kg/L",
                Provenance("SHARED_NOTES", "models/economics.py", est, "rule: aliphatic kerosene, recalled"),
            ),
            NamedAssumption(
                "oxalic_acid_mol_per_mol_re",
                a.oxalic_acid_mol_per_mol_re,
                "mol/mol",
                Provenance("SHARED_NOTES", "chemistry_notes.md 4.3", der, "stoichiometric RE2(C2O4)3"),
            ),
            NamedAssumption(
                "inventory_capital_rate_per_year",
                a.inventory_capital_rate_per_year,
                "1/year",
                Provenance(
                    "BEARLODGE14",
                    "section 25.5, Table 25.2 (NPV at 10 % discount)",
                    est,
                    "rule: the discount rate of a rare-earth project study taken as the cost of the capital "
                    "held in the cascade inventory; replace with the plant's own rate",
                ),
            ),
            NamedAssumption(
                "molar masses HCl/NaOH/NH3/H2C2O4.2H2O",
                None,
                "36.458/39.997/17.031/126.065 g/mol",
                Provenance("CIAAW21", "standard atomic weights", der, "sums of atomic weights"),
            ),
        ]
        if a.oxalic_acid_usd_per_kg is not None:
            out.append(
                NamedAssumption(
                    "oxalic_acid_usd_per_kg",
                    a.oxalic_acid_usd_per_kg,
                    "USD/kg",
                    Provenance(
                        "SPEC",
                        "user-supplied",
                        ProvenanceClass.ESTIMATED,
                        "scenario has no oxalic acid quote (NOT_FOUND); value given by the user",
                    ),
                )
            )
        return tuple(out)

    def price_table(self) -> dict[str, float | None]:
        """The scenario prices used (USD/kg), by product."""
        used: dict[str, float | None] = {
            "HCl_100pct": self._hcl,
            (
                "NaOH_100pct" if self.assumptions_in.saponification_base is SaponificationBase.NAOH else "NH3"
            ): self._base,
            "P507": self._extractant,
            "kerosene": self._diluent,
            "oxalic_acid": self._oxalic,
        }
        for ps in self.fs.spec.products:
            for s in ps.main_elements:
                ox = element(s).oxide
                used[ox] = self.scenario.usd_per_kg(ox)
        return used
