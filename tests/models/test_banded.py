"""The steady solver's LU (models/_banded.py): band + border per circuit, circuits in feed order.

Checked against a dense solve on matrices built to have each feature (band, border columns,
links below the diagonal blocks) and against SuperLU on the example plants' Jacobians."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from models._banded import MAX_BORDER, BlockPlan, factorise
from models.errors import InputError
from models.flowsheet import build_flowsheet
from models.spec import load_spec
from models.steady import SteadyOptions, SteadySolver, startup_state

PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"


def _banded_blocks(rng: np.random.Generator, sizes: list[int], half: int, border: int, links: int) -> sp.csc_matrix:
    """Diagonal blocks banded within ``half``, each with ``border`` columns reaching its first rows
    from its last columns (an organic recycle), and ``links`` entries below the blocks."""
    n = sum(sizes)
    a = np.zeros((n, n))
    first = 0
    for size in sizes:
        blk = rng.normal(size=(size, size))
        i, j = np.indices((size, size))
        blk[np.abs(i - j) > half] = 0.0
        blk[np.arange(size), np.arange(size)] += 4.0 * half  # well conditioned
        blk[:border, size - border :] = rng.normal(size=(border, border))
        a[first : first + size, first : first + size] = blk
        if first > 0:
            rows = rng.integers(first, first + size, links)
            cols = rng.integers(0, first, links)
            a[rows, cols] = rng.normal(size=links)
        first += size
    return sp.csc_matrix(a)


@pytest.mark.parametrize("sizes", [[120], [60, 90, 75]])
def test_block_plan_solves_like_a_dense_solve(sizes: list[int]) -> None:
    rng = np.random.default_rng(3)
    jac = _banded_blocks(rng, sizes, half=5, border=4, links=6)
    blocks = [(int(sum(sizes[:b])), s) for b, s in enumerate(sizes)]
    plan = BlockPlan.build(jac.indices, jac.indptr, blocks, reach=5)
    assert plan is not None
    assert all(band.border.size == 4 and band.kl == 5 and band.ku == 5 for _, _, band, _ in plan.blocks)
    dense = jac.toarray()
    owner = np.repeat(np.arange(len(sizes)), sizes)
    below = owner[:, None] > owner[None, :]
    assert plan.lower.size == np.count_nonzero(dense[below])
    rhs = rng.normal(size=jac.shape[0])
    x = factorise(jac, plan).solve(rhs)
    np.testing.assert_allclose(x, np.linalg.solve(dense, rhs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_low_rank_border_uses_fewer_band_solves_and_solves_like_a_dense_solve(rank: int) -> None:
    """The far block's rank (here 0, 1 or 3 of its 6 columns), not its width, sets the number of
    band solves (models/_banded.py, BORDER_RANK_TOL); the solution is unchanged."""
    rng = np.random.default_rng(5)
    size, border = 90, 6
    a = _banded_blocks(rng, [size], half=4, border=border, links=0).toarray()
    a[:border, size - border :] = rng.normal(size=(border, rank)) @ rng.normal(size=(rank, border))
    coo = sp.coo_matrix(a)
    # the far entries stay in the pattern even where they are zero (rank 0), as in a plant
    far_r, far_c = np.nonzero(np.ones((border, border)))
    keep = ~((coo.row < border) & (coo.col >= size - border))
    rows = np.concatenate([coo.row[keep], far_r])
    cols = np.concatenate([coo.col[keep], far_c + size - border])
    vals = np.concatenate([coo.data[keep], a[far_r, far_c + size - border]])
    jac = sp.csc_matrix((vals, (rows, cols)), shape=(size, size))
    plan = BlockPlan.build(jac.indices, jac.indptr, [(0, size)], reach=4)
    assert plan is not None
    assert plan.blocks[0][2].border.size == border
    lu = plan.factorise(jac.data)
    assert lu.lus[0].w.shape[1] == rank
    rhs = rng.normal(size=size)
    np.testing.assert_allclose(lu.solve(rhs), np.linalg.solve(a, rhs), rtol=1e-10, atol=1e-12)


def test_block_plan_refuses_what_it_cannot_factorise() -> None:
    rng = np.random.default_rng(4)
    jac = _banded_blocks(rng, [50, 50], half=3, border=2, links=3).tolil()
    jac[10, 70] = 1.0  # a stream returned upstream: not block lower triangular
    jac = jac.tocsc()
    assert BlockPlan.build(jac.indices, jac.indptr, [(0, 50), (50, 50)], reach=3) is None
    wide = _banded_blocks(rng, [200], half=3, border=MAX_BORDER + 1, links=0)
    assert BlockPlan.build(wide.indices, wide.indptr, [(0, 200)], reach=3) is None
    # without a plan the LU is SuperLU's, and it solves the same system
    rhs = rng.normal(size=100)
    np.testing.assert_allclose(factorise(jac, None).solve(rhs), np.linalg.solve(jac.toarray(), rhs), rtol=1e-9)


def test_singular_band_raises_like_superlu() -> None:
    jac = sp.csc_matrix(np.diag([1.0, 2.0, 0.0, 3.0]))
    plan = BlockPlan.build(jac.indices, jac.indptr, [(0, 4)], reach=1)
    assert plan is not None
    with pytest.raises(RuntimeError, match="singular"):
        factorise(jac, plan)


@pytest.mark.parametrize("plant", ["tb_dy", "hree_refinery"])
def test_plant_jacobians_factorise_like_superlu(plant: str) -> None:
    """Every example plant's Jacobian is factorised by the plan, one band per circuit, and solves
    as SuperLU does: pseudo-time steps of the cold start and (tb_dy) the steady one at its solution."""
    fs = build_flowsheet(load_spec(PLANTS / f"{plant}.toml"))
    solver = SteadySolver(fs, SteadyOptions(linear_solver="band"))
    p = fs.parameter_vector()
    fv = solver.residual.flows(p)
    z = startup_state(fs, p)
    previous = solver.residual.holdups(solver.residual.local(z, p, jacobian=False), fv)
    cases = [(z, dt_h, previous) for dt_h in (0.1, 10.0, 1000.0)]
    if plant == "tb_dy":
        banded = solver.solve(p)
        reference = SteadySolver(fs).solve(p)  # SuperLU throughout
        assert banded.success
        assert banded.iterations == reference.iterations
        assert np.max(np.abs(banded.z - reference.z)) <= 1e-9
        cases.append((banded.z, np.inf, None))
    rng = np.random.default_rng(5)
    for zc, dt_h, prev in cases:
        _, jac = solver.residual.evaluate(zc, p, fv=fv, dt_h=dt_h, previous=prev)
        plan = solver._lu_plan(jac)
        assert plan is not None
        assert len(plan.blocks) == len(fs.circuits)
        rhs = rng.normal(size=jac.shape[0])
        x = factorise(jac, plan).solve(rhs)
        x_ref = spla.splu(jac, permc_spec="NATURAL").solve(rhs)
        assert np.max(np.abs(x - x_ref)) <= 1e-8 * np.max(np.abs(x_ref)), dt_h
        assert np.max(np.abs(jac @ x - rhs)) <= 1e-9 * np.max(np.abs(rhs)), dt_h


def test_unknown_linear_solver_is_refused() -> None:
    with pytest.raises(InputError, match="linear_solver"):
        SteadyOptions(linear_solver="mumps")  # type: ignore[arg-type]
