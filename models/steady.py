"""Steady state of a whole flowsheet from one Newton-type solve of the sparse residual.

Method: pseudo-transient continuation (implicit-Euler steps of the holdup dynamics with a
growing step, each solved by Newton with the exact sparse Jacobian of
:mod:`models.residual`), then Newton on the steady residual. From a start-up state (barren
organic, acid-filled stages) this needs no hand-made initial guess; from a previous solution
(warm start) plain Newton is tried first. Unknowns are logarithms, so concentrations stay
positive and a 1e-12 M trace is resolved as well as the main element.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from models._banded import BlockPlan, factorise
from models.elements import reo_purity
from models.errors import ConvergenceError, InputError
from models.flowsheet import CircuitLayout, Flowsheet
from models.kpi import meets
from models.labelled import LabelledVector
from models.provenance import RestsOn
from models.residual import FLOOR_MOL_PER_H, CircuitState, FlowValues, Residual

__all__ = [
    "CircuitProfile",
    "ProductResult",
    "SteadyOptions",
    "SteadyResult",
    "SteadySolver",
    "StreamResult",
    "startup_state",
]

Array = npt.NDArray[np.float64]
log = logging.getLogger(__name__)

PSEUDO_STEP_TOL = 1e-9
"""The tightest tolerance of a pseudo-time step of the continuation (its implicit-Euler residual's
max-norm); see ``PSEUDO_STEP_LOOSE``."""
PSEUDO_STEP_LOOSE = 0.1
PSEUDO_STEP_REDUCTION = 0.1
"""A pseudo-time step is solved inexactly: it is converged once its residual is below
``max(PSEUDO_STEP_TOL, min(PSEUDO_STEP_LOOSE, PSEUDO_STEP_REDUCTION * r0))``, with ``r0`` the
residual it started from. The walk only has to lead into the steady Newton's basin (the steady
solve that ends it is converged to ``SteadyOptions.tol``). A fixed loose tolerance stalls the walk
once the steady residual is below it (steps accepted after no iteration: at 0.1 GdTb ran out of
its 300 steps at +9 % organic flow), hence the reduction factor. Measured on 28 November (fourth
session): hree_refinery cold 1,143 to 718 iterations (2.49 to 1.7 s), tb_dy 457 to 311, the same
solutions; at nine other operating points of hree_refinery (flows and acids of every circuit
moved) 34-46 % fewer iterations, no walk failed. A reduction of 1e-2 or 3e-3 instead of 0.1: 812
or 866 iterations. Before, every step was solved to 1e-9; a fixed 1e-4 saved 10-20 % but lost its
way on a harder walk (the fallback from the tb_dy design to its margin optimum; docs/model.md,
section 11)."""
PSEUDO_ALPHA_MIN = 0.1
"""A pseudo-time step's Newton gives up (and the step is retried a quarter as long) when its line
search would take a step shorter than this: such a step has failed in nearly every case, after 12
iterations and up to 11 trial residuals each. Measured on 28 November (fourth session, with the
inexact steps): hree_refinery cold 717 to 666 iterations (1.63 to 1.38 s), tb_dy 311 to 285;
at nine other operating points of hree_refinery 1-16 % fewer iterations, none failed. At 0.2 (one
halving fewer allowed; measured with a step reduction of 1e-2, where 0 gave 812 and 341) 1,037
and 360: a step that needs a damped iteration is then given up too early."""
CHORD_CONTRACTION = 0.25
"""A steady Newton solve keeps its LU while each iteration divides the residual by 4 or more ..."""
CHORD_BELOW = 1e-3
"""... and the residual's max-norm is below this (far from a solution, chord steps led parameter
continuation astray where Newton steps did not)."""
CHORD_POLISH = 1e-2
"""Once converged, a chord iteration that still contracts goes on to this fraction of the
tolerance (the optimiser starts IPOPT from a steady solution: stopping at 1e-11 instead of a
Newton step's ~1e-13 left a throughput optimisation of tb_dy at IPOPT's iteration limit)."""

LN_TRACE = -70.0
"""A metal's log concentration (ln mol/L) below which it is a trace for the closure of the
pseudo-transient walk: e^-70 = 4e-31 mol/L, twenty decades below a 99.99 % product's impurities."""
CLOSURE_BELOW = 1e-4
"""The walk tries the closure (:meth:`SteadySolver.close_metal_balances` and a steady Newton) once
the steady residual's max-norm over the rows that are not traces is below this. On 28 November
hree_refinery's circuits reached 1e-14 on those rows at pseudo-times of 1e3-1e4 h and walked on
to 1e8 h for traces at 1e-40 to 1e-150 mol/L washing out towards the floor: 1,655 iterations
without the closure, 1,222 with it (4.7 s to 3.4 s); tb_dy 566 to 457. Tried at 1e-2 to 1:
the first closure of GdTb then fails (12 wasted iterations) and the total is no lower."""
TRACE_FEED_FRACTION = 1e-6
"""In the circuit-by-circuit cold start, a circuit fed by another's stream walks without the
elements below this fraction of the stream's metal (hree_refinery: 4 of 15 in GdTb, 6 in TbDy, 7
in DyHo); they are added by the closure before the final Newton. At 1e-6 such an element moves
the extractant's loading, and so any distribution ratio, by under a millionth. On 28 November
(fourth session, before the inexact steps) this took the circuits' walks from 1,212 Newton
iterations to 1,142 and the cold solve from 3.66 s to 2.39 s (1e-9 and 1e-3 gave the same), the
same solution to 2e-12 in z."""
LN_FLOOR_START = math.log(1e-200)
"""Placeholder ln concentration of an element left out of a circuit's walk, before the closure."""
NATURAL_MONOTONICITY = 0.25
"""Steady Newton's step acceptance: a damped step ``alpha`` is taken when the simplified Newton
correction at the trial point, ``|J^-1 R(z + alpha dz)|``, is at most ``1 - 0.25 alpha`` times
``|dz|`` (Deuflhard, *Newton Methods for Nonlinear Problems*, 2004, sec. 3.3, the restricted
monotonicity test). The residual's sum of squares, used before 28 November, weighs the log
balance rows of traces and main elements alike: after a small move at a split point of
hree_refinery it let the max-norm rise for seven damped iterations (21 iterations, 8 LUs,
0.106 s); with this test 14 iterations, 0.084 s; after a 0.2 % feed move 10 instead of 15
(0.046 s instead of 0.126 s). Used for the Newton solve from a caller's warm start only, as an
alternative to the sum of squares (a step either accepts is taken): the cold start's path, and
what depends on it bit for bit, is unchanged (the throughput NLP of tb_dy, at the edge of
IPOPT's iteration limit, did not converge from a cold solution polished by this test alone)."""


