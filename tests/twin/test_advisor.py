"""The twin's setpoint advisor: proposals limited to one write, priced inventory, checked paths."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.dynamics import DynamicModel
from models.flowsheet import build_flowsheet
from models.spec import load_spec
from models.steady import SteadySolver
from twin.advisor import OptimiserAdvisor
from twin.path import PURITY_TOLERANCE, STEP_FRACTIONS
from twin.safety import WRITE_HORIZON_H

PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"

pytestmark = pytest.mark.slow

ORGANIC = "TbDy.organic_flow_l_per_h"


@pytest.fixture(scope="module")
def tb_dy():
    fs = build_flowsheet(load_spec(PLANTS / "tb_dy.toml"))
    design = SteadySolver(fs).solve()
    assert design.success, design.message
    return fs, design


@pytest.fixture(scope="module")
def advisor(tb_dy) -> OptimiserAdvisor:
    fs, _ = tb_dy
    return OptimiserAdvisor(fs, dynamic_check_h=24.0)


def _lowest(fs, z, p, hours: float) -> dict[str, float]:
    run = DynamicModel(fs).simulate(z, hours, p=p)
    return {name: float(np.min(v)) for name, v in run.product_purity.items()}


def test_a_harmful_move_is_shortened_and_the_shortened_path_holds_the_floor(tb_dy, advisor) -> None:
    """Cutting the organic flow by 20 % sends Dy into the raffinate: within 24 h the Tb cut falls
    below its 98 % spec (checked with an independent integration), so the path check shortens the
    move, and on the shortened path (integrated again, independently) no product goes below the
    lower of its spec and its lowest when held. Raising the organic flow passes whole."""
    fs, design = tb_dy
    z, p = design.z, design.parameters.values
    bad = p.copy()
    bad[fs.parameters.index(ORGANIC)] = 800.0
    assert _lowest(fs, z, bad, 24.0)["Tb_cut"] < 0.98
    fraction, path, note = advisor.path.check(z, p, bad)
    assert 0.0 < fraction < 1.0
    assert "Tb_cut down to" in note
    assert f"Shortened to {fraction:g}" in note
    held = _lowest(fs, z, p, 24.0)
    step = p + fraction * (bad - p)
    again = _lowest(fs, z, step, 24.0)
    for ps in fs.spec.products:
        floor = min(ps.purity_min, held[ps.name])
        assert again[ps.name] >= floor - PURITY_TOLERANCE, ps.name
        assert path.lowest[ps.name] == pytest.approx(again[ps.name], abs=1e-6)
    good = p.copy()
    good[fs.parameters.index(ORGANIC)] = 1100.0
    assert advisor.path.check(z, p, good)[0] == 1.0


def test_a_move_that_no_fraction_saves_is_a_hold(tb_dy, advisor) -> None:
    """A move that takes the Tb cut off spec even a quarter of the way (organic flow to a third)
    is refused whole: the advisor proposes the current setpoints and says why."""
    fs, design = tb_dy
    z, p = design.z, design.parameters.values
    bad = p.copy()
    bad[fs.parameters.index(ORGANIC)] = 300.0  # a quarter of the way is 825 L/h
    fraction, _, note = advisor.path.check(z, p, bad)
    assert fraction == 0.0
    assert note.startswith("Holding: every move tried takes ")
    assert "Tb_cut down to" in note


def test_a_proposal_moves_one_write_and_reports_its_path_and_inventory(tb_dy, advisor) -> None:
    """From the design point the advisor proposes a margin move within one write's limits of the
    setpoints in force (which it takes from ``current``, not from the flows in ``p``), with the
    lowest purity of each product on its checked path and the stage inventory it leads to."""
    fs, design = tb_dy
    z, p = design.z, design.parameters.values.copy()
    current = {m.variable: float(p[fs.parameters.index(m.variable)]) for m in fs.spec.manipulated}
    noisy = p.copy()
    noisy[fs.parameters.index(ORGANIC)] *= 1.01  # a flow reading 1 % above its setpoint
    advice = advisor.advise(z, noisy, current)
    assert advice.success, advice.message
    for m in fs.spec.manipulated:
        move = advice.setpoints[m.variable] - current[m.variable]
        assert abs(move) <= m.max_rate_per_h * WRITE_HORIZON_H * (1 + 1e-9) + 1e-9, m.variable
    assert any(abs(advice.setpoints[n] - current[n]) > 1e-6 for n in current)
    fraction = advice.predicted["path.fraction_of_move"]
    assert fraction in STEP_FRACTIONS
    for ps in fs.spec.products:
        assert advice.predicted[f"{ps.name}.lowest_purity_24h"] >= ps.purity_min - PURITY_TOLERANCE
    assert advice.predicted["inventory.kg_reo"] > 0
    assert "stage inventory" in advice.reason


def test_off_spec_now_gives_a_recovery_move_that_raises_the_purity(tb_dy, advisor) -> None:
    """Twelve hours after the organic flow was cut to 800 L/h the Tb cut is off spec: the advisor
    does not optimise the steady economics but proposes the recovery move (one write of every
    variable that helps); an independent 24 h integration with the proposed setpoints gives the
    Tb cut a higher mean purity than holding does, as predicted."""
    fs, design = tb_dy
    p = design.parameters.values.copy()
    p[fs.parameters.index(ORGANIC)] = 800.0
    run = DynamicModel(fs).simulate(design.z, 12.0, p=p)
    z = run.final_z
    assert run.product_purity["Tb_cut"][-1] < 0.98
    current = {m.variable: float(p[fs.parameters.index(m.variable)]) for m in fs.spec.manipulated}
    advice = advisor.advise(z, p, current)
    assert advice.success, advice.message
    assert advice.reason.startswith("off spec now (Tb_cut 0.9")
    assert advice.active_constraints == ()
    assert advice.setpoints[ORGANIC] == pytest.approx(800.0 + 100.0 * WRITE_HORIZON_H)  # more organic helps
    gain = advice.predicted["recovery.mean_purity_gain"]
    assert gain > 0.0
    moved = p.copy()
    for name, value in advice.setpoints.items():
        moved[fs.parameters.index(name)] = value
    dyn = DynamicModel(fs)
    mean_moved = float(np.mean(dyn.simulate(z, 24.0, p=moved).product_purity["Tb_cut"]))
    mean_held = float(np.mean(dyn.simulate(z, 24.0, p=p).product_purity["Tb_cut"]))
    assert mean_moved - mean_held == pytest.approx(gain, rel=0.05)


def test_an_optimum_off_spec_when_verified_is_not_proposed(tb_dy, advisor, monkeypatch) -> None:
    """The specs are hard constraints of the NLP, so a product off spec at the steady state
    re-solved at the optimum means the plant would settle elsewhere (another branch near a fold):
    the advisor refuses to propose it, naming the product (the twin then holds)."""
    fs, design = tb_dy
    z, p = design.z, design.parameters.values.copy()
    current = {m.variable: float(p[fs.parameters.index(m.variable)]) for m in fs.spec.manipulated}
    real = advisor.optimiser.optimise

    def settles_elsewhere(*args, **kwargs):
        res = real(*args, **kwargs)
        kpis = tuple(replace(k, purity=0.97) if k.name == "Tb_cut" else k for k in res.optimum.kpis)
        return replace(res, optimum=replace(res.optimum, kpis=kpis))

    monkeypatch.setattr(advisor.optimiser, "optimise", settles_elsewhere)
    advice = advisor.advise(z, p, current)
    assert not advice.success
    assert advice.setpoints == {}
    assert advice.reason == "optimum off spec when verified"
    assert "Tb_cut purity 0.9700" in advice.message
