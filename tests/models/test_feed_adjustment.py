"""Acidity-adjusted feeds between circuits (``CircuitSpec.feed_acidity_mol_per_l``).

A strip liquor leaves its circuit with several mol/L of spent strip acid; a plant adjusts it
(neutralising the excess with NH3) before the next cut. The adjusted circuit must behave exactly
as if it were fed externally at the set acidity, the dynamics must rest at its steady state, and the
neutraliser must be costed from the upstream acidity. (The assembled Jacobian of this plant is
checked against CasADi AD in test_cascade.py.)
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from models.dynamics import DynamicModel, DynamicOptions
from models.economics import HCL_G_PER_MOL, NH3_G_PER_MOL, Economics
from models.errors import SpecError
from models.flowsheet import build_flowsheet
from models.spec import load_spec, parse_spec
from models.steady import SteadySolver
from models.units import G_PER_KG

PAIR = Path(__file__).resolve().parents[1] / "specs" / "adjusted_pair.toml"


@pytest.fixture(scope="module")
def pair():
    fs = build_flowsheet(load_spec(PAIR))
    solver = SteadySolver(fs)
    res = solver.solve()
    assert res.success, res.message
    return fs, solver, res


def test_adjusted_circuit_equals_the_circuit_fed_externally_at_that_acidity(pair) -> None:
    _, _, res = pair
    liquor = res.stream("GdTb.strip_liquor")
    assert liquor.acidity_mol_per_l > 2.0  # the spent strip acid the adjustment removes
    data = tomllib.loads(PAIR.read_text())
    tbdy = dict(data["circuits"][1], feed="liquor")
    del tbdy["feed_acidity_mol_per_l"]
    alone = parse_spec(
        {
            "plant": {"name": "tbdy_alone"},
            "feeds": [
                {
                    "name": "liquor",
                    "flow_l_per_h": liquor.flow_l_per_h,
                    "acidity_mol_per_l": 0.2,
                    "composition_basis": "mol_per_l",
                    "composition": {s: c for s, c in liquor.composition_mol_per_l.items() if c > 0.0},
                }
            ],
            "circuits": [tbdy],
        }
    )
    ref = SteadySolver(build_flowsheet(alone)).solve()
    assert ref.success, ref.message
    for outlet in ("TbDy.raffinate", "TbDy.strip_liquor"):
        a, b = res.stream(outlet), ref.stream(outlet)
        assert a.acidity_mol_per_l == pytest.approx(b.acidity_mol_per_l, rel=1e-8)
        for s, c in b.composition_mol_per_l.items():
            assert a.composition_mol_per_l[s] == pytest.approx(c, rel=1e-7, abs=1e-14), (outlet, s)


def test_dynamics_stay_at_the_adjusted_steady_state(pair) -> None:
    fs, _, res = pair
    run = DynamicModel(fs, DynamicOptions(output_interval_h=3.0)).simulate(res.z, 6.0)
    assert np.max(np.abs(run.final_z - res.z)) < 1e-6


def test_neutraliser_is_costed_from_the_upstream_acidity(pair) -> None:
    fs, solver, res = pair
    eco = Economics(fs, "china_domestic")
    nh3 = eco.scenario.price("NH3").usd_per_kg
    hcl = eco.scenario.price("HCl_100pct").usd_per_kg
    liquor = res.stream("GdTb.strip_liquor")
    costs = eco.evaluate(res.z, fs.parameter_vector()).cost_by_item
    excess_mol_per_h = liquor.flow_l_per_h * (liquor.acidity_mol_per_l - 0.2)
    assert costs["TbDy.NH3_feed_adjustment"] == pytest.approx(excess_mol_per_h * NH3_G_PER_MOL / G_PER_KG * nh3)
    assert costs["TbDy.HCl_feed_adjustment"] == 0.0
    # a set acidity above the liquor's is reached by adding HCl instead
    p = fs.parameter_vector({"TbDy.feed_acidity_mol_per_l": 4.0})
    strong = solver.solve(p, res.z, p0=fs.parameter_vector())
    assert strong.success, strong.message
    liquor = strong.stream("GdTb.strip_liquor")
    costs = eco.evaluate(strong.z, p).cost_by_item
    deficit_mol_per_h = liquor.flow_l_per_h * (4.0 - liquor.acidity_mol_per_l)
    assert costs["TbDy.HCl_feed_adjustment"] == pytest.approx(deficit_mol_per_h * HCL_G_PER_MOL / G_PER_KG * hcl)
    assert costs["TbDy.NH3_feed_adjustment"] == 0.0
    # and the stronger feed extracts less: more Dy reports to the Tb cut
    assert strong.product("Tb_cut").purity < res.product("Tb_cut").purity


def test_feed_acidity_is_a_manipulated_variable_of_the_adjusted_circuit_only() -> None:
    spec = load_spec(PAIR)
    assert "TbDy.feed_acidity_mol_per_l" in spec.variable_names()
    assert "GdTb.feed_acidity_mol_per_l" not in spec.variable_names()


def test_adjusting_an_external_feed_is_refused_with_the_field_named() -> None:
    data = tomllib.loads(PAIR.read_text())
    data["circuits"][0]["feed_acidity_mol_per_l"] = 0.2
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    msg = str(err.value)
    assert "circuits[0].feed_acidity_mol_per_l" in msg
    assert "'feed'" in msg
    assert "raffinate or strip liquor" in msg