@dataclass(frozen=True)
class SteadyOptions:
    """Options of the steady solver.

    Attributes
    ----------
    tol
        Converged when the max-norm of the steady residual is below this (relative units).
    max_newton
        Newton iterations per solve (final solve and each continuation step).
    dt0_h
        First pseudo-time step, h.
    dt_max_h
        Pseudo-time step from which the final steady Newton solve is attempted, h.
    growth
        Factor on the step after a continuation step that converged in few iterations.
    max_steps
        Continuation steps before giving up.
    linear_solver
        ``"band"`` (default): the pseudo-time steps of a cold start use a LAPACK band LU per
        circuit with a Woodbury border, circuits in feed order (models/_banded.py; SuperLU where
        the flowsheet does not allow it), 5-9 % faster cold solves with the same iterations;
        steady Newton solves use SuperLU. ``"superlu"``: SciPy's SuperLU with the natural order
        everywhere (docs/model.md, section 6).
    """

    tol: float = 1e-11
    max_newton: int = 12
    dt0_h: float = 0.1
    dt_max_h: float = 1e6
    growth: float = 10.0
    max_steps: int = 300
    linear_solver: Literal["band", "superlu"] = "band"

    def __post_init__(self) -> None:
        if self.linear_solver not in ("band", "superlu"):
            raise InputError(
                f"linear_solver: {self.linear_solver!r} is not a linear solver; allowed: 'band', 'superlu'",
                field="linear_solver",
            )


@dataclass(frozen=True)
class StreamResult:
    """A stream leaving a circuit (steady)."""

    name: str
    phase: Literal["aqueous", "organic"]
    flow_l_per_h: float
    composition_mol_per_l: dict[str, float]
    acidity_mol_per_l: float = 0.0

    def flux_mol_per_h(self) -> dict[str, float]:
        """Metal flux, mol/h."""
        return {s: c * self.flow_l_per_h for s, c in self.composition_mol_per_l.items()}


@dataclass(frozen=True)
class ProductResult:
    """A declared product: its stream, purity (REO basis) and recovery (of plant feed), 0-1."""

    name: str
    stream: str
    main_element: str
    purity: float
    recovery: float
    flow_l_per_h: float
    composition_mol_per_l: dict[str, float]
    purity_min: float | None
    recovery_min: float | None

    @property
    def on_spec(self) -> bool:
        """True when purity and recovery meet their minima (to :data:`models.kpi.SPEC_TOL`)."""
        return meets(self.purity, self.purity_min) and meets(self.recovery, self.recovery_min)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "stream": self.stream,
            "main_element": self.main_element,
            "purity": self.purity,
            "recovery": self.recovery,
            "flow_l_per_h": self.flow_l_per_h,
            "composition_mol_per_l": self.composition_mol_per_l,
            "purity_min": self.purity_min,
            "recovery_min": self.recovery_min,
            "on_spec": self.on_spec,
        }


@dataclass(frozen=True)
class CircuitProfile:
    """Stage profiles of one circuit (both phases, acidity, loading)."""

    name: str
    stages: tuple[str, ...]
    sections: tuple[str, ...]
    elements: tuple[str, ...]
    aqueous_mol_per_l: Array  # (n_el, N)
    organic_mol_per_l: Array
    h_mol_per_l: Array  # (N,)
    loading_fraction: Array  # (N,) extractant in use, nan unless mass action
    mass_balance_rel_error: dict[str, float]

    @property
    def ph(self) -> Array:
        """pH per stage (concentration scale)."""
        return -np.log10(self.h_mol_per_l)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "stages": list(self.stages),
            "sections": list(self.sections),
            "elements": list(self.elements),
            "aqueous_mol_per_l": {s: self.aqueous_mol_per_l[i].tolist() for i, s in enumerate(self.elements)},
            "organic_mol_per_l": {s: self.organic_mol_per_l[i].tolist() for i, s in enumerate(self.elements)},
            "ph": self.ph.tolist(),
            "loading_fraction": self.loading_fraction.tolist(),
            "mass_balance_rel_error": self.mass_balance_rel_error,
        }


