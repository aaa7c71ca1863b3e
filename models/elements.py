"""Elements, their oxides, and REO-basis purity and recovery.

"All rare earths" in sxtwin are the fourteen lanthanides other than Pm (La-Lu) plus Y: fifteen
elements. Sc is optional (it behaves as an impurity in most circuits but counts towards TREO).
Al, Ca, Fe are impurities of leach liquors, Na is the counter-ion of saponification.

Atomic weights are the IUPAC/CIAAW 2021 abridged standard atomic weights (five significant
figures): Prohaska T. et al. (2022), "Standard atomic weights of the elements 2021 (IUPAC
Technical Report)", Pure Appl. Chem. 94(5), 573-600, doi:10.1515/pac-2019-0603, Table 2.
Class MEASURED. Oxides are the forms rare earths are traded in (Tb4O7, Pr6O11, CeO2; the others
RE2O3), as in the China spot price tables (SMM via Reuters, 9 Mar 2012).

Plants report compositions as % of TREO (total rare-earth oxides): the mass of each element's
oxide divided by the summed mass of all rare-earth oxides. Impurities and Na are not in TREO.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from models.errors import UnknownElementError

__all__ = [
    "ALL_ELEMENTS",
    "ELEMENTS",
    "HREE_DEFAULT",
    "RARE_EARTHS",
    "Element",
    "ElementKind",
    "composition_oxide_pct_to_mole_fractions",
    "element",
    "element_mass_kg_per_mol",
    "mole_fractions_to_oxide_pct",
    "oxide_mass_per_mol_element_g",
    "reo_mass_g",
    "reo_purity",
    "reo_recovery",
    "validate_symbols",
]

OXYGEN_G_PER_MOL: Final = 15.999


class ElementKind(StrEnum):
    """What role an element plays in a plant."""

    RARE_EARTH = "rare_earth"
    SCANDIUM = "scandium"
    IMPURITY = "impurity"
    COUNTER_ION = "counter_ion"


@dataclass(frozen=True)
class Element:
    """One element with its oxide.

    Attributes
    ----------
    symbol, name, z
        Chemical symbol, English name, atomic number.
    atomic_weight_g_per_mol
        Standard atomic weight (CIAAW 2021, abridged).
    charge
        Charge of the aqueous cation exchanged in cation-exchange extraction (RE3+ is 3).
    oxide
        Formula of the traded oxide, e.g. ``Tb4O7``.
    oxide_metal_atoms, oxide_oxygen_atoms
        Atoms per oxide formula unit, e.g. 4 and 7 for Tb4O7.
    kind
        Rare earth, scandium, impurity or counter-ion.
    """

    symbol: str
    name: str
    z: int
    atomic_weight_g_per_mol: float
    charge: int
    oxide: str
    oxide_metal_atoms: int
    oxide_oxygen_atoms: int
    kind: ElementKind

    @property
    def in_treo(self) -> bool:
        """True when the element's oxide counts towards TREO (rare earths and Sc)."""
        return self.kind in (ElementKind.RARE_EARTH, ElementKind.SCANDIUM)

    @property
    def oxide_g_per_mol_element(self) -> float:
        """Mass of oxide that holds one mole of the element, g/mol."""
        return self.atomic_weight_g_per_mol + OXYGEN_G_PER_MOL * self.oxide_oxygen_atoms / self.oxide_metal_atoms


_RE = ElementKind.RARE_EARTH
_TABLE: Final[tuple[Element, ...]] = (
    Element("La", "lanthanum", 57, 138.91, 3, "La2O3", 2, 3, _RE),
    Element("Ce", "cerium", 58, 140.12, 3, "CeO2", 1, 2, _RE),
    Element("Pr", "praseodymium", 59, 140.91, 3, "Pr6O11", 6, 11, _RE),
    Element("Nd", "neodymium", 60, 144.24, 3, "Nd2O3", 2, 3, _RE),
    Element("Sm", "samarium", 62, 150.36, 3, "Sm2O3", 2, 3, _RE),
    Element("Eu", "europium", 63, 151.96, 3, "Eu2O3", 2, 3, _RE),
    Element("Gd", "gadolinium", 64, 157.25, 3, "Gd2O3", 2, 3, _RE),
    Element("Tb", "terbium", 65, 158.93, 3, "Tb4O7", 4, 7, _RE),
    Element("Dy", "dysprosium", 66, 162.50, 3, "Dy2O3", 2, 3, _RE),
    Element("Ho", "holmium", 67, 164.93, 3, "Ho2O3", 2, 3, _RE),
    Element("Er", "erbium", 68, 167.26, 3, "Er2O3", 2, 3, _RE),
    Element("Tm", "thulium", 69, 168.93, 3, "Tm2O3", 2, 3, _RE),
    Element("Yb", "ytterbium", 70, 173.05, 3, "Yb2O3", 2, 3, _RE),
    Element("Lu", "lutetium", 71, 174.97, 3, "Lu2O3", 2, 3, _RE),
    Element("Y", "yttrium", 39, 88.906, 3, "Y2O3", 2, 3, _RE),
    Element("Sc", "scandium", 21, 44.956, 3, "Sc2O3", 2, 3, ElementKind.SCANDIUM),
    Element("Al", "aluminium", 13, 26.982, 3, "Al2O3", 2, 3, ElementKind.IMPURITY),
    Element("Ca", "calcium", 20, 40.078, 2, "CaO", 1, 1, ElementKind.IMPURITY),
    Element("Fe", "iron", 26, 55.845, 3, "Fe2O3", 2, 3, ElementKind.IMPURITY),
    Element("Na", "sodium", 11, 22.990, 1, "Na2O", 2, 1, ElementKind.COUNTER_ION),
)

