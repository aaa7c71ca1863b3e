"""Feed baskets: element-level compositions of plant feeds, each value with provenance.

Data files (see docs/data.md):

- ``models/data/feeds.toml``: the catalogue (name and description of each feed);
- ``models/data/feeds.csv``: one value per row, ``feed,element,value,basis,class,source,locus,
  note``. ``basis`` is ``pct_treo_oxide`` (% of TREO, oxide mass basis), ``element_mass_fraction``
  (mass fraction of the element, converted here to the oxide basis) or ``pct_concentrate_oxide``
  (% of a concentrate that holds more than rare earths; such a feed is incomplete);
- ``models/data/feed_aggregates.csv``: published aggregates (group shares) a basket is compared
  with, with the members of each group, the basis (``basket``, ``in_situ`` or ``shape``), the
  tolerance the basket claims and whether it is claimed at all.

The ``makuutu_like`` basket is CONSTRUCTED: the element split of the Makuutu deposit is not
public, so the basket is built to match the DISCLOSED Makuutu aggregates (docs/data.md gives the
construction step by step and ``tests/models/test_feeds.py`` checks it).

Conversions (:meth:`Feed.oxide_pct_treo`, :meth:`Feed.mole_fractions`) use the CIAAW 2021 atomic
weights and traded oxides of :mod:`models.elements`; TREO includes Sc when a basket lists it.
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Final

from models.elements import ELEMENTS, composition_oxide_pct_to_mole_fractions, element
from models.errors import DataFileError, InputError, bad_value
from models.provenance import Provenance, RestsOn, rests_on

__all__ = [
    "Feed",
    "FeedAggregate",
    "FeedBasis",
    "FeedValue",
    "aggregate_pct",
    "available_feeds",
    "in_situ_pct",
    "load_aggregates",
    "load_feed",
    "parse_feeds_csv",
]

FEED_COLUMNS: Final = ("feed", "element", "value", "basis", "class", "source", "locus", "note")
AGGREGATE_COLUMNS: Final = (
    "feed", "aggregate", "members", "value_pct", "basis", "tolerance_pct", "claimed", "class",
    "source", "locus", "note",
)
COMPLETE_TOLERANCE_PCT: Final = 1.0
"""A basket is complete when its values sum to 100 % of TREO (or 1) within this many points."""


class FeedBasis(StrEnum):
    """What a feed value is a share of."""

    PCT_TREO_OXIDE = "pct_treo_oxide"
    ELEMENT_MASS_FRACTION = "element_mass_fraction"
    PCT_CONCENTRATE_OXIDE = "pct_concentrate_oxide"


@dataclass(frozen=True)
class FeedValue:
    """One element's share in a feed, as published.

    Attributes
    ----------
    element
        Element symbol.
    value
        The share in the units of ``basis`` (percent, or a fraction 0-1 for mass fractions).
    basis
        See :class:`FeedBasis`.
    provenance
        Source, locus and class.
    """

    element: str
    value: float
    basis: FeedBasis
    provenance: Provenance

    @property
    def fraction(self) -> float:
        """The value as a fraction 0-1 of its basis (percentages divided by 100)."""
        return self.value if self.basis is FeedBasis.ELEMENT_MASS_FRACTION else self.value / 100.0


@dataclass(frozen=True)
class Feed:
    """A named feed basket.

    Attributes
    ----------
    name, description
        Catalogue key and one sentence.
    values
        Per-element values by symbol, in the file's order.
    """

    name: str
    description: str
    values: Mapping[str, FeedValue]

    @property
    def basis(self) -> FeedBasis:
        """The basis shared by every value of the feed."""
        return next(iter(self.values.values())).basis

    @property
    def total(self) -> float:
        """Sum of the published values (percent, or fraction for mass fractions)."""
        return math.fsum(v.value for v in self.values.values())

    @property
    def complete(self) -> bool:
        """True when the values specify the whole TREO (sum 100 % or 1 within 1 point)."""
        if self.basis is FeedBasis.PCT_CONCENTRATE_OXIDE:
            return False
        scale = 100.0 if self.basis is FeedBasis.PCT_TREO_OXIDE else 1.0
        return abs(self.total / scale * 100.0 - 100.0) <= COMPLETE_TOLERANCE_PCT

    def _require_complete(self) -> None:
        if not self.complete:
            done = [n for n in available_feeds() if load_feed(n).complete]
            raise InputError(
                f"feed: {self.name!r} is incomplete (its values cover {self.total:g} "
                f"{'%' if self.basis is not FeedBasis.ELEMENT_MASS_FRACTION else ''} of "
                f"{'the concentrate' if self.basis is FeedBasis.PCT_CONCENTRATE_OXIDE else 'TREO'})"
                f"; complete feeds: {', '.join(done)}",
                field="feed",
            )

    def oxide_pct_treo(self) -> dict[str, float]:
        """Composition in % of TREO on oxide mass basis, renormalised to 100.

        Element mass fractions ``w_i`` become oxide masses ``w_i M_ox,i / M_i`` (``M_ox,i`` the
        oxide mass holding one mole of element), then are normalised. Raises
        :class:`~models.errors.InputError` for an incomplete feed.
        """
        self._require_complete()
        if self.basis is FeedBasis.ELEMENT_MASS_FRACTION:
            oxide = {
                s: v.value * ELEMENTS[s].oxide_g_per_mol_element
                / ELEMENTS[s].atomic_weight_g_per_mol
                for s, v in self.values.items()
            }
        else:
            oxide = {s: v.value for s, v in self.values.items()}
        total = math.fsum(oxide.values())
        return {s: 100.0 * m / total for s, m in oxide.items()}

    def mole_fractions(self) -> dict[str, float]:
        """Element mole fractions of the TREO elements (sum 1)."""
        return composition_oxide_pct_to_mole_fractions(self.oxide_pct_treo())

    def rests_on(self) -> tuple[RestsOn, ...]:
        """The CONSTRUCTED, ESTIMATED or INTERPOLATED values of the feed."""
        return rests_on((f"{self.name}:{s}", v.provenance) for s, v in self.values.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (fractions 0-1 for the converted composition)."""
        out: dict[str, Any] = {
            "feed": self.name, "description": self.description, "basis": self.basis.value,
            "complete": self.complete,
            "values": [{"element": s, "fraction": v.fraction, "published_value": v.value,
                        "basis": v.basis.value, **v.provenance.to_dict()}
                       for s, v in self.values.items()],
        }
        if self.complete:
            out["oxide_fraction_of_treo"] = {s: p / 100.0 for s, p in self.oxide_pct_treo().items()}
            out["mole_fraction"] = self.mole_fractions()
        return out