@dataclass(frozen=True)
class SteadyResult:
    """Outcome of a steady solve (typed; the caller decides any fallback).

    Attributes
    ----------
    success, status, message
        Outcome; ``status`` is ``"converged"`` or ``"failed"``.
    iterations, continuation_steps, wall_time_s, method
        Effort.
    z, parameters
        Solution vector (log unknowns) and the labelled parameters it was solved for.
    circuits, streams, products
        Stage profiles, every outlet stream, declared products with purity and recovery.
    max_mass_balance_rel_error
        Largest relative element-balance error over circuits, computed from boundary streams.
    rests_on
        Non-measured parameters the answer rests on.
    extrapolated
        Notes on stages where the chemistry is used outside its fitted range.
    """

    success: bool
    status: str
    message: str
    iterations: int
    continuation_steps: int
    wall_time_s: float
    method: str
    z: Array
    parameters: LabelledVector
    circuits: tuple[CircuitProfile, ...]
    streams: tuple[StreamResult, ...]
    products: tuple[ProductResult, ...]
    max_mass_balance_rel_error: float
    rests_on: tuple[RestsOn, ...]
    extrapolated: tuple[str, ...] = field(default_factory=tuple)

    def stream(self, name: str) -> StreamResult:
        """An outlet stream by name."""
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)

    def product(self, name: str) -> ProductResult:
        """A declared product by name."""
        for p in self.products:
            if p.name == name:
                return p
        raise KeyError(name)

    def circuit(self, name: str) -> CircuitProfile:
        """A circuit profile by name."""
        for c in self.circuits:
            if c.name == name:
                return c
        raise KeyError(name)


def startup_state(fs: Flowsheet, p: Array, residual: Residual | None = None) -> Array:
    """A start-up state: barren organic, stages filled with their section's acid, traces of metal.

    Metals start at 1e-6 of the circuit's feed-stage concentration estimate so that every
    logarithm is defined; free extractant at its total (barren organic). ``residual``: the
    flowsheet's residual when the caller has one (built otherwise).
    """
    z = np.zeros(fs.n_unknowns)
    pv = {n: p[i] for i, n in enumerate(fs.parameters.names)}
    feed_conc: dict[str, float] = {}
    for f in fs.spec.feeds:
        for s in f.concentrations_mol_per_l():
            feed_conc[s] = max(feed_conc.get(s, 0.0), pv[f"{f.name}.conc_mol_per_l.{s}"])
    for lay in fs.circuits:
        c = lay.spec
        feed_acid = 0.01
        if c.feed in {f.name for f in fs.spec.feeds}:
            feed_acid = pv[f"{c.feed}.acidity_mol_per_l"]
        for j in range(lay.n_stages):
            sec = lay.section(j)
            if sec == "strip":
                h = pv[f"{c.name}.strip_acid_mol_per_l"]
            elif sec == "scrub" and pv[f"{c.name}.scrub_acid_mol_per_l"] > 0:
                h = pv[f"{c.name}.scrub_acid_mol_per_l"]
            else:
                h = feed_acid
            base = lay.offset + j * lay.nv
            for i, s in enumerate(lay.elements):
                z[base + i] = math.log(1e-6 * max(feed_conc.get(s, 1e-2), 1e-9))
            z[base + lay.n_el] = math.log(max(h, 1e-6))
            if lay.has_f:
                z[base + lay.n_el + 1] = math.log(0.5 * pv[f"{c.name}.extractant_mol_per_l"])
    # make the free extractant consistent with the (trace) loading: f = C_HA/2 - sum s_i y_i
    res = residual or Residual(fs)
    for _ in range(3):
        for st in res.local(z, p, jacobian=False):
            lay = st.lay
            if not lay.has_f:
                continue
            c_d = 0.5 * pv[f"{lay.name}.extractant_mol_per_l"]
            used = np.array(lay.system.dimers_per_ion(lay.elements)) @ st.y
            f = np.maximum(c_d - used, 1e-6 * c_d)
            z[lay.offset + np.arange(lay.n_stages) * lay.nv + lay.n_el + 1] = np.log(f)
    return z  # a Murphree organic starts at equilibrium (u = 0)


