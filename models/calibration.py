r"""Calibration of a MASS_ACTION chemistry system against batch equilibrium data.

Weighted least squares on :math:`\log_{10} D`, with exact derivatives (CasADi expressions, IPOPT
through ``casadi.nlpsol``). The model is :func:`models.chemistry.ln_distribution` itself, so a
calibrated set predicts in a cascade exactly what it was fitted to. For every point
(:class:`models.equilibrium_data.EquilibriumPoint`) the model is evaluated at the *measured*
equilibrium state (aqueous concentrations, free acidity, free dimer):

.. math::

    \widehat{\log_{10} D_k} = a_{e(k)} - b \log_{10}(\gamma_\pm h_k)
        + n\,[\log_{10}(f_k/C_\mathrm{ref}) - A(\sqrt{f_k} - \sqrt{C_\mathrm{ref}})]
        - \log_{10}(1 + \beta_\mathrm{Cl}[\mathrm{Cl^-}]_k) + \delta_{s(k)}

    \min_\theta \tfrac12 \sum_k w_k\,(\log_{10} D_k - \widehat{\log_{10} D_k})^2

Fitted: :math:`a_e` (``log10_k``) for every element in the data and the shared extractant order
:math:`n` (not pinned at 3: measured slopes deviate); optionally (:class:`CalibrationOptions`)
the shared pH slope :math:`b`, the chloro-complexation constant :math:`\log_{10}\beta_\mathrm{Cl}`,
the HCl activity correction :math:`\gamma_\pm` (Zhao & Lei 1986, fixed coefficients, on or off)
and a per-study level offset :math:`\delta_s` (a nuisance "laboratory effect", constrained to sum
to zero over the studies, so that :math:`a_e` is the level of the average study).
:math:`C_\mathrm{ref}` and the Alstad coefficient :math:`A` are kept from the base system.

Weights: uniform, or :math:`w_k = 1/\sigma_k^2` with the error of :math:`\log_{10} D` propagated
from a relative concentration error :math:`\varepsilon` on feed and raffinate
(:math:`D = (x^0 - x)/x` at O/A = 1):
:math:`\sigma_k = \log_{10}(e)\,\varepsilon\sqrt 2\,(1 + D_k)/D_k`.

Standard errors: :math:`\mathrm{cov} = s^2 (J^T W J)^{-1}` at the optimum, with :math:`J` the
Jacobian of the model with respect to the free parameters (projected on the null space of the
offset constraint) and :math:`s^2 = \sum_k w_k r_k^2 / (N - p)`.

Cross-validation: elements measured by two or more studies are predicted leave-one-study-out
(the held-out study's points of those elements are refitted without, and predicted with that
study's offset at 0); elements measured by one study only are predicted by k-fold (k = 5,
fixed seed) over their points. Every point is predicted exactly once.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import casadi as ca
import numpy as np
import numpy.typing as npt
import scipy.linalg

from models.chemistry import (
    ActivityModel,
    CationActivity,
    ChemistrySystem,
    Family,
    ln_distribution,
)
from models.elements import element
from models.equilibrium_data import EquilibriumData, EquilibriumPoint, Exclusion, screen_points
from models.errors import ConvergenceError, InputError, ParameterError, bad_value
from models.provenance import Provenance, ProvenanceClass
from models.units import REFERENCE_TEMPERATURE_K

__all__ = [
    "NEA_SIT_RE3_CHLORIDE",
    "ZHAO86_HCL_ACTIVITY",
    "CalibrationOptions",
    "CalibrationResult",
    "FitMetrics",
    "Shift",
    "ShiftRule",
    "Weighting",
    "calibrate",
    "extend_by_shift",
    "fit_metrics",
    "predict_log10_d",
]

Array = npt.NDArray[np.float64]
LN10 = math.log(10.0)
LOG10_E = 1.0 / LN10

ZHAO86_HCL_ACTIVITY = ActivityModel(
    a=0.5115,
    b=1.471,
    poly=(0.1069, 7.412e-3, -6.637e-4, 1.586e-5),
    valid_ionic_strength_mol_per_l=15.0,
)
"""Mean activity coefficient of HCl at 25 degC: Zhao Kaiyuan & Lei Hongyi (1986), Acta
Phys.-Chim. Sin. 2(1) 30-36, doi:10.3866/PKU.WHXB19860105 (source key ZHAO86), fitted to emf data
for 0.18-15 mol/kg; agrees with the Hamer & Wu (1972) table to 1 % (tests). Used with ionic strength
in mol/L in place of the molality (2 % apart for 1 M HCl)."""

NEA_SIT_RE3_CHLORIDE = CationActivity(a=0.509, b=1.5, epsilon_kg_per_mol=0.23)
"""Activity coefficient of RE3+ in chloride by the specific ion interaction theory (source key
NEA_SIT): Debye-Hückel term A = 0.509, B a_j = 1.5 (kg/mol)^0.5 at 25 degC (Grenthe, Plyasunov &
Spahiu 1997); epsilon(Am3+, Cl-) = 0.23 +- 0.02 kg/mol from the NEA-TDB americium review
(Silva et al. 1995; Guillaumont et al. 2003), used for the lanthanides and Y3+ by analogy (same
charge, similar radius): ESTIMATED for RE3+. Used with ionic strength and chloride in mol/L in
place of molalities."""

_BOUNDS = {
    "log10_k": (-20.0, 20.0),
    "extractant_order": (0.1, 8.0),
    "ph_slope": (0.5, 6.0),
    "log10_beta_cl": (-4.0, 3.0),
    "offset": (-5.0, 5.0),
}
_OK_STATUS = ("Solve_Succeeded", "Solved_To_Acceptable_Level")


class Weighting(StrEnum):
    """How points are weighted in the least-squares objective."""

    UNIFORM = "uniform"
    """Every point weighs the same (ordinary least squares on log10 D)."""
    ERROR_PROPAGATED = "error_propagated"
    """``1/sigma^2`` with sigma of log10 D propagated from a relative concentration error."""


@dataclass(frozen=True)
class CalibrationOptions:
    """What is fitted, how points are weighted and screened, and how the fit is validated.

    The defaults are the model chosen in ``docs/calibration.md``.

    Attributes
    ----------
    fit_ph_slope
        Fit the shared pH slope ``b``; otherwise keep each element's value from the base system
        (the charge, 3).
    chloride_complexation
        Fit ``log10_beta_cl``: D divided by ``1 + beta_Cl [Cl-]`` (chloride media only).
    hcl_activity
        Use the HCl activity coefficient (:data:`ZHAO86_HCL_ACTIVITY`) in the acidity term.
    re_activity
        Use the activity coefficient of RE3+ (:data:`NEA_SIT_RE3_CHLORIDE`, no fitted parameter).
    source_offsets
        Fit a level offset per study (sum zero over studies): a nuisance "laboratory effect".
        Not carried into the fitted system; cross-validation predicts a held-out study with
        offset 0.
    weighting
        See :class:`Weighting`.
    relative_concentration_error
        Relative error of a measured concentration, for ``ERROR_PROPAGATED`` weights (0-1).
    min_extracted_fraction, max_extracted_fraction
        Reliability screen on E = D/(1+D); (0, 1) keeps every point.
    cv_folds
        k of the k-fold cross-validation of elements measured by one study only.
    cv_seed
        Seed of the k-fold assignment.
    max_iter
        IPOPT iteration limit.
    tol
        IPOPT convergence tolerance.
    """

    fit_ph_slope: bool = True
    chloride_complexation: bool = False
    hcl_activity: bool = True
    re_activity: bool = True
    source_offsets: bool = True
    weighting: Weighting = Weighting.UNIFORM
    relative_concentration_error: float = 0.03
    min_extracted_fraction: float = 0.02
    max_extracted_fraction: float = 0.98
    cv_folds: int = 5
    cv_seed: int = 20240601
    max_iter: int = 1000
    tol: float = 1e-10

    def __post_init__(self) -> None:
        eps = float(self.relative_concentration_error)
        if not (math.isfinite(eps) and 0.0 < eps < 1.0):
            raise bad_value(
                "relative_concentration_error",
                self.relative_concentration_error,
                "a fraction in (0, 1)",
            )
        if not isinstance(self.weighting, Weighting):
            raise bad_value("weighting", self.weighting, [w.value for w in Weighting])
        if int(self.cv_folds) < 2:
            raise bad_value("cv_folds", self.cv_folds, "an integer >= 2")
        if int(self.max_iter) < 1:
            raise bad_value("max_iter", self.max_iter, "an integer >= 1")
        if not (math.isfinite(self.tol) and self.tol > 0.0):
            raise bad_value("tol", self.tol, "a tolerance > 0")
        screen_points((), self.min_extracted_fraction, self.max_extracted_fraction)

    def describe(self) -> str:
        """One line for provenance: what was fitted and how."""
        parts = [
            "a per element and shared n fitted",
            "b fitted" if self.fit_ph_slope else "b fixed",
            "chloro-complexation fitted"
            if self.chloride_complexation
            else "no chloro-complexation",
            "HCl activity ZHAO86" if self.hcl_activity else "no HCl activity correction",
            "RE3+ activity NEA_SIT" if self.re_activity else "no RE3+ activity correction",
            "per-study offsets (not carried over)"
            if self.source_offsets
            else "no per-study offsets",
            (
                f"error-propagated weights (eps {self.relative_concentration_error:g})"
                if self.weighting is Weighting.ERROR_PROPAGATED
                else "uniform weights"
            ),
            (
                f"screen {self.min_extracted_fraction:g} <= D/(1+D) "
                f"<= {self.max_extracted_fraction:g}"
                if (self.min_extracted_fraction > 0.0 or self.max_extracted_fraction < 1.0)
                else "no reliability screen"
            ),
        ]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "fit_ph_slope": self.fit_ph_slope,
            "chloride_complexation": self.chloride_complexation,
            "hcl_activity": self.hcl_activity,
            "re_activity": self.re_activity,
            "source_offsets": self.source_offsets,
            "weighting": self.weighting.value,
            "relative_concentration_error": self.relative_concentration_error,
            "min_extracted_fraction": self.min_extracted_fraction,
            "max_extracted_fraction": self.max_extracted_fraction,
            "cv_folds": self.cv_folds,
            "cv_seed": self.cv_seed,
        }


@dataclass(frozen=True)
class FitMetrics:
    """Root-mean-square error of log10 D (measured minus predicted), unweighted.

    Attributes
    ----------
    n_points
        Points evaluated.
    overall
        RMSE over all points.
    by_element, by_source
        RMSE per element and per study.
    bias_by_source
        Mean residual (measured - predicted) per study: the study's level against the model.
    """

    n_points: int
    overall: float
    by_element: Mapping[str, float]
    by_source: Mapping[str, float]
    bias_by_source: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``overall`` plus one key per element, as the CLI prints it)."""
        return {
            "overall": self.overall,
            "n_points": self.n_points,
            **dict(self.by_element),
            "by_source": dict(self.by_source),
            "bias_by_source": dict(self.bias_by_source),
        }


