r"""Sensitivities of product purities and recoveries to the manipulated variables.

At a steady state :math:`R(z, p) = 0`, the implicit function theorem gives
:math:`dz/dp = -(\partial R/\partial z)^{-1}\,\partial R/\partial p`, and for a KPI
:math:`k(z, p)`: :math:`dk/dp = \partial k/\partial p + \partial k/\partial z\; dz/dp`.
Every partial derivative comes from CasADi's automatic differentiation of the same residual and
KPI expressions the solvers use (:func:`models.residual.symbolic_residual`,
:class:`models.kpi.ProductKpis`); one sparse LU of :math:`\partial R/\partial z` serves all
parameters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import casadi as ca
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from models.errors import InputError
from models.flowsheet import Flowsheet
from models.kpi import ProductKpis
from models.residual import Residual, symbolic_residual

__all__ = ["Sensitivities", "SensitivityAnalysis"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Sensitivities:
    """Derivatives of every product's purity and recovery with respect to named parameters.

    Attributes
    ----------
    products
        Product names (rows).
    parameters
        Parameter names (columns), usually the manipulated variables.
    d_purity, d_recovery
        Matrices (products x parameters), in 1/(parameter unit).
    wall_time_s
        Time taken.
    """

    products: tuple[str, ...]
    parameters: tuple[str, ...]
    d_purity: Array
    d_recovery: Array
    wall_time_s: float

    def to_dict(self) -> dict[str, Any]:
        """``{product: {"purity": {parameter: d}, "recovery": {...}}}``."""
        return {
            prod: {
                "purity": {par: float(self.d_purity[i, j]) for j, par in enumerate(self.parameters)},
                "recovery": {par: float(self.d_recovery[i, j]) for j, par in enumerate(self.parameters)},
            }
            for i, prod in enumerate(self.products)
        }


class SensitivityAnalysis:
    """Builds the AD functions once per flowsheet."""

    def __init__(self, flowsheet: Flowsheet) -> None:
        self.fs = flowsheet
        self.residual = Residual(flowsheet)
        self.kpis = ProductKpis(flowsheet)

    @cached_property
    def _partials(self) -> ca.Function:
        fs = self.fs
        z = ca.MX.sym("z", fs.n_unknowns)
        p = ca.MX.sym("p", fs.parameters.values.shape[0])
        r = symbolic_residual(fs)(z, p)
        purity, recovery = self.kpis.function(z, p)
        k = ca.vertcat(purity, recovery)
        return ca.Function("partials", [z, p], [ca.jacobian(r, p), ca.jacobian(k, z), ca.jacobian(k, p)])

    def compute(self, z: Array, p: Array, parameters: Sequence[str]) -> Sensitivities:
        """Sensitivities at a converged steady state ``z`` for parameter vector ``p``."""
        t0 = time.perf_counter()
        fs = self.fs
        for name in parameters:
            if name not in fs.parameters:
                raise InputError(f"sensitivity parameter {name!r} is unknown", field="parameters")
        cols = [fs.parameters.index(n) for n in parameters]
        _, jac_z = self.residual.evaluate(z, p)
        assert jac_z is not None
        r_p, k_z, k_p = (np.asarray(v) for v in self._partials(z, p))
        lu = spla.splu(sp.csc_matrix(jac_z), permc_spec="NATURAL")
        dz_dp = -lu.solve(r_p[:, cols])
        dk = k_p[:, cols] + k_z @ dz_dp
        n_prod = len(self.kpis.products)
        return Sensitivities(
            products=tuple(ps.name for ps in self.kpis.products),
            parameters=tuple(parameters),
            d_purity=dk[:n_prod],
            d_recovery=dk[n_prod:],
            wall_time_s=time.perf_counter() - t0,
        )
