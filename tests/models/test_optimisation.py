"""Setpoint optimisation: constraints hold after a steady re-solve, the margin improves, multipliers
agree with re-solves, the minimum-reflux bound of countercurrent theory, infeasible specs."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import casadi as ca
import numpy as np
import pytest

from models._nlp_residual import stable_residual
from models.economics import EconomicAssumptions, Economics
from models.elements import element
from models.errors import InfeasibleError, InputError
from models.flowsheet import build_flowsheet
from models.inventory import Inventory
from models.optimisation import (
    CONDITION_WARNING,
    ConstraintKind,
    Objective,
    OptimisationOptions,
    SetpointOptimiser,
)
from models.prices import load_scenario
from models.residual import symbolic_residual
from models.spec import load_spec
from models.steady import SteadySolver

SPECS = Path(__file__).resolve().parents[1] / "specs"
PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tb_dy():
    fs = build_flowsheet(load_spec(PLANTS / "tb_dy.toml"))
    solver = SteadySolver(fs)
    design = solver.solve()
    assert design.success, design.message
    return fs, solver, design


@pytest.fixture(scope="module")
def margin_result(tb_dy):
    fs, solver, design = tb_dy
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=Objective.MARGIN), solver=solver)
    return opt.optimise(design.parameters.values, current=design)


@pytest.fixture(scope="module")
def reagent_optimiser(tb_dy):
    fs, solver, design = tb_dy
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=Objective.REAGENT), solver=solver)
    return opt, opt.optimise(design.parameters.values, current=design)


def test_stable_residual_equals_symbolic_residual(tb_dy) -> None:
    fs, _, design = tb_dy
    p = design.parameters.values
    a = np.asarray(symbolic_residual(fs)(design.z, p)).ravel()
    b = np.asarray(stable_residual(fs)(design.z, p)).ravel()
    assert np.max(np.abs(a - b)) < 1e-12
    # and its exact Hessian is finite at trace concentrations (1e-200 mol/L Gd in the scrub)
    z = ca.MX.sym("z", fs.n_unknowns)
    lam = np.ones(fs.n_unknowns)
    hess = ca.Function("h", [z], [ca.hessian(ca.dot(lam, stable_residual(fs)(z, p)), z)[0]])
    assert np.all(np.isfinite(np.asarray(hess(design.z).nonzeros())))


@pytest.mark.parametrize("objective", ["margin", "reagent"])
def test_constraints_hold_after_a_steady_resolve(tb_dy, margin_result, reagent_optimiser, objective) -> None:
    fs, _, design = tb_dy
    result = margin_result if objective == "margin" else reagent_optimiser[1]
    assert result.success, result.message
    # an independent steady solve (a new solver) at the returned setpoints, from the design state
    p = fs.parameter_vector({v.parameter: result.setpoints[v.name] for v in result.decision_variables})
    check = SteadySolver(fs).solve(p, z0=design.z, p0=design.parameters.values)
    assert check.success, check.message
    edge = any("edge of the steady-state region" in w for w in result.warnings)
    assert edge == (result.condition_estimate > CONDITION_WARNING)
    for product in check.products:
        assert product.purity >= product.purity_min - 1e-7, product
        assert product.recovery >= product.recovery_min - 1e-7, product
        assert product.purity == pytest.approx(result.optimum.kpi(product.name).purity, abs=1e-7)
    loading = np.nanmax(check.circuit("TbDy").loading_fraction)
    assert loading <= 0.85 + 1e-6
    for var in result.decision_variables:
        assert var.min - 1e-9 <= result.setpoints[var.name] <= var.max + 1e-9


def test_optimum_strictly_improves_the_tb_dy_margin(margin_result) -> None:
    r = margin_result
    assert r.objective is Objective.MARGIN
    assert r.optimum.objective_value > r.current.objective_value + 1.0  # USD/h
    assert r.improvement == pytest.approx(r.optimum.objective_value - r.current.objective_value)
    # the value reported is the margin of the breakdown less the inventory's carrying cost (10 %
    # a year of its value), and the oxalic acid exclusion is visible
    for point in (r.current, r.optimum):
        carrying = point.inventory.value_usd * 0.10 / 8760.0
        assert point.inventory_charge == pytest.approx(carrying, rel=1e-9)
        assert point.objective_value == pytest.approx(point.economics.margin_usd_per_h - carrying, rel=1e-9)
    assert "oxalic_acid" in r.optimum.economics.excluded
    assert any("oxalic acid" in w and "EXCLUDED" in w for w in r.warnings)
    assert r.rests_on  # non-measured parameters named


def test_multipliers_agree_with_relaxed_resolves(tb_dy, reagent_optimiser) -> None:
    """Relax each active constraint by 1 % (of the allowed impurity for purity/recovery, of the
    bound otherwise) and re-optimise: the saving per unit of relaxation matches the multiplier.

    The first-order prediction is exact up to a curvature term that shrinks with the relaxation:
    within 15 % at 1 % (the scrub acid's lower bound is the most curved, 11 % off at 1 %, 1 % off
    at 0.1 %) and within 2 % at 0.1 %. An error in the scaling of a row or of the objective
    (sigma_f, 1/(1 - purity_min), 1/range of a variable) would be off by a factor of 10 or more
    at both, and a sign error would give a negative ratio.
    """
    _fs, _, design = tb_dy
    opt, base = reagent_optimiser
    assert len(base.active_constraints) >= 3
    checked = 0
    for a in base.active_constraints:
        for fraction, tolerance in ((0.01, 0.15), (0.001, 0.02)):
            if a.kind in (ConstraintKind.PURITY, ConstraintKind.RECOVERY):
                delta = fraction * (1.0 - a.bound)
            else:
                delta = fraction * abs(a.bound)
            new = a.bound - delta if a.side == "min" else a.bound + delta
            relaxed = opt.optimise(design.parameters.values, current=design, bound_overrides={a.name: new}, warm=base)
            assert relaxed.success
            saving = base.optimum.objective_value - relaxed.optimum.objective_value  # minimised: a saving
            predicted = a.worth_per_unit * delta
            assert predicted > 0
            assert saving == pytest.approx(predicted, rel=tolerance), (a.name, fraction)
        checked += 1
    assert checked >= 3


def _pinch_reflux(res, fs) -> tuple[float, float]:
    """Scrub reflux W (RE in the scrub aqueous per mol RE fed) and the minimum-reflux bound.

    Xu's pinch at the feed stage with feed-stage composition = feed composition, aqueous feed,
    constant beta (chemistry_notes.md section 2): with y_F = beta f_A/(beta f_A + f_B),
    scrub pinch W >= f'_A (P_A - y_F)/(y_F - f_A), extraction pinch
    W >= [f'_B P_B - f_B + f'_A (1 - y_F)]/(y_F - f_A). Both become 1/(beta - 1) for ideal
    purities, and the notes' W_min formulas are these with P_A = 1 (scrub) and P_B = 1
    (extraction). Purities on a mole basis.
    """
    beta, f_a, f_b = 2.0, 0.5, 0.5
    lay = fs.circuits[0]
    prof = res.circuit("X")
    p = res.parameters
    fed = p["feed.flow_l_per_h"] * (p["feed.conc_mol_per_l.Pr"] + p["feed.conc_mol_per_l.Nd"])
    w = p["X.scrub_flow_l_per_h"] * prof.aqueous_mol_per_l[:, lay.n_extraction].sum() / fed
    raf = res.stream("X.raffinate").composition_mol_per_l
    ext = res.stream("X.loaded_organic").composition_mol_per_l
    p_b = raf["Pr"] / sum(raf.values())
    p_a = ext["Nd"] / sum(ext.values())
    fa_ = (p_b - f_b) / (p_a + p_b - 1.0)
    fb_ = 1.0 - fa_
    y_f = beta * f_a / (beta * f_a + f_b)
    w_scrub = fa_ * (p_a - y_f) / (y_f - f_a)
    w_extr = (fb_ * p_b - f_b + fa_ * (1.0 - y_f)) / (y_f - f_a)
    assert max(w_scrub, w_extr) <= 1.0 / (beta - 1.0) + 1e-12 or (p_a > 1 - 1e-9 and p_b > 1 - 1e-9)
    return w, max(w_scrub, w_extr)


def test_binary_optimum_respects_minimum_reflux() -> None:
    fs = build_flowsheet(load_spec(SPECS / "binary_sf_opt.toml"))
    solver = SteadySolver(fs)
    design = solver.solve()
    assert design.success
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=Objective.REAGENT), solver=solver)
    result = opt.optimise(current=design)
    assert result.success, result.message
    assert result.steady is not None
    for k in result.optimum.kpis:
        assert k.purity >= 0.9 - 1e-7
    # the optimiser lowered the scrub acid use, but cannot beat the pinch
    w, w_min = _pinch_reflux(result.steady, fs)
    w0, _ = _pinch_reflux(design, fs)
    assert w < w0
    assert w >= w_min
    # the ideal-purity limit: the bound never exceeds 1/(beta - 1)
    assert w_min <= 1.0


def test_infeasible_spec_names_the_spec_and_how_close_it_gets(tb_dy) -> None:
    fs, solver, design = tb_dy
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=Objective.REAGENT), solver=solver)
    with pytest.raises(InfeasibleError) as info:
        opt.optimise(design.parameters.values, current=design, specs={"Dy2O3": {"purity_min": 0.99999}})
    err = info.value
    assert "Dy2O3 purity_min" in err.message
    assert "cannot be met" in err.message
    violated = err.details["violated"]
    dy = next(v for v in violated if v["constraint"] == "Dy2O3 purity_min")
    assert dy["bound"] == 0.99999
    assert 0.99 < dy["best"] < 0.99999
    assert set(err.details["best_setpoints"]) == {v.name for v in opt.variables}


def test_an_elastic_problem_that_stops_short_is_solved_again_from_ipopts_last_iterate(
    tb_dy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the elastic problem runs out of iterations from the start (here: its first solve is
    made to report IPOPT's iteration limit), it is solved again from where IPOPT stopped on the
    original problem, and that proves the unreachable spec out of reach; the stopped iterate is
    never reported as the best point."""
    fs, solver, design = tb_dy
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=Objective.REAGENT), solver=solver)
    real = opt._elastic_solve
    calls: list[dict] = []

    def stopped_first(args, lbg, ubg, phys, start_is_steady=True):
        calls.append({"x0": np.asarray(args["x0"]).copy(), "start_is_steady": start_is_steady})
        if len(calls) == 1:
            return {"x": np.asarray(args["x0"])}, {"success": False, "iter_count": 0,
                                                  "return_status": "Maximum_Iterations_Exceeded"}, []
        return real(args, lbg, ubg, phys, start_is_steady)

    monkeypatch.setattr(opt, "_elastic_solve", stopped_first)
    with pytest.raises(InfeasibleError) as info:
        opt.optimise(design.parameters.values, current=design, specs={"Dy2O3": {"purity_min": 0.99999}})
    assert len(calls) == 2
    assert calls[0]["start_is_steady"]
    assert not calls[1]["start_is_steady"]
    assert not np.array_equal(calls[0]["x0"], calls[1]["x0"])  # IPOPT's last iterate, not the start
    assert "Dy2O3 purity_min 0.99999 cannot be met" in info.value.message


