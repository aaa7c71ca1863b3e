"""Bad input to the feed-rate capacity continuation (models.capacity) is refused with the field
named; its agreement with the throughput NLP is tested through a study (tests/twin/test_studies.py).
Also the tolerance to which a product on its specification counts as on spec (models.kpi)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.capacity import CapacityOptions, feed_capacity
from models.errors import InputError
from models.flowsheet import build_flowsheet
from models.kpi import SPEC_TOL, meets
from models.optimisation import Objective, OptimisationOptions, ProductKpi, SetpointOptimiser
from models.spec import load_spec
from models.steady import SteadySolver

PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"feed_range": (1.2, 3.0)}, "feed_range"),
        ({"feed_range": (0.5, float("inf"))}, "feed_range"),
        ({"rel_tol": 0.0}, "rel_tol"),
        ({"first_step": 0.5, "max_step": 0.4}, "first_step"),
        ({"max_solves": 0}, "max_solves"),
        ({"max_wall_s": -5.0}, "max_wall_s"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InputError, match=field) as err:
        CapacityOptions(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_a_feed_moving_objective_is_refused() -> None:
    fs = build_flowsheet(load_spec(PLANTS / "tb_dy.toml"))
    solver = SteadySolver(fs)
    current = solver.solve()
    for objective in (Objective.THROUGHPUT, Objective.MARGIN):  # tb_dy's margin moves its feed flow
        opt = SetpointOptimiser(fs, OptimisationOptions(objective=objective), solver=solver)
        with pytest.raises(InputError, match="objective") as err:
            feed_capacity(opt, current)
        assert "reagent" in err.value.message


def test_a_product_on_its_specification_to_a_verification_residue_is_on_spec() -> None:
    """An optimum that sits on a specification is re-solved to about 1e-9 either side of it
    (SEG 0.9899999987 against 0.99 at the hree_refinery capacity): that is on spec; a shortfall an
    assay could see (1e-6) is not."""
    assert meets(0.9899999987, 0.99)
    assert not meets(0.99 - 1e-6, 0.99)
    assert meets(0.5, None)
    assert ProductKpi("SEG", 0.99 - 0.5 * SPEC_TOL, 0.8, 0.99, None).on_spec
    assert not ProductKpi("SEG", 0.99, 0.8 - 2 * SPEC_TOL, 0.99, 0.8).on_spec


def test_the_time_budget_stops_a_running_solve_and_says_so() -> None:
    """The budget is a deadline: IPOPT stops at its next iteration, no fallback or elastic solve
    starts, and a solve stopped by it does not count as a feed not reached."""
    fs = build_flowsheet(load_spec(PLANTS / "tb_dy.toml"))
    solver = SteadySolver(fs)
    current = solver.solve()
    opt = SetpointOptimiser(fs, OptimisationOptions(objective=Objective.REAGENT), solver=solver)
    res = feed_capacity(opt, current, CapacityOptions(max_wall_s=1e-3))
    assert len(res.steps) == 1  # the current feed is always tried
    assert not res.success
    assert res.steps[0].iterations <= 1
    assert res.steps[0].message.startswith("time budget ran out (IPOPT: User_Requested_Stop")
    assert not res.steps[0].infeasible  # stopped, not proven out of reach
    assert "the time budget (0.001 s) ran out after 1 optimisations; no feed tried so far met spec" in res.reason
    # without a deadline the same optimiser, its solvers built once, still solves: the deadline is reset
    again = opt.optimise(current.parameters.values, current=current)
    assert again.success, again.message
    with_time = feed_capacity(opt, current, CapacityOptions(max_wall_s=600.0, rel_tol=0.05))
    assert with_time.success
    assert with_time.bracket[0] > 1.0
    # warm steps fail fast: IPOPT's own "Infeasible_Problem_Detected" is no proof, and is not marked as one
    assert not any(s.infeasible for s in with_time.steps)
    # a specification the elastic problem proves out of reach is marked (then the walk searches down)
    proven = feed_capacity(
        opt, current, CapacityOptions(feed_range=(0.5, 2.0)), specs={"Dy2O3": {"purity_min": 0.99999}}
    )
    assert not proven.success
    assert [s.feed_scale for s in proven.steps] == [1.0, 0.5]
    assert proven.steps[0].infeasible
    assert "Dy2O3 purity_min 0.99999 cannot be met" in proven.steps[0].message
