"""Checks shared by the model tests."""

from __future__ import annotations

import casadi as ca
import numpy as np

from models.dynamics import DynamicModel, DynamicOptions
from models.flowsheet import Flowsheet
from models.residual import Residual, symbolic_residual


def assert_jacobian_equals_ad(fs: Flowsheet, residual: Residual, z: np.ndarray, p: np.ndarray) -> None:
    """The assembled residual and sparse Jacobian agree with CasADi's AD of the symbolic residual."""
    r_fast, jac = residual.evaluate(z, p)
    assert jac is not None
    f = symbolic_residual(fs)
    zs, ps = f.mx_in(0), f.mx_in(1)
    jac_ad = ca.Function("j", [zs, ps], [ca.jacobian(f(zs, ps), zs)])
    assert np.max(np.abs(np.asarray(f(z, p)).ravel() - r_fast)) < 1e-12
    assert np.max(np.abs(np.asarray(jac_ad(z, p)) - jac.toarray())) < 1e-10


def assert_dynamics_hold(fs: Flowsheet, z_steady: np.ndarray, hours: float) -> None:
    """Started at a steady state, the dynamic model stays there (to 1e-6 in every unknown)."""
    run = DynamicModel(fs, DynamicOptions(output_interval_h=hours / 4.0)).simulate(z_steady, hours)
    assert np.max(np.abs(run.final_z - z_steady)) < 1e-6
