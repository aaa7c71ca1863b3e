"""Damped Newton iteration on a residual with an exact (sparse) Jacobian.

Private helper shared by the batch equilibrium and the flowsheet steady-state solver. The
unknowns are logarithms of positive quantities, so a full Newton step is limited in size
(``max_step``) and backtracked until the residual norm falls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla

Array = npt.NDArray[np.float64]
ResidualAndJacobian = Callable[[Array], tuple[Array, "sp.csc_matrix | Array"]]

__all__ = ["NewtonOptions", "NewtonResult", "newton_solve"]


@dataclass(frozen=True)
class NewtonOptions:
    """Options of :func:`newton_solve`.

    Attributes
    ----------
    tol
        Converged when the max-norm of the residual is below this.
    max_iter
        Iteration limit.
    max_step
        Largest change of any unknown in one step (unknowns are logarithms: 2 = a factor e^2).
    min_alpha
        Smallest backtracking factor before the step is taken anyway.
    """

    tol: float = 1e-10
    max_iter: int = 60
    max_step: float = 2.0
    min_alpha: float = 1.0 / 64.0


@dataclass(frozen=True)
class NewtonResult:
    """Outcome of :func:`newton_solve`."""

    x: Array
    success: bool
    iterations: int
    residual_norm: float
    message: str
    wall_time_s: float


def _solve_linear(jac: sp.csc_matrix | Array, rhs: Array) -> Array:
    if sp.issparse(jac):
        return np.asarray(spla.spsolve(sp.csc_matrix(jac), rhs))
    return np.asarray(np.linalg.solve(np.asarray(jac), rhs))


def newton_solve(fun: ResidualAndJacobian, x0: Array, options: NewtonOptions | None = None) -> NewtonResult:
    """Solve ``F(x) = 0`` by damped Newton; never raises on non-convergence (see ``success``)."""
    opts = options or NewtonOptions()
    t0 = time.perf_counter()
    x = np.array(x0, dtype=float)
    f, jac = fun(x)
    norm = float(np.max(np.abs(f))) if f.size else 0.0
    it = 0
    message = "converged"
    while norm > opts.tol:
        if it >= opts.max_iter:
            message = f"iteration limit {opts.max_iter} reached, residual {norm:.3e}"
            break
        if not np.all(np.isfinite(f)):
            message = "residual is not finite"
            break
        try:
            dx = -_solve_linear(jac, f)
        except (np.linalg.LinAlgError, RuntimeError) as exc:
            message = f"singular Jacobian: {exc}"
            break
        if not np.all(np.isfinite(dx)):
            message = "singular Jacobian (non-finite step)"
            break
        biggest = float(np.max(np.abs(dx))) if dx.size else 0.0
        if biggest > opts.max_step:
            dx *= opts.max_step / biggest
        alpha = 1.0
        phi0 = float(f @ f)
        while True:
            x_try = x + alpha * dx
            f_try, jac_try = fun(x_try)
            phi = float(f_try @ f_try)
            if np.isfinite(phi) and (phi <= (1.0 - 1e-4 * alpha) * phi0 or alpha <= opts.min_alpha):
                break
            alpha *= 0.5
        x, f, jac = x_try, f_try, jac_try
        norm = float(np.max(np.abs(f))) if f.size else 0.0
        it += 1
    success = norm <= opts.tol
    if not success and message == "converged":
        message = f"not converged, residual {norm:.3e}"
    return NewtonResult(x, success, it, norm, message, time.perf_counter() - t0)
