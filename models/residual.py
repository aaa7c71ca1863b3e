r"""Stage balances of a whole flowsheet: residual and exact sparse Jacobian.

For every stage *j* of every circuit, with :math:`X, Y` the aqueous and organic concentrations,
:math:`L_j, G_j` the outflows, :math:`V^a_j, V^o_j` the phase holdups, *In* the metal flux in
(links from other stages plus fresh feeds) and :math:`r_i` the protons released per ion:

.. math::

    R^\mathrm{el}_{ij} &= \ln\!\Big(\mathit{In}_{ij} + \frac{M^0_{ij}}{\Delta t}\Big)
        - \ln\!\Big(L_j X_{ij} + G_j Y_{ij} + \frac{M_{ij}}{\Delta t}\Big),
        \qquad M_{ij} = V^a_j X_{ij} + V^o_j Y_{ij} \\
    R^\mathrm{H}_{j} &= \Big[A^\mathrm{in}_j - L_j a_j
        + \sum_i r_i (G_j Y_{ij} - O^\mathrm{in}_{ij}) - \frac{Q_j - Q^0_j}{\Delta t}\Big] / s_c,
        \qquad Q_j = V^a_j a_j - V^o_j \sum_i r_i Y_{ij} \\
    R^\mathrm{E}_{j} &= (f_j + \textstyle\sum_i s_i Y_{ij})/(C_\mathrm{HA}/2) - 1

with :math:`a_j` the titratable acidity, :math:`A^\mathrm{in}, O^\mathrm{in}` the acid and
organic metal fluxes in, and :math:`s_c` a constant acid-flux scale of the circuit. With
:math:`\Delta t = \infty` these are the steady balances; a finite :math:`\Delta t` gives one
implicit-Euler step of the holdup dynamics (pseudo-transient continuation). The element
balances in logarithmic form are scaled by construction: every residual is a relative error,
whatever the concentration (1 M of the main element or 1e-12 M of a trace).

A circuit with a Murphree stage efficiency *E* has one more row per element and stage,
:math:`R^\mathrm{M}_{ij} = \ln Y_{ij} - \ln\big((1 - E)\,O^\mathrm{in}_{ij}/G_j + E D_{ij} X_{ij}\big)`,
for its unknown :math:`u_{ij} = \ln Y_{ij} - \ln(D_{ij} X_{ij})` (docs/model.md, section 3).

The Jacobian is assembled exactly from the stage functions' AD Jacobians (:mod:`models.stage`)
and the linear stream links, as a SciPy CSC matrix. :func:`symbolic_residual` builds the same
equations as a CasADi MX graph for AD uses (sensitivities, optimisation, dynamics); a test
checks the two agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import casadi as ca
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models import _assembly, _codegen
from models.flowsheet import CircuitLayout, Flowsheet
from models.stage import StageModel

__all__ = [
    "CircuitState",
    "FlowValues",
    "Residual",
    "murphree_efficiencies",
    "symbolic_murphree_rows",
    "symbolic_residual",
    "symbolic_stage_ln_y",
    "symbolic_stage_values",
]

Array = npt.NDArray[np.float64]
ACID_SCALE_REF_MOL_PER_L = 0.01
FLOOR_MOL_PER_H = 1e-200
"""Every stage receives this metal flux of each tracked element: a regularisation that keeps every
logarithm finite (concentrations cannot underflow below ~1e-200 mol/L, far below anything
measurable, while the steady profile of a trace can fall hundreds of decades along a cascade)."""


@dataclass(frozen=True)
class FlowValues:
    """Numeric flows for one parameter vector (from :attr:`Flowsheet.flows_function`)."""

    weights: Array
    l_out: tuple[Array, ...]
    g_out: tuple[Array, ...]
    fresh_aq: tuple[Array, ...]
    fresh_acid: tuple[Array, ...]
    fresh_org: tuple[Array, ...]
    v_aq: tuple[Array, ...]
    v_org: tuple[Array, ...]
    acid_scale: tuple[float, ...]


@dataclass(frozen=True)
class CircuitState:
    """Everything local about one circuit at one point: concentrations and stage derivatives."""

    lay: CircuitLayout
    z: Array  # (nv, N)
    x: Array  # (n, N)
    y: Array
    ln_y: Array
    acid: Array  # (N,)
    ext: Array
    d_ln_y: Array  # (N, n, nv)
    d_acid: Array  # (N, nv)
    d_ext: Array  # (N, nv)
    ln_y_eq: Array  # (n, N): ln(D x), the organic at equilibrium with the aqueous (= ln_y unless Murphree)
    d_ln_y_eq: Array  # (N, n, nv)


@dataclass(frozen=True)
class _LinkGroup:
    target: int
    source: int
    phase: str
    tgt_stage: npt.NDArray[np.int64]
    src_stage: npt.NDArray[np.int64]
    weight: npt.NDArray[np.int64]
    tgt_el: npt.NDArray[np.int64]  # target element positions that exist in the source
    src_el: npt.NDArray[np.int64]
    carries_acid: bool  # False: an acidity-adjusted feed (metals only)

    @cached_property
    def src_ix(self) -> tuple[npt.NDArray[np.int64], ...]:
        """``np.ix_(src_el, src_stage)``: the (element, stage) block read from the source."""
        return np.ix_(self.src_el, self.src_stage)

    @cached_property
    def tgt_ix(self) -> tuple[npt.NDArray[np.int64], ...]:
        """``np.ix_(tgt_el, tgt_stage)``: the (element, stage) block written in the target."""
        return np.ix_(self.tgt_el, self.tgt_stage)

    @cached_property
    def tgt_scatter(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Broadcast (element, stage) indices of the target block, for ``np.add.at``."""
        return self.tgt_el[:, None], np.broadcast_to(self.tgt_stage, (len(self.tgt_el), len(self.tgt_stage)))

    @cached_property
    def distinct_targets(self) -> bool:
        """Every link of the group enters a different target stage: contributions can be added by
        fancy indexing (several times faster than ``np.add.at``, which must allow repeats)."""
        return bool(np.unique(self.tgt_stage).size == self.tgt_stage.size)

    def add_to(self, total: Array, contribution: Array) -> None:
        """Add the (element, stage) ``contribution`` into the target block of ``total``, or a
        per-stage ``contribution`` into the target stages of a 1-D ``total`` (the acid)."""
        per_stage = total.ndim == 1
        if self.distinct_targets:
            total[self.tgt_stage if per_stage else self.tgt_ix] += contribution
        else:
            np.add.at(total, self.tgt_stage if per_stage else self.tgt_scatter, contribution)


