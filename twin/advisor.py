"""The twin's setpoint advisor: the setpoint optimiser run on the estimated plant.

:class:`OptimiserAdvisor` implements :class:`twin.service.SetpointAdvisor` with
:class:`models.optimisation.SetpointOptimiser`: it optimises from the estimated stage state and
parameters (feed basket, extractant, separation-factor offsets as estimated), with the
manipulated variables at the setpoints in force and move limits of one write around them, and
words the proposal for an operator: what changes, what it is predicted to do, which constraints
are active and what relaxing them is worth. A specification that cannot be met is reported as a
failed advice naming it (the twin then holds).

The optimum is a steady state; a cascade takes hundreds of hours to get there, and the way there
can take a product far off spec (closed-loop run I, docs/twin.md: moves toward a well-placed
optimum took the Tb cut from 0.94 to 0.83 purity and kept it off spec for 200 h). So, with a
``dynamic_check_h`` horizon (:mod:`twin.path`):

- every optimised move is checked on its path and shortened or refused when it would take a
  product below the lower of its spec and its lowest if held;
- while a product is off spec now (in the estimate), the advisor does not optimise the steady
  economics: it proposes the recovery move, the move of one write that raises the off-spec
  products' mean purity over the horizon, checked the same way, or holds when none helps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from models.errors import ComputationError, InfeasibleError
from models.flowsheet import Flowsheet
from models.optimisation import OptimisationOptions, OptimisationResult, SetpointOptimiser
from models.steady import SteadyResult
from twin.path import PURITY_TOLERANCE, PathModel, PathOutcome
from twin.safety import WRITE_HORIZON_H
from twin.service import Advice

__all__ = ["OptimiserAdvisor"]

log = logging.getLogger(__name__)


class OptimiserAdvisor:
    """Setpoints from the optimiser on the estimated plant (builds the NLP once).

    Parameters
    ----------
    flowsheet
        The plant.
    options
        The optimiser's options (default: one write's move limits, 20 % spec back-off).
    dynamic_check_h
        Plant hours of the path check and of the recovery move (module docstring); None: neither.
    """

    def __init__(
        self, flowsheet: Flowsheet, options: OptimisationOptions | None = None, *, dynamic_check_h: float | None = 48.0
    ) -> None:
        self.fs = flowsheet
        self.path = PathModel(flowsheet, dynamic_check_h) if dynamic_check_h is not None else None
        # defaults for proposals to operators: moves within what the safety gate lets one write
        # move (so that what is written is what was optimised), and a fifth of every product's
        # allowed impurity (and loss) kept in reserve against model error
        self.options = options or OptimisationOptions(move_horizon_h=WRITE_HORIZON_H, spec_backoff=0.2)
        self.optimiser = SetpointOptimiser(flowsheet, self.options)
        self._last: OptimisationResult | None = None
        self._anchor: tuple[np.ndarray, np.ndarray] | None = None

    def advise(self, z: np.ndarray, p: np.ndarray, current: Mapping[str, float]) -> Advice:
        """Setpoints from stage state ``z`` and parameters ``p`` (estimated), with the manipulated
        variables at their ``current`` setpoints (by parameter name): the move limits are measured
        from the setpoints the safety gate measures them from, not from noisy flow readings."""
        z = np.asarray(z, dtype=float)
        p = np.asarray(p, dtype=float).copy()
        for name, value in current.items():
            if name in self.fs.parameters.names and np.isfinite(value):
                p[self.fs.parameters.index(name)] = value
        try:
            if self.path is not None:
                now = self.path.purity_now(z, p)
                products = self.fs.spec.products
                off = [ps.name for ps in products if ps.purity_min is not None and now[ps.name] < ps.purity_min]
                if off:
                    return self._recovery(z, p, off, now)
            return self._optimised(z, p, current)
        except InfeasibleError as exc:
            return Advice(False, {}, {}, (), "specification cannot be met", exc.message)
        except ComputationError as exc:
            return Advice(False, {}, {}, (), "optimisation failed", exc.message)

    def _optimised(self, z: np.ndarray, p: np.ndarray, current: Mapping[str, float]) -> Advice:
        """The steady optimum's move (checked on its path)."""
        steady_now = self._steady_now(z, p)
        res = self.optimiser.optimise(p_current=p, z_current=z, current=steady_now, warm=self._last)
        if not res.success:
            return Advice(False, {}, {}, (), "optimisation failed", res.message)
        off = [k for k in res.optimum.kpis if not k.on_spec]
        if off:
            # the specs are hard constraints of the NLP: a product off spec at the re-solved steady
            # state means the optimum is not the steady state the plant would reach (another branch
            # near a fold, or a loose re-solve); hold rather than propose it
            shortfall = ", ".join(f"{k.name} purity {k.purity:.4f} recovery {k.recovery:.4f}" for k in off)
            return Advice(
                False, {}, {}, (), "optimum off spec when verified",
                f"the steady state re-solved at the optimum is off spec ({shortfall})",
            )
        self._last = res
        by_name = {v.name: v.parameter for v in res.decision_variables}
        setpoints = {by_name[n]: float(v) for n, v in res.setpoints.items() if n in by_name}
        predicted: dict[str, float] = {}
        for k in res.optimum.kpis:
            predicted[f"{k.name}.purity"] = k.purity
            predicted[f"{k.name}.recovery"] = k.recovery
        note = ""
        if self.path is not None:
            fraction, path, note = self.path.check(z, p, res.parameters)
            setpoints = {n: float(p[self._i(n)] + fraction * (v - p[self._i(n)])) for n, v in setpoints.items()}
            self._path_effect(predicted, path, fraction)
            if fraction < 1.0:
                # the steady KPIs of the shortened move, not of the optimum
                p_step = p.copy()
                for name, value in setpoints.items():
                    p_step[self._i(name)] = value
                step = self.optimiser.steady_solver.solve(p_step, z0=res.z, p0=res.parameters)
                if step.success:
                    for prod in step.products:
                        predicted[f"{prod.name}.purity"] = prod.purity
                        predicted[f"{prod.name}.recovery"] = prod.recovery
        predicted[f"objective.{res.objective.value}"] = res.optimum.objective_value
        predicted["objective.improvement"] = res.improvement
        held_now, held_opt = res.current.inventory, res.optimum.inventory
        predicted["inventory.kg_reo"] = held_opt.kg_reo
        predicted["inventory.change_kg_reo"] = held_opt.kg_reo - held_now.kg_reo
        active = tuple(a.name for a in res.active_constraints)
        worth = "; ".join(a.statement for a in res.active_constraints[:3])
        # what this solve warns of (conditioning, a loose re-solve), not the standing assumptions
        standing = {*self.optimiser.economics.warnings, *self.optimiser.inventory.warnings}
        cautions = "; ".join(w for w in res.warnings if w not in standing)
        reason = (
            f"{res.objective.value}: {res.improvement:+.4g} {res.objective.unit} at the optimum by "
            + self._moves(setpoints, current)
            + f"; stage inventory {held_now.kg_reo:.4g} -> {held_opt.kg_reo:.4g} kg REO"
            + (f". Active: {worth}" if worth else "")
            + (f". {note}" if note else "")
            + (f". Caution: {cautions}" if cautions else "")
        )
        return Advice(True, setpoints, predicted, active, reason)

    def _recovery(self, z: np.ndarray, p: np.ndarray, off: list[str], now: Mapping[str, float]) -> Advice:
        """The recovery move for the products off spec now (module docstring), or a hold."""
        assert self.path is not None
        current = {m.variable: float(p[self._i(m.variable)]) for m in self.fs.spec.manipulated}
        moves = {
            m.variable: (m.max_rate_per_h * WRITE_HORIZON_H, m.min, m.max)
            for m in self.fs.spec.manipulated
            if m.max_rate_per_h is not None
        }
        p_new, held = self.path.recovery_move(z, p, off, moves)
        fraction, path, note = self.path.check(z, p, p_new, held=held)
        gain = sum(path.mean[n] - held.mean[n] for n in off)
        if fraction == 0.0 or gain <= PURITY_TOLERANCE:
            fraction, path = 0.0, held
            note = note or f"no move of one write raises their mean purity over {self.path.hours:g} h"
        setpoints = {n: float(v + fraction * (p_new[self._i(n)] - v)) for n, v in current.items()}
        predicted: dict[str, float] = {f"{n}.purity": path.final[n] for n in path.final}
        self._path_effect(predicted, path, fraction)
        predicted["recovery.mean_purity_gain"] = gain if fraction > 0.0 else 0.0
        shortfall = ", ".join(
            f"{ps.name} {now[ps.name]:.4f} < {ps.purity_min:g}" for ps in self.fs.spec.products if ps.name in off
        )
        reason = (
            f"off spec now ({shortfall}): "
            + (
                f"recovery move {self._moves(setpoints, current)}, their mean purity over the next "
                f"{self.path.hours:g} h +{gain:.4g} against holding"
                if fraction > 0.0
                else "no recovery move taken"
            )
            + (f". {note}" if note else "")
        )
        return Advice(True, setpoints, predicted, (), reason)

    def _path_effect(self, predicted: dict[str, float], path: PathOutcome, fraction: float) -> None:
        assert self.path is not None
        for name, value in path.lowest.items():
            predicted[f"{name}.lowest_purity_{self.path.hours:g}h"] = value
        predicted["path.fraction_of_move"] = fraction

    def _i(self, name: str) -> int:
        return self.fs.parameters.index(name)

    @staticmethod
    def _moves(setpoints: Mapping[str, float], current: Mapping[str, float]) -> str:
        moves = [
            f"{name} {current.get(name, float('nan')):.4g} -> {value:.4g}"
            for name, value in setpoints.items()
            if abs(value - current.get(name, value)) > 1e-9 * max(1.0, abs(value))
        ]
        return ", ".join(moves) if moves else "holding the current setpoints"

    def _steady_now(self, z: np.ndarray, p: np.ndarray) -> SteadyResult:
        """The steady state at the estimated parameters, the starting point of the optimisation.

        Tried in order: from the last steady state found, walking from its parameters to ``p``
        (continuation: the estimates move a little between cycles); from the estimated stage
        state (in a transient, far from any steady state, this pseudo-transient solve is the
        slow one); from a cold start."""
        solver = self.optimiser.steady_solver
        tries: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
        if self._anchor is not None:
            tries.append(("the last steady state", *self._anchor))
        tries += [("the estimate", z, p), ("a cold start", None, None)]
        res: SteadyResult | None = None
        for where, z0, p0 in tries:
            res = solver.solve(p, z0=z0, p0=p0)
            if res.success:
                self._anchor = (res.z.copy(), p.copy())
                return res
            log.info("advisor: steady state not found from %s: %s", where, res.message)
        assert res is not None
        return res
