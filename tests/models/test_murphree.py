"""Murphree stage efficiency: analytic checks, equivalence at E = 1, Jacobian, dynamics, sensitivities."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import casadi as ca
import numpy as np
import pytest

from models.dynamics import DynamicModel, DynamicOptions, Move
from models.errors import ConvergenceError, SpecError
from models.flowsheet import build_flowsheet
from models.optimisation import Objective, OptimisationOptions, SetpointOptimiser
from models.residual import symbolic_stage_ln_y
from models.sensitivity import SensitivityAnalysis
from models.spec import parse_spec
from models.steady import SteadySolver
from tests.models._checks import assert_dynamics_hold, assert_jacobian_equals_ad

SPECS = Path(__file__).resolve().parents[1] / "specs"
PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"


def _spec(path: Path, **circuit: Any) -> dict[str, Any]:
    data = tomllib.loads(path.read_text())
    data["circuits"][0].update(circuit)
    return data


def _solve(data: dict[str, Any]):
    """Flowsheet, solver and cold steady solution of a spec given as data (tests/models/test_cascade.py
    solves spec files the same way)."""
    spec = parse_spec(data)
    fs = build_flowsheet(spec)
    solver = SteadySolver(fs)
    res = solver.solve()
    assert res.success, res.message
    return fs, solver, res


@pytest.fixture(scope="module")
def tb_dy_murphree():
    return _solve(_spec(PLANTS / "tb_dy.toml", stage_efficiency=0.9))


@pytest.mark.parametrize("efficiency", [1.0, 0.7, 0.4])
def test_constant_d_cascade_follows_kremser_with_the_lewis_efficiency(efficiency: float) -> None:
    """N Murphree stages extract as N E_o equilibrium stages, E_o = ln(1 + E(eps - 1)) / ln eps
    (Lewis's relation, exact for a constant D and constant flows): Kremser with that N."""
    _, _, res = _solve(_spec(SPECS / "kremser.toml", stage_efficiency=efficiency))
    eps, n = 1.5, 8  # D = 2, O/A = 0.75
    n_eq = n * math.log(1.0 + efficiency * (eps - 1.0)) / math.log(eps)
    expected = (eps - 1.0) / (eps ** (n_eq + 1.0) - 1.0)
    assert res.stream("X.raffinate").composition_mol_per_l["Nd"] / 0.05 == pytest.approx(expected, rel=1e-9)
    assert res.max_mass_balance_rel_error < 1e-9


def test_efficiency_one_is_the_equilibrium_cascade() -> None:
    """At E = 1 the Murphree organic is the equilibrium organic: the same profile and products
    as the cascade without the organic unknowns."""
    _, _, eq = _solve(tomllib.loads((PLANTS / "tb_dy.toml").read_text()))
    fs, _, mu = _solve(_spec(PLANTS / "tb_dy.toml", stage_efficiency=1.0))
    lay = fs.circuits[0]
    block = mu.z.reshape(lay.n_stages, lay.nv)
    assert np.max(np.abs(block[:, lay.y_start :])) < 1e-9  # u = ln y - ln D x
    assert np.max(np.abs(block[:, : lay.y_start].ravel() - eq.z)) < 1e-8
    for name in ("Dy2O3", "Tb_cut"):
        assert mu.product(name).purity == pytest.approx(eq.product(name).purity, rel=1e-10)


def test_lower_efficiency_separates_less_and_balances_close(tb_dy_murphree) -> None:
    """Fewer effective stages: both products less pure, Dy recovery lower; balances closed; the
    efficiency is listed among the estimated parameters the answer rests on."""
    _, _, eq = _solve(_spec(PLANTS / "tb_dy.toml", stage_efficiency=1.0))
    _, _, res = tb_dy_murphree
    assert res.max_mass_balance_rel_error < 1e-9
    for name in ("Dy2O3", "Tb_cut"):
        assert res.product(name).purity < eq.product(name).purity
    assert res.product("Dy2O3").recovery < eq.product("Dy2O3").recovery
    assert "TbDy.stage_efficiency" in {r.parameter for r in res.rests_on}
    assert res.method.startswith("equilibrium stages")


def test_murphree_jacobian_equals_casadi_ad(tb_dy_murphree) -> None:
    fs, solver, res = tb_dy_murphree
    rng = np.random.default_rng(5)
    z = res.z + 0.05 * rng.standard_normal(res.z.size)
    assert_jacobian_equals_ad(fs, solver.residual, z, fs.parameter_vector({"TbDy.stage_efficiency": 0.85}))


def test_murphree_dynamics_hold_the_steady_state(tb_dy_murphree) -> None:
    fs, _, res = tb_dy_murphree
    assert_dynamics_hold(fs, res.z, 24.0)


def test_efficiency_sensitivity_agrees_with_finite_differences(tb_dy_murphree) -> None:
    """d purity / d E by automatic differentiation against two warm re-solves."""
    fs, solver, res = tb_dy_murphree
    name = "TbDy.stage_efficiency"
    sens = SensitivityAnalysis(fs).compute(res.z, fs.parameter_vector(), [name])
    h = 1e-4
    up = solver.solve(fs.parameter_vector({name: 0.9 + h}), z0=res.z)
    down = solver.solve(fs.parameter_vector({name: 0.9 - h}), z0=res.z)
    for k, product in enumerate(sens.products):
        fd = (up.product(product).purity - down.product(product).purity) / (2 * h)
        assert sens.d_purity[k, 0] == pytest.approx(fd, rel=1e-4, abs=1e-9)
        assert sens.d_purity[k, 0] > 0.0  # a more efficient stage purifies both products


@pytest.mark.parametrize("bad", [0.0, 0.3, 1.2, -0.5])
def test_out_of_range_efficiency_is_refused_naming_the_field(bad: float) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_spec(PLANTS / "tb_dy.toml", stage_efficiency=bad))
    assert "stage_efficiency" in str(err.value)


