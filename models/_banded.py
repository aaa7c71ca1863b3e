"""LU of a stage-ordered Jacobian: a LAPACK band LU plus a low-rank border (Woodbury) per circuit.

Private helper of the steady solver. A circuit's unknowns are numbered stage by stage, and a
stage's rows involve only its own unknowns and its two neighbours', so the Jacobian is banded
(half-widths about twice the unknowns per stage) apart from a few columns: the organic recycled
from the last strip stage to the first extraction stage, a reflux, a link between circuits.
Splitting J = B + U Vᵀ, with B the band and U the far entries of those k border columns,

    J⁻¹ b = y − W (I + W_b)⁻¹ y_b,   y = B⁻¹ b,   W = B⁻¹ U,

where W_b and y_b are the rows of W and y at the border columns (Sherman-Morrison-Woodbury).
The far entries lie in a few rows (those of the stage the recycle enters) and their block is
often of lower rank than the border is wide (the stage's rows depend on the recycled organic's
metals only, and the traces' columns are tiny): U Vᵀ is taken from the block's singular value
decomposition, without the singular values below ``BORDER_RANK_TOL`` times the largest (a
change of the far entries at the level of rounding), so that W needs one band solve per rank,
not per border column (8 instead of 14 on hree_refinery's Gd/Tb circuit).
LAPACK's band LU with partial pivoting (``dgbtrf``) and the border's k band solves together
take 1.5-1.7 times less than SuperLU with the natural order on the example plants'
Jacobians (benchmarks/linear_solver.py).

A flowsheet's circuits are numbered in feed order, and a circuit's balances involve only its own
unknowns and those of the circuits that feed it, so the Jacobian is block lower triangular by
circuit: each circuit's block is factorised as above and the blocks are solved in order, the
links moving the upstream solution to the right-hand side. A flowsheet that is not (a stream
returned to an upstream circuit) or a border wider than :data:`MAX_BORDER` goes to SuperLU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

Array = npt.NDArray[np.float64]

__all__ = ["MAX_BORDER", "BandPattern", "BlockPlan", "Factorisation", "factorise"]

MAX_BORDER = 48
"""Widest border (columns with entries outside the band) factorised as band + Woodbury; wider
ones go to SuperLU. Each rank of the far block costs one band solve per factorisation."""
BORDER_RANK_TOL = 1e-14
"""Singular values of the far block below this fraction of the largest are left out of the
Woodbury update (the block's rounding level)."""


class Factorisation(Protocol):
    """What the Newton iterations need of an LU: solve with one right-hand side."""

    def solve(self, rhs: Array) -> Array: ...


@dataclass(frozen=True)
class BandPattern:
    """Where the entries of a fixed CSC pattern go in the band storage and the border.

    Attributes
    ----------
    n
        Matrix order.
    kl, ku
        Sub- and super-diagonals of the band.
    near
        Positions (in the CSC data array) of the entries inside the band.
    ab_flat
        Their positions in the flattened (column-major) LAPACK band array of ``2 kl + ku + 1`` rows.
    far
        Positions of the entries outside the band.
    far_row_set, far_row_slot, far_slot
        The rows holding far entries; each far entry's row's slot among them, and its column's
        slot in the border.
    border
        The border columns.
    """

    n: int
    kl: int
    ku: int
    near: npt.NDArray[np.int64]
    ab_flat: npt.NDArray[np.int64]
    far: npt.NDArray[np.int64]
    far_row_set: npt.NDArray[np.int64]
    far_row_slot: npt.NDArray[np.int64]
    far_slot: npt.NDArray[np.int64]
    border: npt.NDArray[np.int64]

    @classmethod
    def from_csc(
        cls, indices: npt.NDArray[np.integer], indptr: npt.NDArray[np.integer], reach: int
    ) -> BandPattern | None:
        """The split of a CSC pattern with entries within ``reach`` of the diagonal in the band;
        None when the border would be wider than :data:`MAX_BORDER` columns."""
        n = indptr.size - 1
        cols = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        rows = indices.astype(np.int64)
        offset = cols - rows
        inside = np.abs(offset) <= reach
        border = np.unique(cols[~inside])
        if border.size > MAX_BORDER:
            return None
        kl = int(max(0, -offset[inside].min(initial=0)))
        ku = int(max(0, offset[inside].max(initial=0)))
        ldab = 2 * kl + ku + 1
        near = np.flatnonzero(inside)
        far = np.flatnonzero(~inside)
        far_rows = np.unique(rows[far])
        return cls(
            n,
            kl,
            ku,
            near,
            cols[near] * ldab + kl + ku + rows[near] - cols[near],
            far,
            far_rows,
            np.searchsorted(far_rows, rows[far]),
            np.searchsorted(border, cols[far]),
            border,
        )

    def factorise(self, data: Array) -> _BorderedBandLU:
        """Band LU and Woodbury capacitance for the matrix with CSC ``data`` on this pattern.

        Raises ``RuntimeError`` when the band or the capacitance matrix is singular (as SuperLU)."""
        ldab = 2 * self.kl + self.ku + 1
        ab = np.zeros((self.n, ldab))  # the transpose of LAPACK's column-major (ldab, n) array
        ab.ravel()[self.ab_flat] = data[self.near]
        lub, piv, info = lapack.dgbtrf(ab.T, self.kl, self.ku, overwrite_ab=1)
        if info != 0:
            raise RuntimeError(f"band LU: factor is exactly singular (pivot {info})")
        k = self.border.size
        if k == 0:
            return _BorderedBandLU(self, lub, piv, np.empty((self.n, 0)), None, np.empty((0, 0)))
        block = np.zeros((self.far_row_set.size, k))
        block[self.far_row_slot, self.far_slot] = data[self.far]
        if not np.all(np.isfinite(block)):
            raise RuntimeError("band LU: border is singular (non-finite entries)")
        left, sv, vt, info = lapack.dgesdd(block, full_matrices=0)
        if info != 0:
            raise RuntimeError(f"band LU: border's singular value decomposition failed ({info})")
        rank = int(np.count_nonzero(sv > BORDER_RANK_TOL * sv[0])) if sv.size and sv[0] > 0.0 else 0
        if rank == 0:
            return _BorderedBandLU(self, lub, piv, np.empty((self.n, 0)), None, vt[:0])
        u = np.zeros((self.n, rank))
        u[self.far_row_set] = left[:, :rank] * sv[:rank]
        w, info = lapack.dgbtrs(lub, self.kl, self.ku, u, piv)
        if info != 0:
            raise RuntimeError(f"band LU: solve failed ({info})")
        vt = vt[:rank]
        cap = np.eye(rank) + vt @ w[self.border, :]
        if not np.all(np.isfinite(cap)):
            raise RuntimeError("band LU: border is singular (non-finite capacitance matrix)")
        cap_f, cap_piv, info = lapack.dgetrf(cap)
        if info != 0:
            raise RuntimeError("band LU: border is exactly singular")
        cap_lu = (cap_f, cap_piv)
        return _BorderedBandLU(self, lub, piv, w, cap_lu, vt)


@dataclass(frozen=True)
class _BorderedBandLU:
    pattern: BandPattern
    lub: Array
    piv: npt.NDArray[np.int32]
    w: Array  # B⁻¹ U, U = the far block's left singular vectors times the singular values
    cap_lu: tuple[Array, npt.NDArray[np.int32]] | None  # LU of I + Vᵀ W_b
    vt: Array  # Vᵀ on the border columns

    def solve(self, rhs: Array) -> Array:
        pat = self.pattern
        y, info = lapack.dgbtrs(self.lub, pat.kl, pat.ku, rhs, self.piv)
        if info != 0:
            raise RuntimeError(f"band LU: solve failed ({info})")
        if self.cap_lu is None:
            return np.asarray(y)
        c, info = lapack.dgetrs(self.cap_lu[0], self.cap_lu[1], self.vt @ y[pat.border])
        return np.asarray(y - self.w @ c)


@dataclass(frozen=True)
class BlockPlan:
    """A CSC pattern split into diagonal blocks (circuits), each a :class:`BandPattern`, and the
    strictly lower entries that join them.

    Attributes
    ----------
    n
        Matrix order.
    blocks
        Per block: first unknown, size, band pattern, and positions (in the CSC data array) of
        its entries in the block's own CSC order.
    lower_rows, lower_cols, lower
        Rows, columns and data positions of the entries below the diagonal blocks.
    """

    n: int
    blocks: tuple[tuple[int, int, BandPattern, npt.NDArray[np.int64]], ...]
    lower_rows: npt.NDArray[np.int64]
    lower_cols: npt.NDArray[np.int64]
    lower: npt.NDArray[np.int64]

    @classmethod
    def build(
        cls,
        indices: npt.NDArray[np.integer],
        indptr: npt.NDArray[np.integer],
        blocks: list[tuple[int, int]],
        reach: int,
    ) -> BlockPlan | None:
        """The plan for diagonal blocks ``(first, size)`` covering ``0..n-1`` in order; None when an
        entry lies above them (not block lower triangular) or a block's border is too wide."""
        n = indptr.size - 1
        cols = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        rows = indices.astype(np.int64)
        owner = np.empty(n, dtype=np.int64)
        for b, (first, size) in enumerate(blocks):
            owner[first : first + size] = b
        if np.any(owner[rows] < owner[cols]):
            return None
        out = []
        for b, (first, size) in enumerate(blocks):
            pos = np.flatnonzero((owner[rows] == b) & (owner[cols] == b))  # CSC order within the block
            local_ptr = np.concatenate(([0], np.cumsum(np.bincount(cols[pos] - first, minlength=size))))
            band = BandPattern.from_csc(rows[pos] - first, local_ptr, reach)
            if band is None:
                return None
            out.append((first, size, band, pos))
        low = np.flatnonzero(owner[rows] > owner[cols])
        return cls(n, tuple(out), rows[low], cols[low], low)

    def factorise(self, data: Array) -> _BlockLU:
        """Each block's band LU and its rows of the links from upstream; raises ``RuntimeError``
        when a block is singular."""
        lus = tuple(band.factorise(data[pos]) for _, _, band, pos in self.blocks)
        if self.lower.size == 0:  # one circuit, or circuits not linked: no sparse matrices to build
            return _BlockLU(self, lus, (None,) * len(self.blocks))
        lower = sp.csr_matrix((data[self.lower], (self.lower_rows, self.lower_cols)), shape=(self.n, self.n))
        return _BlockLU(self, lus, tuple(lower[first : first + size] for first, size, _, _ in self.blocks))


@dataclass(frozen=True)
class _BlockLU:
    plan: BlockPlan
    lus: tuple[_BorderedBandLU, ...]
    links: tuple[sp.csr_matrix | None, ...]  # per block, its rows of the entries below the blocks

    def solve(self, rhs: Array) -> Array:
        if len(self.lus) == 1:
            return self.lus[0].solve(rhs)
        x = np.zeros(self.plan.n)
        for (first, size, _, _), lu, links in zip(self.plan.blocks, self.lus, self.links, strict=True):
            part = slice(first, first + size)
            x[part] = lu.solve(rhs[part] - links @ x if links is not None and links.nnz else rhs[part])
        return x


def factorise(jac: sp.csc_matrix, plan: BlockPlan | None) -> Factorisation:
    """LU of ``jac``: per block band + border when ``plan`` (built for its CSC pattern) is given,
    SuperLU with the natural column order otherwise."""
    if plan is None:
        return spla.splu(jac, permc_spec="NATURAL")
    return plan.factorise(jac.data)