def test_economics_exclude_unpriced_oxalic_acid_or_use_a_given_price(tb_dy) -> None:
    fs, _, design = tb_dy
    z, p = design.z, design.parameters.values
    without = Economics(fs, "china_domestic").evaluate(z, p)
    assert "oxalic_acid" in without.excluded
    assert "oxalic_acid" not in without.cost_by_item
    priced = Economics(fs, "china_domestic", EconomicAssumptions(oxalic_acid_usd_per_kg=1.0)).evaluate(z, p)
    # 1.5 mol H2C2O4.2H2O (126.065 g/mol) per mol RE in both products
    re_mol = sum(
        sum(c for s, c in design.stream(pr.stream).composition_mol_per_l.items() if s != "Na")
        * design.stream(pr.stream).flow_l_per_h
        for pr in design.products
    )
    assert priced.cost_by_item["oxalic_acid"] == pytest.approx(1.5 * re_mol * 0.126065, rel=1e-9)
    assert priced.margin_usd_per_h < without.margin_usd_per_h
    hcl = Economics(fs, "ex_china").evaluate(z, p).cost_by_item["TbDy.HCl_strip"]
    assert hcl == pytest.approx(150.0 * 5.0 * 0.036458 * 250.67 / 1000.0 / 0.35, rel=1e-6)


