r"""Steady-state setpoint optimisation of a flowsheet (or of one circuit) with IPOPT.

Formulation (full space, exact derivatives through CasADi):

.. math::

    \min_{z,\,v}\; \phi(z, p(u))/\sigma_f \quad \text{s.t.}\quad
    R(z, p(u)) = 0,\;\; g_\mathrm{lo} \le g(z, p(u)) \le g_\mathrm{hi},\;\;
    u = u_0 + \sigma_u v,\; u_\mathrm{lo} \le u \le u_\mathrm{hi}

- :math:`z`: every stage unknown of the flowsheet (:mod:`models.flowsheet` layout, logarithms);
- :math:`u`: the manipulated variables the spec declares (``[[manipulated]]``), with their bounds
  and, optionally, move limits :math:`|u - u_\mathrm{now}| \le r_\mathrm{max}\,T` around the current
  operating point; restricted to one circuit's variables with ``circuit``; :math:`p(u)` is the
  labelled parameter vector with those entries replaced (all others fixed at the current point);
- :math:`R`: the steady balances (:mod:`models._nlp_residual`, the same equations as
  :func:`models.residual.symbolic_residual` written with finite exact Hessians);
- :math:`g`: product specifications (purity :math:`\ge` ``purity_min``, recovery :math:`\ge`
  ``recovery_min``, :class:`models.kpi.ProductKpis`), organic loading
  :math:`1 - f/(C_\mathrm{HA}/2) \le L_\mathrm{max}` at every stage of every mass-action circuit
  (as :math:`\ln f - \ln(C_\mathrm{HA}/2) \ge \ln(1 - L_\mathrm{max})`), O/A flow-ratio windows per
  stage group, and settler hydraulic capacity :math:`L_j + G_j \le q\,A` with the settler area
  :math:`A = V_\mathrm{settler}/H` (:class:`ConstraintLimits` gives the numbers and their provenance);
- :math:`\phi`: the objective (:class:`Objective`): operating margin (product value minus reagent
  cost, :mod:`models.economics`), reagent cost at spec (feed flows held), or rare-earth feed
  throughput at spec (feed flows become decision variables when no manipulated variable moves them).

Constraint rows are scaled (purity and recovery by the allowed impurity or loss
:math:`1 - x_\mathrm{min}`, O/A in logarithms, settler flows by the capacity) and the objective by
its magnitude at the current point, :math:`\sigma_f`. The start is a steady solve at the current
operating point, which IPOPT then moves.

**Multipliers.** With CasADi's sign convention the optimal objective changes with a bound
:math:`b_k` of scaled row :math:`k` as :math:`\partial\phi^*/\partial b_k = -\lambda_k`. In physical
units, the improvement of the objective per unit by which the constraint is relaxed is
:math:`\sigma_f\,|\lambda_k|\,|\mathrm{d}b^\mathrm{scaled}_k/\mathrm{d}b_k|` (first order; valid while
the active set does not change). Each active constraint is reported with that figure and a
plain-language statement ("relaxing Dy2O3 purity_min by 0.001 would gain 12.3 USD/h").

**Infeasibility.** When IPOPT does not converge, an elastic problem minimises the shortfall of
every product specification (slacks :math:`s_k \ge 0` on the purity and recovery rows, equipment
limits kept hard). Positive slacks name the specifications that cannot be met and how close the
best point gets (:class:`~models.errors.InfeasibleError` carries them in ``details``); zero
slacks mean the original problem is feasible and it is solved again from the elastic point.

**Verification.** The returned KPIs come from a steady solve (:class:`models.steady.SteadySolver`)
at the optimal setpoints, warm-started from the optimiser's state, not from the NLP alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

import casadi as ca
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from models._nlp_residual import stable_residual
from models.chemistry import Family
from models.economics import (
    EconomicAssumptions,
    Economics,
    EconomicsBreakdown,
    NamedAssumption,
    main_element_flux,
)
from models.elements import element
from models.errors import ConvergenceError, InfeasibleError, InputError
from models.flowsheet import Flowsheet
from models.inventory import Inventory, InventoryBreakdown
from models.kpi import ProductKpis, meets
from models.prices import available_scenarios
from models.provenance import Provenance, ProvenanceClass, RestsOn
from models.steady import SteadyResult, SteadySolver
from models.units import HOURS_PER_YEAR

__all__ = [
    "ActiveConstraint",
    "ConstraintKind",
    "ConstraintLimits",
    "DecisionVariable",
    "Objective",
    "OperatingPoint",
    "OptimisationOptions",
    "OptimisationResult",
    "ProductKpi",
    "SetpointOptimiser",
    "optimise_setpoints",
]

Array = npt.NDArray[np.float64]
log = logging.getLogger(__name__)

EXPAND_MAX_UNKNOWNS = 100_000
"""Plants with more stage unknowns keep MX graphs in the NLP (``OptimisationOptions.expand``); measured
on hree_refinery (3,780 unknowns) the expanded NLP builds faster, so the default expands everything."""

ACTIVE_TOL = 1e-4
"""A row is active when within this (scaled) distance of its bound (IPOPT's interior iterates keep
a slack of order barrier/multiplier, about 1e-6 to 1e-5 on these rows at tol 1e-8)."""

VERIFY_LOOSE_TOL = 1e-8
"""Residual tolerance of the fallback verification solve (relative balance errors)."""

WARM_START_IPOPT: dict[str, Any] = {
    "warm_start_init_point": "yes",
    "mu_init": 1e-5,
    "warm_start_bound_push": 1e-6,
    "warm_start_bound_frac": 1e-6,
    "warm_start_slack_bound_push": 1e-6,
    "warm_start_slack_bound_frac": 1e-6,
    "warm_start_mult_bound_push": 1e-6,
}
"""IPOPT options of a warm start (previous primal point and multipliers, a small barrier parameter,
bounds barely pushed). Chosen on tb_dy re-optimisations after a 0.5 % feed change
(``benchmarks/optimisation.py``): 5 instead of 25 iterations (reagent), 97 instead of 303 (margin);
``mu_init`` 1e-3 took more iterations and 1e-7 more on the margin. Not usable for a cold start:
the reagent problem from a steady state then fails."""

CONDITION_WARNING = 1e9
"""Jacobian condition estimate above which an optimum is reported as sitting at a fold."""


class Objective(StrEnum):
    """What the optimiser improves."""

    MARGIN = "margin"
    """Maximise product value minus reagent cost, USD/h."""
    REAGENT = "reagent"
    """Minimise reagent cost at spec, USD/h, at the current feed flows."""
    THROUGHPUT = "throughput"
    """Maximise the rare-earth oxide fed (kg REO/h) at spec."""

    @property
    def maximise(self) -> bool:
        """True for objectives that are maximised."""
        return self is not Objective.REAGENT

    @property
    def unit(self) -> str:
        """Unit of the objective value."""
        return "kg REO/h" if self is Objective.THROUGHPUT else "USD/h"


class ConstraintKind(StrEnum):
    """Kinds of inequality the optimiser enforces."""

    PURITY = "purity"
    RECOVERY = "recovery"
    LOADING = "loading"
    OA_RATIO = "oa_ratio"
    SETTLER = "settler"
    BOUND = "bound"


@dataclass(frozen=True)
class ConstraintLimits:
    """Equipment and operating windows (None switches a limit off).

    Attributes
    ----------
    max_loading_fraction
        Organic loading :math:`1 - f/(C_\\mathrm{HA}/2)` allowed at any stage of a mass-action
        circuit (0-1). ESTIMATED 0.85 (rule: keep clear of saturation, where viscosity, third
        phase and microemulsion risks rise; chemistry_notes.md 1.2 reports a microemulsion at
        60-80 % saponification and RE-loaded organics of 0.16-0.24 M; no plant limit retrieved).
        Counts Na from saponification as load. Not applied to separation-factor circuits (their
        loading is fixed by ``y_cap_fraction``).
    oa_ratio_min, oa_ratio_max
        Window for the flow ratio O/A through each mixer (dimensionless). ESTIMATED 0.1-10
        (rule: outside it mixers need internal aqueous recycle to keep a stable dispersion;
        recalled practice, not sourced).
    settler_specific_flow_m3_per_m2_h
        Total (aqueous + organic) flow a settler takes per m2 of area, m3/(m2 h). ESTIMATED 1.5
        (rule: a conservative value for a P507-kerosene dispersion; no REE settling-rate figure
        was retrieved; replace with a settling test of the plant's dispersion).
    settler_depth_m
        Liquid depth that turns settler volume into area, m. ESTIMATED 0.5 (rule: shallow
        settlers typical of mixer-settlers, recalled).
    """

    max_loading_fraction: float | None = 0.85
    oa_ratio_min: float | None = 0.1
    oa_ratio_max: float | None = 10.0
    settler_specific_flow_m3_per_m2_h: float | None = 1.5
    settler_depth_m: float = 0.5

    def __post_init__(self) -> None:
        if self.max_loading_fraction is not None and not 0.0 < self.max_loading_fraction < 1.0:
            raise InputError(
                f"max_loading_fraction: {self.max_loading_fraction!r} is not allowed; expected 0 < value < 1",
                field="max_loading_fraction",
            )
        for name in ("oa_ratio_min", "oa_ratio_max", "settler_specific_flow_m3_per_m2_h"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0.0):
                raise InputError(f"{name}: {v!r} is not allowed; expected a number > 0 or None", field=name)
        if not (math.isfinite(self.settler_depth_m) and self.settler_depth_m > 0.0):
            raise InputError(
                f"settler_depth_m: {self.settler_depth_m!r} is not allowed; expected a number > 0",
                field="settler_depth_m",
            )
        if self.oa_ratio_min is not None and self.oa_ratio_max is not None and self.oa_ratio_min >= self.oa_ratio_max:
            raise InputError("oa_ratio_min must be below oa_ratio_max", field="oa_ratio_min")

    def provenance(self) -> tuple[NamedAssumption, ...]:
        """The limits as named assumptions with their provenance."""
        est = ProvenanceClass.ESTIMATED
        where = "models/optimisation.py ConstraintLimits"
        return (
            NamedAssumption(
                "max_loading_fraction",
                self.max_loading_fraction,
                "1",
                Provenance("SHARED_NOTES", where, est, "rule: clear of saturation (chemistry_notes.md 1.2)"),
            ),
            NamedAssumption(
                "oa_ratio_min",
                self.oa_ratio_min,
                "1",
                Provenance("SHARED_NOTES", where, est, "rule: mixer phase-ratio window, recalled"),
            ),
            NamedAssumption(
                "oa_ratio_max",
                self.oa_ratio_max,
                "1",
                Provenance("SHARED_NOTES", where, est, "rule: mixer phase-ratio window, recalled"),
            ),
            NamedAssumption(
                "settler_specific_flow_m3_per_m2_h",
                self.settler_specific_flow_m3_per_m2_h,
                "m3/(m2 h)",
                Provenance("SHARED_NOTES", where, est, "rule: conservative, no REE settling test found"),
            ),
            NamedAssumption(
                "settler_depth_m",
                self.settler_depth_m,
                "m",
                Provenance("SHARED_NOTES", where, est, "rule: shallow settlers, recalled"),
            ),
        )


@dataclass(frozen=True)
class OptimisationOptions:
    """Options of :class:`SetpointOptimiser`.

    Attributes
    ----------
    objective
        What to improve (:class:`Objective`).
    price_scenario
        Price scenario for margin and reagent cost (``china_domestic``, ``ex_china``).
    circuit
        Optimise only this circuit's manipulated variables (and the flows of feeds entering it);
        None: the whole flowsheet. The steady balances of the whole flowsheet are kept.
    move_horizon_h
        If set, each variable may move at most ``max_rate_per_h`` times this many hours from the
        current operating point (variables without a rate are not limited).
    limits
        Equipment and operating windows.
    economics
        Reagent-use assumptions.
    spec_backoff
        Fraction of the allowed impurity (``1 - purity_min``) and loss (``1 - recovery_min``)
        kept in reserve (0 = optimise right onto the specification).
    inventory_payback_h
        If set, the rare earth a move adds to the stages' inventory (:mod:`models.inventory`) is
        charged as its value spread over this many hours (kg of REO for ``throughput``): a move
        must pay for filling the cascade within the horizon, as it does in the first weeks after
        it (the products carry less while the stages fill). None: only the carrying cost
        (``economics.inventory_capital_rate_per_year``) prices the inventory.
    throughput_feed_range
        For the throughput objective, feed flows that no manipulated variable moves become
        decision variables between these multiples of their current value.
    tol
        IPOPT convergence tolerance (scaled units).
    max_iter
        IPOPT iteration limit.
    verify
        Re-solve the steady state at the optimum with :class:`~models.steady.SteadySolver` and
        report its KPIs.
    expand
        Build the NLP as expanded SX graphs (fast evaluation, symbolic Hessian cost grows with the
        plant) or keep MX graphs; None: expand up to ``EXPAND_MAX_UNKNOWNS`` stage unknowns.
    ipopt
        Extra raw IPOPT options (``{"print_level": 5}``); documented here as the one raw field.
    start
        Where IPOPT starts a cold solve: ``current`` (the steady state at the current point) or
        ``reagent`` (the reagent-cost optimum at spec, solved first by a second NLP of the same
        plant; only for the margin and throughput objectives). ``auto``: ``reagent`` for a whole
        flowsheet of several circuits, whose margin NLP does not converge from its design point
        (hree_refinery: 331 iterations and an elastic retry, 532 s, failed; from the reagent
        optimum, 346 iterations), ``current`` otherwise.
    """

    objective: Objective = Objective.MARGIN
    price_scenario: str = "china_domestic"
    circuit: str | None = None
    move_horizon_h: float | None = None
    limits: ConstraintLimits = field(default_factory=ConstraintLimits)
    economics: EconomicAssumptions = field(default_factory=EconomicAssumptions)
    spec_backoff: float = 0.0
    inventory_payback_h: float | None = None
    throughput_feed_range: tuple[float, float] = (0.1, 5.0)
    tol: float = 1e-8
    max_iter: int = 500
    verify: bool = True
    expand: bool | None = None
    ipopt: Mapping[str, Any] = field(default_factory=dict)
    start: Literal["auto", "current", "reagent"] = "auto"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "objective", Objective(self.objective))
        except ValueError:
            raise InputError(
                f"objective: {self.objective!r} is not allowed; expected one of "
                + ", ".join(o.value for o in Objective),
                field="objective",
            ) from None
        if self.price_scenario not in available_scenarios():
            raise InputError(
                f"price_scenario: {self.price_scenario!r} is not allowed; expected one of "
                + ", ".join(available_scenarios()),
                field="prices",
            )
        if self.move_horizon_h is not None and not (math.isfinite(self.move_horizon_h) and self.move_horizon_h > 0):
            raise InputError(
                f"move_horizon_h: {self.move_horizon_h!r} is not allowed; expected a number > 0", field="move_horizon_h"
            )
        if self.inventory_payback_h is not None and not (
            math.isfinite(self.inventory_payback_h) and self.inventory_payback_h > 0
        ):
            raise InputError(
                f"inventory_payback_h: {self.inventory_payback_h!r} is not allowed; expected a number > 0 or None",
                field="inventory_payback_h",
            )
        if not 0.0 <= self.spec_backoff < 1.0:
            raise InputError(
                f"spec_backoff: {self.spec_backoff!r} is not allowed; expected 0 <= value < 1", field="spec_backoff"
            )
        lo, hi = self.throughput_feed_range
        if not 0.0 < lo < 1.0 < hi:
            raise InputError(
                f"throughput_feed_range: {self.throughput_feed_range!r} is not allowed; expected 0 < low < 1 < high",
                field="throughput_feed_range",
            )
        if self.start not in ("auto", "current", "reagent"):
            raise InputError(
                f"start: {self.start!r} is not allowed; expected one of auto, current, reagent", field="start"
            )
        if not (self.tol > 0 and self.max_iter >= 1):
            raise InputError("tol must be > 0 and max_iter >= 1", field="tol")


@dataclass(frozen=True)
class DecisionVariable:
    """A variable the optimiser moves.

    Attributes
    ----------
    name
        Manipulated-variable name (or the parameter name for an added feed flow).
    parameter
        The flowsheet parameter it sets.
    min, max
        Bounds (the spec's, in the parameter's unit).
    max_rate_per_h
        Rate limit from the spec, if any (used for move limits).
    origin
        ``manipulated`` (declared in the spec) or ``feed`` (added for the throughput objective).
    """

    name: str
    parameter: str
    min: float
    max: float
    max_rate_per_h: float | None
    origin: Literal["manipulated", "feed"] = "manipulated"

    @property
    def unit(self) -> str:
        """Unit read from the parameter name."""
        return _unit_of(self.parameter)


@dataclass(frozen=True)
class ProductKpi:
    """Purity and recovery of a declared product (0-1) against its specification."""

    name: str
    purity: float
    recovery: float
    purity_min: float | None
    recovery_min: float | None

    @property
    def on_spec(self) -> bool:
        """True when both minima are met (to :data:`models.kpi.SPEC_TOL`)."""
        return meets(self.purity, self.purity_min) and meets(self.recovery, self.recovery_min)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "purity": self.purity,
            "recovery": self.recovery,
            "purity_min": self.purity_min,
            "recovery_min": self.recovery_min,
            "on_spec": self.on_spec,
        }


@dataclass(frozen=True)
class OperatingPoint:
    """One plant operating point: setpoints, KPIs, economics and the objective value.

    Attributes
    ----------
    setpoints
        Decision-variable name -> value.
    kpis
        Every declared product.
    objective_value
        In :attr:`Objective.unit`.
    economics
        Product value and reagent cost breakdown.
    max_loading_fraction
        Highest organic loading over all mass-action stages (nan if none).
    inventory
        Rare earth held in the stages (:mod:`models.inventory`).
    inventory_charge
        What the objective charges for that inventory, in :attr:`Objective.unit` (carrying cost,
        plus the fill since the current point over ``inventory_payback_h``); included in
        ``objective_value``.
    """

    setpoints: dict[str, float]
    kpis: tuple[ProductKpi, ...]
    objective_value: float
    economics: EconomicsBreakdown
    max_loading_fraction: float
    inventory: InventoryBreakdown
    inventory_charge: float

    def kpi(self, name: str) -> ProductKpi:
        """A product's KPIs by name."""
        for k in self.kpis:
            if k.name == name:
                return k
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "setpoints": self.setpoints,
            "kpis": [k.to_dict() for k in self.kpis],
            "objective_value": self.objective_value,
            "economics": self.economics.to_dict(),
            "max_loading_fraction": self.max_loading_fraction,
            "inventory": self.inventory.to_dict(),
            "inventory_charge": self.inventory_charge,
        }