ELEMENTS: Final[Mapping[str, Element]] = {e.symbol: e for e in _TABLE}
"""Every element sxtwin knows, by symbol."""

ALL_ELEMENTS: Final[tuple[str, ...]] = tuple(e.symbol for e in _TABLE)
RARE_EARTHS: Final[tuple[str, ...]] = tuple(e.symbol for e in _TABLE if e.kind is _RE)
"""The fifteen rare earths: La-Lu without Pm, plus Y, in order of atomic number (Y last)."""
HREE_DEFAULT: Final[tuple[str, ...]] = ("Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Y")


def element(symbol: str, *, field: str = "element") -> Element:
    """Look up an element by symbol; raise :class:`UnknownElementError` naming what is allowed."""
    try:
        return ELEMENTS[symbol]
    except KeyError:
        raise UnknownElementError(
            f"{field}: unknown element {symbol!r}; allowed: {', '.join(ALL_ELEMENTS)}",
            field=field,
        ) from None


def validate_symbols(symbols: Iterable[str], *, field: str = "elements") -> tuple[str, ...]:
    """Return the symbols as a tuple after checking each one is known and none repeats."""
    out = tuple(symbols)
    for i, s in enumerate(out):
        element(s, field=f"{field}[{i}]")
    dup = {s for s in out if out.count(s) > 1}
    if dup:
        raise UnknownElementError(f"{field}: repeated element(s) {sorted(dup)}", field=field)
    return out


def oxide_mass_per_mol_element_g(symbol: str) -> float:
    """Grams of traded oxide per mole of element (e.g. 186.50 g Dy2O3-basis per mol Dy)."""
    return element(symbol).oxide_g_per_mol_element


def element_mass_kg_per_mol(symbol: str) -> float:
    """Molar mass of the element in kg/mol."""
    return element(symbol).atomic_weight_g_per_mol / 1000.0


def reo_mass_g(moles: Mapping[str, float]) -> dict[str, float]:
    """Oxide mass (g) of each TREO element in a mapping of element moles; others dropped."""
    return {s: n * element(s).oxide_g_per_mol_element for s, n in moles.items() if element(s).in_treo}


def reo_purity(moles: Mapping[str, float], main: str | Iterable[str]) -> float:
    """Purity on REO basis: oxide mass of the main element(s) over TREO mass, 0-1.

    ``main`` is one symbol or several (for mixed products such as a Tb-Dy concentrate).
    Returns 0 when the stream holds no rare earth.
    """
    mains = {main} if isinstance(main, str) else set(main)
    for m in mains:
        element(m, field="main_element")
    masses = reo_mass_g(moles)
    total = sum(masses.values())
    if total <= 0.0:
        return 0.0
    return sum(masses.get(m, 0.0) for m in mains) / total


def reo_recovery(product_moles: Mapping[str, float], feed_moles: Mapping[str, float], main: str) -> float:
    """Recovery of ``main`` into a product: moles in product over moles fed, 0-1."""
    fed = feed_moles.get(main, 0.0)
    if fed <= 0.0:
        return 0.0
    return product_moles.get(main, 0.0) / fed


def composition_oxide_pct_to_mole_fractions(pct: Mapping[str, float]) -> dict[str, float]:
    """Convert a composition in % of TREO on oxide mass basis to element mole fractions.

    The percentages need not sum to 100 exactly (they are renormalised); all must be >= 0.
    """
    moles: dict[str, float] = {}
    for s, p in pct.items():
        el = element(s, field=f"composition.{s}")
        if not p >= 0.0:
            raise UnknownElementError(f"composition.{s}: {p!r} must be >= 0", field=f"composition.{s}")
        moles[s] = p / el.oxide_g_per_mol_element
    total = sum(moles.values())
    if total <= 0.0:
        raise UnknownElementError("composition: all fractions are zero", field="composition")
    return {s: n / total for s, n in moles.items()}


def mole_fractions_to_oxide_pct(fractions: Mapping[str, float]) -> dict[str, float]:
    """Element mole amounts (any scale) to % of TREO, oxide mass basis (TREO elements only)."""
    masses = reo_mass_g(fractions)
    total = sum(masses.values())
    if total <= 0.0:
        return {s: 0.0 for s in masses}
    return {s: 100.0 * m / total for s, m in masses.items()}