def test_options_are_validated() -> None:
    with pytest.raises(InputError, match="objective"):
        OptimisationOptions(objective="profit")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="price_scenario"):
        OptimisationOptions(price_scenario="mars")
    with pytest.raises(InputError, match="spec_backoff"):
        OptimisationOptions(spec_backoff=1.5)
    with pytest.raises(InputError, match="inventory_payback_h: -1"):
        OptimisationOptions(inventory_payback_h=-1.0)
    with pytest.raises(InputError, match="start: 'reagent_first'"):
        OptimisationOptions(start="reagent_first")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="inventory_capital_rate_per_year: nan"):
        EconomicAssumptions(inventory_capital_rate_per_year=math.nan)
    assert math.isfinite(OptimisationOptions().tol)


def test_a_margin_solve_started_from_the_reagent_optimum_lands_on_the_same_optimum(tb_dy, margin_result) -> None:
    """The staged start (reagent-cost optimum first) that multi-circuit plants use by default
    reaches the margin that the single-circuit default (the current point) reaches."""
    fs, solver, design = tb_dy
    assert margin_result.start == "current point"  # auto on one circuit
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=Objective.MARGIN, start="reagent"), solver=solver)
    staged = opt.optimise(design.parameters.values, current=design)
    assert staged.success, staged.message
    assert staged.start == "reagent-cost optimum"
    assert staged.to_dict()["start"] == "reagent-cost optimum"
    # the tb_dy margin has near-equal local optima with different active sets (organic flow at its
    # maximum, or scrub flow and saponification at theirs: 5961.7 and 5962.0 USD/h): the two starts
    # may land on either, but on the same margin
    assert staged.optimum.objective_value == pytest.approx(margin_result.optimum.objective_value, rel=1e-4)
    assert all(k.on_spec for k in staged.optimum.kpis)