@dataclass(frozen=True)
class ActiveConstraint:
    """A constraint at its bound at the optimum, with what relaxing it is worth.

    Attributes
    ----------
    name
        Constraint name, e.g. ``Dy2O3 purity_min``, ``TbDy loading max S12``, ``organic_flow max``.
    kind
        :class:`ConstraintKind`.
    side
        ``min`` or ``max``: which bound is active.
    bound, value
        The bound and the constraint's value at the optimum (physical units).
    unit
        Unit of ``bound`` and ``value``.
    multiplier
        IPOPT's multiplier of the scaled row (CasADi sign convention).
    worth_per_unit
        Objective improvement per unit of relaxation of the bound, in objective units per ``unit``
        (first order).
    relax_step
        A plain step of relaxation used in ``statement``.
    statement
        The figure in words.
    """

    name: str
    kind: ConstraintKind
    side: Literal["min", "max"]
    bound: float
    value: float
    unit: str
    multiplier: float
    worth_per_unit: float
    relax_step: float
    statement: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "side": self.side,
            "bound": self.bound,
            "value": self.value,
            "unit": self.unit,
            "multiplier": self.multiplier,
            "worth_per_unit": self.worth_per_unit,
            "relax_step": self.relax_step,
            "worth_of_step": self.worth_per_unit * self.relax_step,
            "statement": self.statement,
        }


