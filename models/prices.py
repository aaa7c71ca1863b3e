"""Oxide and reagent prices with provenance, and named price scenarios.

Two data files hold the numbers (see docs/data.md):

- ``models/data/prices.csv``: one *quote* per row, exactly as retrieved (item, grade, basis,
  date, low-high range, unit, whether VAT is included, solution mass fraction) with source, locus
  and class. Exchange rates and tax rates are quotes too (kinds ``fx`` and ``tax``).
- ``models/data/price_scenarios.csv``: for each named scenario and product, the *rule* that turns
  a quote into a USD/kg price (mid-point of the range, ``/ (1 + VAT)`` when ``remove_vat``,
  ``/ mass_fraction`` when ``per_100pct``, CNY to USD with the scenario's exchange rate), or a
  fixed value, or NOT_FOUND. Each rule row carries its own class: DERIVED when only unit, VAT
  and currency conversions separate the price from the quote, ESTIMATED when a quote of another
  basis, date or product stands in (the rule is in the row's note).

``models/data/price_scenarios.toml`` describes the scenarios and names the exchange-rate and VAT
quotes each one uses. Scenarios shipped: ``china_domestic`` (SMM ex-works incl. 13 % VAT,
converted to USD/kg ex-VAT) and ``ex_china`` (FOB China / Europe after the April 2025 export
controls). Both price every rare-earth oxide and every reagent in :data:`REAGENT_PRODUCTS`;
where nothing was retrieved the price says NOT_FOUND and the row states the treatment (oxides:
valued at 0 so revenue is not overstated; reagents: no value, so a cost study must supply one).

All prices are USD per kg of the product as named (``HCl_solution`` per kg of solution at the
quote's concentration, ``HCl_100pct`` per kg of HCl).
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Final

from models.elements import ELEMENTS, RARE_EARTHS
from models.errors import DataFileError, bad_value
from models.provenance import Provenance

__all__ = [
    "OXIDE_PRODUCTS",
    "REAGENT_PRODUCTS",
    "PriceQuote",
    "PriceScenario",
    "PriceStatus",
    "QuoteKind",
    "ScenarioMethod",
    "ScenarioPrice",
    "available_scenarios",
    "load_quotes",
    "load_scenario",
    "parse_quotes_csv",
]

OXIDE_PRODUCTS: Final[tuple[str, ...]] = tuple(ELEMENTS[s].oxide for s in RARE_EARTHS)
"""The traded oxide of each of the fifteen rare earths (``Tb4O7``, ``Pr6O11``, ``CeO2``, ...)."""

REAGENT_PRODUCTS: Final[tuple[str, ...]] = (
    "HCl_solution",
    "HCl_100pct",
    "NaOH_solution",
    "NaOH_100pct",
    "NH3",
    "oxalic_acid",
    "P507",
    "kerosene",
)
"""Reagents every scenario prices: acid for scrub and strip, base and ammonia for
saponification, oxalic acid for precipitation, extractant and diluent make-up."""

QUOTE_COLUMNS: Final = (
    "id", "item", "kind", "grade", "basis", "date", "low", "high", "unit", "vat_included",
    "mass_fraction", "class", "source", "locus", "note",
)
SCENARIO_COLUMNS: Final = (
    "scenario", "product", "method", "quote", "remove_vat", "per_100pct", "value_usd_per_kg",
    "class", "source", "locus", "note",
)
_KG_PER_T: Final = 1000.0


class QuoteKind(StrEnum):
    """What a quote prices."""

    OXIDE = "oxide"
    REAGENT = "reagent"
    FX = "fx"
    TAX = "tax"


class ScenarioMethod(StrEnum):
    """How a scenario row obtains its price."""

    QUOTE = "quote"
    FIXED = "fixed"
    NOT_FOUND = "not_found"


class PriceStatus(StrEnum):
    """Whether a scenario has a price for a product."""

    PRICED = "priced"
    NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True)
class PriceQuote:
    """One retrieved price (or exchange or tax rate), as published.

    Attributes
    ----------
    id
        Unique key used by scenarios.
    item, kind, grade, basis, date
        What, which kind, which grade or specification, delivery basis, date (ISO or quarter).
    low, high
        Published range; ``high`` is None for a one-sided quote (e.g. an ask '> 350').
    unit
        ``<currency>/<mass>`` with mass ``t`` or ``kg`` (``CNY/t``, ``USD/kg``), ``CNY/USD`` for an
        exchange rate, ``fraction`` for a tax rate.
    vat_included
        True, False, or None when the source does not say.
    mass_fraction
        Mass fraction of the active substance in the product quoted (0.31 for 31 % HCl), 0-1.
    provenance
        Source, locus and class of the quote.
    """

    id: str
    item: str
    kind: QuoteKind
    grade: str
    basis: str
    date: str
    low: float
    high: float | None
    unit: str
    vat_included: bool | None
    mass_fraction: float
    provenance: Provenance

    @property
    def mid(self) -> float:
        """Mid-point of the range (the low end for a one-sided quote)."""
        return self.low if self.high is None else 0.5 * (self.low + self.high)

    @property
    def currency(self) -> str:
        """Currency of a price quote (``CNY``, ``USD``, ...)."""
        return self.unit.split("/")[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id, "item": self.item, "kind": self.kind.value, "grade": self.grade,
            "basis": self.basis, "date": self.date, "low": self.low, "high": self.high,
            "unit": self.unit, "vat_included": self.vat_included,
            "mass_fraction": self.mass_fraction, **self.provenance.to_dict(),
        }


@dataclass(frozen=True)
class ScenarioPrice:
    """The price of one product in one scenario.

    Attributes
    ----------
    scenario, product
        Scenario name and product (an oxide formula or one of :data:`REAGENT_PRODUCTS`).
    usd_per_kg
        Price in USD per kg of product; None when NOT_FOUND without a stated treatment value.
    status
        PRICED or NOT_FOUND (a NOT_FOUND oxide carries its treatment value, 0).
    method
        How the price was obtained.
    quote
        The quote converted, if any.
    provenance
        Class, source and locus of the conversion rule (the rule is in ``provenance.note``).
    """

    scenario: str
    product: str
    usd_per_kg: float | None
    status: PriceStatus
    method: ScenarioMethod
    quote: PriceQuote | None
    provenance: Provenance

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "product": self.product, "usd_per_kg": self.usd_per_kg, "status": self.status.value,
            "method": self.method.value, "quote": self.quote.id if self.quote else None,
            **self.provenance.to_dict(),
        }


@dataclass(frozen=True)
class PriceScenario:
    """A named, complete set of product prices in USD/kg.

    Attributes
    ----------
    name, description
        Scenario key and one sentence.
    fx_cny_per_usd
        Exchange rate used for CNY quotes (from the quote named in price_scenarios.toml).
    vat_fraction
        China VAT removed from VAT-inclusive quotes where a row says so (0.13).
    prices
        Every product in :data:`OXIDE_PRODUCTS` and :data:`REAGENT_PRODUCTS`.
    """

    name: str
    description: str
    fx_cny_per_usd: float
    vat_fraction: float
    prices: Mapping[str, ScenarioPrice]

    def price(self, product: str) -> ScenarioPrice:
        """The price of ``product``; :class:`~models.errors.InputError` naming the products."""
        try:
            return self.prices[product]
        except KeyError:
            raise bad_value("product", product, self.prices) from None

    def usd_per_kg(self, product: str) -> float | None:
        """Shortcut for ``price(product).usd_per_kg``."""
        return self.price(product).usd_per_kg

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "scenario": self.name, "description": self.description,
            "fx_cny_per_usd": self.fx_cny_per_usd, "vat_fraction": self.vat_fraction,
            "prices": [p.to_dict() for p in self.prices.values()],
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
                f"{where}:{n}: expected {len(columns)} fields (quote fields holding commas)",
                field=f"{where}:{n}",
            )
        out.append((f"{where}:{n}", {k: str(v).strip() for k, v in row.items()}))
    return out


def _optional_number(raw: str, loc: str, name: str) -> float | None:
    return _number(raw, loc, name) if raw else None


def _number(raw: str, loc: str, name: str) -> float:
    if not raw:
        raise DataFileError(f"{loc}: {name} is empty; expected a number", field=loc)
    try:
        value = float(raw)
    except ValueError:
        raise DataFileError(f"{loc}: {name} {raw!r} is not a number", field=loc) from None
    if not math.isfinite(value) or value < 0.0:
        raise DataFileError(f"{loc}: {name} {raw!r} must be a finite number >= 0", field=loc)
    return value


def _yes_no(raw: str, loc: str, name: str, *, unknown_ok: bool = False) -> bool | None:
    allowed: dict[str, bool | None] = {"yes": True, "no": False, "": False}
    if unknown_ok:
        allowed["unknown"] = None
    if raw not in allowed:
        raise bad_value(f"{loc}: {name}", raw, [k for k in allowed if k], cls=DataFileError)
    return allowed[raw]


def parse_quotes_csv(text: str, *, where: str = "prices.csv") -> dict[str, PriceQuote]:
    """Parse quote rows (format in the module docstring), refusing a row without provenance."""
    out: dict[str, PriceQuote] = {}
    for loc, row in _rows(text, QUOTE_COLUMNS, where):
        prov = Provenance.parse(row["source"], row["locus"], row["class"], row["note"], where=loc)
        try:
            kind = QuoteKind(row["kind"])
        except ValueError:
            raise bad_value(f"{loc}: kind", row["kind"], [k.value for k in QuoteKind],
                            cls=DataFileError) from None
        if not row["id"] or row["id"] in out:
            raise DataFileError(f"{loc}: id {row['id']!r} is empty or repeated", field=loc)
        low = _number(row["low"], loc, "low")
        fraction = _number(row["mass_fraction"], loc, "mass_fraction")
        if not 0.0 < fraction <= 1.0:
            raise DataFileError(f"{loc}: mass_fraction must be in (0, 1]", field=loc)
        out[row["id"]] = PriceQuote(
            id=row["id"], item=row["item"], kind=kind, grade=row["grade"], basis=row["basis"],
            date=row["date"], low=low, high=_optional_number(row["high"], loc, "high"),
            unit=row["unit"], vat_included=_yes_no(row["vat_included"], loc, "vat_included",
                                                   unknown_ok=True),
            mass_fraction=fraction, provenance=prov,
        )
    return out


@cache
def load_quotes() -> Mapping[str, PriceQuote]:
    """Every shipped quote, by id."""
    return parse_quotes_csv(_data_text("prices.csv"))


@cache
def _catalogue() -> Mapping[str, Mapping[str, Any]]:
    try:
        return tomllib.loads(_data_text("price_scenarios.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"price_scenarios.toml: {exc}") from None


def available_scenarios() -> tuple[str, ...]:
    """Names of the shipped price scenarios."""
    return tuple(_catalogue())


def _to_usd_per_kg(quote: PriceQuote, fx_cny_per_usd: float, loc: str) -> float:
    currency, _, mass = quote.unit.partition("/")
    per_kg = {"kg": 1.0, "t": 1.0 / _KG_PER_T}
    if mass not in per_kg:
        raise bad_value(f"{loc}: unit of quote {quote.id}", quote.unit,
                        "a price per 'kg' or per 't'", cls=DataFileError)
    rates = {"USD": 1.0, "CNY": 1.0 / fx_cny_per_usd}
    if currency not in rates:
        raise bad_value(f"{loc}: currency of quote {quote.id}", currency, rates,
                        cls=DataFileError)
    return quote.mid * per_kg[mass] * rates[currency]


def _rate(quotes: Mapping[str, PriceQuote], key: str, kind: QuoteKind, where: str) -> float:
    quote = quotes.get(key)
    if quote is None or quote.kind is not kind:
        raise DataFileError(f"{where}: {key!r} is not a {kind.value} quote in prices.csv",
                            field=where)
    return quote.mid


def build_scenario(
    name: str, meta: Mapping[str, Any], text: str, quotes: Mapping[str, PriceQuote],
    *, where: str = "price_scenarios.csv",
) -> PriceScenario:
    """Build one scenario from its catalogue entry, the rule rows and the quotes."""
    fx = _rate(quotes, str(meta.get("fx_quote", "")), QuoteKind.FX, f"{name}.fx_quote")
    vat = _rate(quotes, str(meta.get("vat_quote", "")), QuoteKind.TAX, f"{name}.vat_quote")
    prices: dict[str, ScenarioPrice] = {}
    for loc, row in _rows(text, SCENARIO_COLUMNS, where):
        if row["scenario"] != name:
            continue
        prov = Provenance.parse(row["source"], row["locus"], row["class"], row["note"], where=loc)
        product = row["product"]
        if product not in OXIDE_PRODUCTS + REAGENT_PRODUCTS:
            raise bad_value(f"{loc}: product", product, OXIDE_PRODUCTS + REAGENT_PRODUCTS,
                            cls=DataFileError)
        if product in prices:
            raise DataFileError(f"{loc}: product {product} repeated in scenario {name}", field=loc)
        try:
            method = ScenarioMethod(row["method"])
        except ValueError:
            raise bad_value(f"{loc}: method", row["method"], [m.value for m in ScenarioMethod],
                            cls=DataFileError) from None
        quote: PriceQuote | None = None
        value: float | None = None
        status = PriceStatus.PRICED
        if method is ScenarioMethod.QUOTE:
            quote = quotes.get(row["quote"])
            if quote is None:
                raise bad_value(f"{loc}: quote", row["quote"], "an id in prices.csv",
                                cls=DataFileError)
            value = _to_usd_per_kg(quote, fx, loc)
            if _yes_no(row["remove_vat"], loc, "remove_vat"):
                value /= 1.0 + vat
            if _yes_no(row["per_100pct"], loc, "per_100pct"):
                value /= quote.mass_fraction
        elif method is ScenarioMethod.FIXED:
            value = _number(row["value_usd_per_kg"], loc, "value_usd_per_kg")
            if row["locus"].startswith("NOT_FOUND"):
                status = PriceStatus.NOT_FOUND
        else:
            status = PriceStatus.NOT_FOUND
        prices[product] = ScenarioPrice(name, product, value, status, method, quote, prov)
    missing = [p for p in OXIDE_PRODUCTS + REAGENT_PRODUCTS if p not in prices]
    if missing:
        raise DataFileError(f"{where}: scenario {name!r} does not price {', '.join(missing)}",
                            field=name)
    ordered = {p: prices[p] for p in OXIDE_PRODUCTS + REAGENT_PRODUCTS}
    return PriceScenario(name, str(meta.get("description", "")), fx, vat, ordered)


@cache
def load_scenario(name: str) -> PriceScenario:
    """A shipped scenario by name (``china_domestic``, ``ex_china``)."""
    meta = _catalogue().get(name)
    if meta is None:
        raise bad_value("scenario", name, available_scenarios())
    return build_scenario(name, meta, _data_text("price_scenarios.csv"), load_quotes())
