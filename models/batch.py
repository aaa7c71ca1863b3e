r"""Single-contact (batch) equilibrium between an aqueous and an organic phase.

Given an aqueous feed (metal concentrations and acidity), an organic (extractant concentration,
saponification degree, pre-loaded metals) and a phase ratio O/A, find both equilibrium phases.
This is the building block of a mixer-settler stage and the model side of calibration.

Unknowns (natural logarithms): aqueous concentration :math:`x_i` of every element present,
free acidity :math:`h`, and for mass action the free dimer :math:`f`. Equations, per litre of
aqueous phase with :math:`r` = O/A:

- element balance: :math:`x_i^0 + r y_i^0 = x_i (1 + r D_i)`;
- proton balance: :math:`A(h, x) - r\sum_i z_i y_i = A(h^0, x^0) - r \sum_i z_i y_i^0`
  with :math:`A` the titratable acidity (free H+, plus HSO4- in sulfate);
- extractant balance (mass action): :math:`f + \sum_i s_i y_i = C_\mathrm{HA}/2`.

Saponification: a fraction :math:`s` of the extractant's HA is pre-neutralised with NaOH
(Na+ + ½(HA)2 = NaA + H+), so the organic enters with :math:`y_\mathrm{Na}^0 = s\,C_\mathrm{HA}`
and Na is exchanged like any other cation (it must have parameters in the system).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import casadi as ca
import numpy as np

from models._newton import NewtonOptions, newton_solve
from models.chemistry import ChemistrySystem, Family, acidity_total, ln_distribution
from models.elements import element
from models.errors import ConvergenceError, InputError, bad_value
from models.labelled import LabelledVector
from models.provenance import RestsOn
from models.units import REFERENCE_TEMPERATURE_K, h_mol_per_l_to_ph

__all__ = ["AqueousPhase", "BatchResult", "OrganicPhase", "batch_equilibrium"]


def _check_conc(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0.0:
        raise bad_value(name, value, "a finite concentration >= 0 mol/L")
    return v


@dataclass(frozen=True)
class AqueousPhase:
    """An aqueous solution.

    Attributes
    ----------
    concentrations_mol_per_l
        Metal concentrations by element symbol, mol/L.
    acidity_mol_per_l
        Free H+ (chloride, nitrate) or titratable acidity H+ + HSO4- (sulfate), mol/L.
    """

    concentrations_mol_per_l: Mapping[str, float]
    acidity_mol_per_l: float

    def __post_init__(self) -> None:
        for s, c in self.concentrations_mol_per_l.items():
            element(s, field=f"aqueous.concentrations.{s}")
            _check_conc(f"aqueous.concentrations.{s}", c)
        a = float(self.acidity_mol_per_l)
        if not math.isfinite(a) or a <= 0.0:
            raise bad_value("aqueous.acidity_mol_per_l", self.acidity_mol_per_l, "a finite acidity > 0 mol/L")


@dataclass(frozen=True)
class OrganicPhase:
    """An organic phase.

    Attributes
    ----------
    extractant_mol_per_l
        Extractant, formal monomer mol/L.
    saponification
        Fraction of the extractant's HA pre-neutralised with Na (0-1).
    loading_mol_per_l
        Metals already in the organic, mol/L.
    """

    extractant_mol_per_l: float
    saponification: float = 0.0
    loading_mol_per_l: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = float(self.extractant_mol_per_l)
        if not math.isfinite(c) or c <= 0.0:
            raise bad_value(
                "organic.extractant_mol_per_l", self.extractant_mol_per_l, "a finite concentration > 0 mol/L"
            )
        s = float(self.saponification)
        if not math.isfinite(s) or not 0.0 <= s < 1.0:
            raise bad_value("organic.saponification", self.saponification, "a fraction in [0, 1)")
        for sym, v in self.loading_mol_per_l.items():
            element(sym, field=f"organic.loading.{sym}")
            _check_conc(f"organic.loading.{sym}", v)


@dataclass(frozen=True)
class BatchResult:
    """Outcome of :func:`batch_equilibrium`.

    Attributes
    ----------
    success, message, iterations, wall_time_s
        Solver outcome.
    aqueous, organic
        Equilibrium concentrations by element, mol/L.
    distribution
        D = y/x by element.
    acidity_mol_per_l, ph
        Free H+ at equilibrium and pH (concentration scale).
    free_dimer_mol_per_l
        Free extractant dimer (mass action), else NaN.
    loading_fraction
        Extractant in use over total (mass action), 0-1.
    mass_balance_rel_error
        Largest relative element-balance error.
    extrapolated
        True when the equilibrium pH lies outside the system's fitted range.
    rests_on
        Non-measured parameters used.
    """

    success: bool
    message: str
    iterations: int
    wall_time_s: float
    aqueous: LabelledVector
    organic: LabelledVector
    distribution: LabelledVector
    acidity_mol_per_l: float
    ph: float
    free_dimer_mol_per_l: float
    loading_fraction: float
    mass_balance_rel_error: float
    extrapolated: bool
    rests_on: tuple[RestsOn, ...]


def batch_equilibrium(
    system: ChemistrySystem,
    aqueous: AqueousPhase,
    organic: OrganicPhase,
    o_to_a: float = 1.0,
    temperature_k: float = REFERENCE_TEMPERATURE_K,
    options: NewtonOptions | None = None,
) -> BatchResult:
    """Solve one contact of ``aqueous`` with ``organic`` at phase ratio ``o_to_a`` (O/A, v/v).

    Raises
    ------
    InputError
        Bad phase ratio or temperature; an element without parameters in ``system``.
    ConvergenceError
        The Newton iteration failed (the error's ``details`` carry the residual).
    """
    r = float(o_to_a)
    if not math.isfinite(r) or r <= 0.0:
        raise bad_value("o_to_a", o_to_a, "a finite phase ratio > 0")
    if not math.isfinite(temperature_k) or not 250.0 < temperature_k < 400.0:
        raise bad_value("temperature_k", temperature_k, "a temperature between 250 and 400 K")
    loading = dict(organic.loading_mol_per_l)
    if organic.saponification > 0.0:
        loading["Na"] = loading.get("Na", 0.0) + organic.saponification * organic.extractant_mol_per_l
    totals = {
        s: aqueous.concentrations_mol_per_l.get(s, 0.0) + r * loading.get(s, 0.0)
        for s in set(aqueous.concentrations_mol_per_l) | set(loading)
    }
    symbols = tuple(s for s in sorted(totals, key=lambda s: element(s).z) if totals[s] > 0.0)
    if not symbols:
        raise InputError("aqueous and organic hold no metal to distribute", field="aqueous.concentrations_mol_per_l")
    system.check_elements(symbols, field="elements")
    n = len(symbols)
    charges = [float(element(s).charge) for s in symbols]
    release = system.proton_release(symbols)
    c_dimer = 0.5 * organic.extractant_mol_per_l
    use_f = system.family is Family.MASS_ACTION
    y0 = np.array([loading.get(s, 0.0) for s in symbols])
    tot = np.array([totals[s] for s in symbols])
    h0 = float(aqueous.acidity_mol_per_l)

    ln_x = ca.SX.sym("ln_x", n)
    ln_h = ca.SX.sym("ln_h")
    ln_f = ca.SX.sym("ln_f")
    ln_d = ln_distribution(system, symbols, ln_x, ln_h, ln_f, temperature_k, organic.extractant_mol_per_l)
    x = ca.exp(ln_x)
    y = ca.exp(ln_x + ln_d)
    h = ca.exp(ln_h)
    res = [ca.log(tot) - (ln_x + ca.log(1.0 + r * ca.exp(ln_d)))]
    # the given acidity is titratable (free H+ plus HSO4- in sulfate), as documented above
    t_h0 = h0 - r * float(np.dot(release, y0))
    t_h = acidity_total(system.medium, h, [x[i] for i in range(n)], charges) - r * ca.dot(ca.DM(release), y)
    scale_h = (
        acidity_total(system.medium, h, [x[i] for i in range(n)], charges) + r * ca.dot(ca.DM(release), y) + abs(t_h0)
    )
    res.append((t_h - t_h0) / scale_h)
    unknowns = [ln_x, ln_h]
    if use_f:
        dimers = ca.DM(system.dimers_per_ion(symbols))
        res.append((ca.exp(ln_f) + ca.dot(dimers, y)) / c_dimer - 1.0)
        unknowns.append(ln_f)
    z = ca.vertcat(*unknowns)
    g = ca.vertcat(*res)
    fun = ca.Function("batch", [z], [g, ca.jacobian(g, z)])

    def residual(zv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gv, jv = fun(zv)
        return np.asarray(gv).ravel(), np.asarray(jv)

    guess: list[np.ndarray] = [np.log(tot / (1.0 + r)), np.array([math.log(max(h0, 1e-4))])]
    if use_f:
        guess.append(np.array([math.log(0.5 * c_dimer)]))
    t0 = time.perf_counter()
    sol = newton_solve(residual, np.concatenate(guess), options)
    if not sol.success:
        raise ConvergenceError(
            f"batch equilibrium did not converge: {sol.message}",
            details={"iterations": sol.iterations, "residual_norm": sol.residual_norm},
        )
    zs = sol.x
    xs = np.exp(zs[:n])
    hs = float(np.exp(zs[n]))
    lnd = np.asarray(ca.Function("d", [z], [ln_d])(zs)).ravel()
    d = np.exp(lnd)
    ys = d * xs
    f_free = float(np.exp(zs[n + 1])) if use_f else math.nan
    loading_fraction = (1.0 - f_free / c_dimer) if use_f else math.nan
    err = float(np.max(np.abs(xs + r * ys - tot) / tot))
    ph = h_mol_per_l_to_ph(hs)
    lo, hi = system.valid_ph
    return BatchResult(
        success=True,
        message=sol.message,
        iterations=sol.iterations,
        wall_time_s=time.perf_counter() - t0,
        aqueous=LabelledVector(symbols, xs, "mol/L"),
        organic=LabelledVector(symbols, ys, "mol/L"),
        distribution=LabelledVector(symbols, d, "1"),
        acidity_mol_per_l=hs,
        ph=ph,
        free_dimer_mol_per_l=f_free,
        loading_fraction=loading_fraction,
        mass_balance_rel_error=err,
        extrapolated=not lo <= ph <= hi,
        rests_on=system.rests_on(symbols),
    )
