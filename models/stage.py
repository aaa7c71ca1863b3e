r"""The equilibrium stage: local chemistry of one mixer-settler, as named CasADi functions.

For a circuit with elements :math:`i = 1..n`, one stage's unknowns are
:math:`z = (\ln x_1..\ln x_n, \ln h[, \ln f])`. The stage function gives, from :math:`z`, the
extractant concentration :math:`C_\mathrm{HA}`, the temperature and per-element offsets
:math:`\delta_i` of :math:`\ln D` (plant-model mismatch, estimated drifts):

- ``ln_d``: :math:`\ln D_i(z) + \delta_i` (so :math:`\ln y_i = \ln x_i + \ln D_i`);
- ``acid``: titratable acidity of the aqueous phase (free H+, plus HSO4- in sulfate), mol/L;
- ``ext``: the extractant balance residual :math:`(f + \sum_i s_i y_i)/(C_\mathrm{HA}/2) - 1`
  (mass action only);

and their exact Jacobians with respect to :math:`z`. The function is mapped over all stages of
a circuit (``Function.map``), so one evaluation serves a whole cascade.

Degrees of freedom: none (the stage function is a pure function of its state); the stage
balances that close the system live in :mod:`models.residual`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import casadi as ca

from models.chemistry import acidity_total, ln_distribution
from models.elements import element
from models.flowsheet import CircuitLayout

__all__ = ["StageModel"]


@dataclass(frozen=True)
class StageModel:
    """Named CasADi functions of one circuit's stage (see module docstring)."""

    layout: CircuitLayout

    @cached_property
    def _symbols(self) -> tuple[ca.SX, ca.SX, ca.SX, ca.SX, ca.SX, ca.SX, ca.SX]:
        lay = self.layout
        n = lay.n_el
        z = ca.SX.sym("z", lay.nv)
        c_ha = ca.SX.sym("c_ha")
        t_k = ca.SX.sym("t_k")
        delta = ca.SX.sym("delta", n)
        ln_x = z[:n]
        ln_h = z[n]
        ln_f = z[n + 1] if lay.has_f else ca.SX(0.0)
        ln_d = ln_distribution(lay.system, lay.elements, ln_x, ln_h, ln_f, t_k, c_ha) + delta
        charges = [float(element(s).charge) for s in lay.elements]
        x = ca.exp(ln_x)
        acid = acidity_total(lay.system.medium, ca.exp(ln_h), [x[i] for i in range(n)], charges)
        if lay.has_f:
            y = ca.exp(ln_x + ln_d)
            dimers = ca.DM(lay.system.dimers_per_ion(lay.elements))
            ext = (ca.exp(ln_f) + ca.dot(dimers, y)) / (0.5 * c_ha) - 1.0
        else:
            ext = ca.SX(0.0)
        return z, c_ha, t_k, delta, ln_d, acid, ext

    @cached_property
    def values(self) -> ca.Function:
        """``(z, c_ha, t_k, delta) -> (ln_d, acid, ext)``."""
        z, c_ha, t_k, delta, ln_d, acid, ext = self._symbols
        return ca.Function(
            "stage",
            [z, c_ha, t_k, delta],
            [ln_d, acid, ext],
            ["z", "c_ha", "t_k", "delta"],
            ["ln_d", "acid", "ext"],
        )

    @cached_property
    def values_and_jacobians(self) -> ca.Function:
        """``(z, c_ha, t_k, delta) -> (ln_d, acid, ext, dln_d/dz, dacid/dz, dext/dz)``."""
        z, c_ha, t_k, delta, ln_d, acid, ext = self._symbols
        return ca.Function(
            "stage_jac",
            [z, c_ha, t_k, delta],
            [ln_d, acid, ext, ca.jacobian(ln_d, z), ca.jacobian(acid, z), ca.jacobian(ext, z)],
            ["z", "c_ha", "t_k", "delta"],
            ["ln_d", "acid", "ext", "jac_ln_d", "jac_acid", "jac_ext"],
        )

    @cached_property
    def mapped(self) -> ca.Function:
        """:attr:`values_and_jacobians` mapped over every stage of the circuit."""
        return self.values_and_jacobians.map(self.layout.n_stages)

    @cached_property
    def mapped_values(self) -> ca.Function:
        """:attr:`values` mapped over every stage of the circuit."""
        return self.values.map(self.layout.n_stages)
