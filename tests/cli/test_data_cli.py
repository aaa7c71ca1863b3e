"""``sxtwin data``: systems, explain, feeds, prices; one JSON object with --json; exit codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from models.parameters import SHARED_PARAMETERS, load_system, shared_value
from sxtwin.cli import app

runner = CliRunner()


def run_json(*args: str, code: int = 0) -> dict[str, Any]:
    result = runner.invoke(app, ["data", *args, "--json"])
    assert result.exit_code == code, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1  # exactly one JSON object on stdout
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


def test_systems_lists_the_new_systems() -> None:
    keys = {s["key"] for s in run_json("systems")["systems"]}
    assert keys >= {"P507-T21", "D2EHPA-H2SO4", "NAPHTHENIC-HCl", "D2EHPA-HCl", "CYANEX272-HCl"}


def test_explain_gives_every_value_with_provenance() -> None:
    payload = run_json("explain", "NAPHTHENIC-HCl", "Y")
    params = {(v["parameter"], v["element"]) for v in payload["values"]}
    assert ("log10_k", "Y") in params
    assert ("c_ref_dimer_mol_per_l", None) in params
    for v in payload["values"]:
        assert v["source"]
        assert v["locus"]
        assert v["class"]
        assert v["citation"]


def test_shared_values_cover_every_shared_parameter() -> None:
    for key in ("P507-T21", "D2EHPA-HCl", "P507-HCl-SIT"):
        system = load_system(key)
        values = {name: shared_value(system, name) for name in SHARED_PARAMETERS}
        assert all(isinstance(v, float) for v in values.values())
    sit = load_system("P507-HCl-SIT")
    assert shared_value(sit, "cation_activity_epsilon_kg_per_mol") == 0.23


def test_feeds_list_and_one_feed_in_fractions() -> None:
    listed = run_json("feeds")["feeds"]
    assert {f["feed"] for f in listed} >= {"makuutu_like", "pitinga_xenotime", "cepr_nd_line"}
    feed = run_json("feeds", "makuutu_like")
    assert feed["complete"] is True
    assert sum(feed["oxide_fraction_of_treo"].values()) == pytest.approx(1.0, abs=1e-9)
    assert {v["class"] for v in feed["values"]} == {"CONSTRUCTED"}
    aggregates = {a["aggregate"]: a for a in feed["aggregates"]}
    assert aggregates["medium_plus_heavy"]["basket_fraction"] == pytest.approx(0.45, abs=0.005)
    assert aggregates["hreo_in_situ"]["basket_fraction"] == pytest.approx(0.25, abs=0.005)


def test_prices_list_and_scenario() -> None:
    listed = run_json("prices")
    assert {s["scenario"] for s in listed["scenarios"]} >= {"china_domestic", "ex_china"}
    assert all(q["source"] and q["class"] for q in listed["quotes"])
    scenario = run_json("prices", "--scenario", "ex_china")
    products = {p["product"]: p for p in scenario["prices"]}
    assert products["Lu2O3"]["status"] == "NOT_FOUND"
    assert products["oxalic_acid"]["usd_per_kg"] is None
    assert products["Dy2O3"]["usd_per_kg"] == pytest.approx(287.0)


@pytest.mark.parametrize(("args", "field"), [
    (("feeds", "nowhere"), "feed"),
    (("prices", "--scenario", "mars"), "scenario"),
    (("explain", "NO-SUCH"), "system"),
    (("explain", "CYANEX272-HCl", "Lu"), "element"),
])
def test_bad_input_exits_2_and_names_the_field(args: tuple[str, ...], field: str) -> None:
    payload = run_json(*args, code=2)
    assert payload["status"] == "bad_input"
    assert payload["field"] == field


def test_human_output_without_json() -> None:
    result = runner.invoke(app, ["data", "prices", "--scenario", "china_domestic"])
    assert result.exit_code == 0
    assert "Tb4O7" in result.stdout
    assert "NOT_FOUND" in result.stdout
    result = runner.invoke(app, ["data", "feeds", "barc_y_dy"])
    assert result.exit_code == 0
    assert "incomplete" in result.stdout
