r"""Rare earth held in a flowsheet's stages: the cascade inventory and what it is worth.

The metal a stage holds is its aqueous and organic holdup times the phase concentrations (the
same holdups as the dynamics, :mod:`models.dynamics`: mixer plus settler volume split by the flow
ratio):

.. math::

    M_{i} = \sum_{\text{circuits}} \sum_j \left(V^a_j\,x_{ij} + V^o_j\,y_{ij}\right)\mu_i

in kg of oxide (:math:`\mu_i` the oxide mass per mole of element), and its value
:math:`\sum_i M_i\,\pi_i` at the scenario's oxide prices :math:`\pi_i` (USD/kg).

A steady optimum that raises the inventory ties rare earth up in the stages: while they fill,
the products carry less than the feed brings (docs/optimisation.md). The optimiser prices this
(:class:`models.optimisation.OptimisationOptions`): a carrying cost of the inventory's value at
a cost of capital, and, optionally, the fill a move needs spread over a payback horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import casadi as ca
import numpy as np
import numpy.typing as npt

from models.elements import element
from models.flowsheet import Flowsheet
from models.prices import PriceScenario
from models.residual import symbolic_metal_holdups
from models.units import G_PER_KG

__all__ = ["Inventory", "InventoryBreakdown"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class InventoryBreakdown:
    """The rare earth in a flowsheet's stages at one state.

    Attributes
    ----------
    kg_reo_by_element
        Oxide mass held, kg, per rare-earth element (summed over circuits).
    value_usd
        Its value at the scenario's oxide prices, USD (unpriced elements count zero).
    """

    kg_reo_by_element: dict[str, float]
    value_usd: float

    @property
    def kg_reo(self) -> float:
        """Total rare-earth oxide held, kg."""
        return float(sum(self.kg_reo_by_element.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kg_reo": self.kg_reo, "kg_reo_by_element": self.kg_reo_by_element, "value_usd": self.value_usd}


class Inventory:
    """Rare-earth inventory of a flowsheet's stages (module docstring): ``(z, p) -> (kg, value)``.

    Parameters
    ----------
    flowsheet
        The plant.
    scenario
        Oxide prices for the value.
    """

    def __init__(self, flowsheet: Flowsheet, scenario: PriceScenario) -> None:
        self.fs = flowsheet
        self.scenario = scenario
        els = {s for lay in flowsheet.circuits for s in lay.elements if element(s).in_treo}
        self.elements: tuple[str, ...] = tuple(sorted(els, key=lambda s: element(s).z))
        unpriced = [element(s).oxide for s in self.elements if scenario.usd_per_kg(element(s).oxide) is None]
        self.warnings: tuple[str, ...] = (
            (f"stage inventory: {', '.join(unpriced)} not priced in scenario {scenario.name!r} (NOT_FOUND); "
             "valued at 0",)
            if unpriced
            else ()
        )

    @cached_property
    def function(self) -> ca.Function:
        """``(z, p) -> (kg, value)``: kg of oxide per element of :attr:`elements`, and USD."""
        fs = self.fs
        z = ca.MX.sym("z", fs.n_unknowns)
        p = ca.MX.sym("p", len(fs.parameters))
        kg: dict[str, Any] = {s: ca.MX(0.0) for s in self.elements}
        for lay, held in zip(fs.circuits, symbolic_metal_holdups(fs, z, p), strict=True):
            mol = ca.sum2(held)
            for i, s in enumerate(lay.elements):
                if s in kg:
                    kg[s] = kg[s] + mol[i] * element(s).oxide_g_per_mol_element / G_PER_KG
        kg_v = ca.vertcat(*kg.values()) if kg else ca.MX(0, 1)
        prices = [self.scenario.usd_per_kg(element(s).oxide) or 0.0 for s in self.elements]
        value = ca.dot(kg_v, ca.DM(prices)) if kg else ca.MX(0.0)
        return ca.Function("inventory", [z, p], [kg_v, value], ["z", "p"], ["kg_reo", "value_usd"])

    def evaluate(self, z: Array, p: Array) -> InventoryBreakdown:
        """The inventory at a (solved) state."""
        kg, value = self.function(np.asarray(z, dtype=float), np.asarray(p, dtype=float))
        kg_a = np.asarray(kg, dtype=float).ravel()
        return InventoryBreakdown(
            kg_reo_by_element={s: float(kg_a[i]) for i, s in enumerate(self.elements)},
            value_usd=float(value),
        )