@dataclass(frozen=True)
class OptimisationResult:
    """Outcome of a setpoint optimisation (typed; the caller decides what to do with it).

    Attributes
    ----------
    success, status, message
        ``status`` is ``optimal`` or ``failed`` (infeasible specifications raise
        :class:`~models.errors.InfeasibleError` instead).
    objective
        The objective optimised; values are in ``objective.unit``.
    iterations, build_time_s, solve_time_s, wall_time_s
        IPOPT iterations; NLP construction time (0 when reused); IPOPT time; total time of the
        call including the verification solve.
    current, optimum
        The operating point before and after.
    decision_variables
        What was moved and within which bounds.
    active_constraints
        Constraints at their bounds at the optimum, with their worth.
    warnings
        Things a reader must know (excluded costs, unpriced products, an unverified optimum).
    assumptions
        Economic and equipment numbers the answer uses, with provenance.
    rests_on
        Non-measured model parameters the answer rests on.
    z, parameters
        Stage unknowns and full parameter vector at the optimum (warm start for the next call).
    steady
        The verification steady solve at the optimum (None when ``verify`` is off).
    start
        Where the cold solve started (``current point`` or ``reagent-cost optimum``); the
        iterations and build time include the first stage's.
    """

    success: bool
    status: str
    message: str
    objective: Objective
    iterations: int
    build_time_s: float
    solve_time_s: float
    wall_time_s: float
    current: OperatingPoint
    optimum: OperatingPoint
    decision_variables: tuple[DecisionVariable, ...]
    active_constraints: tuple[ActiveConstraint, ...]
    warnings: tuple[str, ...]
    assumptions: tuple[NamedAssumption, ...]
    rests_on: tuple[RestsOn, ...]
    z: Array
    parameters: Array
    steady: SteadyResult | None = None
    condition_estimate: float = math.nan
    nlp_x: Array | None = field(default=None, repr=False)
    nlp_lam_g: Array | None = field(default=None, repr=False)
    nlp_lam_x: Array | None = field(default=None, repr=False)
    start: str = "current point"

    @property
    def setpoints(self) -> dict[str, float]:
        """Optimal decision-variable values by name."""
        return self.optimum.setpoints

    @property
    def improvement(self) -> float:
        """Objective improvement over the current point (positive = better), objective units."""
        d = self.optimum.objective_value - self.current.objective_value
        return d if self.objective.maximise else -d

    def active(self, name: str) -> ActiveConstraint:
        """An active constraint by name."""
        for a in self.active_constraints:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``sxtwin optimize --json`` payload, minus plant and timing keys)."""
        return {
            "status": self.status,
            "message": self.message,
            "objective": {
                "name": self.objective.value,
                "unit": self.objective.unit,
                "sense": "maximise" if self.objective.maximise else "minimise",
                "value": self.optimum.objective_value,
                "current_value": self.current.objective_value,
                "improvement": self.improvement,
            },
            "setpoints": self.optimum.setpoints,
            "current_setpoints": self.current.setpoints,
            "decision_variables": [
                {
                    "name": d.name,
                    "parameter": d.parameter,
                    "min": d.min,
                    "max": d.max,
                    "unit": d.unit,
                    "max_rate_per_h": d.max_rate_per_h,
                    "origin": d.origin,
                }
                for d in self.decision_variables
            ],
            "kpis": [k.to_dict() for k in self.optimum.kpis],
            "current_kpis": [k.to_dict() for k in self.current.kpis],
            "economics": self.optimum.economics.to_dict(),
            "current_economics": self.current.economics.to_dict(),
            "max_loading_fraction": self.optimum.max_loading_fraction,
            "inventory": {
                **self.optimum.inventory.to_dict(),
                "charge": self.optimum.inventory_charge,
                "current": self.current.inventory.to_dict(),
                "current_charge": self.current.inventory_charge,
            },
            "active_constraints": [a.to_dict() for a in self.active_constraints],
            "warnings": list(self.warnings),
            "assumptions": [a.to_dict() for a in self.assumptions],
            "rests_on": [r.to_dict() for r in self.rests_on],
            "iterations": self.iterations,
            "start": self.start,
            "build_time_s": self.build_time_s,
            "solve_time_s": self.solve_time_s,
            "wall_time_s": self.wall_time_s,
        }


# ------------------------------------------------------------------------------------------ rows
@dataclass(frozen=True)
class _Row:
    """One scaled inequality row, ``scaled = transform(physical)``, monotone.

    Transforms: ``linear`` (physical / scale), ``log`` (ln physical), ``log1m`` (ln(1 - physical),
    decreasing: an upper bound on the loading is a lower bound on ln f - ln(C_HA/2)).
    """

    name: str
    kind: ConstraintKind
    unit: str
    lower: float | None  # physical bounds at build (overridable per call)
    upper: float | None
    transform: Literal["linear", "log", "log1m"]
    scale: float
    step: float
    spec_product: str | None = None

    @property
    def decreasing(self) -> bool:
        """True when the scaled row decreases with the physical value."""
        return self.transform == "log1m"

    def to_scaled(self, x: float) -> float:
        """Physical value to scaled row value."""
        if self.transform == "linear":
            return x / self.scale
        if self.transform == "log":
            return math.log(x)
        return math.log(max(1.0 - x, 1e-300))

    def to_physical(self, y: float) -> float:
        """Scaled row value to physical value."""
        if self.transform == "linear":
            return y * self.scale
        if self.transform == "log":
            return math.exp(y)
        return 1.0 - math.exp(y)

    def slope(self, x: float) -> float:
        """d(scaled)/d(physical) at ``x``."""
        if self.transform == "linear":
            return 1.0 / self.scale
        if self.transform == "log":
            return 1.0 / x
        return -1.0 / (1.0 - x)


def _unit_of(parameter: str) -> str:
    tail = parameter.rsplit(".", 1)[-1]
    for suffix, unit in (("_l_per_h", "L/h"), ("_mol_per_l", "mol/L"), ("_k", "K")):
        if tail.endswith(suffix):
            return unit
    return "1"


def _stage_range(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{labels[0]}-{labels[-1]}"


class _Deadline(ca.Callback):  # type: ignore[misc]
    """IPOPT's iteration callback: stops the solve (``User_Requested_Stop``) once
    ``time.perf_counter()`` passes ``until`` (None: never). One per NLP shape; the optimiser sets
    ``until`` around each call, so the solvers are built once."""

    def __init__(self, name: str, nx: int, ng: int, np_: int) -> None:
        ca.Callback.__init__(self)
        self._n = {"x": nx, "lam_x": nx, "g": ng, "lam_g": ng, "f": 1, "lam_p": np_}
        self.until: float | None = None
        self.construct(name, {})

    def get_n_in(self) -> int:
        return int(ca.nlpsol_n_out())

    def get_n_out(self) -> int:
        return 1

    def get_name_in(self, i: int) -> str:
        return str(ca.nlpsol_out(i))

    def get_name_out(self, i: int) -> str:
        return "stop"

    def get_sparsity_in(self, i: int) -> ca.Sparsity:
        return ca.Sparsity.dense(self._n[str(ca.nlpsol_out(i))], 1)

    def eval(self, arg: Any) -> list[float]:
        return [1.0 if self.until is not None and time.perf_counter() > self.until else 0.0]


DEADLINE_STATUS = "User_Requested_Stop"
"""IPOPT's return status when :class:`_Deadline` stopped it."""


