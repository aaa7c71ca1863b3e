r"""Distribution equilibria of metal ions between an aqueous and an organic phase.

A *chemistry system* (:class:`ChemistrySystem`) is an immutable parameter set for one extractant
in one aqueous medium, in one of four families. Each family gives the distribution ratio
:math:`D_i = y_i / x_i` (organic over aqueous molarity) as a CasADi expression of the stage state
(aqueous concentrations :math:`x`, free aqueous acidity :math:`h`, free extractant dimer
:math:`f`, temperature :math:`T`), so that the same code serves a batch equilibrium, a cascade
residual and the optimiser. All expressions are written in natural logarithms of the state for
conditioning (concentrations span ten decades near a 99.99 % product).

Families
--------
``MASS_ACTION`` (cation exchange with acidic organophosphorus extractants, Peppard form;
T21 Eqs. 3-5 with the Alstad effective-concentration term)

.. math::

    \log_{10} D_i = a_i + d_i\,(1/T - 1/T_0) - b_i \log_{10}(\gamma_H h)
        + n_i\,[\log_{10}(f/C_\mathrm{ref}) - A(\sqrt f - \sqrt{C_\mathrm{ref}})]
        - \log_{10}(1 + \beta_\mathrm{Cl} [\mathrm{Cl^-}]) + \log_{10}\gamma_{M^{3+}}

with the extractant balance :math:`f + \sum_i s_i y_i = C_\mathrm{HA}/2` (free dimer falls as the
organic loads; :math:`s_i` dimers per ion, 3 for RE3+, so capacity is :math:`C_\mathrm{HA}/6`),
:math:`b_i` the pH slope (nominally the charge :math:`z_i`), :math:`n_i` the apparent order in
free dimer (fitted, nominally 3) and :math:`\gamma_H` the activity coefficient of HCl at the
stage's ionic strength (1 outside chloride media). :math:`\gamma_{M^{3+}}` is the activity
coefficient of the trivalent cation in chloride by the specific ion interaction theory
(:class:`CationActivity`; 1 when the system does not carry it): the aqueous RE3+ activity falls
steeply with ionic strength, which is the concentration effect of batch data. Saponification is
the counter-ion Na+ (or NH4+) as one more exchanged cation (:math:`z = 1`, one dimer per ion): a saponified organic
carries Na in its organic phase and releases it against RE3+, so the apparent pH slope of RE
extraction from a saponified organic is far below 3.

``EMPIRICAL`` (log-linear correlation in pH and dosage, D2EHPA in sulfate leach liquors; PrOMMiS
reaction package after the UKy Phase 1 report)

.. math::

    \log_{10} D_i = (m_{0,i} + m_{1,i}\,\mathrm{dosage})\,\mathrm{pH} + B_{0,i}
        + B_{1,i}\log_{10}(\mathrm{dosage})

dosage in vol %; species with a constant D (Al, Ca, Fe, Sc) use :math:`\log_{10} D_i` directly.
Sulfate media carry :math:`\mathrm{HSO_4^- \rightleftharpoons H^+ + SO_4^{2-}}`
(:math:`K_{a2} = 10^{-1.99}` mol/L): the proton balance counts free H+ plus bisulfate.

``SEPARATION_FACTOR`` (constant separation factors with competitive loading of a near-saturated
organic, the design basis of countercurrent extraction theory, Xu Guangxian)

.. math::

    y_i = Y_\mathrm{cap}\,\frac{\beta_i x_i}{K_h h^3 + \sum_j \beta_j x_j}

so that the organic saturates at :math:`Y_\mathrm{cap}` with a composition weighted by
:math:`\beta`, and strong acid (large :math:`K_h h^3`) strips it.

``CONSTANT_D``: :math:`D_i` constant (analytic checks such as Kremser, trace impurities).

Aqueous electroneutrality gives the anion: :math:`[\mathrm{Cl^-}] = h + \sum_i z_i x_i` in
chloride; in sulfate :math:`h + \sum_i z_i x_i = S(h + 2K_{a2})/(h + K_{a2})`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import casadi as ca

from models.elements import element
from models.errors import ParameterError
from models.provenance import Provenance, RestsOn, rests_on
from models.units import REFERENCE_TEMPERATURE_K

__all__ = [
    "SULFATE_KA2_MOL_PER_L",
    "ActivityModel",
    "CationActivity",
    "ChemistrySystem",
    "ElementParameters",
    "Extractant",
    "Family",
    "Medium",
    "acidity_total",
    "anion_concentration",
    "extractant_capacity_mol_per_l",
    "ionic_strength",
    "ln_distribution",
]

LN10 = math.log(10.0)

SULFATE_KA2_MOL_PER_L = 10.0**-1.99
"""Second dissociation constant of sulfuric acid, HSO4- = H+ + SO4^2-, mol/L (25 degC, as used
for D2EHPA sulfate leach liquors in ../shared/data/README.md; Ka2 = 10^-1.99, MEASURED)."""


class Family(StrEnum):
    """Equilibrium family of a chemistry system (see module docstring)."""

    MASS_ACTION = "mass_action"
    EMPIRICAL = "empirical"
    SEPARATION_FACTOR = "separation_factor"
    CONSTANT_D = "constant_d"


class Medium(StrEnum):
    """Aqueous medium: decides the anion and the acidity function."""

    CHLORIDE = "chloride"
    SULFATE = "sulfate"
    NITRATE = "nitrate"


@dataclass(frozen=True)
class ActivityModel:
    r"""Mean activity coefficient of the acid, for activity-corrected acidity.

    :math:`\log_{10}\gamma = -A\sqrt I/(1 + B\sqrt I) + \sum_k c_k I^k`, with :math:`I` the
    ionic strength in mol/L (used in place of the molality of the source correlation). All
    coefficients zero switches the correction off.

    Attributes
    ----------
    a, b
        Debye-Hückel coefficients, (kg/mol)^0.5.
    poly
        Coefficients :math:`c_1, c_2, ...` of :math:`I, I^2, ...`.
    valid_ionic_strength_mol_per_l
        Upper end of the data the coefficients were fitted to.
    """

    a: float = 0.0
    b: float = 0.0
    poly: tuple[float, ...] = ()
    valid_ionic_strength_mol_per_l: float = math.inf

    @property
    def active(self) -> bool:
        """True when the correction is switched on."""
        return self.a != 0.0 or any(c != 0.0 for c in self.poly)

    def ln_gamma(self, ionic_strength: Any) -> Any:
        """Natural log of the activity coefficient (CasADi or float)."""
        if not self.active:
            return 0.0 * ionic_strength
        s = ca.sqrt(ionic_strength)
        log10_g = -self.a * s / (1.0 + self.b * s)
        for k, c in enumerate(self.poly, start=1):
            log10_g = log10_g + c * ionic_strength**k
        return LN10 * log10_g


@dataclass(frozen=True)
class CationActivity:
    r"""Activity coefficient of a trivalent cation in chloride media, specific ion interaction theory.

    :math:`\log_{10}\gamma = -z^2 A\sqrt I/(1 + B\sqrt I) + \varepsilon\,[\mathrm{Cl^-}]` with
    :math:`z = 3` (SIT; Grenthe, Plyasunov & Spahiu 1997, source key ``NEA_SIT``), :math:`I` the
    ionic strength and :math:`[\mathrm{Cl^-}]` in mol/L (used in place of the molalities of the
    theory). Applied to trivalent ions only (RE3+, Y3+); other ions (Na+) keep unit activity.
    ``a = 0`` and ``epsilon_kg_per_mol = 0`` (the default) switch it off.

    Attributes
    ----------
    a, b
        Debye-Hückel coefficients of SIT, (kg/mol)^0.5 (0.509 and 1.5 at 25 degC).
    epsilon_kg_per_mol
        Ion interaction coefficient of M3+ with Cl-.
    """

    a: float = 0.0
    b: float = 1.5
    epsilon_kg_per_mol: float = 0.0

    @property
    def active(self) -> bool:
        """True when the correction is switched on."""
        return self.a != 0.0 or self.epsilon_kg_per_mol != 0.0

    def ln_gamma(self, ionic_strength: Any, chloride: Any) -> Any:
        """Natural log of the activity coefficient of a trivalent cation (CasADi or float)."""
        s = ca.sqrt(ionic_strength)
        log10_g = -9.0 * self.a * s / (1.0 + self.b * s) + self.epsilon_kg_per_mol * chloride
        return LN10 * log10_g


@dataclass(frozen=True)
class Extractant:
    """The extractant of a system.

    Attributes
    ----------
    name
        e.g. ``P507 (HEH/EHP, PC88A)``.
    molar_mass_g_per_mol
        Of the monomer HA.
    density_kg_per_l
        Of the pure extractant (for vol % conversions).
    """

    name: str
    molar_mass_g_per_mol: float
    density_kg_per_l: float


@dataclass(frozen=True)
class ElementParameters:
    """Per-element parameters; which fields are used depends on the family.

    Attributes
    ----------
    log10_k
        MASS_ACTION: ``a`` (log10 D at pH 0 and C_ref); SEPARATION_FACTOR: log10 beta relative to
        the system's reference element; CONSTANT_D and EMPIRICAL constant species: log10 D;
        EMPIRICAL correlations: ``B0``.
    ph_slope
        MASS_ACTION: ``b`` (nominally the charge); EMPIRICAL: ``m0``.
    extractant_order
        MASS_ACTION: ``n``; EMPIRICAL: ``m1`` (per vol %).
    dosage_coefficient
        EMPIRICAL: ``B1`` (per log10 vol %).
    temperature_coefficient_k
        MASS_ACTION: ``d`` in K (0 when unknown: the model is then isothermal).
    dimers_per_ion
        MASS_ACTION: extractant dimers held by one extracted ion (3 for RE3+).
    protons_released
        Protons released to the aqueous phase per ion extracted (the charge for cation exchange).
    constant
        EMPIRICAL: True for a constant-D species (uses ``log10_k`` as log10 D).
    """

    log10_k: float
    ph_slope: float = 3.0
    extractant_order: float = 3.0
    dosage_coefficient: float = 0.0
    temperature_coefficient_k: float = 0.0
    dimers_per_ion: float = 3.0
    protons_released: float = 3.0
    constant: bool = False


@dataclass(frozen=True)
class ChemistrySystem:
    """An immutable parameter set for one extractant in one medium.

    Attributes
    ----------
    key
        Short name used in specs and on the command line (``P507-HCl``).
    description
        One sentence.
    family, medium
        See :class:`Family`, :class:`Medium`.
    extractant
        Extractant properties.
    elements
        Per-element parameters by symbol.
    c_ref_dimer_mol_per_l
        MASS_ACTION reference free-dimer concentration (0.5 M dimer = 1 M formal).
    alstad_a
        MASS_ACTION Alstad coefficient A in (L/mol)^0.5 (0 for the plain power law).
    log10_beta_cl
        MASS_ACTION chloro-complexation constant, log10 of L/mol (``-inf`` to switch off).
    activity
        Activity correction of the acid (chloride only).
    cation_activity
        MASS_ACTION in chloride: activity coefficient of the trivalent ions (off by default).
    y_cap_fraction
        SEPARATION_FACTOR: saturation loading as a fraction of C_HA/6.
    log10_k_h
        SEPARATION_FACTOR: log10 of K_h in (mol/L)^-2 (stripping strength of acid).
    valid_ph
        (low, high) pH range the parameters were fitted in; outside it results are flagged.
    provenance
        Provenance of every value, keyed ``"<field>"`` or ``"<field>.<element>"``.
    """

    key: str
    description: str
    family: Family
    medium: Medium
    extractant: Extractant
    elements: Mapping[str, ElementParameters]
    c_ref_dimer_mol_per_l: float = 0.5
    alstad_a: float = 0.0
    log10_beta_cl: float = -math.inf
    activity: ActivityModel = field(default_factory=ActivityModel)
    cation_activity: CationActivity = field(default_factory=CationActivity)
    y_cap_fraction: float = 0.9
    log10_k_h: float = -math.inf
    valid_ph: tuple[float, float] = (-math.inf, math.inf)
    provenance: Mapping[str, Provenance] = field(default_factory=dict)

    def parameters_for(self, symbol: str, *, field: str = "element") -> ElementParameters:
        """Parameters of one element, or :class:`ParameterError` naming those that exist."""
        element(symbol, field=field)
        try:
            return self.elements[symbol]
        except KeyError:
            raise ParameterError(
                f"{field}: {symbol!r} has no parameters in system {self.key!r}; "
                f"elements with parameters: {', '.join(self.elements)}",
                field=field,
            ) from None

    def check_elements(self, symbols: Sequence[str], *, field: str = "elements") -> None:
        """Raise :class:`ParameterError` if any symbol lacks parameters in this system."""
        for i, s in enumerate(symbols):
            self.parameters_for(s, field=f"{field}[{i}]")

    def rests_on(self, symbols: Sequence[str]) -> tuple[RestsOn, ...]:
        """The non-measured values this system uses for ``symbols`` (shared ones included)."""
        used = []
        for name, prov in self.provenance.items():
            _, _, tail = name.partition(".")
            if not tail or tail in symbols:
                used.append((f"{self.key}:{name}", prov))
        return rests_on(used)

    @property
    def needs_extractant_balance(self) -> bool:
        """True for families whose D depends on free extractant (a stage unknown)."""
        return self.family is Family.MASS_ACTION

    def proton_release(self, symbols: Sequence[str]) -> list[float]:
        """Protons released per ion extracted, per element."""
        return [self.parameters_for(s).protons_released for s in symbols]

    def dimers_per_ion(self, symbols: Sequence[str]) -> list[float]:
        """Extractant dimers held per extracted ion, per element."""
        return [self.parameters_for(s).dimers_per_ion for s in symbols]

    def with_elements(self, updates: Mapping[str, ElementParameters], **changes: Any) -> ChemistrySystem:
        """A copy with some element parameters (and optionally shared fields) replaced."""
        merged = dict(self.elements)
        merged.update(updates)
        from dataclasses import replace

        return replace(self, elements=merged, **changes)


def _switched_on(log10_constant: Any) -> bool:
    """True when an optional log10 constant is in use: a finite number, or a symbolic CasADi
    value (``models.calibration`` fits it; ``float()`` of a CasADi symbol is NaN)."""
    if isinstance(log10_constant, (ca.SX, ca.MX)):
        return True
    return math.isfinite(log10_constant)


def extractant_capacity_mol_per_l(c_extractant_mol_per_l: float, dimers_per_ion: float = 3.0) -> float:
    """Loading capacity for a trivalent ion: C_HA / (2 * dimers per ion), i.e. C_HA/6."""
    return c_extractant_mol_per_l / (2.0 * dimers_per_ion)


def ionic_strength(h: Any, x: Sequence[Any] | Any, charges: Sequence[float]) -> Any:
    r"""Ionic strength of a chloride-type aqueous phase, mol/L.

    With the anion from electroneutrality, :math:`I = h + \sum_i z_i(z_i+1)/2\,x_i`.
    """
    total = h
    for i, z in enumerate(charges):
        total = total + 0.5 * z * (z + 1.0) * x[i]
    return total


def anion_concentration(medium: Medium, h: Any, x: Sequence[Any] | Any, charges: Sequence[float]) -> Any:
    """Total anion (Cl-, NO3- or total sulfate) from electroneutrality, mol/L."""
    cation_charge = h
    for i, z in enumerate(charges):
        cation_charge = cation_charge + z * x[i]
    if medium is Medium.SULFATE:
        k = SULFATE_KA2_MOL_PER_L
        return cation_charge * (h + k) / (h + 2.0 * k)
    return cation_charge


def acidity_total(medium: Medium, h: Any, x: Sequence[Any] | Any, charges: Sequence[float]) -> Any:
    """Titratable acidity conserved by the proton balance: free H+ (+ HSO4- in sulfate), mol/L."""
    if medium is Medium.SULFATE:
        k = SULFATE_KA2_MOL_PER_L
        s = anion_concentration(medium, h, x, charges)
        return h + s * h / (h + k)
    return h


def ln_distribution(
    system: ChemistrySystem,
    symbols: Sequence[str],
    ln_x: Any,
    ln_h: Any,
    ln_f: Any,
    temperature_k: Any,
    extractant_mol_per_l: Any,
) -> Any:
    """Natural log of the distribution ratio of every element, as a CasADi column.

    Parameters
    ----------
    system
        The chemistry system.
    symbols
        Element order of ``ln_x`` and of the result.
    ln_x
        ln of aqueous concentrations, mol/L (column, CasADi SX/MX/DM).
    ln_h
        ln of free aqueous H+, mol/L.
    ln_f
        ln of free extractant dimer, mol/L (ignored unless MASS_ACTION).
    temperature_k
        Temperature, K.
    extractant_mol_per_l
        Total extractant, formal monomer mol/L (EMPIRICAL converts it to vol %).
    """
    system.check_elements(symbols)
    params = [system.elements[s] for s in symbols]
    charges = [float(element(s).charge) for s in symbols]
    x = ca.exp(ln_x)
    h = ca.exp(ln_h)
    out = []
    if system.family is Family.MASS_ACTION:
        f = ca.exp(ln_f)
        c_ref = system.c_ref_dimer_mol_per_l
        extr = ln_f / LN10 - math.log10(c_ref) - system.alstad_a * (ca.sqrt(f) - math.sqrt(c_ref))
        chloride = system.medium is Medium.CHLORIDE
        xs = [x[i] for i in range(len(symbols))]
        ln_gh = ln_h
        if system.activity.active and chloride:
            ln_gh = ln_h + system.activity.ln_gamma(ionic_strength(h, xs, charges))
        cl_term = 0.0
        if _switched_on(system.log10_beta_cl) and chloride:
            cl = anion_concentration(system.medium, h, xs, charges)
            cl_term = ca.log(1.0 + 10.0**system.log10_beta_cl * cl)
        ln_g3 = 0.0
        if system.cation_activity.active and chloride:
            ln_g3 = system.cation_activity.ln_gamma(
                ionic_strength(h, xs, charges), anion_concentration(system.medium, h, xs, charges)
            )
        inv_t = 1.0 / temperature_k - 1.0 / REFERENCE_TEMPERATURE_K
        for p, z in zip(params, charges, strict=True):
            log10_d = p.log10_k + p.temperature_coefficient_k * inv_t + p.extractant_order * extr
            ln_gm = ln_g3 if z == 3.0 else 0.0
            out.append(LN10 * log10_d - p.ph_slope * ln_gh - cl_term + ln_gm)
    elif system.family is Family.EMPIRICAL:
        dosage = (
            extractant_mol_per_l * system.extractant.molar_mass_g_per_mol / (10.0 * system.extractant.density_kg_per_l)
        )
        ph = -ln_h / LN10
        for p in params:
            if p.constant:
                out.append(LN10 * p.log10_k + 0.0 * ln_h)
            else:
                log10_d = (
                    (p.ph_slope + p.extractant_order * dosage) * ph
                    + p.log10_k
                    + p.dosage_coefficient * ca.log10(dosage)
                )
                out.append(LN10 * log10_d)
    elif system.family is Family.SEPARATION_FACTOR:
        y_cap = system.y_cap_fraction * extractant_mol_per_l / 6.0
        denom = 10.0**system.log10_k_h * h**3 if math.isfinite(system.log10_k_h) else 0.0
        for i, p in enumerate(params):
            denom = denom + 10.0**p.log10_k * x[i]
        ln_denom = ca.log(denom)
        for p in params:
            out.append(LN10 * p.log10_k + ca.log(y_cap) - ln_denom)
    elif system.family is Family.CONSTANT_D:
        for p in params:
            out.append(LN10 * p.log10_k + 0.0 * ln_h)
    else:  # pragma: no cover - Enum is closed
        raise ParameterError(f"unknown family {system.family!r}")
    return ca.vertcat(*out)