class SteadySolver:
    """Builds the residual of a flowsheet once; solves it for any parameter vector.

    Parameters
    ----------
    flowsheet
        The plant structure.
    options
        Solver options.
    """

    def __init__(self, flowsheet: Flowsheet, options: SteadyOptions | None = None) -> None:
        self.fs = flowsheet
        self.options = options or SteadyOptions()
        self.residual = Residual(flowsheet)
        cap = np.full(flowsheet.n_unknowns, 50.0)
        for lay in flowsheet.circuits:
            for j in range(lay.n_stages):
                base = lay.offset + j * lay.nv + lay.n_el
                cap[base : base + 1 + int(lay.has_f)] = 3.0
        self._step_cap = cap

    def _lu_plan(self, jac: sp.csc_matrix) -> BlockPlan | None:
        """How the Jacobian is factorised (models/_banded.py): per circuit a band LU plus a border,
        circuits in feed order; built at its first use (the Jacobian's pattern is fixed by the
        flowsheet, models/residual.py). None (SuperLU) when the option says so, the flowsheet is
        not block lower triangular or a border is too wide."""
        if self.options.linear_solver == "superlu":
            return None
        if "_plan" not in self.__dict__:
            reach = 2 * max(lay.nv for lay in self.fs.circuits)  # a stage and its two neighbours
            blocks = [(lay.offset, lay.size) for lay in self.fs.circuits]
            self.__dict__["_plan"] = BlockPlan.build(jac.indices, jac.indptr, blocks, reach)
        plan: BlockPlan | None = self.__dict__["_plan"]
        return plan

    # ---------------------------------------------------------------- prefill
    def prefill(self, z: Array, p: Array, fv: FlowValues, max_sweeps: int | None = None) -> Array:
        """Relax metal logs that are far from their local balance (Jacobi sweeps).

        Where a stage's metal inflow and outflow differ by more than e^5, set
        ``x = In / (L + G D)`` with D at the current state. Used before Newton when a state is
        log-far from the solution: a warm start after a new element source (saponification
        switched on), or the start-up state. Each sweep carries a front one stage further.
        """
        z = z.copy()
        sweeps = max_sweeps or (max(lay.n_stages for lay in self.fs.circuits) + 5)
        for _ in range(sweeps):
            states = self.residual.local(z, p, jacobian=False)
            r, _ = self.residual.evaluate(z, p, fv=fv, jacobian=False, states=states)
            changed = False
            for c, st in enumerate(states):
                lay = st.lay
                n, N, nv = lay.n_el, lay.n_stages, lay.nv
                rc = r[lay.offset : lay.offset + lay.size].reshape(N, nv).T[:n]
                far = np.abs(rc) > 5.0
                if not far.any():
                    continue
                changed = True
                ln_d = st.ln_y_eq - st.z[:n]
                ln_den = np.logaddexp(np.log(fv.l_out[c])[None, :], np.log(fv.g_out[c])[None, :] + ln_d)
                ln_out_now = st.z[:n] + ln_den
                target = ln_out_now + rc - ln_den  # ln In - ln(L + G D)
                zc = z[lay.offset : lay.offset + lay.size].reshape(N, nv).T.copy()
                zc[:n][far] = target[far]
                z[lay.offset : lay.offset + lay.size] = zc.T.ravel()
            if not changed:
                break
        return z

    # ----------------------------------------------------------- trace closure
    def close_metal_balances(self, z: Array, p: Array, fv: FlowValues) -> Array:
        """Each element's steady stage balances solved exactly with the distribution ratios frozen.

        With D frozen, the steady balances of one element are linear in its aqueous
        concentrations: ``(L_j + G_j D_ij) x_ij - sum_links w x_src (or w D_src x_src) =
        fresh_ij + floor``, one sparse system per element over every stage that tracks it (all
        circuits at once). The matrix is a column-diagonally-dominant M-matrix (a stage sends on
        at most what leaves it), so its LU needs no pivoting and keeps every concentration's
        relative accuracy down to the floor. Where the other unknowns have settled this is
        the steady profile of a trace whose own level does not move any D.
        """
        murphree = [lay for lay in self.fs.circuits if lay.murphree]
        if any(p[self.fs.parameters.index(f"{lay.name}.stage_efficiency")] != 1.0 for lay in murphree):
            raise ConvergenceError("the closure of the metal balances assumes equilibrium stages (y = D x)")
        states = self.residual.local(z, p, jacobian=False)
        z = z.copy()
        for lay in murphree:  # at efficiency 1 the organic is at equilibrium: u = 0
            block = z[lay.offset : lay.offset + lay.size].reshape(lay.n_stages, lay.nv)
            block[:, lay.y_start :] = 0.0
        symbols = sorted({el for lay in self.fs.circuits for el in lay.elements})
        for sym in symbols:
            # node numbering: circuits that track sym, stage by stage
            base: dict[int, int] = {}
            pos: dict[int, int] = {}
            n_nodes = 0
            for c, lay in enumerate(self.fs.circuits):
                if sym in lay.elements:
                    base[c] = n_nodes
                    pos[c] = lay.elements.index(sym)
                    n_nodes += lay.n_stages
            rows: list[npt.NDArray[np.int64]] = []
            cols: list[npt.NDArray[np.int64]] = []
            vals: list[Array] = []
            rhs = np.empty(n_nodes)
            for c, b in base.items():
                st, i = states[c], pos[c]
                nodes = b + np.arange(st.lay.n_stages)
                rows.append(nodes)
                cols.append(nodes)
                vals.append(fv.l_out[c] + fv.g_out[c] * np.exp(st.ln_y_eq[i] - st.z[i]))
                rhs[nodes] = fv.fresh_aq[c][i] + fv.fresh_org[c][i] + FLOOR_MOL_PER_H
            for g in self.residual.groups:
                if g.target not in base or g.source not in base:
                    continue
                k = np.flatnonzero(g.tgt_el == pos[g.target])
                if k.size == 0:
                    continue
                src = states[g.source]
                i_src = int(g.src_el[k[0]])
                w = fv.weights[g.weight]
                factor = 1.0 if g.phase == "aq" else np.exp(src.ln_y_eq[i_src, g.src_stage] - src.z[i_src, g.src_stage])
                rows.append(base[g.target] + g.tgt_stage)
                cols.append(base[g.source] + g.src_stage)
                vals.append(-w * factor)
            a = sp.csc_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_nodes, n_nodes)
            )
            x = spla.splu(a, permc_spec="NATURAL", diag_pivot_thresh=0.0).solve(rhs)
            if not np.all(x > 0.0):
                raise ConvergenceError(f"element {sym}: the frozen-D balances have no positive solution")
            for c, b in base.items():
                lay = self.fs.circuits[c]
                idx = lay.offset + np.arange(lay.n_stages) * lay.nv + pos[c]
                z[idx] = np.log(x[b : b + lay.n_stages])
        return z

    # ----------------------------------------------------------------- Newton
    def _newton(
        self,
        z: Array,
        p: Array,
        fv: FlowValues,
        dt_h: float,
        previous: tuple[tuple[Array, Array], ...] | None,
        tol: float,
        natural: bool = False,
    ) -> tuple[Array, bool, int, float]:
        """Damped Newton on the steady residual (``dt_h`` infinite) or on one pseudo-time step.

        A steady solve is a chord iteration near its solution: once the residual's max-norm is
        below ``CHORD_BELOW`` the sparse LU is kept while the max-norm falls by at least
        ``CHORD_CONTRACTION`` per iteration and refactorised otherwise (at most ``max_newton``
        factorisations, ``3 max_newton`` iterations), and polishes on to ``CHORD_POLISH`` times
        the tolerance while it contracts. Near a solution, as in a warm start, two factorisations
        serve 10 iterations where Newton needs 4 (the LU is half a hree_refinery iteration).
        Pseudo-time steps use a fresh Jacobian at every iteration: the chord iteration made the
        cold start slower there."""
        opts = self.options
        chord = not math.isfinite(dt_h)
        # trial points of the line search need only the residual; the Jacobian is assembled
        # for the accepted point, when the next step needs it (the iterates are unchanged)
        r, _ = self.residual.evaluate(z, p, fv=fv, jacobian=False, dt_h=dt_h, previous=previous)
        norm = float(np.max(np.abs(r)))
        if not chord:
            tol = max(tol, min(PSEUDO_STEP_LOOSE, PSEUDO_STEP_REDUCTION * norm))  # inexact steps
        it = factorisations = 0
        lu = None
        last = math.inf
        while it < opts.max_newton * (3 if chord else 1):
            # converged; a chord iteration that still contracts polishes on (cheaply, with its
            # LU) to CHORD_POLISH x tol, as far as a Newton step's quadratic overshoot would go
            polish = chord and lu is not None and CHORD_POLISH * tol < norm <= CHORD_CONTRACTION * last
            if norm <= tol and not polish:
                break
            if not np.all(np.isfinite(r)):
                return z, False, it, math.inf
            if lu is None or not chord or norm > CHORD_CONTRACTION * last or norm > CHORD_BELOW:
                if factorisations >= opts.max_newton:
                    break
                _, jac = self.residual.evaluate(z, p, fv=fv, dt_h=dt_h, previous=previous)
                try:
                    # the band LU (an option) serves pseudo-time steps only; a steady solve keeps
                    # SuperLU (docs/model.md, section 6)
                    lu = factorise(jac, None if chord else self._lu_plan(jac))
                except RuntimeError:
                    return z, False, it, norm
                factorisations += 1
            dz = -lu.solve(r)
            if not np.all(np.isfinite(dz)):
                return z, False, it, norm
            # limit the step: metal logs may move far (a trace rising by 100s of e-folds),
            # acidity and free extractant logs at most by e^3 per iteration
            ratio = float(np.max(np.abs(dz) / self._step_cap))
            if ratio > 1.0:
                dz /= ratio
            # a trial step is taken when the residual's sum of squares falls or, with ``natural``
            # (a warm start), when it passes Deuflhard's restricted monotonicity test on the
            # simplified Newton correction (the natural level function, affine invariant: one
            # more triangular solve per trial)
            alpha = 1.0
            phi0 = float(r @ r)
            dz_n = float(np.linalg.norm(dz))
            while True:
                z_try = z + alpha * dz
                r_try, _ = self.residual.evaluate(z_try, p, fv=fv, jacobian=False, dt_h=dt_h, previous=previous)
                phi = float(r_try @ r_try)
                ok = math.isfinite(phi) and (
                    phi < (1.0 - 1e-4 * alpha) * phi0
                    or (natural and float(np.linalg.norm(lu.solve(r_try))) <= (1 - NATURAL_MONOTONICITY * alpha) * dz_n)
                )
                if ok or (math.isfinite(phi) and alpha < 1e-3):
                    break
                alpha *= 0.5
                if not chord and alpha < PSEUDO_ALPHA_MIN:
                    return z, False, it + 1, norm
            last = norm
            z, r = z_try, r_try
            norm = float(np.max(np.abs(r)))
            it += 1
        return z, norm <= tol, it, norm

    # ------------------------------------------------------------------ solve
    def solve(
        self,
        p: Array | None = None,
        z0: Array | None = None,
        *,
        p0: Array | None = None,
        raise_on_failure: bool = False,
        continuation: bool = True,
    ) -> SteadyResult:
        """Steady state for parameters ``p`` (default: the spec's design point).

        ``z0`` is a warm start (a previous solution's ``z``), ideally with the parameters
        ``p0`` it was solved for: when a direct Newton solve from ``z0`` fails, the solver
        walks from ``p0`` to ``p`` in adaptive steps (natural-parameter continuation) before
        falling back to pseudo-transient continuation. Without ``z0`` the solve starts from
        :func:`startup_state` (circuit by circuit for several circuits). ``continuation=False``
        tries Newton from ``z0`` only (a polish of a point known to be close, which must fail fast
        rather than fall back to a long continuation).
        """
        opts = self.options
        if z0 is None and not continuation:
            raise InputError("z0: a steady solve without continuation needs a starting point", field="z0")
        t0 = time.perf_counter()
        pv = self.fs.parameter_vector() if p is None else np.asarray(p, dtype=float)
        fv = self.residual.flows(pv)
        iterations = 0
        steps = 0
        method = "newton"
        success = False
        norm = math.inf
        z = None
        if z0 is None and continuation:
            # Murphree stages, cold: equilibrium stages first (efficiency 1), then walk the
            # efficiencies down from there (a cold walk at 0.8 lost its way on tb_dy)
            p_eq = self._equilibrium_efficiencies(pv)
            if p_eq is not None:
                first = self.solve(p_eq)
                iterations += first.iterations
                steps += first.continuation_steps
                if first.success:
                    z0, p0 = first.z, p_eq
                    method = "equilibrium stages, then newton"
        if z0 is not None:
            z_start = self.prefill(np.array(z0, dtype=float), pv, fv)
            z, success, it, norm = self._newton(z_start, pv, fv, math.inf, None, opts.tol, natural=True)
            iterations += it
            if not success and p0 is not None and continuation:
                method = "parameter continuation + newton"
                z_c, success, it, st = self._parameter_continuation(np.array(z0, dtype=float), np.asarray(p0), pv)
                iterations += it
                steps += st
                if success:
                    z = z_c
        if not success and z0 is None and len(self.fs.circuits) > 1:
            # cold start of a multi-circuit plant: solve the circuits one by one in feed order
            # (each from its upstream outlet), then close the whole flowsheet with Newton
            method = "sequential circuits (continuation) + newton"
            z_seq, ok_seq, it, st = self._sequential_start(pv)
            iterations += it
            steps += st
            if ok_seq:
                z, success, it, norm = self._newton(z_seq, pv, fv, math.inf, None, opts.tol)
                iterations += it
            if not success:
                z0 = z_seq
        if not success and continuation:
            method = "pseudo-transient continuation + newton"
            start = np.array(z0, dtype=float) if z0 is not None else startup_state(self.fs, pv, self.residual)
            z, success, it, st, norm = self._continuation(start, pv, fv)
            iterations += it
            steps += st
        wall = time.perf_counter() - t0
        if not success or z is None:
            msg = (
                f"steady state not found after {steps} continuation steps and {iterations} "
                f"Newton iterations (residual {norm:.2e})"
            )
            if raise_on_failure:
                raise ConvergenceError(msg, details={"iterations": iterations, "residual_norm": norm})
            z_out = z if z is not None else np.full(self.fs.n_unknowns, np.nan)
            return self._result(z_out, pv, fv, False, msg, iterations, steps, wall, method)
        return self._result(z, pv, fv, True, "converged", iterations, steps, wall, method)

    def _equilibrium_efficiencies(self, p: Array) -> Array | None:
        """``p`` with every Murphree efficiency set to 1, or None when all are 1 already."""
        idx = [self.fs.parameters.index(f"{lay.name}.stage_efficiency") for lay in self.fs.circuits if lay.murphree]
        if all(p[i] == 1.0 for i in idx):
            return None
        out = p.copy()
        out[idx] = 1.0
        return out

    def _parameter_continuation(self, z: Array, p0: Array, p1: Array) -> tuple[Array, bool, int, int]:
        """Walk the solution from parameters ``p0`` to ``p1`` in adaptive steps with Newton."""
        lam, step = 0.0, 0.25
        iterations = steps = 0
        prev: tuple[float, Array] | None = None
        while lam < 1.0 and steps < 60:
            target = min(1.0, lam + step)
            pv = p0 + target * (p1 - p0)
            fv = self.residual.flows(pv)
            guess = z if prev is None else z + (z - prev[1]) * (target - lam) / (lam - prev[0])
            z_new, ok, it, _ = self._newton(guess, pv, fv, math.inf, None, self.options.tol)
            iterations += it
            steps += 1
            if not ok:
                step /= 4.0
                if step < 1e-4:
                    return z, False, iterations, steps
                continue
            prev = (lam, z)
            lam, z = target, z_new
            step = min(2.0 * step, 0.5) if it <= 5 else step
        return z, lam >= 1.0, iterations, steps

    def _not_trace(self, z: Array) -> npt.NDArray[np.bool_]:
        """Residual rows that are not a trace's: every acid and extractant row, and the metal rows
        of concentrations above ``LN_TRACE``."""
        keep = np.ones(z.size, dtype=bool)
        for lay in self.fs.circuits:
            blk = keep[lay.offset : lay.offset + lay.size].reshape(lay.n_stages, lay.nv)
            zb = z[lay.offset : lay.offset + lay.size].reshape(lay.n_stages, lay.nv)
            blk[:, : lay.n_el] = zb[:, : lay.n_el] > LN_TRACE
            if lay.murphree:
                blk[:, lay.y_start :] = zb[:, : lay.n_el] > LN_TRACE
        return keep

    def _continuation(self, z: Array, pv: Array, fv: FlowValues) -> tuple[Array, bool, int, int, float]:
        """Pseudo-transient continuation from ``z``: implicit-Euler steps with a growing step.

        Step control: a step that failed is remembered, and the step grows back towards it only
        gently (it is the scale at which the transient is hard), while the memory relaxes after
        each success; the final steady Newton is tried once the step is large and, after a
        failed try, again only when the step has grown a hundredfold.
        """
        opts = self.options
        z = self.prefill(z, pv, fv)
        dt = opts.dt0_h
        dt_failed = math.inf
        next_final = opts.dt_max_h
        next_close = 0.0
        iterations = steps = 0
        norm = math.inf
        while steps < opts.max_steps:
            states = self.residual.local(z, pv, jacobian=False)
            prev = self.residual.holdups(states, fv)
            # each step solved inexactly, to a tenth of its starting residual (PSEUDO_STEP_LOOSE)
            z_new, ok, it, _ = self._newton(z, pv, fv, dt, prev, PSEUDO_STEP_TOL)
            iterations += it
            steps += 1
            if not ok:
                dt_failed = min(dt_failed, dt)
                dt /= 4.0
                if dt < 1e-6:
                    break
                continue
            z = z_new
            if dt >= next_close:
                # the rows that matter have settled: close the traces' balances at once
                r_ss, _ = self.residual.evaluate(z, pv, fv=fv, jacobian=False)
                if np.max(np.abs(r_ss[self._not_trace(z)])) <= CLOSURE_BELOW:
                    try:
                        z_fin, success, it, norm = self._newton(
                            self.close_metal_balances(z, pv, fv), pv, fv, math.inf, None, opts.tol
                        )
                    except ConvergenceError:
                        success, it = False, 0
                    iterations += it
                    if success:
                        return z_fin, True, iterations, steps, norm
                    next_close = 10.0 * dt
            if dt >= next_final:
                z_fin, success, it, norm = self._newton(z, pv, fv, math.inf, None, opts.tol)
                iterations += it
                if success:
                    return z_fin, True, iterations, steps, norm
                next_final = 100.0 * dt
            growth = opts.growth if it <= 4 else (4.0 if it <= 8 else 1.5)
            dt_new = dt * growth
            if dt_new >= dt_failed:
                dt_new = max(dt, min(dt_new, 0.5 * dt_failed) if dt < 0.5 * dt_failed else dt * 1.5)
            dt = dt_new
            dt_failed *= 1.5
        return z, False, iterations, steps, norm

    def _sequential_start(self, pv: Array) -> tuple[Array, bool, int, int]:
        """Solve each circuit alone, upstream first, with its feed taken from the solved upstream.

        A circuit fed by another's stream walks without the elements that are traces of that
        stream (below ``TRACE_FEED_FRACTION`` of its metal): they move no distribution ratio, so
        the walk is the same with fewer unknowns per stage. Afterwards the closure
        (:meth:`close_metal_balances`) gives every element's profile over the whole flowsheet
        with the walked distribution ratios, and the caller's steady Newton polishes all."""
        fs = self.fs
        z = startup_state(fs, pv, self.residual)
        iterations = steps = 0
        solved: dict[str, StreamResult] = {}
        dropped = False
        closable = self._equilibrium_efficiencies(pv) is None  # the closure needs equilibrium stages
        for lay in _feed_order(fs):
            stream = solved.get(lay.spec.feed)
            kept = lay.elements
            if stream is not None and closable and not lay.murphree:
                kept = _walked_elements(lay, stream)
            sub, pmap = self._sub_solver(lay.name, kept)
            p_sub = sub.fs.parameter_vector()
            for i_sub, i_full in pmap:
                p_sub[i_sub] = pv[i_full]
            if stream is not None:
                p_sub[sub.fs.parameters.index("in.flow_l_per_h")] = stream.flow_l_per_h
                acidity = stream.acidity_mol_per_l
                if lay.spec.feed_acidity_mol_per_l is not None:  # the liquor is adjusted on its way in
                    acidity = pv[fs.parameters.index(f"{lay.name}.feed_acidity_mol_per_l")]
                p_sub[sub.fs.parameters.index("in.acidity_mol_per_l")] = max(acidity, 1e-6)
                for s_el, c in stream.composition_mol_per_l.items():
                    name = f"in.conc_mol_per_l.{s_el}"
                    if name in sub.fs.parameters:
                        p_sub[sub.fs.parameters.index(name)] = max(c, 1e-190)
            res = sub.solve(p_sub)
            iterations += res.iterations
            steps += res.continuation_steps
            if not res.success:
                return z, False, iterations, steps
            sub_lay = sub.fs.circuits[0]
            block = z[lay.offset : lay.offset + lay.size].reshape(lay.n_stages, lay.nv)
            walked = res.z.reshape(sub_lay.n_stages, sub_lay.nv)
            if sub_lay.elements == lay.elements:
                block[:] = walked
            else:
                dropped = True
                block[:, : lay.n_el] = LN_FLOOR_START
                block[:, [lay.elements.index(s_el) for s_el in sub_lay.elements]] = walked[:, : sub_lay.n_el]
                block[:, lay.n_el :] = walked[:, sub_lay.n_el :]
            for st in res.streams:
                solved[f"{lay.name}.{st.name.split('.', 1)[1]}"] = st
        if dropped:
            try:
                z = self.close_metal_balances(z, pv, self.residual.flows(pv))
            except ConvergenceError:
                return z, False, iterations, steps
        return z, True, iterations, steps

    def _sub_solver(self, circuit: str, elements: tuple[str, ...]) -> tuple[SteadySolver, list[tuple[int, int]]]:
        """A solver for one circuit alone (fed by an external stream ``in``) tracking ``elements``
        (Na is added by the flowsheet where the circuit saponifies), built once."""
        cache: dict[tuple[str, tuple[str, ...]], tuple[SteadySolver, list[tuple[int, int]]]]
        cache = self.__dict__.setdefault("_subs", {})
        if (circuit, elements) in cache:
            return cache[circuit, elements]
        from models.flowsheet import build_flowsheet
        from models.spec import parse_spec

        fs = self.fs
        lay = fs.circuit(circuit)
        c = lay.spec
        feeds = {f.name: f for f in fs.spec.feeds}
        if c.feed in feeds:
            feed = feeds[c.feed].model_dump()
            feed["name"] = "in"
        else:
            outlet = c.feed.split(".", 1)[1]
            feed = {
                "name": "in", "phase": "organic" if outlet.endswith("organic") else "aqueous",
                "flow_l_per_h": 1.0, "acidity_mol_per_l": 0.1, "composition_basis": "mol_per_l",
                "composition": {s_el: 1e-3 for s_el in elements if s_el != "Na" or c.saponification == 0.0},
            }
        circ = c.model_dump()
        circ["feed"] = "in"
        circ["feed_acidity_mol_per_l"] = None  # the stand-in feed carries the adjusted acidity
        spec = parse_spec({"plant": {"name": f"{fs.spec.plant.name}:{circuit}"}, "feeds": [feed], "circuits": [circ]})
        sub = SteadySolver(build_flowsheet(spec), self.options)
        pmap = [
            (sub.fs.parameters.index(n), fs.parameters.index(n))
            for n in sub.fs.parameters.names
            if n.startswith(f"{circuit}.") and n in fs.parameters
        ]
        if c.feed in feeds:
            for n in sub.fs.parameters.names:
                if n.startswith("in."):
                    full = c.feed + n[2:]
                    if full in fs.parameters:
                        pmap.append((sub.fs.parameters.index(n), fs.parameters.index(full)))
        cache[circuit, elements] = (sub, pmap)
        return sub, pmap

    # ----------------------------------------------------------------- report
    def _result(
        self,
        z: Array,
        p: Array,
        fv: FlowValues,
        success: bool,
        message: str,
        iterations: int,
        steps: int,
        wall: float,
        method: str,
    ) -> SteadyResult:
        fs = self.fs
        states = self.residual.local(z, p, jacobian=False) if np.all(np.isfinite(z)) else None
        streams: list[StreamResult] = []
        circuits: list[CircuitProfile] = []
        extrapolated: list[str] = []
        max_err = math.nan
        if states is not None:
            streams = [self._stream(o, states, fv) for o in fs.outlets]
            balances = self._mass_balances(states, fv, p)
            max_err = max((e for b in balances for e in b.values()), default=0.0)
            for c, st in enumerate(states):
                circuits.append(self._profile(st, balances[c]))
                extrapolated += _extrapolation_notes(st)
        feed_in = fs.feed_inflow_mol_per_h(p)
        products = []
        for ps in fs.spec.products:
            s = next((x for x in streams if x.name == ps.stream), None)
            if s is None:
                continue
            flux = s.flux_mol_per_h()
            purity = reo_purity(flux, ps.main_elements)
            fed = sum(feed_in.get(m, 0.0) for m in ps.main_elements)
            recovery = sum(flux.get(m, 0.0) for m in ps.main_elements) / fed if fed > 0 else math.nan
            products.append(
                ProductResult(
                    ps.name,
                    ps.stream,
                    "+".join(ps.main_elements),
                    purity,
                    recovery,
                    s.flow_l_per_h,
                    s.composition_mol_per_l,
                    ps.purity_min,
                    ps.recovery_min,
                )
            )
        return SteadyResult(
            success=success,
            status="converged" if success else "failed",
            message=message,
            iterations=iterations,
            continuation_steps=steps,
            wall_time_s=wall,
            method=method,
            z=z,
            parameters=LabelledVector(fs.parameters.names, p),
            circuits=tuple(circuits),
            streams=tuple(streams),
            products=tuple(products),
            max_mass_balance_rel_error=max_err,
            rests_on=fs.rests_on(),
            extrapolated=tuple(extrapolated),
        )

    def _stream(self, o: Any, states: tuple[CircuitState, ...], fv: FlowValues) -> StreamResult:
        st = states[o.circuit]
        conc = st.x[:, o.stage] if o.phase == "aq" else st.y[:, o.stage]
        return StreamResult(
            o.name,
            "aqueous" if o.phase == "aq" else "organic",
            float(fv.weights[o.weight]),
            {s: float(conc[i]) for i, s in enumerate(st.lay.elements)},
            float(st.acid[o.stage]) if o.phase == "aq" else 0.0,
        )

    def _mass_balances(self, states: tuple[CircuitState, ...], fv: FlowValues, p: Array) -> list[dict[str, float]]:
        """Relative element balance error per circuit, from the boundary streams."""
        fs = self.fs
        inflow = [dict.fromkeys(st.lay.elements, 0.0) for st in states]
        outflow = [dict.fromkeys(st.lay.elements, 0.0) for st in states]
        for c, st in enumerate(states):
            fresh = (fv.fresh_aq[c] + fv.fresh_org[c]).sum(axis=1)
            for i, s in enumerate(st.lay.elements):
                inflow[c][s] += float(fresh[i])
        for link in fs.links:
            if link.source == link.target:
                continue
            src = states[link.source]
            conc = src.x if link.phase == "aq" else src.y
            w = fv.weights[link.weight]
            for i, s in enumerate(src.lay.elements):
                inflow[link.target][s] += float(conc[i, link.source_stage] * w)
        for o in fs.outlets:
            st = states[o.circuit]
            conc = st.x if o.phase == "aq" else st.y
            w = fv.weights[o.weight]
            for i, s in enumerate(st.lay.elements):
                outflow[o.circuit][s] += float(conc[i, o.stage] * w)
        out = []
        for c in range(len(states)):
            out.append({s: abs(inflow[c][s] - outflow[c][s]) / inflow[c][s] for s in inflow[c] if inflow[c][s] > 0.0})
        return out

    def _profile(self, st: CircuitState, balance: dict[str, float]) -> CircuitProfile:
        lay = st.lay
        h = np.exp(st.z[lay.n_el])
        if lay.has_f:
            f = np.exp(st.z[lay.n_el + 1])
            c_d = f + np.array(lay.system.dimers_per_ion(lay.elements)) @ st.y
            loading = 1.0 - f / c_d
        else:
            loading = np.full(lay.n_stages, np.nan)
        return CircuitProfile(
            name=lay.name,
            stages=lay.stage_labels(),
            sections=tuple(lay.section(j) for j in range(lay.n_stages)),
            elements=lay.elements,
            aqueous_mol_per_l=st.x.copy(),
            organic_mol_per_l=st.y.copy(),
            h_mol_per_l=h,
            loading_fraction=loading,
            mass_balance_rel_error=balance,
        )