@dataclass(frozen=True)
class FeedAggregate:
    """A published group share that a basket is compared with.

    Attributes
    ----------
    feed, name
        Feed key and aggregate name.
    members
        Element symbols in the group (empty when the source does not define it).
    value_pct
        Published share, % of TREO.
    basis
        ``basket`` (compare directly), ``in_situ`` (compare after restoring the in-situ CeO2
        share) or ``shape`` (the group ratio the basket keeps).
    tolerance_pct
        How close (percentage points) the basket claims to be.
    claimed
        False for aggregates shown for reference that the basket does not reproduce.
    provenance
        Source, locus and class.
    """

    feed: str
    name: str
    members: tuple[str, ...]
    value_pct: float
    basis: str
    tolerance_pct: float
    claimed: bool
    provenance: Provenance

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "aggregate": self.name, "members": list(self.members),
            "fraction": self.value_pct / 100.0, "basis": self.basis,
            "tolerance_fraction": self.tolerance_pct / 100.0, "claimed": self.claimed,
            **self.provenance.to_dict(),
        }


def _data_text(name: str) -> str:
    return resources.files("models").joinpath(f"data/{name}").read_text(encoding="utf-8")


def _rows(text: str, columns: tuple[str, ...], where: str) -> list[tuple[str, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != columns:
        raise DataFileError(
            f"{where}: header must be {','.join(columns)}; got {reader.fieldnames}", field=where
        )
    out = []
    for n, row in enumerate(reader, start=2):
        if None in row or None in row.values():
            raise DataFileError(
                f"{where}:{n}: expected {len(columns)} fields", field=f"{where}:{n}"
            )
        out.append((f"{where}:{n}", {k: str(v).strip() for k, v in row.items()}))
    return out


def _float(raw: str, loc: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise DataFileError(f"{loc}: {name} {raw!r} is not a number", field=loc) from None
    if not math.isfinite(value) or value < 0.0:
        raise DataFileError(f"{loc}: {name} {raw!r} must be a finite number >= 0", field=loc)
    return value


def parse_feeds_csv(text: str, *, where: str = "feeds.csv") -> dict[str, dict[str, FeedValue]]:
    """Parse feed rows into ``{feed: {element: FeedValue}}``; refuses gaps in provenance."""
    out: dict[str, dict[str, FeedValue]] = {}
    for loc, row in _rows(text, FEED_COLUMNS, where):
        prov = Provenance.parse(row["source"], row["locus"], row["class"], row["note"], where=loc)
        sym = element(row["element"], field=f"{loc}: element").symbol
        if not ELEMENTS[sym].in_treo:
            raise DataFileError(f"{loc}: {sym} is not a TREO element", field=loc)
        try:
            basis = FeedBasis(row["basis"])
        except ValueError:
            raise bad_value(f"{loc}: basis", row["basis"], [b.value for b in FeedBasis],
                            cls=DataFileError) from None
        feed = out.setdefault(row["feed"], {})
        if sym in feed:
            raise DataFileError(f"{loc}: element {sym} repeated in feed {row['feed']}", field=loc)
        if feed and next(iter(feed.values())).basis is not basis:
            raise DataFileError(f"{loc}: feed {row['feed']} mixes bases", field=loc)
        feed[sym] = FeedValue(sym, _float(row["value"], loc, "value"), basis, prov)
    return out


@cache
def _catalogue() -> Mapping[str, Mapping[str, Any]]:
    try:
        return tomllib.loads(_data_text("feeds.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"feeds.toml: {exc}") from None


@cache
def _values() -> Mapping[str, Mapping[str, FeedValue]]:
    return parse_feeds_csv(_data_text("feeds.csv"))


def available_feeds() -> tuple[str, ...]:
    """Names of the shipped feeds."""
    return tuple(_catalogue())


@cache
def load_feed(name: str) -> Feed:
    """A shipped feed by name; :class:`~models.errors.InputError` naming the feeds otherwise."""
    meta = _catalogue().get(name)
    if meta is None:
        raise bad_value("feed", name, available_feeds())
    values = _values().get(name)
    if not values:
        raise DataFileError(f"feeds.csv: feed {name!r} has no values", field=name)
    return Feed(name, str(meta.get("description", "")), dict(values))


@cache
def _aggregates() -> tuple[FeedAggregate, ...]:
    out = []
    for loc, row in _rows(_data_text("feed_aggregates.csv"), AGGREGATE_COLUMNS,
                          "feed_aggregates.csv"):
        prov = Provenance.parse(row["source"], row["locus"], row["class"], row["note"], where=loc)
        members = tuple(element(s, field=f"{loc}: members").symbol for s in row["members"].split())
        if row["basis"] not in ("basket", "in_situ", "shape"):
            raise bad_value(f"{loc}: basis", row["basis"], ["basket", "in_situ", "shape"],
                            cls=DataFileError)
        if row["claimed"] not in ("yes", "no"):
            raise bad_value(f"{loc}: claimed", row["claimed"], ["yes", "no"], cls=DataFileError)
        out.append(FeedAggregate(
            row["feed"], row["aggregate"], members, _float(row["value_pct"], loc, "value_pct"),
            row["basis"], _float(row["tolerance_pct"], loc, "tolerance_pct"),
            row["claimed"] == "yes", prov,
        ))
    return tuple(out)


def load_aggregates(feed: str) -> tuple[FeedAggregate, ...]:
    """The published aggregates recorded for ``feed`` (possibly none)."""
    return tuple(a for a in _aggregates() if a.feed == feed)


def aggregate_pct(pct: Mapping[str, float], members: Iterable[str]) -> float:
    """Sum of the listed members' shares, % of TREO."""
    return math.fsum(pct.get(s, 0.0) for s in members)


def in_situ_pct(pct: Mapping[str, float], ce_in_situ_pct: float) -> dict[str, float]:
    r"""A basket with CeO2 restored to its in-situ share, the other oxides rescaled.

    Assumes every oxide but CeO2 reports from ore to concentrate in equal proportion (Ce(IV) is
    poorly desorbed from ionic clays, the others alike):
    :math:`p_i^{ore} = p_i (100 - c_{ore})/(100 - p_{Ce})` for :math:`i \ne` Ce.
    """
    scale = (100.0 - ce_in_situ_pct) / (100.0 - pct.get("Ce", 0.0))
    return {s: (ce_in_situ_pct if s == "Ce" else p * scale) for s, p in pct.items()}
