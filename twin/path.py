"""The way to a setpoint: product purities over the next hours on the dynamic model.

A cascade takes hundreds of hours to settle, so a steady optimum says little about the next two
days. :class:`PathModel` runs the dynamic model (:mod:`models.dynamics`) from the estimated state
for ``hours`` with given parameters and reports, per product, the lowest, the mean and the final
purity. On it:

- :meth:`PathModel.check` decides how much of a move to take: a move may not take any product
  below the lower of its specification and the lowest purity it reaches if the setpoints are held
  (tolerance :data:`PURITY_TOLERANCE`); a move that fails is shortened (:data:`STEP_FRACTIONS`)
  and, if no fraction passes, refused (fraction 0).
- :meth:`PathModel.recovery_move` is the move for a product that is off spec now: every
  manipulated variable moves by one write's rate limit in the direction that raises the off-spec
  products' mean purity over the horizon (signs from one perturbed run per variable: the
  steepest-ascent corner of the move box of a linearised path), variables whose whole move would
  change that mean by less than :data:`NEGLIGIBLE_PURITY` stay put. Like a conventional loop on the
  analyser it acts on the product now; unlike one, it moves every variable and predicts the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.dynamics import DynamicModel, DynamicOptions
from models.flowsheet import Flowsheet
from models.kpi import ProductKpis

__all__ = ["NEGLIGIBLE_PURITY", "PURITY_TOLERANCE", "STEP_FRACTIONS", "PathModel", "PathOutcome"]

Array = npt.NDArray[np.float64]

#: Fractions of a move tried by the path check, in order.
STEP_FRACTIONS = (1.0, 0.5, 0.25)
#: Purity a checked path may lose below its floor (numerical noise of two integrations).
PURITY_TOLERANCE = 1e-4
#: Change of mean purity over the horizon below which a recovery move leaves a variable alone.
NEGLIGIBLE_PURITY = 1e-4
#: Size of the perturbation that measures a variable's effect, as a share of one write's move.
_PROBE_SHARE = 0.25


@dataclass(frozen=True)
class PathOutcome:
    """Per product (by name), purities on a simulated path (0-1)."""

    lowest: dict[str, float]
    mean: dict[str, float]
    final: dict[str, float]


class PathModel:
    """Purities over the next ``hours`` from an estimated state (module docstring).

    Parameters
    ----------
    flowsheet
        The plant.
    hours
        Plant hours simulated.
    """

    def __init__(self, flowsheet: Flowsheet, hours: float) -> None:
        self.fs = flowsheet
        self.hours = hours
        self.dynamics = DynamicModel(flowsheet, DynamicOptions(output_interval_h=2.0))
        self.kpis = ProductKpis(flowsheet)

    def run(self, z: Array, p: Array) -> PathOutcome:
        """Simulate ``hours`` from stage state ``z`` with parameters ``p`` held."""
        res = self.dynamics.simulate(z, self.hours, p=p)
        pur = res.product_purity
        return PathOutcome(
            lowest={n: float(np.min(v)) for n, v in pur.items()},
            mean={n: float(np.mean(v)) for n, v in pur.items()},
            final={n: float(v[-1]) for n, v in pur.items()},
        )

    def purity_now(self, z: Array, p: Array) -> dict[str, float]:
        """Each product's purity at stage state ``z`` (the estimate, not a steady state)."""
        pur, _ = self.kpis.function(z, p)
        values = np.asarray(pur, dtype=float).ravel()
        return {ps.name: float(values[i]) for i, ps in enumerate(self.fs.spec.products)}

    def floors(self, held: PathOutcome) -> dict[str, float]:
        """Per product, the lowest purity a move may lead to: the lower of spec and held lowest."""
        return {
            ps.name: min(ps.purity_min, held.lowest[ps.name]) if ps.purity_min is not None else -np.inf
            for ps in self.fs.spec.products
        }

    def check(
        self, z: Array, p_now: Array, p_new: Array, *, held: PathOutcome | None = None
    ) -> tuple[float, PathOutcome, str]:
        """The fraction of the move ``p_now -> p_new`` to take, the path it leads to, and a note
        saying why it was shortened or refused (empty when taken whole). ``held``: the path with
        ``p_now`` held, when already run."""
        held = held or self.run(z, p_now)
        floor = self.floors(held)
        worst = ""
        for fraction in STEP_FRACTIONS:
            path = self.run(z, p_now + fraction * (p_new - p_now))
            short = [n for n, v in path.lowest.items() if v < floor[n] - PURITY_TOLERANCE]
            if not short:
                note = (
                    ""
                    if fraction == 1.0
                    else f"Shortened to {fraction:g} of the move: the whole move takes {worst} within {self.hours:g} h"
                )
                return fraction, path, note
            if not worst:
                worst = ", ".join(f"{n} down to {path.lowest[n]:.4f} purity" for n in short)
        limits = ", ".join(f"{n} {v:.4f}" for n, v in floor.items() if np.isfinite(v))
        return 0.0, held, (
            f"Holding: every move tried takes {worst} within {self.hours:g} h, below the lower of its "
            f"spec and its lowest if held ({limits})"
        )

    def recovery_move(
        self, z: Array, p_now: Array, off_spec: Sequence[str], moves: Mapping[str, tuple[float, float, float]]
    ) -> tuple[Array, PathOutcome]:
        """The recovery move (module docstring) for the products ``off_spec``.

        ``moves`` maps each manipulated parameter to ``(one write's move, lower bound, upper
        bound)``. Returns the new parameter vector and the path with ``p_now`` held.
        """
        base = self.run(z, p_now)
        j0 = sum(base.mean[n] for n in off_spec)
        p_new = p_now.copy()
        for name, (step, lo, hi) in moves.items():
            i = self.fs.parameters.index(name)
            probe = _PROBE_SHARE * step if p_now[i] + _PROBE_SHARE * step <= hi else -_PROBE_SHARE * step
            p = p_now.copy()
            p[i] += probe
            slope = (sum(self.run(z, p).mean[n] for n in off_spec) - j0) / probe
            if abs(slope) * step < NEGLIGIBLE_PURITY:
                continue
            p_new[i] = float(np.clip(p_now[i] + np.sign(slope) * step, lo, hi))
        return p_new, base
