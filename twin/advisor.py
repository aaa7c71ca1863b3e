"""The twin's setpoint advisor: the setpoint optimiser run on the estimated plant.

:class:`OptimiserAdvisor` implements :class:`twin.service.SetpointAdvisor` with
:class:`models.optimisation.SetpointOptimiser`: it optimises from the estimated stage state and
parameters (feed basket, extractant, separation-factor offsets as estimated), with move limits
around the current setpoints, and words the proposal for an operator: what changes, what it is
predicted to do, which constraints are active and what relaxing them is worth. A specification
that cannot be met is reported as a failed advice naming it (the twin then holds).

The optimum is a steady state; a cascade takes hundreds of hours to get there, and the way there
can take a product far off spec (the twin's closed-loop run I: moves toward a well-placed optimum
took the Tb cut from 0.94 to 0.83 purity and kept it off spec for 200 h). So each proposal is
checked on the path: the dynamic model runs ``dynamic_check_h`` hours from the estimated state
with the proposed setpoints and with the setpoints held, and a move may not take any product
below the lower of its specification and the lowest purity it would reach if held. A move that
fails is shortened (half, a quarter of the way) and, if none passes, the current setpoints are
proposed: hold, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from models.dynamics import DynamicModel, DynamicOptions
from models.errors import ComputationError, InfeasibleError
from models.flowsheet import Flowsheet
from models.optimisation import OptimisationOptions, OptimisationResult, SetpointOptimiser
from models.steady import SteadyResult
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
        Plant hours over which a proposal's path is checked (module docstring); None: not checked.
    """

    #: Fractions of the way to the optimum tried on the path check, in order.
    STEP_FRACTIONS = (1.0, 0.5, 0.25)
    #: Purity a checked path may lose below the reference (numerical noise of two integrations).
    PURITY_TOLERANCE = 1e-4

    def __init__(
        self, flowsheet: Flowsheet, options: OptimisationOptions | None = None, *, dynamic_check_h: float | None = 48.0
    ) -> None:
        self.fs = flowsheet
        self.dynamic_check_h = dynamic_check_h
        self._dynamics: DynamicModel | None = None
        # defaults for proposals to operators: moves within what the safety gate lets one write
        # move (so that what is written is what was optimised), and a fifth of every product's
        # allowed impurity (and loss) kept in reserve against model error
        self.options = options or OptimisationOptions(move_horizon_h=WRITE_HORIZON_H, spec_backoff=0.2)
        self.optimiser = SetpointOptimiser(flowsheet, self.options)
        self._last: OptimisationResult | None = None
        self._anchor: tuple[np.ndarray, np.ndarray] | None = None

    def advise(self, z: np.ndarray, p: np.ndarray, current: Mapping[str, float]) -> Advice:
        """Optimise from stage state ``z`` and parameters ``p`` (estimated), with the manipulated
        variables at their ``current`` setpoints (by parameter name): the move limits are measured
        from the setpoints the safety gate measures them from, not from noisy flow readings."""
        p = np.asarray(p, dtype=float).copy()
        for name, value in current.items():
            if name in self.fs.parameters.names and np.isfinite(value):
                p[self.fs.parameters.index(name)] = value
        try:
            steady_now = self._steady_now(np.asarray(z, dtype=float), p)
            res = self.optimiser.optimise(
                p_current=np.asarray(p), z_current=np.asarray(z), current=steady_now, warm=self._last
            )
        except InfeasibleError as exc:
            return Advice(False, {}, {}, (), "specification cannot be met", exc.message)
        except ComputationError as exc:
            return Advice(False, {}, {}, (), "optimisation failed", exc.message)
        if not res.success:
            return Advice(False, {}, {}, (), "optimisation failed", res.message)
        self._last = res
        by_name = {v.name: v.parameter for v in res.decision_variables}
        setpoints = {by_name[n]: float(v) for n, v in res.setpoints.items() if n in by_name}
        predicted: dict[str, float] = {}
        for k in res.optimum.kpis:
            predicted[f"{k.name}.purity"] = k.purity
            predicted[f"{k.name}.recovery"] = k.recovery
        path_note = ""
        if self.dynamic_check_h is not None:
            try:
                fraction, lowest, path_note = self.check_path(np.asarray(z, dtype=float), p, res.parameters)
            except ComputationError as exc:
                return Advice(False, {}, {}, (), "path check failed", exc.message)
            setpoints = {n: float(p[self.fs.parameters.index(n)] + fraction * (v - p[self.fs.parameters.index(n)]))
                         for n, v in setpoints.items()}
            for name, value in lowest.items():
                predicted[f"{name}.lowest_purity_{self.dynamic_check_h:g}h"] = value
            predicted["path.fraction_of_move"] = fraction
            if fraction < 1.0:
                # the steady KPIs of the shortened move, not of the optimum
                p_step = p.copy()
                for name, value in setpoints.items():
                    p_step[self.fs.parameters.index(name)] = value
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
        moves = [
            f"{name} {current.get(name, float('nan')):.4g} -> {value:.4g}"
            for name, value in setpoints.items()
            if abs(value - current.get(name, value)) > 1e-9 * max(1.0, abs(value))
        ]
        active = tuple(a.name for a in res.active_constraints)
        worth = "; ".join(a.statement for a in res.active_constraints[:3])
        reason = (
            f"{res.objective.value}: {res.improvement:+.4g} {res.objective.unit} by "
            + (", ".join(moves) if moves else "holding the current setpoints")
            + f"; stage inventory {held_now.kg_reo:.4g} -> {held_opt.kg_reo:.4g} kg REO"
            + (f". Active: {worth}" if worth else "")
            + path_note
        )
        return Advice(True, setpoints, predicted, active, reason)

    def check_path(self, z: np.ndarray, p_now: np.ndarray, p_opt: np.ndarray) -> tuple[float, dict[str, float], str]:
        """The fraction of the move from ``p_now`` to ``p_opt`` that passes the path check
        (module docstring), each product's lowest purity on that path, and a note for the reason."""
        assert self.dynamic_check_h is not None
        if self._dynamics is None:
            self._dynamics = DynamicModel(self.fs, DynamicOptions(output_interval_h=2.0))
        hours = self.dynamic_check_h

        def lowest(p: np.ndarray) -> dict[str, float]:
            run = self._dynamics.simulate(z, hours, p=p)  # type: ignore[union-attr]
            return {name: float(np.min(v)) for name, v in run.product_purity.items()}

        held = lowest(p_now)
        floor = {ps.name: min(ps.purity_min, held[ps.name]) if ps.purity_min is not None else -np.inf
                 for ps in self.fs.spec.products}
        worst = ""
        for fraction in self.STEP_FRACTIONS:
            path = lowest(p_now + fraction * (p_opt - p_now))
            short = [n for n, v in path.items() if v < floor[n] - self.PURITY_TOLERANCE]
            if not short:
                note = "" if fraction == 1.0 else (
                    f". Shortened to {fraction:g} of the move: the whole move takes {worst} within {hours:g} h"
                )
                return fraction, path, note
            if not worst:
                worst = ", ".join(f"{n} down to {path[n]:.4f} purity" for n in short)
        return 0.0, held, (
            f". Holding: every move toward the optimum tried takes {worst} within {hours:g} h, below "
            "the lower of its spec and its lowest if held ("
            + ", ".join(f"{n} {floor[n]:.4f}" for n in floor if np.isfinite(floor[n]))
            + ")"
        )

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