def fit_metrics(points: Sequence[EquilibriumPoint], predicted_log10_d: Array) -> FitMetrics:
    """RMSE of log10 D overall, per element and per study."""
    measured = np.array([p.log10_d for p in points])
    res = measured - np.asarray(predicted_log10_d, dtype=float)
    if res.size == 0:
        raise InputError("no points to evaluate", field="points")

    def rmse(mask: npt.NDArray[np.bool_]) -> float:
        return float(np.sqrt(np.mean(res[mask] ** 2)))

    elements = [s for s in dict.fromkeys(p.element for p in points)]
    sources = sorted({p.source for p in points})
    el = np.array([p.element for p in points])
    src = np.array([p.source for p in points])
    return FitMetrics(
        n_points=int(res.size),
        overall=float(np.sqrt(np.mean(res**2))),
        by_element={s: rmse(el == s) for s in sorted(elements, key=lambda s: _z_order(s))},
        by_source={s: rmse(src == s) for s in sources},
        bias_by_source={s: float(np.mean(res[src == s])) for s in sources},
    )


def _z_order(symbol: str) -> tuple[int, int]:
    z = element(symbol).z
    return (1, z) if symbol == "Y" else (0, z)


def _row_groups(points: Sequence[EquilibriumPoint]) -> list[list[int]]:
    """Indices of points measured in the same contact (same state), so each contact is one
    ``ln_distribution`` call."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for k, p in enumerate(points):
        state = (
            p.source,
            p.row,
            p.acidity_mol_per_l,
            p.free_dimer_mol_per_l,
            p.extractant_mol_per_l,
            tuple(sorted(p.aqueous_mol_per_l.items())),
        )
        groups.setdefault(state, []).append(k)
    return list(groups.values())


def _model_log10_d(system: ChemistrySystem, points: Sequence[EquilibriumPoint]) -> Any:
    """log10 D of every point from ``ln_distribution`` at the measured state (CasADi column)."""
    out: list[Any] = [None] * len(points)
    for ks in _row_groups(points):
        p0 = points[ks[0]]
        symbols = tuple(sorted(p0.aqueous_mol_per_l, key=lambda s: element(s).z))
        ln_x = ca.DM(np.log([p0.aqueous_mol_per_l[s] for s in symbols]))
        ln_d = ln_distribution(
            system,
            symbols,
            ln_x,
            math.log(p0.acidity_mol_per_l),
            math.log(p0.free_dimer_mol_per_l),
            REFERENCE_TEMPERATURE_K,
            p0.extractant_mol_per_l,
        )
        for k in ks:
            out[k] = ln_d[symbols.index(points[k].element)] / LN10
    return ca.vertcat(*out)


def predict_log10_d(system: ChemistrySystem, points: Sequence[EquilibriumPoint]) -> Array:
    """log10 D that ``system`` predicts for each point at its measured equilibrium state.

    Raises
    ------
    ParameterError
        An element of the data has no parameters in ``system``.
    """
    if not points:
        return np.zeros(0)
    for p in points:
        for s in p.aqueous_mol_per_l:
            system.parameters_for(s, field=f"element (data line {p.row})")
    return np.asarray(ca.evalf(_model_log10_d(system, points)), dtype=float).ravel()


def _sigma_log10_d(points: Sequence[EquilibriumPoint], options: CalibrationOptions) -> Array:
    if options.weighting is Weighting.UNIFORM:
        return np.ones(len(points))
    d = np.array([p.distribution for p in points])
    return LOG10_E * options.relative_concentration_error * math.sqrt(2.0) * (1.0 + d) / d


@dataclass(frozen=True)
class _Problem:
    names: tuple[str, ...]
    theta: Any
    model: ca.Function  # theta -> (log10 D without offset, offset)
    x0: Array
    lbx: Array
    ubx: Array
    offset_index: Mapping[str, int]
    solver: ca.Function
    sensitivities: ca.Function  # theta -> (residuals / sigma, their jacobian)
    has_constraint: bool


def _build_problem(
    base: ChemistrySystem,
    data: EquilibriumData,
    points: Sequence[EquilibriumPoint],
    options: CalibrationOptions,
) -> _Problem:
    elements = tuple(sorted({p.element for p in points}, key=_z_order))
    sources = tuple(sorted({p.source for p in points}))
    names: list[str] = []
    syms: list[Any] = []
    x0: list[float] = []

    def add(name: str, start: float) -> Any:
        s = ca.SX.sym(name)
        names.append(name)
        syms.append(s)
        x0.append(start)
        return s

    a = {s: add(f"log10_k.{s}", base.elements[s].log10_k) for s in elements}
    n_start = float(np.mean([base.elements[s].extractant_order for s in elements]))
    n = add("extractant_order", n_start)
    b = (
        add("ph_slope", float(np.mean([base.elements[s].ph_slope for s in elements])))
        if options.fit_ph_slope
        else None
    )
    beta = add("log10_beta_cl", 0.0) if options.chloride_complexation else None
    offsets = {s: add(f"offset[{s}]", 0.0) for s in sources} if options.source_offsets else {}
    updates = {}
    for s in elements:
        kw: dict[str, Any] = {"log10_k": a[s], "extractant_order": n}
        if b is not None:
            kw["ph_slope"] = b
        updates[s] = replace(base.elements[s], **kw)
    changes: dict[str, Any] = {
        "medium": data.medium,
        "activity": ZHAO86_HCL_ACTIVITY if options.hcl_activity else ActivityModel(),
        "cation_activity": NEA_SIT_RE3_CHLORIDE if options.re_activity else CationActivity(),
        "log10_beta_cl": beta if beta is not None else -math.inf,
    }
    sym_system = base.with_elements(updates, **changes)
    theta = ca.vertcat(*syms)
    model = _model_log10_d(sym_system, points)
    off = ca.vertcat(*[offsets[p.source] for p in points]) if offsets else ca.SX.zeros(len(points))
    model_fn = ca.Function(
        "calibration_model", [theta], [model, off], ["theta"], ["log10_d", "offset"]
    )

    meas = ca.DM([p.log10_d for p in points])
    sigma = ca.DM(_sigma_log10_d(points, options))
    w = ca.SX.sym("w", len(points))
    mask = ca.SX.sym("mask", len(sources))
    r = (meas - model - off) / sigma
    objective = 0.5 * ca.dot(w, r * r)
    nlp: dict[str, Any] = {"x": theta, "f": objective, "p": ca.vertcat(w, mask)}
    has_constraint = bool(offsets)
    if has_constraint:
        nlp["g"] = ca.dot(mask, ca.vertcat(*[offsets[s] for s in sources]))
    solver = ca.nlpsol(
        "calibration",
        "ipopt",
        nlp,
        {
            "ipopt.print_level": 0,
            "ipopt.max_iter": int(options.max_iter),
            "ipopt.tol": float(options.tol),
            "ipopt.sb": "yes",
            "print_time": False,
        },
    )
    sens = ca.Function("calibration_jacobian", [theta], [r, ca.jacobian(r, theta)])
    lbx, ubx = [], []
    for name in names:
        lo, hi = _BOUNDS[name.split(".")[0].split("[")[0]]
        lbx.append(lo)
        ubx.append(hi)
    return _Problem(
        names=tuple(names),
        theta=theta,
        model=model_fn,
        x0=np.array(x0),
        lbx=np.array(lbx),
        ubx=np.array(ubx),
        offset_index={s: names.index(f"offset[{s}]") for s in offsets},
        solver=solver,
        sensitivities=sens,
        has_constraint=has_constraint,
    )


@dataclass(frozen=True)
class _Solve:
    theta: Array
    status: str
    success: bool
    iterations: int
    wall_time_s: float


def _solve(problem: _Problem, weights: Array, source_mask: Mapping[str, bool], x0: Array) -> _Solve:
    lbx = problem.lbx.copy()
    ubx = problem.ubx.copy()
    for s, i in problem.offset_index.items():
        if not source_mask.get(s, False):
            lbx[i] = ubx[i] = 0.0
    start = np.clip(x0, lbx, ubx)
    mask = np.array([1.0 if source_mask.get(s, False) else 0.0 for s in sorted(source_mask)])
    args: dict[str, Any] = {
        "x0": start,
        "lbx": lbx,
        "ubx": ubx,
        "p": np.concatenate([weights, mask]),
    }
    if problem.has_constraint:
        args["lbg"] = 0.0
        args["ubg"] = 0.0
    t0 = time.perf_counter()
    sol = problem.solver(**args)
    wall = time.perf_counter() - t0
    stats = problem.solver.stats()
    status = str(stats.get("return_status", "unknown"))
    return _Solve(
        theta=np.asarray(sol["x"], dtype=float).ravel(),
        status=status,
        success=bool(stats.get("success", False)) or status in _OK_STATUS,
        iterations=int(stats.get("iter_count", -1)),
        wall_time_s=wall,
    )


def _covariance(
    problem: _Problem, theta: Array, weights: Array, free: npt.NDArray[np.bool_]
) -> tuple[Array, float, int]:
    """Covariance of the parameters (s^2 (J^T J)^-1 on the constraint's null space), s, dof."""
    r_dm, jac_dm = problem.sensitivities(theta)
    sqrt_w = np.sqrt(weights)
    r = sqrt_w * np.asarray(r_dm, dtype=float).ravel()
    jac = sqrt_w[:, None] * np.asarray(ca.densify(jac_dm), dtype=float)
    p = theta.size
    basis = np.eye(p)[:, free]
    if problem.has_constraint:
        row = np.zeros((1, p))
        for i in problem.offset_index.values():
            if free[i]:
                row[0, i] = 1.0
        basis = basis @ scipy.linalg.null_space(row @ basis)
    jz = jac @ basis
    n_used = int(np.count_nonzero(weights))
    dof = n_used - basis.shape[1]
    if dof <= 0:
        raise InputError(
            f"{n_used} points cannot determine {basis.shape[1]} parameters", field="points"
        )
    s2 = float(r @ r) / dof
    try:
        inv = np.linalg.inv(jz.T @ jz)
    except np.linalg.LinAlgError:
        inv = np.full((jz.shape[1], jz.shape[1]), np.nan)
    return s2 * basis @ inv @ basis.T, math.sqrt(s2), dof


def _cv_folds(
    points: Sequence[EquilibriumPoint], options: CalibrationOptions
) -> tuple[list[str], dict[str, str]]:
    """A fold label per point, and the scheme used per element."""
    by_element: dict[str, list[int]] = {}
    for k, p in enumerate(points):
        by_element.setdefault(p.element, []).append(k)
    labels = [""] * len(points)
    scheme: dict[str, str] = {}
    rng = np.random.default_rng(options.cv_seed)
    for symbol in sorted(by_element, key=_z_order):
        ks = by_element[symbol]
        sources = {points[k].source for k in ks}
        if len(sources) >= 2:
            scheme[symbol] = f"leave-one-study-out ({len(sources)} studies)"
            for k in ks:
                labels[k] = f"study:{points[k].source}"
        else:
            folds = min(options.cv_folds, len(ks))
            scheme[symbol] = (
                f"{folds}-fold (one study: {next(iter(sources))}; seed {options.cv_seed})"
            )
            order = rng.permutation(len(ks))
            for rank, j in enumerate(order):
                labels[ks[j]] = f"kfold:{rank % folds}"
    return labels, scheme


@dataclass(frozen=True)
class CalibrationResult:
    """Outcome of :func:`calibrate`.

    Attributes
    ----------
    success, status, iterations, wall_time_s
        Outcome of the main IPOPT solve (``wall_time_s`` covers the whole calibration, CV
        included; ``solve_time_s`` the main solve only).
    solve_time_s
        Wall time of the main solve, s.
    parameters
        Fitted values by name: ``log10_k.<El>``, ``extractant_order``, ``ph_slope``,
        ``log10_beta_cl``, ``offset[<study>]``.
    std_errors
        Standard errors, same keys (NaN when not determined).
    fixed
        Parameters held at the base system's value (``ph_slope`` when not fitted).
    at_bounds
        Names of parameters that ended on a bound (their standard errors are not meaningful).
    residual_std
        s, the weighted residual standard deviation (1 if the weights are exact).
    dof
        Degrees of freedom N - p.
    rmse, cv_rmse, baseline
        Metrics of log10 D: in-sample (with offsets if fitted), cross-validated, and the
        uncalibrated base system on the same points.
    system_rmse
        In-sample metrics of the fitted system itself, i.e. without the per-study offsets (the
        values a cascade uses; equal to ``rmse`` when no offsets are fitted).
    cv_scheme
        Cross-validation scheme per element.
    points
        The points fitted (after screening).
    predicted_log10_d, cv_predicted_log10_d, system_log10_d, baseline_log10_d
        Per point: in-sample (with offsets), cross-validated, fitted system (without offsets)
        and base-system predictions.
    excluded
        Points left out, by reason (reading and screening).
    options
        The options used.
    base
        The uncalibrated system (starting values, fixed shared constants, baseline).
    data
        The data set (all usable points, before screening).
    fitted
        The calibrated system (numeric values; provenance added by :meth:`to_system`).
    """

    success: bool
    status: str
    iterations: int
    wall_time_s: float
    solve_time_s: float
    parameters: Mapping[str, float]
    std_errors: Mapping[str, float]
    fixed: Mapping[str, float]
    at_bounds: tuple[str, ...]
    residual_std: float
    dof: int
    rmse: FitMetrics
    cv_rmse: FitMetrics
    baseline: FitMetrics
    system_rmse: FitMetrics
    cv_scheme: Mapping[str, str]
    points: tuple[EquilibriumPoint, ...]
    predicted_log10_d: Array = field(repr=False)
    cv_predicted_log10_d: Array = field(repr=False)
    system_log10_d: Array = field(repr=False)
    baseline_log10_d: Array = field(repr=False)
    excluded: tuple[Exclusion, ...]
    options: CalibrationOptions
    base: ChemistrySystem = field(repr=False)
    data: EquilibriumData = field(repr=False)
    fitted: ChemistrySystem = field(repr=False)

    @property
    def n_points(self) -> int:
        """Points fitted."""
        return len(self.points)

    @property
    def studies(self) -> tuple[str, ...]:
        """Studies of the fitted points, sorted."""
        return tuple(sorted({p.source for p in self.points}))

    @property
    def measured_log10_d(self) -> Array:
        """Measured log10 D per point."""
        return np.array([p.log10_d for p in self.points])

    def locus(self, date: str) -> str:
        """The provenance locus of every fitted value."""
        return (
            f"fit to {self.n_points} points from {', '.join(self.studies)} "
            f"({self.data.name}) on {date} with {self.options.describe()}"
        )

    def to_system(
        self,
        key: str,
        *,
        description: str | None = None,
        date: str | None = None,
        command: str = "",
    ) -> ChemistrySystem:
        """The calibrated set as a :class:`ChemistrySystem` with provenance for every value.

        Fitted values are DERIVED with source ``<data source key>+SXTWIN`` and the locus
        :meth:`locus`; shared constants kept from the base system keep their provenance; the
        HCl activity coefficients (if used) are MEASURED, source ZHAO86; the RE3+ activity terms (if
        used) come from NEA_SIT, the interaction coefficient ESTIMATED (an Am3+ analogue).

        Parameters
        ----------
        key
            Key of the new system (``P507-HCl``).
        description
            One sentence; a default names the base system and the data.
        date
            ISO date of the fit for the locus (default: today).
        command
            The command that reproduces the fit, quoted in every note.
        """
        day = date or datetime.date.today().isoformat()
        locus = self.locus(day)
        src = f"{self.data.source_key}+SXTWIN"
        how = f"; reproduce with: {command}" if command else ""
        prov: dict[str, Provenance] = {}
        for name in (
            "extractant_molar_mass_g_per_mol",
            "extractant_density_kg_per_l",
            "c_ref_dimer_mol_per_l",
            "alstad_a",
        ):
            if name in self.base.provenance:
                prov[name] = self.base.provenance[name]
        derived = ProvenanceClass.DERIVED
        n_se = self.std_errors["extractant_order"]
        for s in self.fitted.elements:
            prov[f"log10_k.{s}"] = Provenance(
                src, locus, derived, f"fit se {self.std_errors[f'log10_k.{s}']:.3f}{how}"
            )
            prov[f"extractant_order.{s}"] = Provenance(
                src, locus, derived, f"shared by all fitted elements; fit se {n_se:.3f}{how}"
            )
            if "ph_slope" in self.parameters:
                prov[f"ph_slope.{s}"] = Provenance(
                    src,
                    locus,
                    derived,
                    f"shared by all fitted elements; fit se {self.std_errors['ph_slope']:.3f}{how}",
                )
        if "log10_beta_cl" in self.parameters:
            prov["log10_beta_cl"] = Provenance(
                src, locus, derived, f"fit se {self.std_errors['log10_beta_cl']:.3f}{how}"
            )
        if self.options.hcl_activity:
            for name in (
                "activity_a",
                "activity_b",
                "activity_c1",
                "activity_c2",
                "activity_c3",
                "activity_c4",
                "activity_valid_i_mol_per_l",
            ):
                prov[name] = Provenance(
                    "ZHAO86",
                    "correlation of log10 gamma(HCl) in the abstract (0.18-15 mol/kg, 25 degC)",
                    ProvenanceClass.MEASURED,
                    "molality basis, used with ionic strength in mol/L",
                )
        if self.options.re_activity:
            for name in ("cation_activity_a", "cation_activity_b"):
                prov[name] = Provenance(
                    "NEA_SIT",
                    "SIT Debye-Hückel term D = 0.509 sqrt(I)/(1 + 1.5 sqrt(I)) at 25 degC",
                    ProvenanceClass.DERIVED,
                    "molality basis, used with ionic strength in mol/L; z^2 = 9 for RE3+",
                )
            prov["cation_activity_epsilon_kg_per_mol"] = Provenance(
                "NEA_SIT",
                "epsilon(Am3+, Cl-) = 0.23 +- 0.02 kg/mol, NEA-TDB ion interaction coefficients "
                "(rule: the Am3+ value for every RE3+ and Y3+)",
                ProvenanceClass.ESTIMATED,
                "the Am3+ value used for RE3+ and Y3+ by analogy (same charge, similar radius)",
            )
        ph = [p.ph for p in self.points]
        for name, value in (("valid_ph_low", min(ph)), ("valid_ph_high", max(ph))):
            prov[name] = Provenance(
                src,
                locus,
                derived,
                f"equilibrium pH range of the fitted points ({value:.2f})",
            )
        text = description or (
            f"{self.base.extractant.name} in {self.data.medium.value} medium: {self.base.key} "
            f"calibrated to {self.n_points} batch equilibrium points ({self.data.name})."
        )
        return replace(
            self.fitted,
            key=key,
            description=text,
            valid_ph=(round(min(ph), 2), round(max(ph), 2)),
            provenance=prov,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the CLI's ``--json`` payload without the CLI's own fields)."""
        return {
            "status": "ok" if self.success else "failed",
            "solver_status": self.status,
            "iterations": self.iterations,
            "wall_time_s": self.wall_time_s,
            "solve_time_s": self.solve_time_s,
            "base_system": self.base.key,
            "data": self.data.name,
            "studies": list(self.studies),
            "n_points": self.n_points,
            "excluded": {
                "total": sum(e.count for e in self.excluded),
                "reasons": [e.to_dict() for e in self.excluded],
            },
            "options": self.options.to_dict(),
            "parameters": dict(self.parameters),
            "std_errors": dict(self.std_errors),
            "fixed": dict(self.fixed),
            "at_bounds": list(self.at_bounds),
            "residual_std": self.residual_std,
            "dof": self.dof,
            "rmse_log10_d": self.rmse.to_dict(),
            "rmse_log10_d_without_offsets": self.system_rmse.to_dict(),
            "cv_rmse_log10_d": self.cv_rmse.to_dict(),
            "cv_scheme": dict(self.cv_scheme),
            "baseline": {
                "system": self.base.key,
                "rmse_log10_d": self.baseline.to_dict(),
                "cv_rmse_log10_d": self.baseline.to_dict(),
            },
        }


def calibrate(
    data: EquilibriumData,
    base: ChemistrySystem,
    options: CalibrationOptions | None = None,
) -> CalibrationResult:
    """Fit ``base``'s MASS_ACTION parameters to ``data`` (see module docstring).

    Parameters
    ----------
    data
        Batch equilibrium points (:func:`models.equilibrium_data.parse_llepe_csv`).
    base
        The uncalibrated system: starting values, fixed shared constants (C_ref, Alstad A,
        extractant) and the baseline the calibrated set is compared with.
    options
        What to fit; defaults to :class:`CalibrationOptions`.

    Raises
    ------
    ParameterError
        ``base`` is not MASS_ACTION, or an element of the data has no parameters in it.
    InputError
        Too few points for the parameters.
    ConvergenceError
        IPOPT did not converge (main fit or a cross-validation fold).
    """
    opts = options or CalibrationOptions()
    t_start = time.perf_counter()
    if base.family is not Family.MASS_ACTION:
        raise ParameterError(
            f"system: {base.key!r} is {base.family.value}; calibration fits mass_action systems",
            field="system",
        )
    points, screened = screen_points(
        data.points, opts.min_extracted_fraction, opts.max_extracted_fraction
    )
    excluded = (*data.excluded, *((screened,) if screened else ()))
    if not points:
        raise InputError("no points left to fit after screening", field="points")
    baseline_pred = predict_log10_d(base, points)
    problem = _build_problem(base, data, points, opts)
    n_pts = len(points)
    sources = sorted({p.source for p in points})
    all_sources = dict.fromkeys(sources, True)
    main = _solve(problem, np.ones(n_pts), all_sources, problem.x0)
    if not main.success:
        raise ConvergenceError(
            f"calibration did not converge: IPOPT status {main.status}",
            details={"status": main.status, "iterations": main.iterations},
        )
    theta = main.theta
    free = np.ones(theta.size, dtype=bool)
    cov, s, dof = _covariance(problem, theta, np.ones(n_pts), free)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    model_part, off_part = (np.asarray(v, dtype=float).ravel() for v in problem.model(theta))
    predicted = model_part + off_part

    labels, scheme = _cv_folds(points, opts)
    cv_pred = np.full(n_pts, np.nan)
    for fold in sorted(set(labels)):
        held = np.array([lab == fold for lab in labels])
        train_sources = {s_: False for s_ in sources}
        for k in np.flatnonzero(~held):
            train_sources[points[k].source] = True
        sol = _solve(problem, (~held).astype(float), train_sources, theta)
        if not sol.success:
            raise ConvergenceError(
                f"calibration: cross-validation fold {fold!r} did not converge ({sol.status})",
                details={"fold": fold, "status": sol.status},
            )
        mp, op = (np.asarray(v, dtype=float).ravel() for v in problem.model(sol.theta))
        # A held-out study is a new laboratory: its offset is 0. A k-fold point's study stays
        # in the training set, so its fitted offset applies.
        use_offset = 0.0 if fold.startswith("study:") else 1.0
        cv_pred[held] = mp[held] + use_offset * op[held]

    params = dict(zip(problem.names, (float(v) for v in theta), strict=True))
    errors = dict(zip(problem.names, (float(v) for v in se), strict=True))
    at_bounds = tuple(
        name
        for name, v, lo, hi in zip(problem.names, theta, problem.lbx, problem.ubx, strict=True)
        if min(v - lo, hi - v) < 1e-6 * max(1.0, abs(v))
    )
    fixed: dict[str, float] = {}
    elements = tuple(sorted({p.element for p in points}, key=_z_order))
    if not opts.fit_ph_slope:
        fixed["ph_slope"] = float(np.mean([base.elements[s_].ph_slope for s_ in elements]))
    updates = {}
    for s_ in elements:
        kw: dict[str, Any] = {
            "log10_k": params[f"log10_k.{s_}"],
            "extractant_order": params["extractant_order"],
        }
        if opts.fit_ph_slope:
            kw["ph_slope"] = params["ph_slope"]
        updates[s_] = replace(base.elements[s_], **kw)
    fitted = replace(
        base,
        elements={s_: updates[s_] for s_ in elements},
        medium=data.medium,
        activity=ZHAO86_HCL_ACTIVITY if opts.hcl_activity else ActivityModel(),
        cation_activity=NEA_SIT_RE3_CHLORIDE if opts.re_activity else CationActivity(),
        log10_beta_cl=params.get("log10_beta_cl", -math.inf),
        provenance={},
    )
    return CalibrationResult(
        success=True,
        status=main.status,
        iterations=main.iterations,
        wall_time_s=time.perf_counter() - t_start,
        solve_time_s=main.wall_time_s,
        parameters=params,
        std_errors=errors,
        fixed=fixed,
        at_bounds=at_bounds,
        residual_std=s,
        dof=dof,
        rmse=fit_metrics(points, predicted),
        cv_rmse=fit_metrics(points, cv_pred),
        baseline=fit_metrics(points, baseline_pred),
        system_rmse=fit_metrics(points, model_part),
        cv_scheme=scheme,
        points=tuple(points),
        predicted_log10_d=predicted,
        cv_predicted_log10_d=cv_pred,
        system_log10_d=model_part,
        baseline_log10_d=baseline_pred,
        excluded=excluded,
        options=opts,
        base=base,
        data=data,
        fitted=fitted,
    )


class ShiftRule(StrEnum):
    """How :func:`extend_by_shift` moves a literature value to the calibrated level."""

    MEAN = "mean"
    """By the mean offset ``a_calibrated - a_literature`` over all calibrated elements."""
    INTERPOLATED = "interpolated"
    """By the offset interpolated linearly in the literature ``log10_k`` (the extraction
    order) between the calibrated elements that bracket the element; beyond the last
    calibrated element, that element's offset (no extrapolation)."""


@dataclass(frozen=True)
class Shift:
    """How one element was moved by :func:`extend_by_shift`.

    Attributes
    ----------
    element
        The element added.
    offset
        Added to the literature ``log10_k`` (log10 units).
    weights
        The calibrated elements whose offsets make ``offset``, with their weights (sum 1).
    """

    element: str
    offset: float
    weights: Mapping[str, float]


def _shift_weights(
    rule: ShiftRule, a_lit: float, literature_a: Mapping[str, float]
) -> dict[str, float]:
    if rule is ShiftRule.MEAN:
        return {c: 1.0 / len(literature_a) for c in literature_a}
    below = [c for c, a in literature_a.items() if a <= a_lit]
    above = [c for c, a in literature_a.items() if a > a_lit]
    lo = max(below, key=lambda c: literature_a[c]) if below else None
    hi = min(above, key=lambda c: literature_a[c]) if above else None
    if lo is None or hi is None:
        return {str(lo if lo is not None else hi): 1.0}
    t = (a_lit - literature_a[lo]) / (literature_a[hi] - literature_a[lo])
    return {lo: 1.0 - t, hi: t}


def extend_by_shift(
    calibrated: ChemistrySystem,
    literature: ChemistrySystem,
    symbols: Sequence[str],
    *,
    rule: ShiftRule = ShiftRule.INTERPOLATED,
    command: str = "",
) -> tuple[ChemistrySystem, Mapping[str, float], tuple[Shift, ...]]:
    """Add ``symbols`` to ``calibrated`` from ``literature``, shifted to the calibrated level.

    The offset of a calibrated element is ``a_calibrated - a_literature``. Because all
    elements of a system share n and b, moving an added element by an offset moves its log10 D
    by that amount at every pH and loading. ``rule`` says how the calibrated offsets are
    combined (:class:`ShiftRule`). Added elements take the calibrated set's shared n and b,
    keep their literature class (INTERPOLATED, ESTIMATED) and say "shifted" in the note.
    Elements that are not trivalent (the Na counter-ion of saponification) are copied
    unchanged with their provenance.

    Returns
    -------
    system, offsets, shifts
        The extended system, the offset of every calibrated element, and what was done to
        each added trivalent element.
    """
    common = [s for s in calibrated.elements if s in literature.elements]
    if not common:
        raise ParameterError("extend_by_shift: no element is in both systems", field="elements")
    per = {s: calibrated.elements[s].log10_k - literature.elements[s].log10_k for s in common}
    literature_a = {s: literature.elements[s].log10_k for s in common}
    template = calibrated.elements[common[0]]
    elements = dict(calibrated.elements)
    prov = dict(calibrated.provenance)
    how = f"; reproduce with: {command}" if command else ""
    shifts: list[Shift] = []
    for s in symbols:
        lit = literature.parameters_for(s, field="symbols")
        lit_prov = literature.provenance.get(f"log10_k.{s}")
        if lit_prov is None:
            raise ParameterError(
                f"symbols: {s} has no provenance in {literature.key}", field="symbols"
            )
        if element(s).charge != 3:
            elements[s] = lit
            for name, p in literature.provenance.items():
                if name.endswith(f".{s}"):
                    prov[name] = p
            continue
        weights = _shift_weights(rule, lit.log10_k, literature_a)
        offset = float(sum(w * per[c] for c, w in weights.items()))
        shifts.append(Shift(s, offset, weights))
        elements[s] = replace(
            lit,
            log10_k=lit.log10_k + offset,
            extractant_order=template.extractant_order,
            ph_slope=template.ph_slope,
        )
        detail = " + ".join(f"{w:.3f} x {c} ({per[c]:+.3f})" for c, w in weights.items())
        prov[f"log10_k.{s}"] = Provenance(
            f"{lit_prov.source}+SXTWIN",
            f"{literature.key} value {lit.log10_k:.4f} ({lit_prov.locus}) shifted by "
            f"{offset:+.4f} = {detail}, offsets a(calibrated) - a({literature.key}) "
            f"(rule: {rule.value})",
            lit_prov.cls,
            f"shifted {lit_prov.cls.value.lower()} value, not measured in chloride{how}",
        )
        for name in ("extractant_order", "ph_slope"):
            ref = calibrated.provenance.get(f"{name}.{common[0]}")
            if ref is not None:
                prov[f"{name}.{s}"] = Provenance(
                    ref.source,
                    ref.locus,
                    ref.cls,
                    f"shared value of the calibrated elements, applied to {s}{how}",
                )
    return replace(calibrated, elements=elements, provenance=prov), per, tuple(shifts)
