"""Cascade models: analytic checks, balances, Jacobians, sensitivities, dynamics vs steady."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.dynamics import DynamicModel, DynamicOptions, Move
from models.errors import ConvergenceError, InputError, SpecError
from models.flowsheet import build_flowsheet
from models.residual import Residual
from models.sensitivity import SensitivityAnalysis
from models.spec import load_spec, parse_spec
from models.steady import LN_TRACE, SteadySolver, startup_state
from tests.models._checks import assert_dynamics_hold, assert_jacobian_equals_ad

SPECS = Path(__file__).resolve().parents[1] / "specs"
PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"


def solve(path: Path, **overrides: float):
    fs = build_flowsheet(load_spec(path))
    solver = SteadySolver(fs)
    result = solver.solve(fs.parameter_vector(overrides))
    assert result.success, result.message
    return fs, solver, result


@pytest.fixture(scope="module")
def tb_dy():
    return solve(PLANTS / "tb_dy.toml")


def test_kremser_constant_d_countercurrent() -> None:
    _, _, res = solve(SPECS / "kremser.toml")
    d, g, aq, n = 2.0, 75.0, 100.0, 8
    e = d * g / aq
    expected = (e - 1.0) / (e ** (n + 1) - 1.0)
    raffinate = res.stream("X.raffinate").composition_mol_per_l["Nd"] / 0.05
    assert raffinate == pytest.approx(expected, rel=1e-9)
    assert res.max_mass_balance_rel_error < 1e-9


@pytest.mark.parametrize("n_stages", [1, 3, 12])
def test_kremser_holds_for_any_stage_count(tmp_path: Path, n_stages: int) -> None:
    text = (SPECS / "kremser.toml").read_text().replace("extraction_stages = 8", f"extraction_stages = {n_stages}")
    spec = tmp_path / "k.toml"
    spec.write_text(text)
    _, _, res = solve(spec)
    e = 1.5
    expected = (e - 1.0) / (e ** (n_stages + 1) - 1.0)
    assert res.stream("X.raffinate").composition_mol_per_l["Nd"] / 0.05 == pytest.approx(expected, rel=1e-9)


def test_metal_closure_is_kremser_from_any_start_with_constant_d() -> None:
    """With D constant the frozen-D balances are the steady balances: one closure from the
    start-up state gives Kremser's raffinate, and the steady solve's whole metal profile."""
    fs, solver, res = solve(SPECS / "kremser.toml")
    p = fs.parameter_vector()
    closed = solver.close_metal_balances(startup_state(fs, p), p, solver.residual.flows(p))
    lay = fs.circuits[0]
    metal = lay.offset + np.arange(lay.n_stages) * lay.nv  # Nd, stage by stage; the raffinate is the leanest
    assert np.exp(closed[metal]) == pytest.approx(np.exp(res.z[metal]), rel=1e-9)
    e = 1.5
    assert math.exp(closed[metal].min()) / 0.05 == pytest.approx((e - 1.0) / (e**9 - 1.0), rel=1e-9)


def test_metal_closure_restores_traces_of_tb_dy(tb_dy) -> None:
    """At a steady state the closure changes nothing; traces set far from their profile (the
    slow tail of the cold walk) are put back on it, and a steady Newton from there is done."""
    fs, solver, res = tb_dy
    p = fs.parameter_vector()
    fv = solver.residual.flows(p)
    same = solver.close_metal_balances(res.z, p, fv)
    assert np.max(np.abs(same - res.z)) < 1e-8
    trace = np.zeros(fs.n_unknowns, dtype=bool)
    for lay in fs.circuits:
        rows = lay.offset + np.arange(lay.n_stages)[:, None] * lay.nv + np.arange(lay.n_el)[None, :]
        trace[rows] = res.z[rows] < LN_TRACE
    assert trace.sum() > 20  # tb_dy has traces far below 1e-31 mol/L in its long sections
    off = res.z.copy()
    off[trace] += np.where(np.arange(trace.sum()) % 2 == 0, 40.0, -40.0)
    assert np.max(np.abs(solver.residual.evaluate(off, p, fv=fv, jacobian=False)[0])) > 1.0
    back = solver.close_metal_balances(off, p, fv)
    assert np.max(np.abs(back - res.z)) < 1e-6
    polished = solver.solve(p, z0=back, continuation=False)
    assert polished.success
    assert polished.iterations <= 2


def test_two_section_closed_form() -> None:
    _, _, res = solve(SPECS / "two_section.toml")
    raf, org = res.stream("X.raffinate"), res.stream("X.loaded_organic")
    g, f, w, n, m = 120.0, 100.0, 40.0, 6, 5
    for el, log10_d in (("Pr", -0.1), ("Nd", 0.25)):
        d = 10.0**log10_d
        e, ep = d * g / (f + w), d * g / w
        p_over_r = e * (e**n - 1) / (e - 1) * ep**m * (ep - 1) / (ep ** (m + 1) - 1)
        phi = 1.0 / (1.0 + 1.0 / p_over_r)
        p = org.composition_mol_per_l[el] * org.flow_l_per_h
        r = raf.composition_mol_per_l[el] * raf.flow_l_per_h
        assert p / (p + r) == pytest.approx(phi, rel=1e-9)


def test_countercurrent_directions_stage_counts(tmp_path: Path) -> None:
    """More extraction stages purify the raffinate; more scrub stages purify the extract."""
    base = (SPECS / "binary_sf.toml").read_text()

    def purities(n: int, m: int) -> tuple[float, float]:
        spec = tmp_path / f"sf_{n}_{m}.toml"
        spec.write_text(
            base.replace("extraction_stages = 8", f"extraction_stages = {n}").replace(
                "scrub_stages = 8", f"scrub_stages = {m}"
            )
        )
        _, _, res = solve(spec)
        return res.product("Pr_raffinate").purity, res.product("Nd_extract").purity

    raf_few, _ = purities(3, 8)
    raf_many, _ = purities(10, 8)
    _, ext_few = purities(8, 3)
    _, ext_many = purities(8, 10)
    assert raf_many > raf_few
    assert ext_many > ext_few


def test_tb_dy_design_point_on_spec_and_balanced(tb_dy) -> None:
    _, _, res = tb_dy
    assert res.max_mass_balance_rel_error < 1e-9
    for product in res.products:
        assert 0.0 < product.purity <= 1.0
        assert 0.0 < product.recovery <= 1.0 + 1e-9
    assert res.product("Dy2O3").on_spec
    # Tb (INTERPOLATED) and Ho (ESTIMATED) parameters are declared as what the answer rests on
    names = {r.parameter for r in res.rests_on}
    assert "P507-HCl:log10_k.Tb" in names
    assert "P507-HCl:log10_k.Ho" in names


def test_tb_dy_scrub_acid_moves_products_as_theory_says(tb_dy) -> None:
    """More scrub acid purifies the Dy strip product and sends more Dy to the Tb raffinate."""
    fs, solver, base = tb_dy
    more = solver.solve(fs.parameter_vector({"TbDy.scrub_acid_mol_per_l": 2.2}), z0=base.z)
    assert more.success
    assert more.product("Dy2O3").purity > base.product("Dy2O3").purity
    assert more.product("Dy2O3").recovery < base.product("Dy2O3").recovery
    more_org = solver.solve(fs.parameter_vector({"TbDy.organic_flow_l_per_h": 1100.0}), z0=base.z)
    assert more_org.product("Dy2O3").recovery > base.product("Dy2O3").recovery


@pytest.fixture(scope="module")
def adjusted_pair():
    """Two circuits, the second fed with the first's strip liquor at an adjusted acidity."""
    return solve(SPECS / "adjusted_pair.toml")