@dataclass(frozen=True)
class _CscPattern:
    """The Jacobian's sparsity pattern in CSC form, fixed by the flowsheet's structure.

    Built once from the COO indices of the first assembly; afterwards the entries (in the same
    COO order) are scattered into the CSC data array directly, so no index sorting, duplicate
    summing or format checking is repeated at every Newton iteration. Duplicates are summed as
    in :class:`scipy.sparse.coo_matrix`; explicit zeros are kept (the pattern never changes).
    """

    n: int
    indices: npt.NDArray[np.int32]
    indptr: npt.NDArray[np.int32]
    position: npt.NDArray[np.int64]  # CSC data position of each COO entry
    duplicates: bool

    @classmethod
    def from_coo(cls, rows: npt.NDArray[Any], cols: npt.NDArray[Any], n: int) -> _CscPattern:
        key = cols.astype(np.int64) * n + rows.astype(np.int64)
        unique, position = np.unique(key, return_inverse=True)
        indptr = np.searchsorted(unique // n, np.arange(n + 1)).astype(np.int32)
        return cls(n, (unique % n).astype(np.int32), indptr, position.ravel(), unique.size < key.size)

    def matrix(self, values: Array) -> sp.csc_matrix:
        """The CSC matrix with ``values`` given in the COO order of :meth:`from_coo`."""
        data = np.zeros(self.indices.size)
        if self.duplicates:  # summed in COO order, as np.add.at would (bincount is faster)
            data = np.asarray(np.bincount(self.position, weights=values, minlength=self.indices.size), dtype=float)
        else:
            data[self.position] = values
        return self.with_data(data)

    def with_data(self, data: Array) -> sp.csc_matrix:
        """The CSC matrix with ``data`` in the pattern's CSC order."""
        jac = sp.csc_matrix((data, self.indices, self.indptr), shape=(self.n, self.n))
        jac.has_canonical_format = True  # sorted, no duplicates: spares SciPy the checks
        return jac


class Residual:
    """Numeric residual and Jacobian of a flowsheet (fast path of the steady solver).

    ``compiled`` (default): assemble with the Numba kernels of :mod:`models._assembly` once the
    Jacobian's pattern is known, unless a circuit has a Murphree efficiency; ``False`` keeps the
    NumPy assembly throughout (the reference the tests compare with).
    """

    def __init__(self, flowsheet: Flowsheet, *, compiled: bool = True) -> None:
        self.fs = flowsheet
        self.compiled = compiled and not any(lay.murphree for lay in flowsheet.circuits)
        self.stages = tuple(StageModel(lay) for lay in flowsheet.circuits)
        groups: dict[tuple[int, int, str, bool], list[tuple[int, int, int]]] = {}
        for link in flowsheet.links:
            groups.setdefault((link.target, link.source, link.phase, link.carries_acid), []).append(
                (link.target_stage, link.source_stage, link.weight)
            )
        self.groups: list[_LinkGroup] = []
        for (t, s, ph, acid), items in groups.items():
            arr = np.array(items, dtype=np.int64).T.copy()  # rows: target stage, source stage, weight
            t_els = flowsheet.circuits[t].elements
            s_els = flowsheet.circuits[s].elements
            pairs = [(i, s_els.index(e)) for i, e in enumerate(t_els) if e in s_els]
            self.groups.append(
                _LinkGroup(
                    t,
                    s,
                    ph,
                    arr[0],
                    arr[1],
                    arr[2],
                    np.array([a for a, _ in pairs], dtype=np.int64),
                    np.array([b for _, b in pairs], dtype=np.int64),
                    acid,
                )
            )
        self.release = tuple(np.array(lay.system.proton_release(lay.elements)) for lay in flowsheet.circuits)
        self._jac_pattern: _CscPattern | None = None

    # ------------------------------------------------------------------ flows
    def flows(self, p: Array) -> FlowValues:
        """Numeric flows, fresh inflows and holdups for parameter vector ``p``."""
        out = self.fs.flows_function(p)
        w = np.asarray(out[0]).ravel()
        k = 1
        cols: list[list[Array]] = [[] for _ in range(7)]
        for _ in self.fs.circuits:
            for q in range(7):
                cols[q].append(np.asarray(out[k + q]))
            k += 7
        l_out = tuple(a.ravel() for a in cols[0])
        g_out = tuple(a.ravel() for a in cols[1])
        fresh_acid = tuple(a.ravel() for a in cols[3])
        scale = tuple(
            float(fa.sum() + ACID_SCALE_REF_MOL_PER_L * lo.sum()) for fa, lo in zip(fresh_acid, l_out, strict=True)
        )
        return FlowValues(
            weights=w,
            l_out=l_out,
            g_out=g_out,
            fresh_aq=tuple(cols[2]),
            fresh_acid=fresh_acid,
            fresh_org=tuple(cols[4]),
            v_aq=tuple(a.ravel() for a in cols[5]),
            v_org=tuple(a.ravel() for a in cols[6]),
            acid_scale=scale,
        )

    # ------------------------------------------------------------------ local
    @cached_property
    def _stage_functions(self) -> tuple[tuple[_BufferedFunction, _BufferedFunction], ...]:
        """Per circuit, the mapped stage functions with dense outputs (values; values and Jacobians)."""
        out = []
        for lay, st in zip(self.fs.circuits, self.stages, strict=True):
            # the stage's unknowns are stacked per stage; the parameters are passed once
            pair = [
                _BufferedFunction.of(fn.map(lay.n_stages, [False, True, True, True], [False] * fn.n_out()))
                for fn in _dense_stage_functions(st)
            ]
            out.append((pair[0], pair[1]))
        return tuple(out)

    @cached_property
    def _parameter_positions(self) -> tuple[tuple[int, int, npt.NDArray[np.int64]], ...]:
        """Per circuit, positions in ``p`` of the extractant, the temperature and the ln D offsets."""
        idx = self.fs.parameters.index
        return tuple(
            (
                idx(f"{lay.name}.extractant_mol_per_l"),
                idx(f"{lay.name}.temperature_k"),
                np.array([idx(f"{lay.name}.ln_d_offset.{s}") for s in lay.elements], dtype=np.int64),
            )
            for lay in self.fs.circuits
        )

    def local(self, z: Array, p: Array, *, jacobian: bool = True) -> tuple[CircuitState, ...]:
        """Stage functions of every circuit at ``z``."""
        out = []
        z = np.asarray(z, dtype=float)
        p = np.asarray(p, dtype=float)
        for lay, fns, (i_ha, i_t, i_delta) in zip(
            self.fs.circuits, self._stage_functions, self._parameter_positions, strict=True
        ):
            n, N, nv = lay.n_el, lay.n_stages, lay.nv
            zs = z[lay.offset : lay.offset + lay.size]
            args = (zs, p[i_ha : i_ha + 1], p[i_t : i_t + 1], p[i_delta])
            r = (fns[1] if jacobian else fns[0])(*args)
            # outputs are column-major: (n, N) stage values and (n or 1, N*nv) stage Jacobians
            ln_d = np.ascontiguousarray(r[0].reshape(N, n).T)
            acid = r[1]
            ext = r[2]
            if jacobian:
                jd = np.ascontiguousarray(r[3].reshape(N, nv, n).transpose(0, 2, 1))
                ja = r[4].reshape(N, nv)
                je = r[5].reshape(N, nv)
                jd[:, np.arange(n), np.arange(n)] += 1.0  # d ln y / dz = d ln x/dz + d ln D/dz
            else:
                jd = np.empty((0, 0, 0))
                ja = je = np.empty((0, 0))
            zc = zs.reshape(N, nv).T
            ln_x = zc[:n]
            ln_y_eq = ln_x + ln_d
            if lay.murphree:
                # the organic's departure from equilibrium, u = ln y - ln(D x), is the unknown
                # (with ln y itself, a trace whose aqueous carries nothing and whose organic is
                # all carried over from upstream has no say in any row: a singular Jacobian)
                ln_y = ln_y_eq + zc[lay.y_start :]
                dy = jd
                if jacobian:
                    dy = jd.copy()
                    dy[:, np.arange(n), lay.y_start + np.arange(n)] += 1.0
            else:
                ln_y, dy = ln_y_eq, jd
            out.append(
                CircuitState(lay, zc, np.exp(ln_x), np.exp(ln_y), ln_y, acid, ext, dy, ja, je, ln_y_eq, jd)
            )
        return tuple(out)

    def holdups(self, states: tuple[CircuitState, ...], fv: FlowValues) -> tuple[tuple[Array, Array], ...]:
        """Metal inventory M (n, N) in mol and acid inventory Q (N,) per circuit."""
        out = []
        for c, st in enumerate(states):
            va, vo = fv.v_aq[c], fv.v_org[c]
            m = va * st.x + vo * st.y
            q = va * st.acid - vo * (self.release[c] @ st.y)
            out.append((m, q))
        return tuple(out)

    # --------------------------------------------------------------- residual
    @cached_property
    def _efficiency_positions(self) -> tuple[int, ...]:
        """Per circuit, the position in ``p`` of its stage efficiency (-1: equilibrium stages)."""
        idx = self.fs.parameters.index
        return tuple(idx(f"{lay.name}.stage_efficiency") if lay.murphree else -1 for lay in self.fs.circuits)

    def evaluate(
        self,
        z: Array,
        p: Array,
        *,
        fv: FlowValues | None = None,
        jacobian: bool = True,
        dt_h: float = np.inf,
        previous: tuple[tuple[Array, Array], ...] | None = None,
        states: tuple[CircuitState, ...] | None = None,
    ) -> tuple[Array, sp.csc_matrix | None]:
        """Residual (and CSC Jacobian) at ``z``.

        With a finite ``dt_h``: one implicit-Euler step from the ``previous`` holdups. ``states``:
        :meth:`local` at ``z`` (with Jacobians when ``jacobian``) when the caller has it.
        """
        fv = fv or self.flows(p)
        if states is None:
            states = self.local(z, p, jacobian=jacobian)
        inv_dt = 0.0 if not np.isfinite(dt_h) else 1.0 / dt_h
        if inv_dt > 0.0 and previous is None:
            raise ValueError("a transient step needs the previous holdups")
        if self.compiled and (self._jac_pattern is not None or not jacobian):
            return self._evaluate_compiled(states, fv, jacobian, inv_dt, previous)
        # fluxes in
        flux_in = [fv.fresh_aq[c] + fv.fresh_org[c] + FLOOR_MOL_PER_H for c in range(len(states))]
        org_in = [fv.fresh_org[c].copy() for c in range(len(states))]
        acid_in = [fv.fresh_acid[c].copy() for c in range(len(states))]
        for g in self.groups:
            src = states[g.source]
            w = fv.weights[g.weight]
            conc = src.x if g.phase == "aq" else src.y
            contrib = conc[g.src_ix] * w
            g.add_to(flux_in[g.target], contrib)
            if g.phase == "org":
                g.add_to(org_in[g.target], contrib)
            elif g.carries_acid:
                g.add_to(acid_in[g.target], src.acid[g.src_stage] * w)
        build = jacobian and self._jac_pattern is None  # index arrays are needed only once
        res_parts = []
        murphree_parts: dict[int, tuple[Array, Array]] = {}  # per circuit: share of E D x, ln((1 - E)/(G A))
        jac_rows: list[npt.NDArray[Any]] = []
        jac_cols: list[npt.NDArray[Any]] = []
        jac_vals: list[npt.NDArray[Any]] = []
        row_base = []
        for c, st in enumerate(states):
            lay = st.lay
            n, N, nv = lay.n_el, lay.n_stages, lay.nv
            r = self.release[c]
            lo, go = fv.l_out[c], fv.g_out[c]
            va, vo = fv.v_aq[c], fv.v_org[c]
            m_old, q_old = previous[c] if previous is not None else (0.0, 0.0)
            infl = flux_in[c] + inv_dt * m_old
            ln_x = st.z[:n]
            ln_qa = np.log(lo + inv_dt * va)[None, :] + ln_x  # ln of aqueous outflow + holdup term
            ln_qo = np.log(go + inv_dt * vo)[None, :] + st.ln_y
            ln_out = np.logaddexp(ln_qa, ln_qo)
            r_el = np.log(infl) - ln_out
            q_now = va * st.acid - vo * (r @ st.y)
            released = r @ (go * st.y - org_in[c])
            r_h = (acid_in[c] - lo * st.acid + released - inv_dt * (q_now - q_old)) / fv.acid_scale[c]
            block = np.zeros((nv, N))
            block[:n] = r_el
            block[n] = r_h
            if lay.has_f:
                block[n + 1] = st.ext
            if lay.murphree:
                # Murphree on the organic: y = (1 - E) y_in + E D x, y_in = organic metal in / G
                # in logs: a trace's organic can lie far below the smallest double
                eff = murphree_efficiencies(lay, float(p[self._efficiency_positions[c]]))[:, None]
                with np.errstate(divide="ignore"):
                    ln_coef = np.log(1.0 - eff) - np.log(go)[None, :]  # -inf where exchanged at equilibrium
                    ln_bypass = ln_coef + np.log(org_in[c] + FLOOR_MOL_PER_H)
                ln_eq = np.log(eff) + st.ln_y_eq
                ln_mixed = np.logaddexp(ln_bypass, ln_eq)
                block[lay.y_start :] = st.ln_y - ln_mixed
                murphree_parts[c] = (np.exp(ln_eq - ln_mixed), ln_coef - ln_mixed)
            res_parts.append(block.T.ravel())
            row_base.append((infl, ln_out))
            if not jacobian:
                continue
            base = lay.offset + np.arange(N) * nv  # (N,)
            # (a) element rows, own stage: -(L X e_i + G Y dlnY + (Va X e_i + Vo Y dlnY)/dt)/Out
            share_x = np.exp(ln_qa - ln_out)  # (n, N), fractions of the outflow: no underflow
            share_y = np.exp(ln_qo - ln_out)
            vals = share_y.T[:, :, None] * st.d_ln_y  # (N, n, nv)
            vals[:, np.arange(n), np.arange(n)] += share_x.T
            vals = -vals
            if build:
                rows = (base[:, None] + np.arange(n)[None, :])[:, :, None] + 0 * np.arange(nv)[None, None, :]
                cols = base[:, None, None] + np.arange(nv)[None, None, :] + 0 * np.arange(n)[None, :, None]
                jac_rows.append(rows.ravel())
                jac_cols.append(cols.ravel())
            jac_vals.append(vals.ravel())
            # (c) acid row, own stage
            gy = ((go + inv_dt * vo)[None, :] * st.y) * r[:, None]  # (n, N)
            vals_h = np.einsum("in,niv->nv", gy, st.d_ln_y) - (lo + inv_dt * va)[:, None] * st.d_acid
            vals_h /= fv.acid_scale[c]
            if build:
                jac_rows.append(np.repeat(base + n, nv))
                jac_cols.append((base[:, None] + np.arange(nv)[None, :]).ravel())
            jac_vals.append(vals_h.ravel())
            # (e) extractant row, own stage
            if lay.has_f:
                if build:
                    jac_rows.append(np.repeat(base + n + 1, nv))
                    jac_cols.append((base[:, None] + np.arange(nv)[None, :]).ravel())
                jac_vals.append(st.d_ext.ravel())
            # (f) Murphree rows, own stage: d ln y - share_eq d ln(D x), ln y = ln(D x) + u
            if lay.murphree:
                share_eq = murphree_parts[c][0]
                vals_m = st.d_ln_y - share_eq.T[:, :, None] * st.d_ln_y_eq
                if build:
                    rows_m = base[:, None] + lay.y_start + np.arange(n)[None, :]
                    jac_rows.append(np.broadcast_to(rows_m[:, :, None], vals_m.shape).ravel())
                    cols_m = base[:, None, None] + np.arange(nv)[None, None, :]
                    jac_cols.append(np.broadcast_to(cols_m, vals_m.shape).ravel())
                jac_vals.append(vals_m.ravel())
        if jacobian:
            for g in self.groups:
                tgt = states[g.target]
                src = states[g.source]
                tl, sl = tgt.lay, src.lay
                w = fv.weights[g.weight]  # (L,)
                infl = row_base[g.target][0]
                te, se = g.tgt_el, g.src_el  # (k,)
                ts, ss = g.tgt_stage, g.src_stage  # (L,)
                row_el = tl.offset + ts[None, :] * tl.nv + te[:, None]  # (k, L)
                scale_in = w[None, :] / infl[g.tgt_ix]  # (k, L)
                if g.phase == "aq":
                    # (b) element rows: d ln In / d ln x_src
                    if build:
                        col = sl.offset + ss[None, :] * sl.nv + se[:, None]
                        jac_rows.append(row_el.ravel())
                        jac_cols.append(col.ravel())
                    jac_vals.append((scale_in * src.x[g.src_ix]).ravel())
                    # (d) acid row: + w d acid_src / dz_src (not for an acidity-adjusted feed)
                    if g.carries_acid:
                        if build:
                            rows_h = np.repeat(tl.offset + ts * tl.nv + tl.n_el, sl.nv)
                            cols_h = (sl.offset + ss[:, None] * sl.nv + np.arange(sl.nv)[None, :]).ravel()
                            jac_rows.append(rows_h)
                            jac_cols.append(cols_h)
                        jac_vals.append((w[:, None] * src.d_acid[ss] / fv.acid_scale[g.target]).ravel())
                else:
                    # (b) element rows: d ln In / dz_src through Y_src
                    yv = src.y[g.src_ix]  # (k, L)
                    dly = src.d_ln_y[ss][:, se, :]  # (L, k, nvs)
                    vals = (scale_in * yv).T[:, :, None] * dly  # (L, k, nvs)
                    if build:
                        rows = np.broadcast_to(row_el.T[:, :, None], vals.shape)
                        cols = np.broadcast_to(
                            (sl.offset + ss * sl.nv)[:, None, None] + np.arange(sl.nv)[None, None, :], vals.shape
                        )
                        jac_rows.append(rows.ravel())
                        jac_cols.append(cols.ravel())
                    jac_vals.append(vals.ravel())
                    # (f) Murphree rows of the target: - (1 - E) w Y_src / (G A) dlnY_src/dz_src
                    if tl.murphree:
                        ln_per_in = murphree_parts[g.target][1][g.tgt_ix]  # (k, L): ln((1 - E)/(G A))
                        vals_m = -(w[None, :] * np.exp(ln_per_in + src.ln_y[g.src_ix])).T[:, :, None] * dly
                        if build:
                            row_m = tl.offset + ts[None, :] * tl.nv + tl.y_start + te[:, None]
                            jac_rows.append(np.broadcast_to(row_m.T[:, :, None], vals_m.shape).ravel())
                            col_m = (sl.offset + ss * sl.nv)[:, None, None] + np.arange(sl.nv)[None, None, :]
                            jac_cols.append(np.broadcast_to(col_m, vals_m.shape).ravel())
                        jac_vals.append(vals_m.ravel())
                    # (d) acid row: - sum_i r_i w Y_src dlnY_src/dz_src
                    rt = self.release[g.target][te]  # (k,)
                    vals_h = -np.einsum("k,kl,lkv->lv", rt, yv * w[None, :], dly) / fv.acid_scale[g.target]
                    if build:
                        rows_h = np.repeat(tl.offset + ts * tl.nv + tl.n_el, sl.nv)
                        cols_h = ((sl.offset + ss * sl.nv)[:, None] + np.arange(sl.nv)[None, :]).ravel()
                        jac_rows.append(rows_h)
                        jac_cols.append(cols_h)
                    jac_vals.append(vals_h.ravel())
        res = np.concatenate(res_parts)
        if not jacobian:
            return res, None
        if build:
            self._jac_pattern = _CscPattern.from_coo(
                np.concatenate(jac_rows), np.concatenate(jac_cols), self.fs.n_unknowns
            )
        assert self._jac_pattern is not None  # built above
        return res, self._jac_pattern.matrix(np.concatenate(jac_vals))

    def _evaluate_compiled(
        self,
        states: tuple[CircuitState, ...],
        fv: FlowValues,
        jacobian: bool,
        inv_dt: float,
        previous: tuple[tuple[Array, Array], ...] | None,
    ) -> tuple[Array, sp.csc_matrix | None]:
        """:meth:`evaluate` by the compiled kernels of :mod:`models._assembly` (same equations,
        same order of the Jacobian's entries as the NumPy assembly that built the pattern)."""
        n_c = len(states)
        flux_in = [fv.fresh_aq[c] + fv.fresh_org[c] + FLOOR_MOL_PER_H for c in range(n_c)]
        org_in = [np.array(fv.fresh_org[c], dtype=float, order="C") for c in range(n_c)]
        acid_in = [np.array(fv.fresh_acid[c], dtype=float) for c in range(n_c)]
        for g in self.groups:
            src = states[g.source]
            w = fv.weights[g.weight]
            conc = np.ascontiguousarray(src.x if g.phase == "aq" else src.y)
            _assembly.add_link(flux_in[g.target], conc, g.tgt_el, g.src_el, g.tgt_stage, g.src_stage, w)
            if g.phase == "org":
                _assembly.add_link(org_in[g.target], conc, g.tgt_el, g.src_el, g.tgt_stage, g.src_stage, w)
            elif g.carries_acid:
                _assembly.add_acid_link(acid_in[g.target], src.acid, g.tgt_stage, g.src_stage, w)
        res = np.empty(self.n)
        per: list[tuple[Array, Array, Array, Array, Array]] = []  # per circuit: zt, ln_y, y, infl, ln_out
        for c, st in enumerate(states):
            lay = st.lay
            zt = st.z.T  # (N, nv), C-contiguous: a view of z
            ln_y = np.ascontiguousarray(st.ln_y)
            y = np.ascontiguousarray(st.y)
            if previous is not None:
                m_old, q_old = previous[c]
                infl = np.ascontiguousarray(flux_in[c] + inv_dt * m_old)
            else:
                infl, q_old = np.ascontiguousarray(flux_in[c]), np.zeros(lay.n_stages)
            ln_out = np.empty((lay.n_el, lay.n_stages))
            _assembly.circuit_residual(
                res[lay.offset : lay.offset + lay.size].reshape(lay.n_stages, lay.nv),
                zt, ln_y, y, st.acid, st.ext, infl, org_in[c], acid_in[c],
                fv.l_out[c], fv.g_out[c], fv.v_aq[c], fv.v_org[c], q_old, self.release[c],
                inv_dt, fv.acid_scale[c], lay.has_f, ln_out,
            )  # fmt: skip
            per.append((zt, ln_y, y, infl, ln_out))
        if not jacobian:
            return res, None
        pattern = self._jac_pattern
        assert pattern is not None  # built by the first (NumPy) evaluation
        data = np.zeros(pattern.indices.size)
        k = 0
        for c, st in enumerate(states):
            zt, ln_y, y, _, ln_out = per[c]
            k = _assembly.circuit_jacobian(
                data, pattern.position, k, zt, ln_y, y, ln_out, st.d_ln_y, st.d_acid, st.d_ext,
                fv.l_out[c], fv.g_out[c], fv.v_aq[c], fv.v_org[c], self.release[c],
                inv_dt, fv.acid_scale[c], st.lay.has_f,
            )  # fmt: skip
        for g in self.groups:
            src = states[g.source]
            w = fv.weights[g.weight]
            infl = per[g.target][3]
            if g.phase == "aq":
                k = _assembly.aq_link_jacobian(
                    data, pattern.position, k, infl, per[g.source][0], src.d_acid,
                    g.tgt_el, g.src_el, g.tgt_stage, g.src_stage, w, g.carries_acid, fv.acid_scale[g.target],
                )  # fmt: skip
            else:
                k = _assembly.org_link_jacobian(
                    data, pattern.position, k, infl, per[g.source][2], src.d_ln_y, self.release[g.target][g.tgt_el],
                    g.tgt_el, g.src_el, g.tgt_stage, g.src_stage, w, fv.acid_scale[g.target],
                )  # fmt: skip
        if k != pattern.position.size:
            raise AssertionError(f"compiled assembly: {k} Jacobian entries for a pattern of {pattern.position.size}")
        return res, pattern.with_data(data)

    @cached_property
    def n(self) -> int:
        """Number of unknowns."""
        return self.fs.n_unknowns


_DENSE_STAGE_FUNCTIONS: dict[tuple[str, tuple[str, ...], int], tuple[ca.Function, ca.Function]] = {}


def _dense_stage_functions(st: StageModel) -> tuple[ca.Function, ca.Function]:
    """A stage's functions (values; values and Jacobians) with dense outputs, built once per
    process for each chemistry system, element list and stage size (the circuits of a flowsheet
    and the solver's one-circuit sub-problems share them), compiled to C (models/_codegen.py)."""
    lay = st.layout
    key = (repr(lay.system), lay.elements, lay.nv)
    if key not in _DENSE_STAGE_FUNCTIONS:
        tag = hashlib.sha256(repr(key).encode()).hexdigest()[:12]  # one C symbol per function
        pair = []
        for fn in (st.values, st.values_and_jacobians):
            args = fn.sx_in()
            # common subexpressions merged (the elements' ln D share the acid and extractant
            # terms): a quarter fewer instructions, same arithmetic; then compiled to C
            dense = ca.Function(f"{fn.name()}_{tag}", args, [ca.densify(e) for e in fn(*args)], {"cse": True})
            pair.append(_codegen.compiled(dense))
        _DENSE_STAGE_FUNCTIONS[key] = (pair[0], pair[1])
    return _DENSE_STAGE_FUNCTIONS[key]


@dataclass(frozen=True)
class _BufferedFunction:
    """A CasADi function evaluated through its buffer interface: inputs and outputs are NumPy
    arrays of nonzeros (column-major), with no conversion to and from ``DM`` (for the stage
    functions, a plain call costs several times the evaluation itself). A fresh buffer per call
    keeps this thread-safe."""

    fn: ca.Function
    sizes_out: tuple[int, ...]

    @classmethod
    def of(cls, fn: ca.Function) -> _BufferedFunction:
        return cls(fn, tuple(fn.nnz_out(i) for i in range(fn.n_out())))

    def __call__(self, *args: Array) -> list[Array]:
        buf, trigger = self.fn.buffer()
        ins = [np.ascontiguousarray(a, dtype=float) for a in args]  # kept alive until the call returns
        for i, a in enumerate(ins):
            buf.set_arg(i, memoryview(a))  # type: ignore[call-arg,arg-type]  # the size is optional at run time
        outs = [np.empty(n) for n in self.sizes_out]
        for i, o in enumerate(outs):
            buf.set_res(i, memoryview(o))  # type: ignore[call-arg,arg-type]
        trigger()
        if buf.ret() != 0:
            raise RuntimeError(f"evaluation of {self.fn.name()} failed (status {buf.ret()})")
        return outs


def symbolic_stage_values(fs: Flowsheet, z: ca.MX, p: ca.MX) -> list[tuple[ca.MX, ca.MX, ca.MX, ca.MX, ca.MX]]:
    """Per circuit, the stage model on symbolic unknowns ``z`` and parameters ``p``: ``(ln x, ln D,
    acid, extractant residual, ln y)``, each (rows, stages); ln y is ln x + ln D, plus the
    departure from equilibrium ``u`` in Murphree stages. Shared by the symbolic residual, the
    dynamic model and the optimiser's NLP so that the three use one set of equations."""
    out = []
    for lay in fs.circuits:
        N = lay.n_stages
        zc = ca.reshape(z[lay.offset : lay.offset + lay.size], lay.nv, N)
        c_ha = p[fs.parameters.index(f"{lay.name}.extractant_mol_per_l")]
        t_k = p[fs.parameters.index(f"{lay.name}.temperature_k")]
        delta = ca.vertcat(*[p[fs.parameters.index(f"{lay.name}.ln_d_offset.{s}")] for s in lay.elements])
        ln_d, acid, ext = StageModel(lay).mapped_values(zc, c_ha, t_k, ca.repmat(delta, 1, N))
        ln_x = zc[: lay.n_el, :]
        ln_y = ln_x + ln_d + zc[lay.y_start :, :] if lay.murphree else ln_x + ln_d
        out.append((ln_x, ln_d, acid, ext, ln_y))
    return out


def murphree_efficiencies(lay: CircuitLayout, efficiency: float) -> Array:
    """Per element of a Murphree circuit, the efficiency its organic reaches equilibrium with:
    the circuit's for every metal, 1 for the Na of saponification (docs/model.md, section 3)."""
    return np.array([1.0 if s == "Na" else efficiency for s in lay.elements])


def symbolic_stage_ln_y(fs: Flowsheet, lay: CircuitLayout, zk: ca.MX, p: ca.MX) -> ca.MX:
    """ln of the organic leaving one stage of ``lay``, from that stage's unknowns ``zk``: ln x + ln D,
    plus the departure from equilibrium ``u`` in a Murphree circuit (an outlet, an organic assay)."""
    c_ha = p[fs.parameters.index(f"{lay.name}.extractant_mol_per_l")]
    t_k = p[fs.parameters.index(f"{lay.name}.temperature_k")]
    delta = ca.vertcat(*[p[fs.parameters.index(f"{lay.name}.ln_d_offset.{s}")] for s in lay.elements])
    ln_d, _, _ = StageModel(lay).values(zk, c_ha, t_k, delta)
    ln_y = zk[: lay.n_el] + ln_d
    return ln_y + zk[lay.y_start :] if lay.murphree else ln_y


def symbolic_murphree_rows(
    fs: Flowsheet, lay: CircuitLayout, p: ca.MX, ln_x: ca.MX, ln_d: ca.MX, ln_y: ca.MX, org_in: ca.MX, go: ca.MX
) -> ca.MX:
    """A Murphree circuit's organic rows (elements x stages): ``ln y - ln((1 - E) y_in + E D x)``,
    with ``y_in`` the organic metal inflow (plus the 1e-200 mol/h floor) over the organic flow
    (docs/model.md, section 3); ``u = ln y - ln D x`` for the Na of saponification."""
    e = p[fs.parameters.index(f"{lay.name}.stage_efficiency")]
    ln_y_eq = ln_x + ln_d
    rows = []
    for i, s in enumerate(lay.elements):
        if s == "Na":  # exchanged at equilibrium: the row is u = ln y - ln D x
            rows.append(ln_y[i, :] - ln_y_eq[i, :])
            continue
        # ln((1 - E) y_in + E D x) around the larger of ln y_in and ln D x (either may lie below
        # the smallest double), with derivatives finite at E = 1
        ln_in = ca.log(org_in[i, :] + FLOOR_MOL_PER_H) - ca.log(go)
        c = ln_in - ln_y_eq[i, :]
        eq_larger = ln_y_eq[i, :] + ca.log(e + (1.0 - e) * ca.exp(c))
        in_larger = ln_in + ca.log((1.0 - e) + e * ca.exp(-c))
        rows.append(ln_y[i, :] - ca.if_else(c <= 0.0, eq_larger, in_larger))
    return ca.vertcat(*rows)


def symbolic_metal_holdups(fs: Flowsheet, z: ca.MX, p: ca.MX) -> list[ca.MX]:
    """Per circuit, the metal each stage holds, mol (elements x stages): aqueous plus organic
    holdup volume times the phase concentrations. Shared by the dynamic model's differential
    states and the stage inventory (:mod:`models.inventory`)."""
    flows = fs.flows_function(p)
    out = []
    for c, (lay, (ln_x, _, _, _, ln_y)) in enumerate(zip(fs.circuits, symbolic_stage_values(fs, z, p), strict=True)):
        va, vo = flows[1 + 7 * c + 5], flows[1 + 7 * c + 6]
        n = lay.n_el
        out.append(ca.repmat(va, n, 1) * ca.exp(ln_x) + ca.repmat(vo, n, 1) * ca.exp(ln_y))
    return out


def symbolic_residual(flowsheet: Flowsheet) -> ca.Function:
    """The steady residual ``R(z, p)`` as a CasADi MX function (same equations as :class:`Residual`).

    Used for automatic differentiation with respect to parameters (sensitivities), for the
    optimiser and for cross-checking the assembled Jacobian.
    """
    fs = flowsheet
    z = ca.MX.sym("z", fs.n_unknowns)
    p = ca.MX.sym("p", fs.parameters.values.shape[0])
    flows = fs.flows_function(p)
    w = flows[0]
    per = [flows[1 + 7 * c : 1 + 7 * (c + 1)] for c in range(len(fs.circuits))]
    xs, ys, acids, exts = [], [], [], []
    stages = symbolic_stage_values(fs, z, p)
    for ln_x, _, acid, ext, ln_y in stages:
        xs.append(ca.exp(ln_x))
        ys.append(ca.exp(ln_y))
        acids.append(acid)
        exts.append(ext)
    flux_in = [per[c][2] + per[c][4] + FLOOR_MOL_PER_H for c in range(len(fs.circuits))]
    org_in = [per[c][4] for c in range(len(fs.circuits))]
    acid_in = [per[c][3] for c in range(len(fs.circuits))]
    res = Residual(fs)
    for g in res.groups:
        tl, sl = fs.circuits[g.target], fs.circuits[g.source]
        sel = ca.DM(sp.csr_matrix((np.ones(len(g.tgt_el)), (g.tgt_el, g.src_el)), shape=(tl.n_el, sl.n_el)).toarray())
        spar = ca.Sparsity.triplet(
            sl.n_stages, tl.n_stages, [int(v) for v in g.src_stage], [int(v) for v in g.tgt_stage]
        )
        # weights in the order CasADi stores the nonzeros (column-major)
        order = np.lexsort((g.src_stage, g.tgt_stage))
        wm = ca.MX(spar, w[[int(v) for v in g.weight[order]]])
        conc = xs[g.source] if g.phase == "aq" else ys[g.source]
        contrib = ca.mtimes(ca.mtimes(sel, conc), wm)
        flux_in[g.target] = flux_in[g.target] + contrib
        if g.phase == "org":
            org_in[g.target] = org_in[g.target] + contrib
        elif g.carries_acid:
            acid_in[g.target] = acid_in[g.target] + ca.mtimes(acids[g.source], wm)
    out = []
    for c, lay in enumerate(fs.circuits):
        n = lay.n_el
        lo, go = per[c][0], per[c][1]
        fresh_acid = per[c][3]
        r = ca.DM(res.release[c]).T
        r_el = ca.log(flux_in[c]) - ca.log(ca.repmat(lo, n, 1) * xs[c] + ca.repmat(go, n, 1) * ys[c])
        released = ca.mtimes(r, ca.repmat(go, n, 1) * ys[c] - org_in[c])
        scale = ca.sum2(fresh_acid) + ACID_SCALE_REF_MOL_PER_L * ca.sum2(lo)
        r_h = (acid_in[c] - lo * acids[c] + released) / scale
        rows = [r_el, r_h] + ([exts[c]] if lay.has_f else [])
        if lay.murphree:
            ln_x, ln_d, _, _, ln_y = stages[c]
            rows.append(symbolic_murphree_rows(fs, lay, p, ln_x, ln_d, ln_y, org_in[c], go))
        out.append(ca.vec(ca.vertcat(*rows)))
    return ca.Function("residual", [z, p], [ca.vertcat(*out)], ["z", "p"], ["r"])