class SetpointOptimiser:
    """Builds the NLP of a flowsheet once and solves it for any current operating point.

    Parameters
    ----------
    flowsheet
        The plant.
    options
        Objective, prices, limits, solver settings.
    solver
        A steady solver of the same flowsheet to reuse (one is built otherwise).
    """

    def __init__(
        self,
        flowsheet: Flowsheet,
        options: OptimisationOptions | None = None,
        *,
        solver: SteadySolver | None = None,
    ) -> None:
        self.fs = flowsheet
        self.options = options or OptimisationOptions()
        self.steady_solver = solver or SteadySolver(flowsheet)
        self.economics = Economics(flowsheet, self.options.price_scenario, self.options.economics)
        self.inventory = Inventory(flowsheet, self.economics.scenario)
        self.kpis = ProductKpis(flowsheet)
        if self.options.circuit is not None:
            flowsheet.circuit(self.options.circuit)  # raises naming the circuits
        self.variables = self._decision_variables()
        if not self.variables:
            raise InputError(
                "no decision variables: the spec declares no [[manipulated]] variables"
                + (f" in circuit {self.options.circuit!r}" if self.options.circuit else "")
                + ("" if self.options.objective is not Objective.REAGENT else " other than feed flows"),
                field="manipulated",
            )
        self.build_time_s = 0.0
        self._built = False

    # ------------------------------------------------------------------ variables
    def _decision_variables(self) -> tuple[DecisionVariable, ...]:
        fs = self.fs
        opts = self.options
        feed_flow_params = {f"{f.name}.flow_l_per_h" for f in fs.spec.feeds}
        circuit_feeds: set[str] = set()
        if opts.circuit is not None:
            c = fs.spec.circuit(opts.circuit)
            if c.feed in {f.name for f in fs.spec.feeds}:
                circuit_feeds.add(f"{c.feed}.flow_l_per_h")
        out: list[DecisionVariable] = []
        for mv in fs.spec.manipulated:
            is_feed = mv.variable in feed_flow_params
            in_circuit = mv.variable.startswith(f"{opts.circuit}.") or mv.variable in circuit_feeds
            if opts.circuit is not None and not in_circuit:
                continue
            if opts.objective is Objective.REAGENT and is_feed:
                continue
            out.append(DecisionVariable(mv.name, mv.variable, mv.min, mv.max, mv.max_rate_per_h))
        if opts.objective is Objective.THROUGHPUT and not any(v.parameter in feed_flow_params for v in out):
            lo, hi = opts.throughput_feed_range
            candidates = circuit_feeds if opts.circuit is not None else feed_flow_params
            for name in sorted(candidates):
                cur = fs.parameters[name]
                out.append(DecisionVariable(name, name, lo * cur, hi * cur, None, "feed"))
        return tuple(out)

    # ------------------------------------------------------------------ build
    def _rows(self) -> list[_Row]:
        fs = self.fs
        opts = self.options
        rows: list[_Row] = []
        for ps in fs.spec.products:
            for kind, field_name, value in (
                (ConstraintKind.PURITY, "purity_min", ps.purity_min),
                (ConstraintKind.RECOVERY, "recovery_min", ps.recovery_min),
            ):
                s = 1.0 - value if value is not None and value < 1.0 else 0.01
                s = max(s, 1e-3)  # stiffer rows (purity_min 0.99999 -> 1e-5) stall IPOPT
                rows.append(
                    _Row(
                        f"{ps.name} {field_name}",
                        kind,
                        "1",
                        value,
                        None,
                        "linear",
                        s,
                        0.001,
                        ps.name,
                    )
                )
        lim = opts.limits
        if lim.max_loading_fraction is not None:
            for lay in fs.circuits:
                if lay.system.family is not Family.MASS_ACTION:
                    continue
                for label in lay.stage_labels():
                    rows.append(
                        _Row(
                            f"{lay.name} loading max {label}",
                            ConstraintKind.LOADING,
                            "1",
                            None,
                            lim.max_loading_fraction,
                            "log1m",
                            1.0,
                            0.01,
                        )
                    )
        return rows

    @cached_property
    def _kpi_function(self) -> ca.Function:
        """Purity and recovery as in :class:`~models.kpi.ProductKpis`, with the main element's flux
        in the product written as feed minus the other exits (:func:`models.economics.main_element_flux`):
        the same values at a steady state, without large gradients that reward a violated balance."""
        fs = self.fs
        z = ca.MX.sym("z", fs.n_unknowns)
        p = ca.MX.sym("p", len(fs.parameters))
        purity, recovery = [], []
        for ps in fs.spec.products:
            mains = ps.main_elements
            main_flux = main_element_flux(fs, self.kpis, z, p, ps.stream, mains)
            els, flux = self.kpis.outlet_flux(z, p, ps.stream)
            main_mass = sum(main_flux[s] * element(s).oxide_g_per_mol_element for s in mains if element(s).in_treo)
            other_mass = sum(
                flux[i] * element(s).oxide_g_per_mol_element
                for i, s in enumerate(els)
                if s not in mains and element(s).in_treo
            )
            fed = sum(self.kpis.feed_flux(p, s) for s in mains)
            purity.append(main_mass / (main_mass + other_mass))
            recovery.append(sum(main_flux[s] for s in mains) / fed)
        return ca.Function(
            "kpis_balance", [z, p], [ca.vertcat(*purity), ca.vertcat(*recovery)], ["z", "p"], ["purity", "recovery"]
        )

    def _flow_groups(self) -> list[tuple[str, list[int], list[str]]]:
        """Stage groups with identical flow expressions (per circuit): (circuit, stage indices, labels)."""
        fs = self.fs
        rng = np.random.default_rng(12345)
        base = fs.parameter_vector()
        samples = [base] + [base * rng.uniform(0.7, 1.4, size=base.shape) for _ in range(2)]
        vals = []
        for pv in samples:
            out = fs.flows_function(pv)
            vals.append(out)
        groups = []
        for c, lay in enumerate(fs.circuits):
            sig: dict[tuple[float, ...], list[int]] = {}
            for j in range(lay.n_stages):
                key = []
                for out in vals:
                    lo = float(np.asarray(out[1 + 7 * c]).ravel()[j])
                    go = float(np.asarray(out[2 + 7 * c]).ravel()[j])
                    key += [round(lo, 9), round(go, 9)]
                sig.setdefault(tuple(key), []).append(j)
            labels = lay.stage_labels()
            for stages in sig.values():
                groups.append((lay.name, stages, [labels[j] for j in stages]))
        return groups

    def _build(self) -> None:
        if self._built:
            return
        t0 = time.perf_counter()
        fs = self.fs
        opts = self.options
        n_p = len(fs.parameters)
        nz = fs.n_unknowns
        nu = len(self.variables)
        self._u0 = np.array([v.min for v in self.variables])
        self._su = np.array([max(v.max - v.min, 1e-12) for v in self.variables])
        idx = [fs.parameters.index(v.parameter) for v in self.variables]
        sel = np.zeros((n_p, nu))
        for j, i in enumerate(idx):
            sel[i, j] = 1.0
        self._sel_idx = idx
        # SX (expanded) graphs evaluate fastest; their symbolic Hessian grows with the plant (12 s
        # for hree_refinery's 3,780 unknowns) but MX graphs were slower still there (225 s to build)
        expand = opts.expand if opts.expand is not None else nz <= EXPAND_MAX_UNKNOWNS
        sym: Any = ca.SX if expand else ca.MX
        self._sym = sym

        def fn(f: ca.Function) -> ca.Function:
            return f.expand() if expand else f

        z = sym.sym("z", nz)
        v = sym.sym("v", nu)
        par = sym.sym("par", n_p + 3)  # p, the objective scale, the current inventory (USD, kg REO)
        P = par[:n_p]
        sigma_f = par[n_p]
        inv_ref = par[n_p + 1 :]
        u = ca.DM(self._u0) + ca.DM(self._su) * v
        p = P + ca.mtimes(ca.DM(sel), u - ca.mtimes(ca.DM(sel.T), P))
        r = fn(stable_residual(fs))(z, p)
        purity, recovery = fn(self._kpi_function)(z, p)
        econ = fn(self.economics.function)
        _revenue, costs, margin, feed_reo = econ(z, p)
        rows = self._rows()
        g_rows: list[Any] = []
        k_prod = 0
        for ps_i, _ps in enumerate(fs.spec.products):
            s_p = 1.0 / rows[k_prod].slope(0.0)
            s_r = 1.0 / rows[k_prod + 1].slope(0.0)
            g_rows += [purity[ps_i] / s_p, recovery[ps_i] / s_r]
            k_prod += 2
        for lay in fs.circuits:
            if opts.limits.max_loading_fraction is None or lay.system.family is not Family.MASS_ACTION:
                continue
            c_ha = p[fs.parameters.index(f"{lay.name}.extractant_mol_per_l")]
            for j in range(lay.n_stages):
                ln_f = z[lay.offset + j * lay.nv + lay.n_el + 1]
                g_rows.append(ln_f - ca.log(0.5 * c_ha))
        # flow-only rows: O/A window and settler capacity, one per group of identical stages
        flows = fs.flows_function(p)
        lim = opts.limits
        for circuit, stages, labels in self._flow_groups():
            c = fs.circuit(circuit)
            lo_all = flows[1 + 7 * c.index]
            go_all = flows[2 + 7 * c.index]
            j = stages[0]
            lo_j, go_j = lo_all[j], go_all[j]
            where = _stage_range(labels) if len(labels) > 1 else labels[0]
            if lim.oa_ratio_min is not None or lim.oa_ratio_max is not None:
                rows.append(
                    _Row(
                        f"{circuit} O/A {where}",
                        ConstraintKind.OA_RATIO,
                        "1",
                        lim.oa_ratio_min,
                        lim.oa_ratio_max,
                        "log",
                        1.0,
                        0.1,
                    )
                )
                g_rows.append(ca.log(go_j / lo_j))
            if lim.settler_specific_flow_m3_per_m2_h is not None:
                cap = self._settler_capacity_l_per_h(circuit)
                rows.append(
                    _Row(
                        f"{circuit} settler capacity {where}",
                        ConstraintKind.SETTLER,
                        "L/h",
                        None,
                        cap,
                        "linear",
                        cap,
                        round(0.01 * cap, 6),
                    )
                )
                g_rows.append((lo_j + go_j) / cap)
        self._rows_list = rows
        g_ineq = ca.vertcat(*g_rows) if g_rows else sym(0, 1)
        obj = opts.objective
        if obj is Objective.MARGIN:
            phi = margin
        elif obj is Objective.REAGENT:
            phi = ca.sum1(costs) if costs.numel() else sym(0.0)
        else:
            phi = feed_reo
        inv_kg, inv_usd = fn(self.inventory.function)(z, p)
        charge = self._inventory_charge(ca.vertcat(inv_usd, ca.sum1(inv_kg)), inv_ref)
        phi = phi - charge if obj.maximise else phi + charge
        f = (-phi if obj.maximise else phi) / sigma_f
        x = ca.vertcat(z, v)
        g = ca.vertcat(r, g_ineq)
        self._n_eq = nz
        self._n_ineq = int(g_ineq.numel())
        self._nlp = {"x": x, "p": par, "f": f, "g": g}
        zz = ca.MX.sym("z", nz)
        pp = ca.MX.sym("p", n_p)
        ref = ca.MX.sym("ref", 2)
        _rev_m, costs_m, margin_m, feed_m = self.economics.function(zz, pp)
        phi_m = {Objective.MARGIN: margin_m, Objective.THROUGHPUT: feed_m}.get(
            obj, ca.sum1(costs_m) if costs_m.numel() else ca.MX(0.0)
        )
        kg_m, usd_m = self.inventory.function(zz, pp)
        charge_m = self._inventory_charge(ca.vertcat(usd_m, ca.sum1(kg_m)), ref)
        phi_m = phi_m - charge_m if obj.maximise else phi_m + charge_m
        self._phi_fn = ca.Function("phi", [zz, pp, ref], [phi_m, charge_m], ["z", "p", "ref"], ["phi", "charge"])
        ipopt: dict[str, Any] = {
            "print_level": 0,
            "sb": "yes",
            "tol": opts.tol,
            "constr_viol_tol": opts.tol,
            "max_iter": opts.max_iter,
            "mu_strategy": "monotone",
        }
        ipopt.update(dict(opts.ipopt))
        nx, ng, n_par = (int(self._nlp[k].numel()) for k in ("x", "g", "p"))
        self._deadlines = [_Deadline("deadline", nx, ng, n_par)]
        nlp_opts: dict[str, Any] = {
            "ipopt": ipopt, "print_time": False, "show_eval_warnings": False,
            "iteration_callback": self._deadlines[0],
        }
        self._solver = ca.nlpsol("setpoints", "ipopt", self._nlp, nlp_opts)
        self._ipopt_opts = ipopt
        self._built = True
        self.build_time_s = time.perf_counter() - t0

    def _inventory_charge(self, held: Any, ref: Any) -> Any:
        """What the objective charges for the inventory ``held`` = (USD, kg REO), given the
        current point's ``ref`` = (USD, kg REO): the carrying cost of its value (USD/h, not for
        throughput) plus the fill since the current point over the payback horizon."""
        opts = self.options
        throughput = opts.objective is Objective.THROUGHPUT
        k = 1 if throughput else 0  # throughput is in kg REO/h, the others in USD/h
        charge = 0.0 if throughput else held[0] * (opts.economics.inventory_capital_rate_per_year / HOURS_PER_YEAR)
        if opts.inventory_payback_h is not None:
            charge = charge + (held[k] - ref[k]) / opts.inventory_payback_h
        return charge

    def _settler_capacity_l_per_h(self, circuit: str) -> float:
        lim = self.options.limits
        assert lim.settler_specific_flow_m3_per_m2_h is not None
        c = self.fs.spec.circuit(circuit)
        area_m2 = c.settler_volume_l / 1000.0 / lim.settler_depth_m
        return lim.settler_specific_flow_m3_per_m2_h * area_m2 * 1000.0

    @cached_property
    def _warm_solver(self) -> ca.Function:
        """IPOPT started from a previous primal-dual point (:data:`WARM_START_IPOPT`): built on the
        first warm-started call. A cold IPOPT (barrier parameter 0.1, points pushed off the bounds)
        walks a previous optimum away and back (170 iterations on the tb_dy margin instead of 97)."""
        ipopt = {**self._ipopt_opts, **WARM_START_IPOPT, **dict(self.options.ipopt)}
        nlp_opts: dict[str, Any] = {
            "ipopt": ipopt, "print_time": False, "show_eval_warnings": False,
            "iteration_callback": self._deadlines[0],
        }
        return ca.nlpsol("setpoints_warm", "ipopt", self._nlp, nlp_opts)

    @cached_property
    def _elastic(self) -> tuple[ca.Function, int]:
        """The elastic problem: a slack on each side of every inequality row, minimise their sum."""
        self._build()
        n_in = self._n_ineq
        s_lo = self._sym.sym("s_lo", n_in)
        s_hi = self._sym.sym("s_hi", n_in)
        x = self._nlp["x"]
        g = self._nlp["g"]
        shift = ca.vertcat(self._sym.zeros(self._n_eq), s_lo - s_hi)
        f = ca.sum1(s_lo) + ca.sum1(s_hi) + 1e-6 * self._nlp["f"]
        nlp = {"x": ca.vertcat(x, s_lo, s_hi), "p": self._nlp["p"], "f": f, "g": g + shift}
        cb = _Deadline("deadline_elastic", int(nlp["x"].numel()), int(g.numel()), int(self._nlp["p"].numel()))
        cb.until = self._deadlines[0].until  # built in the middle of a call: armed like the others
        self._deadlines.append(cb)
        nlp_opts: dict[str, Any] = {
            "ipopt": dict(self._ipopt_opts), "print_time": False, "show_eval_warnings": False,
            "iteration_callback": cb,
        }
        return ca.nlpsol("elastic", "ipopt", nlp, nlp_opts), n_in

    # ------------------------------------------------------------------ bounds
    def _bounds(
        self,
        p_now: Array,
        specs: Mapping[str, Mapping[str, float | None]] | None,
        bound_overrides: Mapping[str, float] | None,
    ) -> tuple[Array, Array, Array, Array, list[tuple[float | None, float | None]]]:
        fs = self.fs
        opts = self.options
        overrides = dict(bound_overrides or {})
        known = self._bound_names()
        for name in overrides:
            if name not in known:
                raise InputError(f"bound override {name!r} names no constraint of this problem", field="bounds")
        for prod in specs or {}:
            if prod not in {ps.name for ps in fs.spec.products}:
                raise InputError(
                    f"specs: unknown product {prod!r}; products: {', '.join(ps.name for ps in fs.spec.products)}",
                    field="specs",
                )
        phys: list[tuple[float | None, float | None]] = []
        lbg = [0.0] * self._n_eq
        ubg = [0.0] * self._n_eq
        for row in self._rows_list:
            lo, hi = row.lower, row.upper
            if row.spec_product is not None:
                field_name = "purity_min" if row.kind is ConstraintKind.PURITY else "recovery_min"
                spec_over = (specs or {}).get(row.spec_product, {})
                if field_name in spec_over:
                    lo = spec_over[field_name]
                if lo is not None and opts.spec_backoff > 0:
                    lo = lo + opts.spec_backoff * (1.0 - lo)
            two_sided = row.lower is not None and row.upper is not None
            if two_sided:
                lo = overrides.get(f"{row.name} min", lo)
                hi = overrides.get(f"{row.name} max", hi)
            elif row.name in overrides:
                if row.upper is not None:
                    hi = overrides[row.name]
                else:
                    lo = overrides[row.name]
            phys.append((lo, hi))
            if row.decreasing:  # e.g. loading: ln(1 - L), an upper bound on L is a lower bound on the row
                sl = row.to_scaled(hi) if hi is not None else -np.inf
                sh = row.to_scaled(lo) if lo is not None else np.inf
            else:
                sl = row.to_scaled(lo) if lo is not None else -np.inf
                sh = row.to_scaled(hi) if hi is not None else np.inf
            lbg.append(sl)
            ubg.append(sh)
        nz = fs.n_unknowns
        u_now = p_now[self._sel_idx]
        lo_u = np.array([v.min for v in self.variables], dtype=float)
        hi_u = np.array([v.max for v in self.variables], dtype=float)
        for j, var in enumerate(self.variables):
            if f"{var.name} min" in overrides:
                lo_u[j] = overrides[f"{var.name} min"]
            if f"{var.name} max" in overrides:
                hi_u[j] = overrides[f"{var.name} max"]
            if opts.move_horizon_h is not None and var.max_rate_per_h is not None:
                d = var.max_rate_per_h * opts.move_horizon_h
                lo_u[j] = max(lo_u[j], u_now[j] - d)
                hi_u[j] = min(hi_u[j], u_now[j] + d)
            if lo_u[j] > hi_u[j]:  # current point outside the bounds by more than a move: stay at the nearer bound
                lo_u[j] = hi_u[j] = min(max(u_now[j], var.min), var.max)
        lbx = np.r_[np.full(nz, -np.inf), (lo_u - self._u0) / self._su]
        ubx = np.r_[np.full(nz, np.inf), (hi_u - self._u0) / self._su]
        return lbx, ubx, np.array(lbg), np.array(ubg), phys

    def _bound_names(self) -> set[str]:
        """Every name a bound override may use (after :meth:`_build`)."""
        known = {f"{v.name} {side}" for v in self.variables for side in ("min", "max")}
        for r in self._rows_list:
            known |= {f"{r.name} min", f"{r.name} max"} if r.lower is not None and r.upper is not None else {r.name}
        return known

    @property
    def _starts_from_reagent(self) -> bool:
        opts = self.options
        if opts.objective is Objective.REAGENT or opts.start == "current":
            return False
        return opts.start == "reagent" or (opts.circuit is None and len(self.fs.circuits) > 1)

    @cached_property
    def _reagent_stage(self) -> SetpointOptimiser:
        """The reagent-cost optimiser of the same plant and options: the first stage of a staged start."""
        options = replace(self.options, objective=Objective.REAGENT, start="current")
        return SetpointOptimiser(self.fs, options, solver=self.steady_solver)

    def _reagent_start(
        self,
        p_now: Array,
        current: SteadyResult,
        specs: Mapping[str, Mapping[str, float | None]] | None,
        bound_overrides: Mapping[str, float] | None,
        lbx: Array,
        ubx: Array,
        deadline: float | None,
    ) -> tuple[Array, int, float, float] | None:
        """The reagent-cost optimum as a start point of this NLP (x, iterations, build and IPOPT
        time), or
        None when that optimisation fails or the specs are infeasible (the solve then starts from
        the current point and diagnoses infeasibility itself)."""
        stage = self._reagent_stage
        stage._build()
        known = stage._bound_names()
        overrides = {k: v for k, v in (bound_overrides or {}).items() if k in known}
        try:
            first = stage.optimise(
                p_now, current=current, specs=specs, bound_overrides=overrides or None, deadline=deadline
            )
        except InfeasibleError:
            return None
        if not first.success:
            return None
        nz = self.fs.n_unknowns
        z = first.steady.z if first.steady is not None else first.z
        v = np.clip((first.parameters[self._sel_idx] - self._u0) / self._su, lbx[nz:], ubx[nz:])
        return np.r_[z, v], first.iterations, first.build_time_s, first.solve_time_s

    # ------------------------------------------------------------------ solve
    def optimise(
        self,
        p_current: Array | None = None,
        z_current: Array | None = None,
        *,
        current: SteadyResult | None = None,
        specs: Mapping[str, Mapping[str, float | None]] | None = None,
        bound_overrides: Mapping[str, float] | None = None,
        warm: OptimisationResult | None = None,
        fallback: bool = True,
        deadline: float | None = None,
    ) -> OptimisationResult:
        """Optimal setpoints from the current operating point.

        Parameters
        ----------
        p_current
            Full parameter vector of the current operating point (default: the spec's design).
        z_current
            A steady state at ``p_current`` or near it (warm start of the initial steady solve).
        current
            An already solved steady state at ``p_current`` (skips the initial solve).
        specs
            Per product, replacement ``purity_min`` / ``recovery_min`` (None removes one).
        bound_overrides
            Physical bounds by constraint name (``"Dy2O3 purity_min"``, ``"organic_flow max"``,
            ``"TbDy loading max S12"``): for relaxation studies.
        warm
            A previous result of this optimiser: its NLP point and multipliers start IPOPT.
        fallback
            When the warm-started solve fails, solve again from the current point and, if that
            fails too, diagnose infeasibility with the elastic problem. False returns the warm
            solve's failure at once (a continuation that will try a shorter step instead).
        deadline
            A :func:`time.perf_counter` time after which IPOPT stops at its next iteration and no
            further solve (fallback, elastic) starts: the result is then ``failed`` with the
            message "time budget ran out" (a study's per-case budget).

        Raises
        ------
        InfeasibleError
            The specifications cannot be met within the bounds; ``details`` names each violated
            specification with its bound and the best value reached.
        ConvergenceError
            The steady state at the current point cannot be found.
        """
        t_start = time.perf_counter()
        built_before = self._built
        self._build()
        build_time = 0.0 if built_before else self.build_time_s
        for cb in self._deadlines:
            cb.until = deadline
        try:
            return self._optimise(
                t_start, build_time, p_current, z_current, current, specs, bound_overrides, warm, fallback, deadline
            )
        finally:
            for cb in self._deadlines:
                cb.until = None

    def _optimise(
        self,
        t_start: float,
        build_time: float,
        p_current: Array | None,
        z_current: Array | None,
        current: SteadyResult | None,
        specs: Mapping[str, Mapping[str, float | None]] | None,
        bound_overrides: Mapping[str, float] | None,
        warm: OptimisationResult | None,
        fallback: bool,
        deadline: float | None,
    ) -> OptimisationResult:
        fs = self.fs
        p_now = fs.parameter_vector() if p_current is None else np.asarray(p_current, dtype=float).copy()
        if current is None:
            current = self.steady_solver.solve(p_now, z0=z_current, p0=None if z_current is None else p_now)
        if not current.success:
            raise ConvergenceError(f"steady state at the current operating point not found: {current.message}")
        z_now = current.z
        held = self.inventory.evaluate(z_now, p_now)
        ref = np.array([held.value_usd, held.kg_reo])
        sigma = max(abs(float(self._phi_fn(z_now, p_now, ref)[0])), 1e-3)
        par = np.r_[p_now, sigma, ref]
        lbx, ubx, lbg, ubg, phys = self._bounds(p_now, specs, bound_overrides)
        v_now = np.clip((p_now[self._sel_idx] - self._u0) / self._su, lbx[fs.n_unknowns :], ubx[fs.n_unknowns :])
        x0 = np.r_[z_now, v_now]
        args: dict[str, Any] = {"x0": x0, "p": par, "lbx": lbx, "ubx": ubx, "lbg": lbg, "ubg": ubg}
        iterations = 0
        sol: dict[str, Any] = {}
        ok = False
        start_from = "current point"
        stage_solve = 0.0
        use_warm = warm is not None and warm.nlp_x is not None and warm.nlp_x.shape == x0.shape
        if not use_warm and self._starts_from_reagent:
            staged = self._reagent_start(p_now, current, specs, bound_overrides, lbx, ubx, deadline)
            if staged is not None:
                args["x0"], iterations, stage_build, stage_solve = staged
                build_time += stage_build
                start_from = "reagent-cost optimum"
        if use_warm:
            assert warm is not None
            assert warm.nlp_x is not None
            t_build = time.perf_counter()
            warm_solver = self._warm_solver  # built on the first warm call: counted as build time
            t_solve = time.perf_counter()
            build_time += t_solve - t_build
            start: dict[str, Any] = {"x0": np.clip(warm.nlp_x, lbx, ubx), "lam_g0": warm.nlp_lam_g,
                                     "lam_x0": warm.nlp_lam_x}
            sol = warm_solver(**{**args, **start})
            stats = warm_solver.stats()
            iterations += int(stats.get("iter_count", 0))
            ok = bool(stats.get("success", False))
            if not ok:
                log.info("warm-started IPOPT: %s; solving again from the current point", stats.get("return_status"))
        else:
            t_solve = time.perf_counter()
        def out_of_time() -> bool:
            return deadline is not None and time.perf_counter() > deadline

        fail_fast = use_warm and not fallback
        if not ok and not fail_fast and not out_of_time():
            sol = self._solver(**args)
            stats = self._solver.stats()
            iterations += int(stats.get("iter_count", 0))
            ok = bool(stats.get("success", False))
        message = str(stats.get("return_status", "")) if sol else DEADLINE_STATUS
        if not ok and not fail_fast and not out_of_time():
            # elastic problem: which specs cannot be met, and how close can we get?
            sol_e, stats_e, violated = self._elastic_solve(args, lbg, ubg, phys)
            iterations += int(stats_e.get("iter_count", 0))
            if not violated and not stats_e.get("success", False) and sol and not out_of_time():
                log.info("elastic problem: %s; again from IPOPT's last iterate", stats_e.get("return_status"))
                last = {**args, "x0": np.asarray(sol["x"]).ravel()}
                sol_e, stats_e, violated = self._elastic_solve(last, lbg, ubg, phys, start_is_steady=False)
                iterations += int(stats_e.get("iter_count", 0))
            if violated:
                self._raise_infeasible(violated, sol_e, p_now)
            if stats_e.get("success", False):
                # feasible after all: solve the original problem from the elastic point
                args2 = dict(args)
                args2["x0"] = np.asarray(sol_e["x"]).ravel()[: x0.size]
                args2.pop("lam_g0", None)
                args2.pop("lam_x0", None)
                sol = self._solver(**args2)
                stats = self._solver.stats()
                iterations += int(stats.get("iter_count", 0))
                ok = bool(stats.get("success", False))
                message = str(stats.get("return_status", ""))
            else:
                message += f"; elastic problem: {stats_e.get('return_status', '')}"
        solve_time = time.perf_counter() - t_solve + stage_solve
        if not sol:  # out of time before any solve of this problem: the start point stands
            sol = {"x": args["x0"], "lam_g": np.zeros(len(lbg)), "lam_x": np.zeros(len(lbx))}
        x_opt = np.asarray(sol["x"]).ravel()
        z_opt = x_opt[: fs.n_unknowns]
        # IPOPT relaxes bounds by 1e-8 (bound_relax_factor): return setpoints inside the bounds
        v_opt = np.clip(x_opt[fs.n_unknowns :], lbx[fs.n_unknowns :], ubx[fs.n_unknowns :])
        p_opt = p_now.copy()
        p_opt[self._sel_idx] = self._u0 + self._su * v_opt
        warnings = [*self.economics.warnings, *self.inventory.warnings]
        steady_opt: SteadyResult | None = None
        if self.options.verify and (ok or not (fail_fast or out_of_time())):
            # Newton from the optimiser's state (a continuation from there, when Newton fails,
            # is slow and lands where the loose Newton below does)
            steady_opt = self.steady_solver.solve(p_opt, z0=z_opt, continuation=False)
            if not steady_opt.success:
                # near a fold of the steady states (condition ~1e9) Newton stalls above 1e-11:
                # accept 1e-8 (relative balance errors), and say so
                loose = SteadySolver(fs, replace(self.steady_solver.options, tol=VERIFY_LOOSE_TOL))
                steady_opt = loose.solve(p_opt, z0=z_opt, continuation=False)
                if not steady_opt.success:
                    steady_opt = loose.solve(p_opt, z0=z_opt)
                if steady_opt.success:
                    warnings.append(
                        f"the steady re-solve at the optimum converged to {VERIFY_LOOSE_TOL:g} only "
                        "(ill-conditioned steady state)"
                    )
            if steady_opt.success:
                z_opt = steady_opt.z
            else:
                warnings.append(f"the steady re-solve at the optimum failed ({steady_opt.message}); KPIs from the NLP")
                steady_opt = None
        condition = self._condition(z_opt, p_opt)
        if condition > CONDITION_WARNING:
            warnings.append(
                "the optimum sits at the edge of the steady-state region "
                f"(Jacobian condition estimate {condition:.1e}): "
                "a small disturbance may move the plant to another steady state; check it with a robustness study "
                "or back off (spec_backoff, a lower max_loading_fraction, move limits)"
            )
        cur_point = self._point(z_now, p_now, ref)
        opt_point = self._point(z_opt, p_opt, ref)
        active = self._active(sol, lbx, ubx, lbg, ubg, phys, sigma) if ok else ()
        if not ok:
            warnings.append(f"IPOPT did not converge ({message}); the setpoints are the last iterate")
        elif not all(k.on_spec for k in opt_point.kpis) and not specs:
            warnings.append("a product is off spec at the verified optimum (see kpis)")
        assumptions = self.economics.assumptions() + self.options.limits.provenance()
        return OptimisationResult(
            success=ok,
            status="optimal" if ok else "failed",
            message=(
                "optimal setpoints found" if ok
                else f"time budget ran out (IPOPT: {message})" if DEADLINE_STATUS in message
                else f"IPOPT: {message}"
            ),
            objective=self.options.objective,
            iterations=iterations,
            build_time_s=build_time,
            solve_time_s=solve_time,
            wall_time_s=time.perf_counter() - t_start,
            current=cur_point,
            optimum=opt_point,
            decision_variables=self.variables,
            active_constraints=active,
            warnings=tuple(dict.fromkeys(warnings)),
            assumptions=assumptions,
            rests_on=fs.rests_on(),
            z=z_opt,
            parameters=p_opt,
            steady=steady_opt,
            condition_estimate=condition,
            nlp_x=x_opt,
            nlp_lam_g=np.asarray(sol["lam_g"]).ravel(),
            nlp_lam_x=np.asarray(sol["lam_x"]).ravel(),
            start=start_from,
        )

    def _elastic_solve(
        self,
        args: Mapping[str, Any],
        lbg: Array,
        ubg: Array,
        phys: list[tuple[float | None, float | None]],
        start_is_steady: bool = True,
    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """Solve the elastic problem from ``args["x0"]``; which inequality rows cannot be met, and by
        how much. The start is reported instead of a worse elastic optimum only when it is a steady
        state (``start_is_steady``: not so for an IPOPT iterate that stopped off the equality rows)."""
        solver, n_in = self._elastic
        nx = np.asarray(args["x0"]).size
        rows = slice(self._n_eq, self._n_eq + n_in)
        g0 = np.asarray(ca.Function("g0", [self._nlp["x"], self._nlp["p"]], [self._nlp["g"]])(args["x0"], args["p"]))
        g0 = g0.ravel()[rows]
        lo, hi = lbg[rows], ubg[rows]
        short_lo0 = np.where(np.isfinite(lo), np.maximum(0.0, lo - g0), 0.0)
        short_hi0 = np.where(np.isfinite(hi), np.maximum(0.0, g0 - hi), 0.0)
        # start the slacks at the start point's violations; a side without a bound has its slack fixed at 0
        x0 = np.r_[np.asarray(args["x0"]), short_lo0 + 1e-3 * np.isfinite(lo), short_hi0 + 1e-3 * np.isfinite(hi)]
        lbx = np.r_[args["lbx"], np.zeros(2 * n_in)]
        ubx = np.r_[args["ubx"], np.where(np.isfinite(lo), np.inf, 0.0), np.where(np.isfinite(hi), np.inf, 0.0)]
        sol = solver(x0=x0, p=args["p"], lbx=lbx, ubx=ubx, lbg=args["lbg"], ubg=args["ubg"])
        stats = solver.stats()
        x = np.asarray(sol["x"]).ravel()
        s_lo, s_hi = x[nx : nx + n_in], x[nx + n_in :]
        g = np.asarray(sol["g"]).ravel()[rows] - s_lo + s_hi  # the rows themselves, without their slacks
        x_best = x[:nx]
        worse = float(np.sum(short_lo0 + short_hi0)) < float(np.sum(s_lo + s_hi))
        if stats.get("success", False) and start_is_steady and worse:
            # the elastic solve ended in a worse local minimum than the start: report the start
            s_lo, s_hi, g, x_best = short_lo0, short_hi0, g0, np.asarray(args["x0"])
        violated: list[dict[str, Any]] = []
        if stats.get("success", False):
            for k, row in enumerate(self._rows_list):
                for side, slack in (("min", s_lo[k]), ("max", s_hi[k])):
                    if slack <= 1e-5:
                        continue
                    bound = phys[k][0] if side == "min" else phys[k][1]
                    if row.decreasing:  # the scaled lower bound is the physical upper bound
                        bound = phys[k][1] if side == "min" else phys[k][0]
                    name = f"{row.name} {side}" if row.lower is not None and row.upper is not None else row.name
                    violated.append(
                        {
                            "constraint": name,
                            "product": row.spec_product,
                            "kind": row.kind.value,
                            "bound": bound,
                            "best": row.to_physical(float(g[k])),
                        }
                    )
        out = {"x": x_best, "lam_g": sol["lam_g"], "lam_x": np.asarray(sol["lam_x"]).ravel()[:nx]}
        return out, stats, violated

    def _raise_infeasible(self, violated: list[dict[str, Any]], sol: Mapping[str, Any], p_now: Array) -> None:
        fs = self.fs
        x = np.asarray(sol["x"]).ravel()
        v = x[fs.n_unknowns :]
        p_best = p_now.copy()
        p_best[self._sel_idx] = self._u0 + self._su * v
        setpoints = {var.name: float(p_best[fs.parameters.index(var.parameter)]) for var in self.variables}
        parts = []
        for item in violated:
            best = item["best"]
            parts.append(
                f"{item['constraint']} {item['bound']:g} cannot be met"
                + (
                    f" (best reachable {best:.6g}, the other constraints met as closely as possible)"
                    if math.isfinite(best)
                    else ""
                )
            )
        raise InfeasibleError(
            "infeasible: " + "; ".join(parts),
            details={"violated": violated, "best_setpoints": setpoints},
        )

    # ------------------------------------------------------------------ reporting
    def _condition(self, z: Array, p: Array) -> float:
        """1-norm condition estimate of the steady Jacobian (large near a fold of the steady states)."""
        _, jac = self.steady_solver.residual.evaluate(z, p)
        if jac is None:
            return math.nan
        try:
            lu = spla.splu(sp.csc_matrix(jac), permc_spec="COLAMD")
        except RuntimeError:
            return math.inf
        n = jac.shape[0]
        inv = spla.LinearOperator((n, n), matvec=lu.solve, rmatvec=lambda b: lu.solve(b, trans="T"))
        return float(spla.onenormest(jac) * spla.onenormest(inv))

    def _point(self, z: Array, p: Array, ref: Array) -> OperatingPoint:
        fs = self.fs
        pur, rec = self.kpis.function(z, p)
        pur_a = np.asarray(pur).ravel()
        rec_a = np.asarray(rec).ravel()
        kpis = tuple(
            ProductKpi(ps.name, float(pur_a[i]), float(rec_a[i]), ps.purity_min, ps.recovery_min)
            for i, ps in enumerate(fs.spec.products)
        )
        loading = []
        for lay in fs.circuits:
            if lay.system.family is Family.MASS_ACTION:
                c_ha = p[fs.parameters.index(f"{lay.name}.extractant_mol_per_l")]
                ln_f = z[lay.offset + np.arange(lay.n_stages) * lay.nv + lay.n_el + 1]
                loading.append(float(np.max(1.0 - np.exp(ln_f) / (0.5 * c_ha))))
        phi, charge = self._phi_fn(z, p, ref)
        return OperatingPoint(
            setpoints={v.name: float(p[fs.parameters.index(v.parameter)]) for v in self.variables},
            kpis=kpis,
            objective_value=float(phi),
            economics=self.economics.evaluate(z, p),
            max_loading_fraction=max(loading) if loading else math.nan,
            inventory=self.inventory.evaluate(z, p),
            inventory_charge=float(charge),
        )

    def _active(
        self,
        sol: Mapping[str, Any],
        lbx: Array,
        ubx: Array,
        lbg: Array,
        ubg: Array,
        phys: list[tuple[float | None, float | None]],
        sigma: float,
    ) -> tuple[ActiveConstraint, ...]:
        fs = self.fs
        obj = self.options.objective
        verb = "gain" if obj.maximise else "save"
        g = np.asarray(sol["g"]).ravel()
        lam_g = np.asarray(sol["lam_g"]).ravel()
        x = np.asarray(sol["x"]).ravel()
        lam_x = np.asarray(sol["lam_x"]).ravel()
        out: list[ActiveConstraint] = []
        tol = ACTIVE_TOL
        for k, row in enumerate(self._rows_list):
            i = self._n_eq + k
            lo, hi = lbg[i], ubg[i]
            at_lo = np.isfinite(lo) and abs(g[i] - lo) <= tol * max(1.0, abs(lo))
            at_hi = np.isfinite(hi) and abs(g[i] - hi) <= tol * max(1.0, abs(hi))
            if not (at_lo or at_hi):
                continue
            plo, phi_ = phys[k]
            # which physical bound is active: a decreasing transform swaps them
            side: Literal["min", "max"] = "min" if at_lo != row.decreasing else "max"
            bound = plo if side == "min" else phi_
            assert bound is not None
            worth = sigma * abs(float(lam_g[i])) * abs(row.slope(bound))
            value = row.to_physical(float(g[i]))
            name = f"{row.name} {side}" if row.lower is not None and row.upper is not None else row.name
            unit = "" if row.unit == "1" else f" {row.unit}"
            if row.kind in (ConstraintKind.PURITY, ConstraintKind.RECOVERY):
                how = f"relaxing {name} ({bound:g}) by {row.step:g}"
            else:
                verb_b = "lowering" if side == "min" else "raising"
                how = f"{verb_b} the {name} limit ({bound:g}{unit}) by {row.step:g}{unit}"
            statement = f"{how} would {verb} {worth * row.step:.4g} {obj.unit}"
            out.append(
                ActiveConstraint(
                    name, row.kind, side, float(bound), value, row.unit, float(lam_g[i]), worth, row.step, statement
                )
            )
        nz = fs.n_unknowns
        for j, var in enumerate(self.variables):
            i = nz + j
            for side, b in (("min", lbx[i]), ("max", ubx[i])):
                if np.isfinite(b) and abs(x[i] - b) <= 1e-5:
                    bound = float(self._u0[j] + self._su[j] * b)
                    worth = sigma * abs(float(lam_x[i])) / self._su[j]
                    step = float(f"{0.01 * (var.max - var.min):.2g}")
                    unit = var.unit
                    direction = "lowering" if side == "min" else "raising"
                    statement = (
                        f"{direction} the {var.name} {side} ({bound:g} {unit}) by {step:g} {unit} would {verb} "
                        f"{worth * step:.4g} {obj.unit}"
                    )
                    out.append(
                        ActiveConstraint(
                            f"{var.name} {side}",
                            ConstraintKind.BOUND,
                            side,
                            bound,  # type: ignore[arg-type]
                            float(self._u0[j] + self._su[j] * x[i]),
                            unit,
                            float(lam_x[i]),
                            worth,
                            step,
                            statement,
                        )
                    )
        return tuple(out)


def optimise_setpoints(
    flowsheet: Flowsheet,
    options: OptimisationOptions | None = None,
    *,
    p_current: Array | None = None,
    z_current: Array | None = None,
) -> OptimisationResult:
    """One-shot convenience: build a :class:`SetpointOptimiser` and optimise from the current point."""
    return SetpointOptimiser(flowsheet, options).optimise(p_current, z_current)
