"""Compiled assembly of the stage balances: the hot loops of :meth:`models.residual.Residual.evaluate`.

Private helper of :mod:`models.residual`. The residual and Jacobian of a flowsheet are assembled
from the stage functions' outputs (CasADi, :mod:`models.stage`) by a few dozen small array
operations per circuit and link; in NumPy each costs a few microseconds of dispatch, which made
the assembly half the time of a cascade's Newton iteration. These Numba kernels do the same
arithmetic in loops, in one call per circuit or link, and write the Jacobian's entries straight
into the CSC data array at positions fixed by the pattern (:class:`models.residual._CscPattern`).

The equations are those of the module docstring of :mod:`models.residual`, term for term, and
:class:`~models.residual.Residual` keeps its NumPy assembly for the first evaluation (which
builds the pattern) and for circuits with Murphree efficiencies; a test checks that the two
agree to rounding on every example plant, steady and transient (tests/models/test_assembly.py).

Shapes: ``zt`` is a circuit's unknowns as (stages, unknowns per stage); metal arrays are
(elements, stages); stage Jacobians are (stages, rows, unknowns per stage). Compiled on first
use and cached on disk (``cache=True``): a fresh process loads the machine code.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

Array = npt.NDArray[np.float64]
Index = npt.NDArray[np.int64]

__all__ = [
    "add_acid_link",
    "add_link",
    "aq_link_jacobian",
    "circuit_jacobian",
    "circuit_residual",
    "org_link_jacobian",
]


@njit(cache=True, inline="always")
def _logaddexp(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``ln(e^a + e^b)`` as NumPy computes it."""
    if a == b:
        return a + math.log(2.0)
    d = a - b
    if d > 0.0:
        return a + math.log1p(math.exp(-d))
    if d <= 0.0:
        return b + math.log1p(math.exp(d))
    return d  # NaN


@njit(cache=True)
def add_link(
    total: Array, conc: Array, tgt_el: Index, src_el: Index, tgt_stage: Index, src_stage: Index, w: Array
) -> None:  # pragma: no cover - compiled
    """``total[tgt_el[a], tgt_stage[l]] += conc[src_el[a], src_stage[l]] * w[l]`` (in this order)."""
    for a in range(tgt_el.size):
        for k in range(tgt_stage.size):
            total[tgt_el[a], tgt_stage[k]] += conc[src_el[a], src_stage[k]] * w[k]


@njit(cache=True)
def add_acid_link(
    total: Array, acid: Array, tgt_stage: Index, src_stage: Index, w: Array
) -> None:  # pragma: no cover - compiled
    """``total[tgt_stage[l]] += acid[src_stage[l]] * w[l]``."""
    for k in range(tgt_stage.size):
        total[tgt_stage[k]] += acid[src_stage[k]] * w[k]


@njit(cache=True)
def circuit_residual(
    out: Array,
    zt: Array,
    ln_y: Array,
    y: Array,
    acid: Array,
    ext: Array,
    infl: Array,
    org_in: Array,
    acid_in: Array,
    lo: Array,
    go: Array,
    va: Array,
    vo: Array,
    q_old: Array,
    release: Array,
    inv_dt: float,
    acid_scale: float,
    has_f: bool,
    ln_out: Array,
) -> None:  # pragma: no cover - compiled
    """One circuit's element, acid and extractant rows into ``out`` (stages, unknowns per stage);
    ``ln_out`` (elements, stages) receives the log outflows (with the holdup term) for the Jacobian.
    ``infl`` already holds the previous metal holdups over the step."""
    n, n_st = ln_y.shape
    for j in range(n_st):
        ln_a = math.log(lo[j] + inv_dt * va[j])
        ln_o = math.log(go[j] + inv_dt * vo[j])
        held = 0.0
        released = 0.0
        for i in range(n):
            lo_ij = _logaddexp(ln_a + zt[j, i], ln_o + ln_y[i, j])
            ln_out[i, j] = lo_ij
            out[j, i] = math.log(infl[i, j]) - lo_ij
            held += release[i] * y[i, j]
            released += release[i] * (go[j] * y[i, j] - org_in[i, j])
        q_now = va[j] * acid[j] - vo[j] * held
        out[j, n] = (acid_in[j] - lo[j] * acid[j] + released - inv_dt * (q_now - q_old[j])) / acid_scale
        if has_f:
            out[j, n + 1] = ext[j]


