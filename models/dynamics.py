r"""Dynamics of a flowsheet: stage holdups as a DAE integrated by SUNDIALS IDAS through CasADi.

Each stage is a well-mixed equilibrium holdup of both phases; its volume is the mixer plus the
settler (phase volumes split by the flow ratio), so the settler's inventory counts in the slow
dynamics (assumption: no separate settler lag, no entrainment). Per stage *j* of a circuit:

.. math::

    \frac{d \ln M_{ij}}{dt} &= \frac{\mathit{In}_{ij} - L_j X_{ij} - G_j Y_{ij}}{M_{ij}}, \qquad
    0 = \ln M_{ij} - \ln(V^a_j X_{ij} + V^o_j Y_{ij}) \\
    \frac{dQ_j}{dt} &= A^\mathrm{in}_j - L_j a_j + \sum_i r_i (G_j Y_{ij} - O^\mathrm{in}_{ij}), \qquad
    0 = (Q_j - V^a_j a_j + V^o_j \textstyle\sum_i r_i Y_{ij}) / s_c \\
    0 &= (f_j + \textstyle\sum_i s_i Y_{ij})/(C_\mathrm{HA}/2) - 1

with the same inflows, acidity, distribution and extractant balance as the steady residual
(:mod:`models.residual`, :mod:`models.stage`): a long run settles on the steady solve.
Differential states are the logarithms of metal inventories (relative accuracy across ten
decades) and the acid inventories; algebraic states are the stage unknowns ``z``.
Manipulated variables and disturbances are piecewise constant between moves (a ramp is a
staircase of ``ramp_steps`` moves).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import casadi as ca
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from models.elements import reo_purity
from models.errors import ConvergenceError, InputError
from models.flowsheet import Flowsheet
from models.labelled import LabelledVector
from models.residual import (
    ACID_SCALE_REF_MOL_PER_L,
    FLOOR_MOL_PER_H,
    Residual,
    symbolic_metal_holdups,
    symbolic_murphree_rows,
    symbolic_stage_values,
)

__all__ = ["DynamicModel", "DynamicOptions", "DynamicResult", "Move", "PlantState"]

Array = npt.NDArray[np.float64]
log = logging.getLogger(__name__)


CONSISTENCY_TOL = 1e-6
"""Largest algebraic residual accepted when a Murphree circuit's stage unknowns are re-solved
after a parameter move (ln units and scaled balances)."""

@dataclass(frozen=True)
class Move:
    """A change of one parameter (manipulated variable or disturbance) at a plant time.

    Attributes
    ----------
    parameter
        A flowsheet parameter name, e.g. ``TbDy.scrub_acid_mol_per_l``.
    at_h
        Plant time of the move, h (from the start of the run).
    value
        New value, in the parameter's unit.
    ramp_h
        0 for a step; else the value ramps linearly from the old value over this time.
    """

    parameter: str
    at_h: float
    value: float
    ramp_h: float = 0.0


@dataclass(frozen=True)
class DynamicOptions:
    """Options of the integrator.

    Attributes
    ----------
    rtol, atol
        IDAS relative and absolute tolerances (on log inventories and acid inventories).
    output_interval_h
        Spacing of the reported trajectory, h.
    ramp_steps
        Number of steps a ramp is split into.
    max_step_h
        Largest internal step of IDAS, h (0 = no limit).
    max_order
        Highest BDF order IDAS may use (1-5). 3 rather than IDAS's 5: on hree_refinery the 24 h
        run integrates in about 0.9 s instead of 1.2 s at the same tolerances (the higher orders
        are less stable on the cascade's stiff modes and cost rejected steps).
    """

    rtol: float = 1e-6
    atol: float = 1e-6
    output_interval_h: float = 0.5
    ramp_steps: int = 8
    max_step_h: float = 0.0
    max_order: int = 3


@dataclass(frozen=True)
class DynamicResult:
    """A simulated trajectory.

    Attributes
    ----------
    success, message, wall_time_s
        Outcome.
    times_h
        Reported plant times, h.
    z
        Stage unknowns at each reported time, shape (len(times_h), n_unknowns).
    parameters
        Parameter vector at each reported time, shape (len(times_h), n_parameters).
    product_purity, product_recovery
        Per declared product, the trajectory of purity (REO basis) and recovery (of the feed
        entering at that time), 0-1.
    stream_flux_mol_per_h
        Per outlet stream, per element, the flux trajectory.
    """

    success: bool
    message: str
    wall_time_s: float
    times_h: Array
    z: Array
    parameters: Array
    parameter_names: tuple[str, ...]
    product_purity: dict[str, Array]
    product_recovery: dict[str, Array]
    stream_flux_mol_per_h: dict[str, dict[str, Array]] = field(repr=False)

    @property
    def final_z(self) -> Array:
        """Stage unknowns at the end."""
        return self.z[-1]

    @property
    def plant_hours(self) -> float:
        """Simulated plant time, h."""
        return float(self.times_h[-1] - self.times_h[0])


@dataclass(frozen=True)
class PlantState:
    """The full dynamic state of a plant at one plant time (for stepwise simulation).

    Attributes
    ----------
    t_h
        Plant time, h.
    xd
        Differential states (log metal inventories and acid inventories per stage).
    z
        Stage unknowns (log concentrations, log acidity, log free extractant).
    """

    t_h: float
    xd: Array
    z: Array


class DynamicModel:
    """The DAE of a flowsheet and its IDAS integrator (built once, reused for every run)."""

    def __init__(self, flowsheet: Flowsheet, options: DynamicOptions | None = None) -> None:
        self.fs = flowsheet
        self.options = options or DynamicOptions()
        self.residual = Residual(flowsheet)

    # ------------------------------------------------------------------ model
    @cached_property
    def _dae(self) -> dict[str, ca.MX]:
        fs = self.fs
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
        for g in self.residual.groups:
            tl, sl = fs.circuits[g.target], fs.circuits[g.source]
            sel = np.zeros((tl.n_el, sl.n_el))
            sel[g.tgt_el, g.src_el] = 1.0
            spar = ca.Sparsity.triplet(
                sl.n_stages, tl.n_stages, [int(v) for v in g.src_stage], [int(v) for v in g.tgt_stage]
            )
            order = np.lexsort((g.src_stage, g.tgt_stage))
            wm = ca.MX(spar, w[[int(v) for v in g.weight[order]]])
            conc = xs[g.source] if g.phase == "aq" else ys[g.source]
            contrib = ca.mtimes(ca.mtimes(ca.DM(sel), conc), wm)
            flux_in[g.target] = flux_in[g.target] + contrib
            if g.phase == "org":
                org_in[g.target] = org_in[g.target] + contrib
            elif g.carries_acid:
                acid_in[g.target] = acid_in[g.target] + ca.mtimes(acids[g.source], wm)
        ln_m_state, q_state, odes, algs = [], [], [], []
        for c, lay in enumerate(fs.circuits):
            n, N = lay.n_el, lay.n_stages
            lo, go, fresh_acid, va, vo = per[c][0], per[c][1], per[c][3], per[c][5], per[c][6]
            r = ca.DM(self.residual.release[c]).T
            lm = ca.MX.sym(f"lnM{c}", n, N)
            q = ca.MX.sym(f"Q{c}", 1, N)
            out = ca.repmat(lo, n, 1) * xs[c] + ca.repmat(go, n, 1) * ys[c]
            m_of_z = ca.repmat(va, n, 1) * xs[c] + ca.repmat(vo, n, 1) * ys[c]
            released = ca.mtimes(r, ca.repmat(go, n, 1) * ys[c] - org_in[c])
            scale = ca.sum2(fresh_acid) + ACID_SCALE_REF_MOL_PER_L * ca.sum2(lo)
            odes.append(ca.vec((flux_in[c] - out) / ca.exp(lm)))
            odes.append(ca.vec(acid_in[c] - lo * acids[c] + released))
            algs.append(ca.vec(lm - ca.log(m_of_z)))
            q_of_z = va * acids[c] - vo * ca.mtimes(r, ys[c])
            algs.append(ca.vec((q - q_of_z) / scale))
            if lay.has_f:
                algs.append(ca.vec(exts[c]))
            if lay.murphree:
                ln_x, ln_d, _, _, ln_y = stages[c]
                algs.append(ca.vec(symbolic_murphree_rows(fs, lay, p, ln_x, ln_d, ln_y, org_in[c], go)))
            ln_m_state.append(ca.vec(lm))
            q_state.append(ca.vec(q))
        xd = ca.vertcat(*[v for pair in zip(ln_m_state, q_state, strict=True) for v in pair])
        # algebraic unknowns in the same stage-major order as the steady residual's rows
        alg_rows = []
        k = 0
        for lay in fs.circuits:
            n, N = lay.n_el, lay.n_stages
            a_m = ca.reshape(algs[k], n, N)
            a_q = ca.reshape(algs[k + 1], 1, N)
            rows = [a_m, a_q]
            k += 2
            if lay.has_f:
                rows.append(ca.reshape(algs[k], 1, N))
                k += 1
            if lay.murphree:
                rows.append(ca.reshape(algs[k], n, N))
                k += 1
            alg_rows.append(ca.vec(ca.vertcat(*rows)))
        return {"x": xd, "z": z, "p": p, "ode": ca.vertcat(*odes), "alg": ca.vertcat(*alg_rows)}

    @cached_property
    def _state_function(self) -> ca.Function:
        """``(z, p) -> x_d``: the differential states consistent with stage unknowns ``z``."""
        fs = self.fs
        z = ca.MX.sym("z", fs.n_unknowns)
        p = ca.MX.sym("p", fs.parameters.values.shape[0])
        flows = fs.flows_function(p)
        out = []
        stages = symbolic_stage_values(fs, z, p)
        held = symbolic_metal_holdups(fs, z, p)
        for c, (m, (_, _, acid, _, ln_y)) in enumerate(zip(held, stages, strict=True)):
            va, vo = flows[1 + 7 * c + 5], flows[1 + 7 * c + 6]
            ln_m = ca.log(m)
            r = ca.DM(self.residual.release[c]).T
            q = va * acid - vo * ca.mtimes(r, ca.exp(ln_y))
            out += [ca.vec(ln_m), ca.vec(q)]
        return ca.Function("states", [z, p], [ca.vertcat(*out)])

    def _integrator(self, grid: Sequence[float], max_step_h: float = 0.0) -> ca.Function:
        key = (tuple(round(float(t), 12) for t in grid), round(max_step_h, 12))
        cache: dict[tuple[tuple[float, ...], float], ca.Function] = self.__dict__.setdefault("_integrators", {})
        if key not in cache:
            if len(cache) > 32:
                cache.clear()
            cache[key] = self._make_integrator(grid, max_step_h)
        return cache[key]

    def _make_integrator(self, grid: Sequence[float], max_step_h: float) -> ca.Function:
        opts: dict[str, object] = {
            "abstol": self.options.atol,
            "reltol": self.options.rtol,
            "calc_ic": False,
            "max_num_steps": 200000,
            "disable_internal_warnings": True,
            "max_order": self.options.max_order,
        }
        step = max_step_h or self.options.max_step_h
        if step > 0:
            opts["max_step_size"] = step
        return ca.integrator("plant", "idas", self._dae, 0.0, list(grid), opts)  # type: ignore[arg-type]

    def _advance(
        self,
        xd: Array,
        z: Array,
        p: Array,
        a: float,
        b: float,
        grid: list[float],
        depth: int,
        failures: list[int] | None = None,
    ) -> list[tuple[float, Array, Array]]:
        """Integrate from ``a`` to ``b`` reporting at ``grid``; on an IDAS failure split the
        interval in two (with a bounded step) and retry, down to a limited depth. ``failures``
        (``[count, allowed]``) bounds the failed IDAS calls of the whole advance."""
        try:
            integ = self._integrator([t - a for t in grid], max_step_h=(b - a) / 20.0 if depth else 0.0)
            res = integ(x0=xd, z0=z, p=p)
            xf, zf = np.asarray(res["xf"]), np.asarray(res["zf"])
            return [(t, xf[:, k].copy(), zf[:, k].copy()) for k, t in enumerate(grid)]
        except RuntimeError as exc:
            if failures is not None:
                failures[0] += 1
            if depth >= 14 or (failures is not None and failures[0] > failures[1]):
                why = f"after {failures[0]} failed attempts" if failures is not None else "at the smallest split"
                raise ConvergenceError(
                    f"IDAS failed between {a:g} h and {b:g} h of plant time ({why}): {str(exc).splitlines()[-1]}",
                    details={"t_h": a},
                ) from None
        mid = 0.5 * (a + b)
        first = [t for t in grid if t <= mid] + ([mid] if not any(abs(t - mid) < 1e-12 for t in grid) else [])
        first = sorted(set(first))
        out1 = self._advance(xd, z, p, a, mid, first, depth + 1, failures)
        _, xm, zm = out1[-1]
        out2 = self._advance(xm, zm, p, mid, b, [t for t in grid if t > mid + 1e-12], depth + 1, failures)
        keep = [o for o in out1 if any(abs(o[0] - t) < 1e-12 for t in grid)]
        return keep + out2

    # ------------------------------------------------------------ stepwise
    def initial_state(self, z: Array, p: Array, t_h: float = 0.0) -> PlantState:
        """A consistent plant state from stage unknowns ``z`` (a steady solution or start-up)."""
        return PlantState(t_h, np.asarray(self._state_function(z, p)).ravel(), np.array(z, dtype=float))

    @cached_property
    def _consistency(self) -> ca.Function:
        """Newton rootfinder of the algebraic equations for ``z`` given differential states."""
        return ca.rootfinder("consistent", "newton", self._algebraic, {"error_on_fail": False, "max_iter": 50})

    @cached_property
    def _algebraic(self) -> ca.Function:
        """``(z, x_d, p) -> g``: the algebraic equations of the DAE."""
        dae = self._dae
        return ca.Function("alg", [dae["z"], dae["x"], dae["p"]], [dae["alg"]])

    def _algebraic_restart(self, xd: Array, z: Array, p: Array) -> Array:
        """The stage unknowns re-solved at the inventories ``xd`` for parameters ``p`` where a
        parameter enters the algebraic equations of a Murphree circuit (its efficiency, its
        organic flow): IDAS starts a segment from a consistent state (``calc_ic`` off), and
        after such a move the organic's departure from equilibrium jumps. Equilibrium plants
        pass through unchanged."""
        if not any(lay.murphree for lay in self.fs.circuits):
            return z
        z_new = np.asarray(self._consistency(z, xd, p)).ravel()
        misfit = math.inf
        if np.all(np.isfinite(z_new)):
            misfit = float(np.max(np.abs(np.asarray(self._algebraic(z_new, xd, p)).ravel())))
        if not misfit <= CONSISTENCY_TOL:
            raise ConvergenceError(
                "no consistent plant state after the parameter move: the Murphree organic would need "
                "more metal than the stages hold (the lumped holdup model has no organic lag); ramp a "
                "change of stage efficiency over hours or make it smaller",
                details={"algebraic_residual": float(misfit)},
            )
        return z_new

    def consistent_state(self, z_guess: Array, p: Array, t_h: float = 0.0) -> PlantState:
        """A consistent state near ``z_guess``: inventories from ``z_guess``, then the algebraic
        equations (phase equilibrium, extractant balance) solved for the stage unknowns.

        Used after a state is edited (an estimator's correction, a parameter change that moves
        the extractant balance)."""
        pv = np.asarray(p, dtype=float)
        xd = np.asarray(self._state_function(z_guess, pv)).ravel()
        z = np.asarray(self._consistency(z_guess, xd, pv)).ravel()
        if not np.all(np.isfinite(z)):
            raise ConvergenceError("could not make the edited plant state consistent", details={"t_h": t_h})
        return PlantState(t_h, np.asarray(self._state_function(z, pv)).ravel(), z)

    def advance(self, state: PlantState, p: Array, dt_h: float, *, max_failures: int | None = None) -> PlantState:
        """Integrate ``dt_h`` plant hours with parameters ``p`` held constant (for a plant
        simulator that changes setpoints between steps). Raises :class:`ConvergenceError`.

        A failed IDAS call is retried on halves of the interval, down to 1/16384 of it: a plant
        simulator must get through. ``max_failures`` gives up sooner, after that many failed
        calls (an estimator with a fallback of its own: chasing a hard spot through 14 halvings
        held one for minutes of wall time while the plant ran on)."""
        if not (math.isfinite(dt_h) and dt_h > 0.0):
            raise InputError(f"dt_h: {dt_h!r} must be a finite time > 0", field="dt_h")
        failures = None if max_failures is None else [0, max_failures]
        pv = np.asarray(p, dtype=float)
        out = self._advance(
            state.xd, self._algebraic_restart(state.xd, state.z, pv), pv, 0.0, dt_h, [dt_h], depth=0, failures=failures
        )
        _, xd, z = out[-1]
        return PlantState(state.t_h + dt_h, xd, z)

    # --------------------------------------------------------- sensitivities
    @cached_property
    def _linearisation(self) -> ca.Function:
        """``(x_d, z, p) -> (d(ode, alg)/d(x_d, z), d(ode, alg)/dp)``: the DAE's Jacobians."""
        dae = self._dae
        f = ca.vertcat(dae["ode"], dae["alg"])
        return ca.Function(
            "dae_jac",
            [dae["x"], dae["z"], dae["p"]],
            [ca.jacobian(f, ca.vertcat(dae["x"], dae["z"])), ca.jacobian(f, dae["p"])],
        )

    @cached_property
    def _state_jacobians(self) -> ca.Function:
        """``(z, p) -> (dx_d/dz, dx_d/dp)`` of the state function."""
        z = ca.MX.sym("z", self.fs.n_unknowns)
        p = ca.MX.sym("p", self.fs.parameters.values.shape[0])
        xd = self._state_function(z, p)
        return ca.Function("state_jac", [z, p], [ca.jacobian(xd, z), ca.jacobian(xd, p)])

    def propagate_sensitivity(
        self, start: PlantState, end: PlantState, p: Array, s_z: Array, s_p: Array, substeps: int = 8
    ) -> Array:
        r"""Sensitivities :math:`S_z = \partial z/\partial\theta` at ``end`` of a step from
        ``start`` with parameters ``p`` held, given :math:`S_z` at ``start`` (``s_z``, stage unknowns
        x directions) and :math:`\partial p/\partial\theta` (``s_p``, parameters x directions).

        The sensitivity equations of the DAE, :math:`\dot S_x = F_x S_x + F_z S_z + F_p S_p`,
        :math:`0 = G_x S_x + G_z S_z + G_p S_p`, are integrated by implicit Euler in ``substeps``
        equal steps, the first half with the Jacobians at ``start``, the second half with those at
        ``end`` (two sparse LUs serve all steps and directions); :math:`S_x` starts consistent,
        from the state function. The state itself is integrated by IDAS (:meth:`advance`); only
        its derivative is approximated here, for two Jacobian evaluations instead of one
        integration per direction. Against central differences of perturbed integrations on
        tb_dy after a +10 % organic step (tests/models/test_dynamic_sensitivity.py): 0.03-0.18 % of each
        column's largest entry over 0.5 h, 0.4-1.8 % over 2 h, 1.8-5.6 % over 5 h."""
        pv = np.asarray(p, dtype=float)
        n_sub = max(int(substeps), 1)
        h = (end.t_h - start.t_h) / n_sub
        if not (math.isfinite(h) and h > 0.0):
            raise InputError(f"end.t_h: {end.t_h!r} must be after start.t_h {start.t_h!r}", field="end.t_h")
        h_z, h_p = (_csc(m) for m in self._state_jacobians(start.z, pv))
        s_x = h_z @ s_z + h_p @ s_p
        nx, nz = end.xd.size, end.z.size
        steps = []
        for state in (start, end):
            j_xz, j_p = (_csc(m) for m in self._linearisation(state.xd, state.z, pv))
            lhs = sp.vstack([sp.hstack([sp.identity(nx), sp.csc_matrix((nx, nz))]) - h * j_xz[:nx], j_xz[nx:]])
            steps.append((spla.splu(lhs.tocsc()), j_p @ s_p))
        s_new = np.zeros((nx + nz, s_z.shape[1]))
        for k in range(n_sub):
            lu, drive = steps[0] if k < n_sub // 2 else steps[1]
            s_new = lu.solve(np.vstack([s_x + h * drive[:nx], -drive[nx:]]))
            s_x = s_new[:nx]
        return np.asarray(s_new[nx:])

    # -------------------------------------------------------------- simulate
    def simulate(
        self,
        z0: Array,
        hours: float,
        p: Array | None = None,
        moves: Sequence[Move] = (),
    ) -> DynamicResult:
        """Integrate from stage state ``z0`` for ``hours`` with piecewise-constant parameters.

        ``z0`` must be a consistent state (a steady solution, a saved state or a previous run's
        end). Raises :class:`InputError` for a bad horizon or unknown move parameter, and
        :class:`ConvergenceError` when IDAS fails.
        """
        if not (math.isfinite(hours) and hours > 0.0):
            raise InputError(f"hours: {hours!r} must be a finite time > 0", field="hours")
        fs = self.fs
        t_start = time.perf_counter()
        pv = fs.parameter_vector() if p is None else np.array(p, dtype=float)
        events = _expand_moves(moves, self.options.ramp_steps, fs, pv)
        interval = self.options.output_interval_h
        report = [*np.arange(0.0, hours, interval).tolist(), hours]
        breaks = sorted({0.0, hours, *[t for t, _, _ in events if 0.0 < t < hours]})
        times, zs, ps = [0.0], [np.array(z0, dtype=float)], [pv.copy()]
        xd = np.asarray(self._state_function(z0, pv)).ravel()
        z = np.array(z0, dtype=float)
        for a, b in itertools.pairwise(breaks):
            for t, idx, value in events:
                if abs(t - a) < 1e-12 or (a == 0.0 and t <= 0.0):
                    pv[idx] = value
            z = self._algebraic_restart(xd, z, pv)
            grid = [t for t in report if a < t <= b + 1e-12]
            if not grid or abs(grid[-1] - b) > 1e-9:
                grid.append(b)
            for t, xk, zk in self._advance(xd, z, pv, a, b, grid, depth=0):
                times.append(t)
                zs.append(zk)
                ps.append(pv.copy())
                xd, z = xk, zk
        keep = np.unique(np.round(np.array(times), 9), return_index=True)[1]
        t_arr = np.array(times)[keep]
        z_arr = np.array(zs)[keep]
        p_arr = np.array(ps)[keep]
        purity, recovery, fluxes = self._trajectories(z_arr, p_arr)
        return DynamicResult(
            success=True,
            message="ok",
            wall_time_s=time.perf_counter() - t_start,
            times_h=t_arr,
            z=z_arr,
            parameters=p_arr,
            parameter_names=fs.parameters.names,
            product_purity=purity,
            product_recovery=recovery,
            stream_flux_mol_per_h=fluxes,
        )

    def _trajectories(
        self, z_arr: Array, p_arr: Array
    ) -> tuple[dict[str, Array], dict[str, Array], dict[str, dict[str, Array]]]:
        fs = self.fs
        fluxes: dict[str, dict[str, list[float]]] = {o.name: {} for o in fs.outlets}
        purity: dict[str, list[float]] = {ps.name: [] for ps in fs.spec.products}
        recovery: dict[str, list[float]] = {ps.name: [] for ps in fs.spec.products}
        for z, p in zip(z_arr, p_arr, strict=True):
            fv = self.residual.flows(p)
            states = self.residual.local(z, p, jacobian=False)
            feed_in = fs.feed_inflow_mol_per_h(p)
            now: dict[str, dict[str, float]] = {}
            for o in fs.outlets:
                st = states[o.circuit]
                conc = st.x if o.phase == "aq" else st.y
                w = fv.weights[o.weight]
                now[o.name] = {s: float(conc[i, o.stage] * w) for i, s in enumerate(st.lay.elements)}
                for s, v in now[o.name].items():
                    fluxes[o.name].setdefault(s, []).append(v)
            for ps in fs.spec.products:
                flux = now.get(ps.stream, {})
                purity[ps.name].append(reo_purity(flux, ps.main_elements))
                fed = sum(feed_in.get(m, 0.0) for m in ps.main_elements)
                got = sum(flux.get(m, 0.0) for m in ps.main_elements)
                recovery[ps.name].append(got / fed if fed > 0 else math.nan)
        return (
            {k: np.array(v) for k, v in purity.items()},
            {k: np.array(v) for k, v in recovery.items()},
            {k: {s: np.array(v) for s, v in d.items()} for k, d in fluxes.items()},
        )

    def parameters_at(self, result: DynamicResult, index: int = -1) -> LabelledVector:
        """The labelled parameter vector at one reported time."""
        return LabelledVector(result.parameter_names, result.parameters[index])


def _expand_moves(
    moves: Sequence[Move], ramp_steps: int, fs: Flowsheet, start: Array
) -> list[tuple[float, int, float]]:
    """Moves as (time, parameter index, value) steps; ramps become staircases."""
    out: list[tuple[float, int, float]] = []
    current = np.array(start, dtype=float)
    for i, mv in enumerate(sorted(moves, key=lambda m: m.at_h)):
        if mv.parameter not in fs.parameters:
            raise InputError(
                f"moves[{i}].parameter: unknown parameter {mv.parameter!r}; see `sxtwin steady --json` parameters",
                field=f"moves[{i}].parameter",
            )
        if not (math.isfinite(mv.at_h) and mv.at_h >= 0.0 and math.isfinite(mv.value) and mv.ramp_h >= 0.0):
            raise InputError(f"moves[{i}]: time, value and ramp must be finite, time >= 0", field=f"moves[{i}]")
        idx = fs.parameters.index(mv.parameter)
        if mv.ramp_h > 0.0:
            start = current[idx]
            for k in range(1, ramp_steps + 1):
                frac = k / ramp_steps
                out.append((mv.at_h + mv.ramp_h * (k - 1) / ramp_steps, idx, float(start + frac * (mv.value - start))))
        else:
            out.append((mv.at_h, idx, mv.value))
        current[idx] = mv.value
    return out


def _csc(m: ca.DM) -> sp.csc_matrix:
    """A CasADi DM (sparse, column-major) as a SciPy CSC matrix."""
    sparsity = m.sparsity()
    rows, cols = m.shape
    return sp.csc_matrix(
        (np.asarray(m.nonzeros(), dtype=float), np.asarray(sparsity.row()), np.asarray(sparsity.colind())),
        shape=(rows, cols),
    )
