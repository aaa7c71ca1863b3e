r"""Product KPIs as CasADi functions of the stage unknowns and parameters.

For a declared product on an outlet stream with flow :math:`w(p)` leaving stage *k* in phase
:math:`\phi`, the metal flux is :math:`F_i = w\,c_i(z_k)` (:math:`c = x` or :math:`y`).
Purity on REO basis and recovery of the main element(s) :math:`m`:

.. math::

    P = \frac{\sum_{i \in m} F_i\,\mu_i}{\sum_{i \in \mathrm{TREO}} F_i\,\mu_i}, \qquad
    R = \frac{\sum_{i \in m} F_i}{\sum_{i \in m} F^\mathrm{feed}_i(p)}

with :math:`\mu_i` the oxide mass per mole of element. These symbolic KPIs serve the
sensitivities (automatic differentiation) and the setpoint optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import casadi as ca

from models.elements import element
from models.flowsheet import Flowsheet
from models.residual import symbolic_stage_ln_y
from models.spec import ProductSpec

__all__ = ["SPEC_TOL", "ProductKpis", "meets"]

SPEC_TOL = 1e-7
"""A purity or recovery (fraction) meets its minimum within this: an optimum that sits on a
specification is reproduced by the steady re-solve at its setpoints to about 1e-9 either side
(measured: Tb_cut 0.9799999989 against 0.98 on tb_dy, SEG 0.9899999987 against 0.99 on
hree_refinery), and no assay resolves 1e-7."""


def meets(value: float, minimum: float | None) -> bool:
    """True when ``value`` meets ``minimum`` (None: no minimum) to :data:`SPEC_TOL`."""
    return minimum is None or value >= minimum - SPEC_TOL


@dataclass(frozen=True)
class ProductKpis:
    """Symbolic purity and recovery of every declared product: ``kpis(z, p) -> (purity, recovery)``."""

    flowsheet: Flowsheet

    @cached_property
    def products(self) -> tuple[ProductSpec, ...]:
        """Declared products, in the order of the KPI vectors."""
        return tuple(self.flowsheet.spec.products)

    def outlet_flux(self, z: ca.MX, p: ca.MX, stream: str) -> tuple[tuple[str, ...], ca.MX]:
        """Elements and metal flux (mol/h) of an outlet stream, symbolic in ``z`` and ``p``."""
        fs = self.flowsheet
        outlet = next(o for o in fs.outlets if o.name == stream)
        lay = fs.circuits[outlet.circuit]
        n = lay.n_el
        zk = z[lay.offset + outlet.stage * lay.nv : lay.offset + (outlet.stage + 1) * lay.nv]
        ln_x = zk[:n]
        if outlet.phase == "aq":
            conc = ca.exp(ln_x)
        else:
            conc = ca.exp(symbolic_stage_ln_y(fs, lay, zk, p))
        weights = fs.flows_function(p)[0]
        return lay.elements, conc * weights[outlet.weight]

    def feed_flux(self, p: ca.MX, symbol: str) -> ca.MX:
        """Metal of one element entering the plant with external feeds, mol/h."""
        fs = self.flowsheet
        total = ca.MX(0.0)
        for f in fs.spec.feeds:
            name = f"{f.name}.conc_mol_per_l.{symbol}"
            if name in fs.parameters:
                total = total + p[fs.parameters.index(f"{f.name}.flow_l_per_h")] * p[fs.parameters.index(name)]
        return total

    @cached_property
    def function(self) -> ca.Function:
        """``(z, p) -> (purity, recovery)``, one entry per declared product (0-1)."""
        fs = self.flowsheet
        z = ca.MX.sym("z", fs.n_unknowns)
        p = ca.MX.sym("p", fs.parameters.values.shape[0])
        purity, recovery = [], []
        for ps in self.products:
            els, flux = self.outlet_flux(z, p, ps.stream)
            mains = ps.main_elements
            oxide = [element(s).oxide_g_per_mol_element if element(s).in_treo else 0.0 for s in els]
            treo = sum(flux[i] * oxide[i] for i in range(len(els)))
            main_mass = sum(flux[i] * oxide[i] for i, s in enumerate(els) if s in mains)
            main_mol = sum(flux[i] for i, s in enumerate(els) if s in mains)
            fed = sum(self.feed_flux(p, s) for s in mains)
            purity.append(main_mass / treo)
            recovery.append(main_mol / fed)
        return ca.Function(
            "kpis", [z, p], [ca.vertcat(*purity), ca.vertcat(*recovery)], ["z", "p"], ["purity", "recovery"]
        )