def _walked_elements(lay: CircuitLayout, stream: StreamResult) -> tuple[str, ...]:
    """The elements of ``lay`` its cold walk tracks when fed by ``stream``: all but the traces of
    the stream (below ``TRACE_FEED_FRACTION`` of its metal), and Na where the circuit saponifies."""
    conc = stream.composition_mol_per_l
    total = sum(v for s_el, v in conc.items() if s_el != "Na")
    return tuple(
        s_el
        for s_el in lay.elements
        if (s_el == "Na" and lay.spec.saponification > 0.0) or conc.get(s_el, 0.0) >= TRACE_FEED_FRACTION * total
    )


def _feed_order(fs: Flowsheet) -> list[Any]:
    """Circuits ordered so that each comes after the circuit feeding it."""
    feeds = {f.name for f in fs.spec.feeds}
    done: set[str] = set()
    order = []

    def visit(lay: Any) -> None:
        if lay.name in done:
            return
        if lay.spec.feed not in feeds:
            visit(fs.circuit(lay.spec.feed.split(".")[0]))
        done.add(lay.name)
        order.append(lay)

    for lay in fs.circuits:
        visit(lay)
    return order


def _extrapolation_notes(st: CircuitState) -> list[str]:
    lay = st.lay
    lo, hi = lay.system.valid_ph
    notes = []
    ph = -np.log10(np.exp(st.z[lay.n_el]))
    bad = [lay.stage_labels()[j] for j in range(lay.n_stages) if not lo <= ph[j] <= hi]
    if bad:
        notes.append(
            f"{lay.name}: pH outside the fitted range {lo:g}..{hi:g} of {lay.system.key} at stages "
            f"{', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''} (min pH {ph.min():.2f}, max {ph.max():.2f})"
        )
    return notes