@njit(cache=True)
def circuit_jacobian(
    data: Array,
    position: Index,
    start: int,
    zt: Array,
    ln_y: Array,
    y: Array,
    ln_out: Array,
    d_ln_y: Array,
    d_acid: Array,
    d_ext: Array,
    lo: Array,
    go: Array,
    va: Array,
    vo: Array,
    release: Array,
    inv_dt: float,
    acid_scale: float,
    has_f: bool,
) -> int:  # pragma: no cover - compiled
    """A circuit's own-stage Jacobian entries (element rows, acid row, extractant row), added at
    ``data[position[start + k]]`` in the pattern's order; returns the next ``start``."""
    n_st, n, nv = d_ln_y.shape
    k = start
    for j in range(n_st):  # (a) element rows: -(share_x e_i + share_y dlnY)
        ln_a = math.log(lo[j] + inv_dt * va[j])
        ln_o = math.log(go[j] + inv_dt * vo[j])
        for i in range(n):
            share_x = math.exp(ln_a + zt[j, i] - ln_out[i, j])
            share_y = math.exp(ln_o + ln_y[i, j] - ln_out[i, j])
            for v in range(nv):
                val = share_y * d_ln_y[j, i, v]
                if v == i:
                    val += share_x
                data[position[k]] += -val
                k += 1
    for j in range(n_st):  # (c) acid row
        g_j = go[j] + inv_dt * vo[j]
        l_j = lo[j] + inv_dt * va[j]
        for v in range(nv):
            s = 0.0
            for i in range(n):
                s += (g_j * y[i, j]) * release[i] * d_ln_y[j, i, v]
            data[position[k]] += (s - l_j * d_acid[j, v]) / acid_scale
            k += 1
    if has_f:  # (e) extractant row
        for j in range(n_st):
            for v in range(nv):
                data[position[k]] += d_ext[j, v]
                k += 1
    return k


@njit(cache=True)
def aq_link_jacobian(
    data: Array,
    position: Index,
    start: int,
    infl: Array,
    z_src: Array,
    d_acid_src: Array,
    tgt_el: Index,
    src_el: Index,
    tgt_stage: Index,
    src_stage: Index,
    w: Array,
    carries_acid: bool,
    acid_scale: float,
) -> int:  # pragma: no cover - compiled
    """Entries of an aqueous link: element rows d ln In / d ln x_src and, when the stream carries
    its acid, the acid row's w d acid_src / dz_src; returns the next ``start``."""
    k = start
    for a in range(tgt_el.size):
        for m in range(tgt_stage.size):
            scale = w[m] / infl[tgt_el[a], tgt_stage[m]]
            data[position[k]] += scale * math.exp(z_src[src_stage[m], src_el[a]])
            k += 1
    if carries_acid:
        nvs = d_acid_src.shape[1]
        for m in range(tgt_stage.size):
            for v in range(nvs):
                data[position[k]] += w[m] * d_acid_src[src_stage[m], v] / acid_scale
                k += 1
    return k


@njit(cache=True)
def org_link_jacobian(
    data: Array,
    position: Index,
    start: int,
    infl: Array,
    y_src: Array,
    d_ln_y_src: Array,
    release_tgt: Array,
    tgt_el: Index,
    src_el: Index,
    tgt_stage: Index,
    src_stage: Index,
    w: Array,
    acid_scale: float,
) -> int:  # pragma: no cover - compiled
    """Entries of an organic link: element rows d ln In / dz_src through Y_src, then the acid
    row's - sum_i r_i w Y_src dlnY_src / dz_src; returns the next ``start``."""
    nvs = d_ln_y_src.shape[2]
    k = start
    for m in range(tgt_stage.size):
        for a in range(tgt_el.size):
            coef = (w[m] / infl[tgt_el[a], tgt_stage[m]]) * y_src[src_el[a], src_stage[m]]
            for v in range(nvs):
                data[position[k]] += coef * d_ln_y_src[src_stage[m], src_el[a], v]
                k += 1
    for m in range(tgt_stage.size):
        for v in range(nvs):
            s = 0.0
            for a in range(tgt_el.size):
                s += release_tgt[a] * (y_src[src_el[a], src_stage[m]] * w[m]) * d_ln_y_src[src_stage[m], src_el[a], v]
            data[position[k]] += -s / acid_scale
            k += 1
    return k


def _load() -> None:
    """Call every kernel once on a one-element, one-stage circuit (three unknowns: ln x, ln h,
    ln f) with the argument types :class:`~models.residual.Residual` passes, so that a fresh
    process initialises Numba and loads the kernels' machine code (from the on-disk cache,
    compiled at the first run on a machine) when this module is imported, not during the first
    solve. The kernels do not check bounds: the shapes here must be consistent."""
    one = np.ones(1)
    el = np.ones((1, 1))  # (elements, stages)
    st = np.ones((1, 3))  # (stages, unknowns per stage)
    jac = np.ones((1, 1, 3))  # (stages, elements, unknowns per stage)
    ix = np.zeros(1, dtype=np.int64)
    pos = np.arange(9, dtype=np.int64)
    add_link(el.copy(), el, ix, ix, ix, ix, one)
    add_acid_link(one.copy(), one, ix, ix, one)
    circuit_residual(st.copy(), st, el, el, one, one, el, el, one, one, one, one, one, one, one,
                     0.0, 1.0, True, el.copy())  # fmt: skip
    circuit_jacobian(np.zeros(9), pos, 0, st, el, el, el, jac, st, st, one, one, one, one, one, 0.0, 1.0, True)
    aq_link_jacobian(np.zeros(9), pos, 0, el, st, st, ix, ix, ix, ix, one, True, 1.0)
    org_link_jacobian(np.zeros(9), pos, 0, el, el, jac, one, ix, ix, ix, ix, one, 1.0)


_load()