def test_a_warm_start_from_the_previous_optimum_lands_on_it_in_a_few_iterations(tb_dy, reagent_optimiser) -> None:
    """Re-optimising at the same point from the previous optimum and multipliers (the warm-start
    IPOPT) returns the same optimum in a few iterations; after a small feed change it moves the
    setpoints and stays on spec, again in a few iterations (the cold solve took 27)."""
    fs, solver, design = tb_dy
    opt, cold = reagent_optimiser
    again = opt.optimise(design.parameters.values, current=design, warm=cold)
    assert again.success
    assert again.iterations <= 10
    assert again.optimum.objective_value == pytest.approx(cold.optimum.objective_value, rel=1e-6)
    for name, value in cold.setpoints.items():
        assert again.setpoints[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    p = cold.parameters.copy()
    p[fs.parameters.index("feed.conc_mol_per_l.Tb")] *= 1.005
    moved = opt.optimise(p, current=solver.solve(p, z0=cold.z, p0=cold.parameters), warm=cold)
    assert moved.success
    assert moved.iterations < cold.iterations
    for k in moved.optimum.kpis:  # at the bound, to IPOPT's tolerance
        assert k.purity_min is None or k.purity >= k.purity_min - 1e-7, k
        assert k.recovery_min is None or k.recovery >= k.recovery_min - 1e-7, k
    assert moved.setpoints != cold.setpoints


def test_inventory_equals_the_residuals_stage_holdups(tb_dy) -> None:
    """The symbolic inventory (models.inventory) against the numeric holdups the steady solver's
    pseudo-transient steps use (Residual.holdups): two code paths, one set of volumes."""
    fs, solver, design = tb_dy
    z, p = design.z, design.parameters.values
    res = solver.residual
    held = res.holdups(res.local(z, p, jacobian=False), res.flows(p))
    lay = fs.circuits[0]
    inv = Inventory(fs, load_scenario("china_domestic")).evaluate(z, p)
    for i, s in enumerate(lay.elements):
        if s in inv.kg_reo_by_element:
            kg = float(held[0][0][i].sum()) * element(s).oxide_g_per_mol_element / 1000.0
            assert inv.kg_reo_by_element[s] == pytest.approx(kg, rel=1e-12), s
    assert "Na" not in inv.kg_reo_by_element
    scenario = load_scenario("china_domestic")
    value = sum(kg * (scenario.usd_per_kg(element(s).oxide) or 0.0) for s, kg in inv.kg_reo_by_element.items())
    assert inv.value_usd == pytest.approx(value, rel=1e-12)


def test_priced_inventory_keeps_the_margin_optimum_off_the_fold(tb_dy, margin_result) -> None:
    """Without a price on the inventory the tb_dy margin optimum fills the cascade (the inventory
    more than doubles) and sits at a fold of the steady states (condition > 1e9); the carrying
    cost (10 % a year) finds an optimum within 1 % of the same margin, well conditioned and
    with a smaller inventory, and a payback horizon on the fill holds the inventory at or below
    the design point's."""
    fs, solver, design = tb_dy
    free = SetpointOptimiser(
        fs,
        OptimisationOptions(economics=EconomicAssumptions(inventory_capital_rate_per_year=0.0)),
        solver=solver,
    ).optimise(design.parameters.values, current=design)
    assert free.success
    assert margin_result.success
    assert free.optimum.inventory_charge == 0.0
    assert free.optimum.inventory.value_usd > 2.0 * free.current.inventory.value_usd
    assert free.condition_estimate > CONDITION_WARNING
    priced = margin_result
    assert priced.condition_estimate < CONDITION_WARNING
    assert priced.optimum.inventory.value_usd < 0.7 * free.optimum.inventory.value_usd
    margin_free = free.optimum.economics.margin_usd_per_h
    assert priced.optimum.economics.margin_usd_per_h == pytest.approx(margin_free, rel=0.01)
    payback = SetpointOptimiser(fs, OptimisationOptions(inventory_payback_h=240.0), solver=solver).optimise(
        design.parameters.values, current=design
    )
    assert payback.success
    now, opt = payback.current.inventory, payback.optimum.inventory
    assert opt.value_usd <= now.value_usd
    carrying = opt.value_usd * 0.10 / 8760.0
    assert payback.optimum.inventory_charge == pytest.approx(carrying + (opt.value_usd - now.value_usd) / 240.0)
    assert payback.current.inventory_charge == pytest.approx(now.value_usd * 0.10 / 8760.0)


def test_an_unpriced_element_in_the_inventory_is_valued_at_zero_and_said_so(tb_dy) -> None:
    """A scenario without a Dy2O3 price: the inventory's value drops by exactly the Dy held times
    the Dy2O3 price, and the warning names the oxide."""
    fs, _, design = tb_dy
    z, p = design.z, design.parameters.values
    priced = load_scenario("china_domestic")
    unpriced = replace(
        priced, prices={**priced.prices, "Dy2O3": replace(priced.prices["Dy2O3"], usd_per_kg=None)}
    )
    full = Inventory(fs, priced)
    partial = Inventory(fs, unpriced)
    assert full.warnings == ()
    assert len(partial.warnings) == 1
    assert "Dy2O3 not priced" in partial.warnings[0]
    a, b = full.evaluate(z, p), partial.evaluate(z, p)
    assert a.kg_reo_by_element == b.kg_reo_by_element
    dy_value = a.kg_reo_by_element["Dy"] * priced.usd_per_kg("Dy2O3")
    assert a.value_usd - b.value_usd == pytest.approx(dy_value, rel=1e-12)
