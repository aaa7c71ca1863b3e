"""Price quotes and scenarios (models.prices)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import DataFileError, InputError
from models.prices import (
    OXIDE_PRODUCTS,
    REAGENT_PRODUCTS,
    PriceStatus,
    available_scenarios,
    load_quotes,
    load_scenario,
    parse_quotes_csv,
)
from models.provenance import ProvenanceClass


def test_scenarios_shipped() -> None:
    assert set(available_scenarios()) >= {"china_domestic", "ex_china"}


@pytest.mark.parametrize("name", ["china_domestic", "ex_china"])
def test_every_scenario_prices_every_oxide_and_reagent(name: str) -> None:
    scenario = load_scenario(name)
    assert tuple(scenario.prices) == OXIDE_PRODUCTS + REAGENT_PRODUCTS
    for product in OXIDE_PRODUCTS:
        p = scenario.price(product)
        assert p.usd_per_kg is not None  # a NOT_FOUND oxide carries its treatment value
        if p.status is PriceStatus.NOT_FOUND:
            assert p.usd_per_kg == 0.0
            assert p.provenance.cls is ProvenanceClass.ESTIMATED
            assert "NOT_FOUND" in p.provenance.locus
    for p in scenario.prices.values():
        if p.provenance.cls is ProvenanceClass.ESTIMATED and p.status is PriceStatus.PRICED:
            assert "rule:" in p.provenance.note  # an estimate states its rule


def test_china_domestic_is_ex_vat_usd_from_smm_cny_by_hand() -> None:
    scenario = load_scenario("china_domestic")
    fx, vat = 7.0392, 0.13
    assert scenario.fx_cny_per_usd == fx
    assert scenario.vat_fraction == vat
    # SMM 2025-12-25: Tb4O7 6.02-6.06 M CNY/t incl. 13 % VAT
    assert scenario.usd_per_kg("Tb4O7") == pytest.approx(6_040_000 / 1000 / 1.13 / fx, rel=1e-12)
    assert scenario.usd_per_kg("Dy2O3") == pytest.approx(1_340_000 / 1000 / 1.13 / fx, rel=1e-12)
    assert scenario.price("Dy2O3").provenance.cls is ProvenanceClass.DERIVED
    assert scenario.price("Nd2O3").provenance.cls is ProvenanceClass.ESTIMATED  # PrNd stands in


def test_ex_china_uses_post_control_quotes() -> None:
    scenario = load_scenario("ex_china")
    assert scenario.usd_per_kg("Dy2O3") == pytest.approx(287.0)  # FOB China 267-307
    assert scenario.usd_per_kg("Tb4O7") == pytest.approx(3000.0)  # Argus Europe 2000-4000
    domestic = load_scenario("china_domestic")
    assert scenario.usd_per_kg("Dy2O3") > domestic.usd_per_kg("Dy2O3")  # type: ignore[operator]


def test_reagents_on_100_percent_basis() -> None:
    scenario = load_scenario("china_domestic")
    solution = scenario.usd_per_kg("HCl_solution")
    assert solution is not None
    assert scenario.usd_per_kg("HCl_100pct") == pytest.approx(solution / 0.31, rel=1e-12)
    assert scenario.usd_per_kg("NaOH_100pct") == pytest.approx(1250 / 0.5 / 1000 / 7.0392,
                                                               rel=1e-12)
    oxalic = scenario.price("oxalic_acid")
    assert oxalic.status is PriceStatus.NOT_FOUND
    assert oxalic.usd_per_kg is None


def test_quotes_carry_dates_and_units() -> None:
    for quote in load_quotes().values():
        assert quote.date
        assert quote.unit
        if quote.high is not None:
            assert quote.high >= quote.low


def test_unknown_scenario_and_product_name_what_is_allowed() -> None:
    with pytest.raises(InputError) as exc:
        load_scenario("europe")
    assert exc.value.field == "scenario"
    assert "china_domestic" in exc.value.message
    with pytest.raises(InputError) as exc2:
        load_scenario("ex_china").price("Dy2O4")
    assert exc2.value.field == "product"


def test_quote_without_source_is_refused(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "models" / "data" / "prices.csv").read_text(
        encoding="utf-8").splitlines()[0] + "\n"
    text += "q1,Dy2O3,oxide,,FOB,2025,1,2,USD/kg,no,1,MEASURED,,somewhere,\n"
    path = tmp_path / "prices.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFileError) as exc:
        parse_quotes_csv(path.read_text(encoding="utf-8"), where=str(path))
    assert "no source" in exc.value.message
    assert exc.value.field == f"{path}:2"