def test_a_ramped_efficiency_drop_heads_to_its_steady_state(tb_dy_murphree) -> None:
    """0.9 -> 0.85 over 4 h: the Tb cut gets less pure, towards the steady state at 0.85."""
    fs, solver, res = tb_dy_murphree
    name = "TbDy.stage_efficiency"
    run = DynamicModel(fs, DynamicOptions(output_interval_h=12.0)).simulate(
        res.z, 96.0, moves=[Move(name, 2.0, 0.85, ramp_h=4.0)]
    )
    target = solver.solve(fs.parameter_vector({name: 0.85}), z0=res.z).product("Tb_cut").purity
    purity = run.product_purity["Tb_cut"]
    assert target < purity[-1] < purity[0]
    assert purity[0] - purity[-1] > 0.5 * (purity[0] - target)


def test_an_instant_large_efficiency_step_is_refused_with_the_way_out(tb_dy_murphree) -> None:
    """The Murphree row is algebraic: a sudden drop to 0.8 would need more metal in the organic
    than the stages hold. The run stops with an error that says to ramp the change."""
    fs, _, res = tb_dy_murphree
    with pytest.raises(ConvergenceError) as err:
        DynamicModel(fs).simulate(res.z, 6.0, moves=[Move("TbDy.stage_efficiency", 1.0, 0.8)])
    assert "ramp" in str(err.value)


def test_setpoints_optimised_on_a_murphree_plant_hold_on_an_independent_resolve(tb_dy_murphree) -> None:
    """The optimiser's NLP carries the Murphree rows: its margin optimum at E = 0.9 is on spec
    when re-solved by a new steady solver, and better than the design point."""
    fs, _, design = tb_dy_murphree
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=Objective.MARGIN), solver=SteadySolver(fs))
    result = opt.optimise(design.parameters.values, current=design)
    assert result.success, result.message
    assert result.optimum.objective_value > result.current.objective_value
    p = fs.parameter_vector({v.parameter: result.setpoints[v.name] for v in result.decision_variables})
    check = SteadySolver(fs).solve(p, z0=design.z, p0=design.parameters.values)
    assert check.success, check.message
    for product in check.products:
        assert product.purity >= product.purity_min - 1e-7, product
        assert product.purity == pytest.approx(result.optimum.kpi(product.name).purity, abs=1e-7)


def test_the_organic_of_one_stage_is_the_organic_the_residual_uses(tb_dy_murphree) -> None:
    """``symbolic_stage_ln_y`` (outlets' KPIs, organic assays of the estimator) gives every
    stage's ln y as the residual has it: the Murphree organic, not the equilibrium one."""
    fs, solver, res = tb_dy_murphree
    p = fs.parameter_vector()
    lay = fs.circuits[0]
    st = solver.residual.local(res.z, p, jacobian=False)[0]
    zk, ps = ca.MX.sym("zk", lay.nv), ca.MX.sym("p", p.size)
    ln_y = ca.Function("ln_y", [zk, ps], [symbolic_stage_ln_y(fs, lay, zk, ps)])
    blocks = res.z.reshape(lay.n_stages, lay.nv)
    got = np.column_stack([np.asarray(ln_y(blocks[j], p)).ravel() for j in range(lay.n_stages)])
    assert np.max(np.abs(got - st.ln_y)) < 1e-12
    assert np.max(np.abs(st.ln_y - st.ln_y_eq)) > 0.1  # at E = 0.9 the organic is off equilibrium