@pytest.mark.parametrize("plant", ["tb_dy", "adjusted_pair"])
def test_assembled_jacobian_equals_casadi_ad(plant: str, request: pytest.FixtureRequest) -> None:
    fs, solver, res = request.getfixturevalue(plant)
    z = res.z + 0.05 * np.random.default_rng(3).standard_normal(res.z.size)
    assert_jacobian_equals_ad(fs, solver.residual, z, fs.parameter_vector())


def test_inexact_pseudo_time_steps_find_the_tight_walks_solution_in_fewer_iterations(
    tb_dy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pseudo-time step is solved to a tenth of its starting residual (PSEUDO_STEP_LOOSE):
    the cold walk ends on the solution of a walk whose steps are all solved to 1e-9."""
    import models.steady as steady

    fs, _, inexact = tb_dy
    monkeypatch.setattr(steady, "PSEUDO_STEP_LOOSE", 0.0)  # every step to PSEUDO_STEP_TOL
    tight = SteadySolver(fs).solve()
    assert tight.success, tight.message
    assert inexact.method == tight.method == "pseudo-transient continuation + newton"
    assert inexact.iterations < tight.iterations
    np.testing.assert_allclose(inexact.z, tight.z, rtol=0.0, atol=1e-9)


def test_cold_start_walks_without_upstream_traces_and_finds_the_same_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second circuit of a pair walks without La, a trace of the first's strip liquor
    (TRACE_FEED_FRACTION); the closure and the final Newton give the state the full walk gives."""
    import tomllib

    import models.steady as steady

    data = tomllib.loads((SPECS / "adjusted_pair.toml").read_text())
    data["feeds"][0]["composition"]["La"] = 0.05  # light: leaves in the GdTb raffinate
    fs = build_flowsheet(parse_spec(data))
    reduced = SteadySolver(fs)
    res = reduced.solve()
    assert res.success, res.message
    walked = {circuit: els for circuit, els in reduced.__dict__["_subs"]}
    assert "La" in walked["GdTb"]
    assert "La" not in walked["TbDy"]
    liquor = res.stream("GdTb.strip_liquor").composition_mol_per_l  # TbDy's feed
    metal = sum(c for s_el, c in liquor.items() if s_el != "Na")
    assert 0.0 < liquor["La"] < steady.TRACE_FEED_FRACTION * metal
    monkeypatch.setattr(steady, "TRACE_FEED_FRACTION", 0.0)
    full = SteadySolver(fs).solve()
    assert full.success, full.message
    np.testing.assert_allclose(res.z, full.z, rtol=0.0, atol=1e-9)
    assert res.max_mass_balance_rel_error < 1e-9
    tbdy = res.circuit("TbDy")
    assert np.all(tbdy.aqueous_mol_per_l[tbdy.elements.index("La")] > 0.0)


def test_sensitivities_agree_with_finite_differences(tb_dy) -> None:
    fs, solver, res = tb_dy
    p = fs.parameter_vector()
    name = "TbDy.scrub_acid_mol_per_l"
    sens = SensitivityAnalysis(fs).compute(res.z, p, [name])
    h = 1e-4
    up = solver.solve(fs.parameter_vector({name: p[fs.parameters.index(name)] + h}), z0=res.z)
    dn = solver.solve(fs.parameter_vector({name: p[fs.parameters.index(name)] - h}), z0=res.z)
    for i, prod in enumerate(sens.products):
        fd_pur = (up.product(prod).purity - dn.product(prod).purity) / (2 * h)
        fd_rec = (up.product(prod).recovery - dn.product(prod).recovery) / (2 * h)
        assert sens.d_purity[i, 0] == pytest.approx(fd_pur, rel=2e-3, abs=1e-7)
        assert sens.d_recovery[i, 0] == pytest.approx(fd_rec, rel=2e-3, abs=1e-7)


def test_dynamics_stay_at_steady_state(tb_dy) -> None:
    fs, _, res = tb_dy
    assert_dynamics_hold(fs, res.z, 24.0)


def test_dynamic_step_heads_to_new_steady_state(tb_dy) -> None:
    """A scrub-acid step: after the cascade's slow response (days), the product composition
    approaches the new steady solve (the first hours show an inverse response)."""
    fs, solver, res = tb_dy
    name = "TbDy.scrub_acid_mol_per_l"
    model = DynamicModel(fs, DynamicOptions(output_interval_h=100.0))
    run = model.simulate(res.z, 800.0, moves=[Move(name, 1.0, 2.2)])
    target = solver.solve(fs.parameter_vector({name: 2.2}), z0=res.z)
    rec = run.product_recovery["Dy2O3"]
    goal = target.product("Dy2O3").recovery
    assert abs(goal - rec[-1]) < 0.1 * abs(goal - rec[0])
    assert np.all(np.diff(run.times_h) > 0)


@pytest.mark.slow
def test_tb_dy_startup_settles_on_the_steady_solve(tb_dy) -> None:
    """From barren organic and acid-filled stages (saponification ramped over 48 h) the
    simulated plant settles on the steady solve to 1e-6 relative."""
    fs, _, res = tb_dy
    p = fs.parameter_vector({"TbDy.saponification": 0.0})
    z0 = startup_state(fs, p)
    model = DynamicModel(fs, DynamicOptions(output_interval_h=500.0, rtol=1e-8, atol=1e-8))
    run = model.simulate(z0, 4000.0, p=p, moves=[Move("TbDy.saponification", 0.0, 0.36, ramp_h=48.0)])
    states_dyn = Residual(fs).local(run.final_z, fs.parameter_vector(), jacobian=False)[0]
    states_ss = Residual(fs).local(res.z, fs.parameter_vector(), jacobian=False)[0]
    significant = states_ss.x > 1e-8
    rel = np.abs(states_dyn.x - states_ss.x) / states_ss.x
    assert rel[significant].max() < 1e-6


def test_bad_specs_are_refused_with_the_field_named() -> None:
    import tomllib

    good = tomllib.loads((SPECS / "kremser.toml").read_text())

    def refuse(mutate, field: str) -> None:
        data = tomllib.loads((SPECS / "kremser.toml").read_text())
        mutate(data)
        with pytest.raises(SpecError) as err:
            parse_spec(data)
        assert field in err.value.message

    refuse(lambda d: d["feeds"][0].__setitem__("flow_l_per_h", -5.0), "flow_l_per_h")
    refuse(lambda d: d["feeds"][0]["composition"].__setitem__("Xx", 0.1), "Xx")
    refuse(lambda d: d["circuits"][0].__setitem__("feed_stage", 20), "feed_stage")
    refuse(lambda d: d["circuits"][0].__setitem__("feed", "nowhere"), "circuits[0].feed")

    def loop(d):
        c2 = dict(d["circuits"][0])
        c2["name"] = "Y"
        c2["feed"] = "X.raffinate"
        d["circuits"][0]["feed"] = "Y.raffinate"
        d["circuits"].append(c2)

    refuse(loop, "fed by nothing")
    assert parse_spec(good).plant.name == "kremser"


def test_unknown_move_parameter_is_refused(tb_dy) -> None:
    fs, _, res = tb_dy
    with pytest.raises(InputError, match="unknown parameter"):
        DynamicModel(fs).simulate(res.z, 1.0, moves=[Move("TbDy.nonsense", 0.5, 1.0)])
    with pytest.raises(InputError, match="hours"):
        DynamicModel(fs).simulate(res.z, -1.0)


def test_warm_start_is_faster_than_cold(tb_dy) -> None:
    """A warm start needs a few Newton iterations, or a short walk in the parameters."""
    fs, solver, res = tb_dy
    p0 = fs.parameter_vector()
    near = solver.solve(fs.parameter_vector({"TbDy.organic_flow_l_per_h": 1001.0}), z0=res.z, p0=p0)
    assert near.success
    assert near.method == "newton"
    assert near.iterations <= 8
    farther = solver.solve(fs.parameter_vector({"TbDy.organic_flow_l_per_h": 985.0}), z0=res.z, p0=p0)
    assert farther.success
    assert farther.method != "pseudo-transient continuation + newton"
    assert farther.iterations < res.iterations  # less work than the cold solve (times: benchmarks/)
    assert math.isfinite(farther.max_mass_balance_rel_error)


def test_a_newton_only_solve_fails_fast_where_the_full_solve_continues(tb_dy) -> None:
    """``continuation=False`` (the optimiser's verification) is Newton from the given point only:
    from a start too far for Newton it reports failure without continuation steps, where the
    default solve walks on to the steady state; without a start it is refused, naming z0."""
    fs, solver, res = tb_dy
    p = fs.parameter_vector()
    far = res.z.copy()
    far[: fs.n_unknowns // 2] += 3.0  # half the stage logs e^3 off
    quick = solver.solve(p, z0=far, continuation=False)
    full = solver.solve(p, z0=far, p0=p)
    assert full.success
    assert not quick.success
    assert quick.continuation_steps == 0
    assert quick.iterations <= solver.options.max_newton
    assert full.continuation_steps > 0 or full.iterations > quick.iterations
    with pytest.raises(InputError) as err:
        solver.solve(p, continuation=False)
    assert err.value.field == "z0"


def test_advance_gives_up_after_the_allowed_failed_integrations(tb_dy) -> None:
    """``advance`` halves a failing interval down to 1/16384 of it (a plant simulator must get
    through); with ``max_failures`` it gives up after that many failed IDAS calls (the
    estimator's bound), and both say so."""
    fs, _, res = tb_dy
    model = DynamicModel(fs)
    start = model.initial_state(res.z, fs.parameter_vector())
    broken = type(start)(start.t_h, np.full_like(start.xd, np.nan), start.z)
    with pytest.raises(ConvergenceError, match="after 4 failed attempts"):
        model.advance(broken, fs.parameter_vector(), 1.0, max_failures=3)
    with pytest.raises(ConvergenceError, match="at the smallest split"):
        model.advance(broken, fs.parameter_vector(), 1.0)
    assert model.advance(start, fs.parameter_vector(), 1.0, max_failures=0).t_h == pytest.approx(1.0)
