r"""The soft sensor: every stage's composition with a confidence interval, from a few instruments.

Method: a **parameter-only extended Kalman filter with model sensitivities**, around the plant's
dynamic model. The plant state (every stage, both phases) is propagated by
:class:`models.dynamics.DynamicModel` with the measured manipulated variables; a small vector
:math:`\theta` of slowly drifting parameters is estimated:

- per feed: log multipliers of the concentrations of its main elements and of the trace elements
  an analyser measures (feed basket drift);
- per circuit: the log multiplier of the extractant concentration (extractant loss), the
  :math:`\ln D` offsets of its main elements (separation-factor mismatch) and, where the spec
  gives the circuit a Murphree stage efficiency, that efficiency (slower mixing, a worn
  impeller, a flow above design).

:math:`\theta` is a random walk with prior standard deviations from :class:`EstimatorOptions`.
An analyser reading is modelled in logarithms, :math:`\ln y = \ln c(z) + \ln M + v` with
:math:`v \sim N(0, \sigma^2)`, :math:`\sigma` from the instrument's relative noise plus a model
floor. Its Jacobian is :math:`H = \partial h/\partial z\; dz/d\theta + \partial h/\partial \theta`
with, near a steady state, the quasi-steady sensitivity :math:`dz/d\theta = -R_z^{-1} R_\theta`
(implicit function theorem on the steady residual; CasADi AD for every partial) and, for
``settle_h`` after an input moved, the dynamic sensitivity carried along the trajectory (by
the model's sensitivity equations, linearised along each step): after a setpoint move
the steady sensitivities describe the plant hundreds of hours ahead, and a filter that uses them
runs its parameters away. Updates use the prediction at the sample's own time (kept in a history
of states), so samples that arrive late or out of order are used correctly for time-invariant
parameters; an innovation gate inflates the noise of readings far beyond what the filter expects,
and the parameters stay within ``max_prior_sd`` prior standard deviations. After an update the
dynamic state is shifted by :math:`(dz/d\theta)\,\Delta\theta`.

Uncertainty of the soft sensor: :math:`\mathrm{Var}(\ln x) = S P S^\top + \sigma_m^2 +
(\sigma_s\,\partial \ln x/\partial j)^2` per stage :math:`j` and element (:math:`S =
dz/d\theta`, :math:`\sigma_m` a model-error floor, :math:`\sigma_s` the uncertainty of where a
profile sits along the stages, which dominates on steep tails), multiplied by the filter's
recent normalised innovation squared per reading when that exceeds 1 (covariance matching: a
filter surprised by more than it expects, as in a transient the model lags, is too confident),
reported as 95 % intervals. The cost scales with the number of parameters (tens), not with the thousands of
stage states: a dense covariance over every stage is never formed.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import casadi as ca
import numpy as np
import numpy.typing as npt
import scipy.sparse.linalg as spla

from models.dynamics import DynamicModel, PlantState
from models.elements import element
from models.errors import ConvergenceError, InputError
from models.flowsheet import Flowsheet
from models.residual import Residual, symbolic_residual, symbolic_stage_ln_y
from models.spec import InstrumentSpec
from models.stage import StageModel
from models.steady import SteadySolver

__all__ = ["MAX_LOG_SD", "Channel", "EstimateSnapshot", "Estimator", "EstimatorOptions", "Observation", "UpdateReport"]

Array = npt.NDArray[np.float64]
log = logging.getLogger(__name__)

MAX_LOG_SD = 5.0
"""Largest log standard deviation of a reported concentration (95 % band: a factor 1.8e4 each way)."""

MAX_STATE_SHIFT = 1.0
"""Cap on the first-order correction of one stage unknown (ln of a concentration: a factor e),
for an update whose uncapped correction has no consistent solution even at 1/8 of the step. Far
down a steep tail a concentration is so nonlinear in the parameters that its sensitivity, carried
along a transient, can ask for tens of ln units; the capped tail then follows the corrected
parameters through the dynamics. Not applied otherwise: near a steady state the uncapped
correction is right, and capping it always left the soft sensor 0.6 decade off in a test where
it is otherwise within 0.1."""


@dataclass(frozen=True)
class EstimatorOptions:
    r"""Tuning of the estimator.

    Attributes
    ----------
    prior_feed_rel
        Prior standard deviation of feed-concentration multipliers (log units, 0.15 = 15 %).
    prior_extractant_rel
        Prior standard deviation of the extractant multiplier (log units).
    prior_ln_d
        Prior standard deviation of ln D offsets (0.15 is about 15 % on a separation factor).
    prior_efficiency
        Prior standard deviation of the Murphree stage efficiency of a circuit that has one
        (spec ``stage_efficiency``; an additive parameter, held at or below 1). 0.05, an
        ASSUMPTION: industrial mixer-settlers are quoted above 0.9 (`../shared/data/
        chemistry_notes.md` 1, kinetics: a low-reliability trade source), so three prior
        standard deviations reach 0.85 from an efficiency of 1.
    walk_per_h
        Random-walk standard deviation per square-root hour, as a fraction of the prior.
    model_floor
        Model-error floor added to every reading's log standard deviation.
    stage_position_sd
        Structural uncertainty of the soft sensor's profiles, as an uncertainty of where along the
        cascade a profile sits, in stages (standard deviation): stage efficiencies below one,
        entrainment and the separation factors of the elements without an estimated offset shift
        a profile along the stages, which matters where it is steep (a concentration falling a
        decade per stage is uncertain by a decade per stage of shift). Added to each stage's
        log standard deviation as ``stage_position_sd * |d ln x / d stage|``; 0.5 stage is a
        Murphree efficiency about 0.98 over a 30-stage section. Widens the 95 % bands only, not
        the estimate.
    main_fraction
        Elements above this mole fraction of a feed (or circuit inflow) get parameters; below it,
        an element gets a feed multiplier only when an analyser measures it.
    history_h
        How far back states are kept for late samples, h.
    sensitivity
        How :math:`\partial z/\partial\theta` is obtained. ``"quasi_steady"``: the steady
        state's sensitivities at the current point (one sparse LU, refreshed every
        ``sensitivity_every`` updates; right only near a steady state). ``"dynamic"``: the same
        near a steady state, but while the plant is in a transient (for ``settle_h`` after an
        input moved by more than ``move_tolerance`` from its filtered value) carried along the
        trajectory instead, by the model's sensitivity equations linearised at both ends of each
        step (:meth:`~models.dynamics.DynamicModel.propagate_sensitivity`), so a reading is
        explained by what the parameters do to the state *now*, not at the steady state hundreds
        of hours ahead. ``"auto"``: dynamic up to ``dynamic_max_unknowns`` stage unknowns,
        quasi-steady beyond (the transient cost is two Jacobian evaluations and two sparse LUs of
        the DAE per step).
    move_tolerance
        Relative change of an input (from its value filtered over a few hours, so that instrument
        noise is not a move) that starts a transient.
    settle_h
        How long after a move the plant counts as in a transient, h (the slow modes of a
        countercurrent cascade take hundreds of hours; ``tb_dy``'s loops identify 150-200 h).
    dynamic_max_unknowns
        Largest plant (stage unknowns) for which ``"auto"`` chooses dynamic sensitivities.
    sensitivity_every
        Quasi-steady sensitivities: recompute them after this many updates (they change slowly).
    max_step
        Largest change of any parameter in one update, in prior standard deviations.
    max_prior_sd
        Parameters stay within this many prior standard deviations of the model's values.
    gate
        Innovation gate: when the normalised innovation squared per reading exceeds it, the
        readings' noise is inflated by the excess (robust to transients and biased readings).
    consistency_memory
        Updates over which the normalised innovation squared per reading (NIS, 1 for a filter
        whose spread matches its errors) is averaged (exponential weight ``1/consistency_memory``).
    band_inflation_max
        The soft sensor's log variances are multiplied by the averaged NIS when it exceeds 1 (the
        filter is surprised by more than it expects: in a transient the model lags the plant),
        by at most this factor; in steady operation the NIS stays near or below 1 and the bands are
        as computed. Widens the bands only, not the estimate.
    max_integration_failures
        Failed IDAS calls allowed while advancing the estimate one step (the interval is halved
        after each); beyond it the step falls back to the recovery (undo the last update, else
        restart from the steady state). Unbounded, one estimator step chased a
        hard spot through 14 halvings for minutes of wall time in a closed-loop run while the
        plant ran on.
    feed_total_sd
        What the estimator assumes is known of each feed's total rare-earth concentration: the
        feed multipliers may change the basket, but their REO-weighted sum stays at the spec's
        total within this log standard deviation (0.05: 5 %), entered at every update as one
        pseudo-reading per feed. An ASSUMPTION about plant practice (the dissolution circuit
        holds the feed tank's REO concentration, checked by routine titration), not an
        instrument of the spec; None leaves the total free. Without it the feed multipliers, the
        extractant and the ln D offsets (nearly collinear in what four analysers see) traded off
        in a closed-loop transient until the estimated feed carried 30 % less REO than the
        plant's (closed-loop benchmark, 28 November, feed basket shift).
    ln_d_level_sd
        What the estimator assumes of the common level of a circuit's :math:`\ln D` offsets
        (their mean): 0 within this standard deviation, entered at every update as one
        pseudo-reading per circuit with an estimated extractant. A common offset on every
        :math:`\ln D` does nearly what a change of the extractant does (:math:`D \propto
        [\overline{(HA)_2}]^3`; the two differ only through the organic's loading), so the
        readings decide between them only slowly, at a steady state; in a transient the filter
        traded one for the other until both were far out (closed-loop benchmark, 28 November,
        extractant drift: the extractant estimated at +4 % and the Tb and Dy offsets at -0.16 and
        -0.17 while the plant had -5 % and 0 and -0.1). An ASSUMPTION: the model's chemistry has
        the level of extraction right, to 5 % (0.05), and its error is mainly in the separation
        factors; whatever level the readings show beyond that is the extractant's (its effective
        concentration). Separation factors (differences of offsets) are not touched. None leaves
        the level free.
    """

    prior_feed_rel: float = 0.15
    prior_extractant_rel: float = 0.08
    prior_ln_d: float = 0.15
    prior_efficiency: float = 0.05
    walk_per_h: float = 0.01
    model_floor: float = 0.08
    stage_position_sd: float = 0.5
    main_fraction: float = 0.03
    history_h: float = 72.0
    sensitivity: Literal["auto", "dynamic", "quasi_steady"] = "auto"
    dynamic_max_unknowns: int = 1500
    move_tolerance: float = 0.03
    settle_h: float = 150.0
    sensitivity_every: int = 4
    max_step: float = 2.0
    max_prior_sd: float = 3.0
    gate: float = 9.0
    consistency_memory: float = 8.0
    band_inflation_max: float = 25.0
    feed_total_sd: float | None = 0.05
    ln_d_level_sd: float | None = 0.05
    max_integration_failures: int = 10


@dataclass(frozen=True)
class Channel:
    """One measured quantity an instrument provides: an element concentration or an acidity.

    Attributes
    ----------
    tag
        ``AI-121.Dy`` style name (instrument tag, dot, element) or the tag for an acidity.
    kind
        ``"analyser"`` (g/L of an element) or ``"acidity"`` (mol/L).
    circuit, stage, phase
        Where it measures (stage 0-based), for stage channels.
    stream
        The outlet stream, for product analysers.
    element
        Element symbol, for analysers.
    noise_rel
        Relative noise (log standard deviation) of the instrument.
    """

    tag: str
    kind: Literal["analyser", "acidity"]
    circuit: str
    stage: int
    phase: Literal["aqueous", "organic"]
    element: str | None
    noise_rel: float


@dataclass(frozen=True)
class Observation:
    """A reading to assimilate: value in the instrument's unit, time the sample was taken."""

    tag: str
    value: float
    sample_time_h: float


@dataclass(frozen=True)
class UpdateReport:
    """What one update did."""

    used: int
    rejected: tuple[tuple[str, str], ...]
    innovation_rms: float
    wall_time_s: float


@dataclass(frozen=True)
class CircuitEstimate:
    """Soft-sensor profiles of one circuit (mol/L, with 95 % bounds)."""

    name: str
    stages: tuple[str, ...]
    elements: tuple[str, ...]
    aqueous_mol_per_l: Array
    aqueous_low: Array
    aqueous_high: Array
    organic_mol_per_l: Array
    ph: Array

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "stages": list(self.stages),
            "elements": list(self.elements),
            "aqueous_mol_per_l": {s: self.aqueous_mol_per_l[i].tolist() for i, s in enumerate(self.elements)},
            "aqueous_low": {s: self.aqueous_low[i].tolist() for i, s in enumerate(self.elements)},
            "aqueous_high": {s: self.aqueous_high[i].tolist() for i, s in enumerate(self.elements)},
            "organic_mol_per_l": {s: self.organic_mol_per_l[i].tolist() for i, s in enumerate(self.elements)},
            "ph": self.ph.tolist(),
        }


@dataclass(frozen=True)
class EstimateSnapshot:
    """The estimator's current picture of the plant."""

    plant_time_h: float
    circuits: tuple[CircuitEstimate, ...]
    parameters: dict[str, float]
    parameter_std: dict[str, float]
    healthy: bool
    updates: int
    last_update_plant_h: float | None
    z: Array = field(repr=False)
    p: Array = field(repr=False)
    band_inflation: float = 1.0
    """Factor on the bands' log variances from the filter's recent surprise (averaged NIS)."""

    def circuit(self, name: str) -> CircuitEstimate:
        """One circuit's profiles."""
        for c in self.circuits:
            if c.name == name:
                return c
        raise KeyError(name)


def channels_from_instruments(fs: Flowsheet, instruments: Sequence[InstrumentSpec]) -> tuple[Channel, ...]:
    """The measured quantities declared in the spec (analysers and stage acidities)."""
    out: list[Channel] = []
    for ins in instruments:
        if ins.kind == "analyser":
            if ins.stream is not None:
                outlet = next(o for o in fs.outlets if o.name == ins.stream)
                lay = fs.circuits[outlet.circuit]
                circuit, stage = lay.name, outlet.stage
                phase: Literal["aqueous", "organic"] = "aqueous" if outlet.phase == "aq" else "organic"
            else:
                assert ins.circuit is not None
                assert ins.stage is not None
                circuit, stage, phase = ins.circuit, ins.stage - 1, ins.phase
            lay = fs.circuit(circuit)
            for s in ins.elements:
                if s in lay.elements:
                    out.append(Channel(f"{ins.tag}.{s}", "analyser", circuit, stage, phase, s, ins.noise_rel))
        elif ins.kind == "acidity" and ins.circuit is not None and ins.stage is not None:
            out.append(Channel(f"{ins.tag}.PV", "acidity", ins.circuit, ins.stage - 1, "aqueous", None, ins.noise_rel))
    return tuple(out)


class Estimator:
    """The soft sensor of one plant (see module docstring). Not thread-safe: one owner."""

    def __init__(
        self,
        flowsheet: Flowsheet,
        z0: Array,
        p0: Array,
        *,
        options: EstimatorOptions | None = None,
        t0_h: float = 0.0,
    ) -> None:
        self.fs = flowsheet
        self.options = options or EstimatorOptions()
        self.model = DynamicModel(flowsheet)
        self.residual = Residual(flowsheet)
        self.channels = channels_from_instruments(flowsheet, flowsheet.spec.instruments)
        self._channel_index = {c.tag: i for i, c in enumerate(self.channels)}
        self.p_base = np.array(p0, dtype=float)
        self._z0 = np.array(z0, dtype=float)
        self._p0 = np.array(p0, dtype=float)
        self.theta_names, self._theta_kind, self._theta_param, prior = self._choose_parameters()
        self.theta = np.zeros(len(self.theta_names))
        self.P = np.diag(prior**2)
        self._prior = prior
        self.state: PlantState = self.model.initial_state(z0, self.p(), t0_h)
        self._history: list[tuple[float, Array, Array]] = [(t0_h, self.state.z.copy(), self.p())]
        self._history_t: list[float] = [t0_h]
        self._sens: Array | None = None
        self._updates_since_sens = 0
        o = self.options
        self.dynamic_sensitivity = o.sensitivity == "dynamic" or (
            o.sensitivity == "auto" and flowsheet.n_unknowns <= o.dynamic_max_unknowns
        )
        self.transient = False
        self._input_ref: dict[str, float] = {}
        self._last_move_h = -math.inf
        self.updates = 0
        self.last_update_plant_h: float | None = None
        self.healthy = True
        self._undo: tuple[Array, Array, PlantState] | None = None
        self.nis_average = 1.0

    # ----------------------------------------------------------- parameters
    def _choose_parameters(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], Array]:
        fs, o = self.fs, self.options
        names: list[str] = []
        kinds: list[str] = []
        params: list[int] = []
        prior: list[float] = []
        p = self.p_base
        # a trace element an analyser measures gets its own feed multiplier too: its profile is
        # otherwise fixed at the design basket, however far the plant's basket is from it
        measured = {c.element for c in self.channels if c.element is not None}
        self._feed_totals: list[tuple[list[int], Array, float]] = []
        for f in fs.spec.feeds:
            conc = {s: p[fs.parameters.index(f"{f.name}.conc_mol_per_l.{s}")] for s in f.concentrations_mol_per_l()}
            total = sum(conc.values())
            members: list[int] = []
            member_conc: list[float] = []
            for s, c in conc.items():
                if element(s).in_treo and c > 0.0 and (c >= o.main_fraction * total or s in measured):
                    members.append(len(names))
                    member_conc.append(c)
                    names.append(f"{f.name}.feed_multiplier.{s}")
                    kinds.append("ln_scale")
                    params.append(fs.parameters.index(f"{f.name}.conc_mol_per_l.{s}"))
                    prior.append(o.prior_feed_rel)
            treo = sum(c for s, c in conc.items() if element(s).in_treo)
            if members and treo > 0.0:
                self._feed_totals.append((members, np.array(member_conc), treo - sum(member_conc)))
        self._ln_d_groups: list[list[int]] = []
        for lay in fs.circuits:
            if lay.has_f:
                names.append(f"{lay.name}.extractant_multiplier")
                kinds.append("ln_scale")
                params.append(fs.parameters.index(f"{lay.name}.extractant_mol_per_l"))
                prior.append(o.prior_extractant_rel)
            group: list[int] = []
            for s in self._main_elements(lay.name):
                group.append(len(names))
                names.append(f"{lay.name}.ln_d_offset.{s}")
                kinds.append("add")
                params.append(fs.parameters.index(f"{lay.name}.ln_d_offset.{s}"))
                prior.append(o.prior_ln_d)
            if lay.has_f and group:  # the offsets' common level is nearly the extractant's (ln_d_level_sd)
                self._ln_d_groups.append(group)
            if lay.murphree:
                names.append(f"{lay.name}.stage_efficiency_change")
                kinds.append("add")
                params.append(fs.parameters.index(f"{lay.name}.stage_efficiency"))
                prior.append(o.prior_efficiency)
        return tuple(names), tuple(kinds), tuple(params), np.array(prior)

    def _main_elements(self, circuit: str) -> list[str]:
        """Rare earths above ``main_fraction`` of what enters the circuit (steady estimate)."""
        lay = self.fs.circuit(circuit)
        st = self.residual.local(self._z0, self.p_base, jacobian=False)[lay.index]
        total_x = st.x.sum(axis=1)
        tot = sum(total_x[i] for i, s in enumerate(lay.elements) if element(s).in_treo)
        return [
            s
            for i, s in enumerate(lay.elements)
            if element(s).in_treo and total_x[i] >= self.options.main_fraction * tot
        ]

    def p(self, theta: Array | None = None, base: Array | None = None) -> Array:
        """The parameter vector for parameter estimates ``theta`` (default: current)."""
        th = self.theta if theta is None else theta
        out = np.array(self.p_base if base is None else base, dtype=float)
        for k, (kind, idx) in enumerate(zip(self._theta_kind, self._theta_param, strict=True)):
            out[idx] = out[idx] * math.exp(th[k]) if kind == "ln_scale" else out[idx] + th[k]
        return out

    def _dp_dtheta(self, p: Array) -> Array:
        d = np.zeros((p.size, self.theta.size))
        for k, (kind, idx) in enumerate(zip(self._theta_kind, self._theta_param, strict=True)):
            d[idx, k] = p[idx] if kind == "ln_scale" else 1.0
        return d

    # ------------------------------------------------------------ functions
    @cached_property
    def _measure(self) -> ca.Function:
        """``(z, p) -> h`` (ln of every channel's reading in its unit) and its Jacobians."""
        fs = self.fs
        z = ca.MX.sym("z", fs.n_unknowns)
        p = ca.MX.sym("p", fs.parameters.values.shape[0])
        out = []
        for ch in self.channels:
            lay = fs.circuit(ch.circuit)
            zk = z[lay.offset + ch.stage * lay.nv : lay.offset + (ch.stage + 1) * lay.nv]
            if ch.kind == "acidity":
                c_ha = p[fs.parameters.index(f"{lay.name}.extractant_mol_per_l")]
                t_k = p[fs.parameters.index(f"{lay.name}.temperature_k")]
                delta = ca.vertcat(*[p[fs.parameters.index(f"{lay.name}.ln_d_offset.{s}")] for s in lay.elements])
                _, acid, _ = StageModel(lay).values(zk, c_ha, t_k, delta)
                out.append(ca.log(acid))
                continue
            assert ch.element is not None
            i = lay.elements.index(ch.element)
            ln_c = zk[i]
            if ch.phase == "organic":  # the organic leaving the stage (Murphree: not at equilibrium)
                ln_c = symbolic_stage_ln_y(fs, lay, zk, p)[i]
            out.append(ln_c + math.log(element(ch.element).atomic_weight_g_per_mol))
        h = ca.vertcat(*out) if out else ca.MX.zeros(0, 1)
        return ca.Function("measure", [z, p], [h, ca.jacobian(h, z), ca.jacobian(h, p)])

    @cached_property
    def _r_p(self) -> ca.Function:
        fs = self.fs
        f = symbolic_residual(fs)
        z = ca.MX.sym("z", fs.n_unknowns)
        p = ca.MX.sym("p", fs.parameters.values.shape[0])
        return ca.Function("r_p", [z, p], [ca.jacobian(f(z, p), p)])

    def sensitivities(self, z: Array, p: Array) -> Array:
        """Quasi-steady ``dz/dtheta`` at (z, p): one sparse LU, one solve per parameter."""
        _, jac = self.residual.evaluate(z, p)
        assert jac is not None
        r_p = np.asarray(self._r_p(z, p))
        rhs = r_p @ self._dp_dtheta(p)
        return -spla.splu(jac.tocsc(), permc_spec="NATURAL").solve(rhs)

    # ---------------------------------------------------------- propagation
    def predict(self, t_h: float, inputs: Mapping[str, float] | None = None) -> None:
        """Advance the state to plant time ``t_h`` with measured inputs (parameter names)."""
        if self.dynamic_sensitivity and self._sens is None:
            # the sensitivities to carry start at the current state with the inputs it has now
            self._sens = self._finite_sensitivities(self.state.z, self.p())
        for name in inputs or {}:  # an input first seen starts from the model's value
            if name in self.fs.parameters:
                self._input_ref.setdefault(name, float(self.p_base[self.fs.parameters.index(name)]))
        for name, value in (inputs or {}).items():
            if name not in self.fs.parameters:
                raise InputError(f"inputs: unknown parameter {name!r}", field="inputs")
            if not math.isfinite(value):
                raise InputError(f"inputs.{name}: {value!r} is not finite", field=f"inputs.{name}")
            self.p_base[self.fs.parameters.index(name)] = float(value)
        dt = t_h - self.state.t_h
        if dt <= 1e-9:
            return
        self._note_moves(inputs or {}, t_h, dt)
        walk = (self.options.walk_per_h * self._prior) ** 2 * dt
        try:
            state = self.model.advance(self.state, self.p(), dt, max_failures=self.options.max_integration_failures)
            if self.transient:
                self._sens = self._advance_sensitivities(state, dt)
        except ConvergenceError:
            state = self._recover(dt)
        self._undo = None
        self.P = self.P + np.diag(walk)
        self.state = state
        self._history.append((self.state.t_h, self.state.z.copy(), self.p()))
        self._history_t.append(self.state.t_h)
        cutoff = self.state.t_h - self.options.history_h
        while len(self._history) > 2 and self._history_t[0] < cutoff:
            self._history.pop(0)
            self._history_t.pop(0)

    def _note_moves(self, inputs: Mapping[str, float], t_h: float, dt: float) -> None:
        """Track input moves (against each input's value filtered with a 2 h time constant) and
        whether the plant is in a transient for the sensitivities (see :class:`EstimatorOptions`)."""
        o = self.options
        alpha = dt / (dt + 2.0)
        for name, value in inputs.items():
            ref = self._input_ref[name]
            if abs(value - ref) > o.move_tolerance * max(abs(ref), 1e-12):
                self._last_move_h = t_h
                self._input_ref[name] = value
            else:
                self._input_ref[name] = ref + alpha * (value - ref)
        self.transient = self.dynamic_sensitivity and t_h - self._last_move_h < o.settle_h

    def _advance_sensitivities(self, new: PlantState, dt: float) -> Array | None:
        r""":math:`\partial z/\partial\theta` at the end of a step of ``dt`` hours that took the
        estimate from ``self.state`` to ``new``: the current sensitivities carried along the step
        by the model's linearised sensitivity equations
        (:meth:`~models.dynamics.DynamicModel.propagate_sensitivity`). Starts from the quasi-steady
        sensitivities (the estimate starts at a steady state); None (quasi-steady next time) when
        they are not available or the linear algebra fails."""
        sens = self._sens
        if sens is None:
            return None
        p = self.p()
        try:
            out = self.model.propagate_sensitivity(self.state, new, p, sens, self._dp_dtheta(p))
        except (RuntimeError, ValueError):  # splu: a singular step matrix
            log.info("estimator: the sensitivities could not be carried; quasi-steady sensitivities next")
            return None
        return out if np.all(np.isfinite(out)) else None

    def _recover(self, dt: float) -> PlantState:
        """The model cannot integrate from the current state: undo the last update (its corrected
        state can be consistent yet beyond what the integrator handles) and integrate again; failing
        that, restart from the steady state at the current parameters (a quasi-steady estimate),
        found from the current state, else by continuation from the steady state the estimator
        started at, else from a cold start (a state too far gone to start from must not leave the
        estimator dead: a closed-loop run lost its estimator for the last 130 plant hours that way).

        Before undoing the update whole, its parameters are kept and only its state correction
        is dropped (the state before the update made consistent with them): undoing it whole
        let the next update propose nearly the same step, undone again, nine times in a minute
        of wall time in a closed-loop run, until the safety gate held the setpoints for want of
        a fresh update.

        Raises :class:`~models.errors.ConvergenceError` when none works."""
        if self._undo is not None:
            theta, cov, before = self._undo
            self._sens = None
            self._undo = None
            try:
                start = self.model.consistent_state(before.z, self.p(), before.t_h)
                state = self.model.advance(start, self.p(), dt, max_failures=self.options.max_integration_failures)
                self._history[-1] = (start.t_h, start.z.copy(), self.p())
                log.warning("estimator: the last update's state correction was dropped, its parameters kept "
                            "(the model could not integrate from the corrected state)")
                return state
            except ConvergenceError:
                pass
            self.theta, self.P, self.state = theta, cov, before
            self._history[-1] = (self.state.t_h, self.state.z.copy(), self.p())
            try:
                state = self.model.advance(
                    self.state, self.p(), dt, max_failures=self.options.max_integration_failures
                )
                log.warning("estimator: the last update was undone (the model could not integrate from it)")
                return state
            except ConvergenceError:
                pass
        p = self.p()
        solver = self._steady_solver
        res = solver.solve(p, z0=self.state.z, p0=p)
        if not res.success:
            # the state is too far gone to start from: walk from the steady state the estimator
            # started at (its own parameters) to the current ones, or solve from a cold start
            res = solver.solve(p, z0=self._z0, p0=self._p0)
        if not res.success:
            res = solver.solve(p)
        if not res.success:
            raise ConvergenceError(
                f"estimator: the model can neither integrate from its state nor find a steady state ({res.message})",
                details={"t_h": self.state.t_h},
            )
        log.warning("estimator: restarted from the steady state at the current parameters (integration failed)")
        self._sens = None
        return self.model.initial_state(res.z, p, self.state.t_h + dt)

    @cached_property
    def _steady_solver(self) -> SteadySolver:
        """The steady solver of the recovery (built once)."""
        return SteadySolver(self.fs)

    def _state_at(self, t_h: float) -> tuple[Array, Array] | None:
        """The state at plant time ``t_h``: linear (in the stage unknowns, logarithms of
        concentrations) between the stored states that bracket it, with the parameters of the
        later one (the inputs of a step hold over the whole step). The estimator steps 2-3 plant
        hours at a time in a fast-run closed loop while the analysers sample every 10-15 minutes:
        compared with the state at the start of its step, a reading taken in a transient near its
        end carries hours of the plant's move as a bias the parameters then absorb."""
        ts = self._history_t
        if not ts or t_h < ts[0] - 1e-9:
            return None
        k = bisect.bisect_right(ts, t_h + 1e-9) - 1
        _, z, p = self._history[max(k, 0)]
        if k + 1 >= len(ts) or t_h <= ts[k] + 1e-9:
            return z, p
        _, z_next, p_next = self._history[k + 1]
        w = (t_h - ts[k]) / (ts[k + 1] - ts[k])
        return z + w * (z_next - z), p_next

    # --------------------------------------------------------------- update
    def update(self, observations: Sequence[Observation]) -> UpdateReport:
        """Assimilate readings (each at its own sample time); returns what was used."""
        t0 = time.perf_counter()
        rejected: list[tuple[str, str]] = []
        rows: list[tuple[int, float, Array, Array, float]] = []
        for ob in observations:
            k = self._channel_index.get(ob.tag)
            if k is None:
                rejected.append((ob.tag, "not a declared analyser or acidity channel"))
                continue
            if not (math.isfinite(ob.value) and ob.value > 0.0):
                rejected.append((ob.tag, f"value {ob.value!r} is not a positive finite reading"))
                continue
            if ob.sample_time_h > self.state.t_h + 1e-6:
                rejected.append((ob.tag, "sample time is in the future of the estimator"))
                continue
            past = self._state_at(ob.sample_time_h)
            if past is None:
                rejected.append((ob.tag, "sample older than the kept history"))
                continue
            rows.append((k, math.log(ob.value), past[0], past[1], ob.sample_time_h))
        if not rows:
            return UpdateReport(0, tuple(rejected), math.nan, time.perf_counter() - t0)
        stale = not self.transient and self._updates_since_sens >= self.options.sensitivity_every
        if self._sens is None or stale:
            fresh = self._finite_sensitivities(self.state.z, self.p())
            if fresh is not None:
                self._sens = fresh
                self._updates_since_sens = 0
        sens = self._sens
        if sens is None:
            # no usable sensitivities yet (a singular steady Jacobian, e.g. a flow at zero during a
            # pump trip): nothing can be learnt now; tried again at the next update
            why = "model sensitivities are not finite at this operating point"
            rejected.extend((self.channels[k].tag, why) for k, *_ in rows)
            return UpdateReport(0, tuple(rejected), math.nan, time.perf_counter() - t0)
        innov, h_rows, sigma, used = [], [], [], []
        # the readings of one sample time share one state: every channel's prediction and its
        # Jacobian rows (sparse h_z times the sensitivities) are formed once per sample time
        at_state: dict[float, tuple[Array, Array]] = {}
        for k, y, z_s, p_s, t_s in rows:
            key = round(t_s, 9)
            if key not in at_state:
                out = self._measure(z_s, p_s)
                h_theta = out[1].sparse() @ sens + out[2].sparse() @ self._dp_dtheta(p_s)
                at_state[key] = (np.asarray(out[0]).ravel(), np.asarray(h_theta))
            hv, h_all = at_state[key]
            h_row = h_all[k]
            if not (math.isfinite(hv[k]) and np.all(np.isfinite(h_row))):
                rejected.append((self.channels[k].tag, "prediction not finite at the sample time"))
                continue
            innov.append(y - hv[k])
            h_rows.append(h_row)
            ch = self.channels[k]
            sigma.append(math.hypot(max(ch.noise_rel, 1e-3), self.options.model_floor))
            used.append(k)
        if not used:
            return UpdateReport(0, tuple(rejected), math.nan, time.perf_counter() - t0)
        nu = np.array(innov)
        H = np.array(h_rows)
        r_var = np.array(sigma) ** 2
        # information form (readings can outnumber the parameters a hundredfold: hree_refinery has
        # 1639 channels and 36 parameters): with A = P^-1 + H' R^-1 H, the gain P H' S^-1 is
        # A^-1 H' R^-1 and S^-1 = R^-1 - R^-1 H A^-1 H' R^-1 (Woodbury); only n x n systems are solved
        p_inv = np.linalg.inv(self.P)

        def information(r: Array) -> tuple[Array, Array]:
            h_r = H.T / r  # H' R^-1
            return p_inv + h_r @ H, h_r

        a_mat, h_r = information(r_var)
        # innovation gate: readings much further from the prediction than the filter expects
        # (normalised innovation squared per reading above `gate`: a transient the model lags, a
        # biased instrument) are not believed at face value; their noise is inflated by the excess
        w = h_r @ nu
        nis = float(nu @ (nu / r_var) - w @ np.linalg.solve(a_mat, w)) / len(nu)
        if math.isfinite(nis):
            self.nis_average += (nis - self.nis_average) / max(self.options.consistency_memory, 1.0)
        if nis > self.options.gate:
            r_var = r_var * (nis / self.options.gate)
            a_mat, h_r = information(r_var)
        rms = float(np.sqrt(np.mean(nu**2)))
        pseudo = [rows for rows in (self._feed_total_rows(), self._ln_d_level_rows()) if rows is not None]
        if pseudo:  # after the gate: an assumption is not a surprised reading
            H = np.vstack([H, *(r[0] for r in pseudo)])
            nu = np.concatenate([nu, *(r[1] for r in pseudo)])
            r_var = np.concatenate([r_var, *(r[2] for r in pseudo)])
            a_mat, h_r = information(r_var)
        info = h_r @ H  # H' R^-1 H
        lower, upper = self._bounds
        a_inv, d_theta = self._bounded_solve(a_mat, h_r @ nu, lower, upper)
        limit = self.options.max_step * self._prior
        scale = float(np.max(np.abs(d_theta) / limit)) if d_theta.size else 0.0
        gain = 1.0 / scale if scale > 1.0 else 1.0
        # parameters stay within `max_prior_sd` prior standard deviations of the model's values:
        # beyond that the model is wrong in a way the parameters cannot represent (one about to
        # cross its bound shortens the step; one at its bound is held, see _bounded_solve)
        target = np.clip(self.theta + gain * d_theta, lower, upper)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.abs(d_theta) > 0, (target - self.theta) / (gain * d_theta), 1.0)
        gain *= float(np.clip(np.min(ratio), 0.0, 1.0)) if ratio.size else 1.0
        # the first-order correction of the dynamic state must give a consistent state; when it
        # does not (a large step near the edge of the steady region), halve the step, and last
        # take the step with the correction of each stage unknown capped (MAX_STATE_SHIFT); the
        # update is all or nothing: on failure parameters, covariance and state stay as they were
        full = gain
        for attempt in range(5):
            capped = attempt == 4
            gain = full if capped else full * 0.5**attempt
            step = gain * d_theta
            shift = sens @ step
            if capped:
                shift = np.clip(shift, -MAX_STATE_SHIFT, MAX_STATE_SHIFT)
            try:
                state = self.model.consistent_state(self.state.z + shift, self.p(self.theta + step), self.state.t_h)
            except ConvergenceError:
                continue
            break
        else:
            # fresh quasi-steady sensitivities next time, also in a transient: carried ones that
            # failed here fail again (a closed-loop run refused every update for 28 plant h so)
            self._sens = None
            self._updates_since_sens = self.options.sensitivity_every
            raise ConvergenceError(
                "estimator update refused: the corrected plant state is not consistent even at 1/8 of the step "
                "or with the correction capped; "
                "the estimate is kept as it was",
                details={"t_h": self.state.t_h},
            )
        self._undo = (self.theta.copy(), self.P.copy(), self.state)
        # covariance of the gain actually applied (Joseph form, valid for a damped gain)
        a_kh = np.eye(self.theta.size) - gain * a_inv @ info  # I - g K H
        self.P = a_kh @ self.P @ a_kh.T + gain**2 * a_inv @ info @ a_inv  # + g^2 K R K'
        self.P = 0.5 * (self.P + self.P.T)
        self.theta = self.theta + gain * d_theta
        self.state = state
        self._history[-1] = (self.state.t_h, self.state.z.copy(), self.p())
        self._updates_since_sens += 1
        self.updates += 1
        self.last_update_plant_h = self.state.t_h
        self.healthy = bool(np.all(np.isfinite(self.theta)) and np.all(np.isfinite(self.state.z)))
        return UpdateReport(len(used), tuple(rejected), rms, time.perf_counter() - t0)

    @cached_property
    def _bounds(self) -> tuple[Array, Array]:
        """Lower and upper bounds of the parameters: ``max_prior_sd`` prior standard deviations
        either way, and a stage efficiency at most 1."""
        bound = self.options.max_prior_sd * self._prior
        upper = bound.copy()
        for k, name in enumerate(self.theta_names):
            if name.endswith(".stage_efficiency_change"):
                upper[k] = min(upper[k], 1.0 - float(self.p_base[self._theta_param[k]]))
        return -bound, upper

    def _bounded_solve(self, a_mat: Array, b: Array, lower: Array, upper: Array) -> tuple[Array, Array]:
        """The update ``A^-1 b`` with every parameter that sits at its bound and would be pushed
        beyond it held where it is (an active set): the others are updated with the free block of
        the information matrix ``A`` (the precision of the free parameters given the held ones).
        Returns the (zero-padded) inverse used, for the covariance, and the step. Scaling the
        whole step to keep a parameter at its bound froze every parameter for the rest of a
        closed-loop run (28 November, feed basket shift: the Tb feed multiplier at +3 prior
        standard deviations held all seven for 80 plant hours)."""
        n = b.size
        free = np.ones(n, dtype=bool)
        a_inv = np.zeros((n, n))
        d = np.zeros(n)
        for _ in range(n + 1):
            a_inv[:] = 0.0
            d[:] = 0.0
            if free.any():
                block = np.ix_(free, free)
                a_inv[block] = np.linalg.inv(a_mat[block])
                d = a_inv @ b
            at_upper = (self.theta >= upper - 1e-9 * np.abs(upper)) & (d > 0.0)
            at_lower = (self.theta <= lower + 1e-9 * np.abs(lower)) & (d < 0.0)
            held = free & (at_upper | at_lower)
            if not held.any():
                break
            free &= ~held
        return a_inv, d

    def _feed_total_rows(self) -> tuple[Array, Array, Array] | None:
        """One pseudo-reading per feed (see ``EstimatorOptions.feed_total_sd``): ln of the feed's
        total REO over the spec's is 0. Rows (Jacobian in the parameters), innovations, variances."""
        sd = self.options.feed_total_sd
        if sd is None or not self._feed_totals:
            return None
        rows, innov = [], []
        for members, conc, rest in self._feed_totals:
            scaled = conc * np.exp(self.theta[members])
            total = float(scaled.sum()) + rest
            row = np.zeros(self.theta.size)
            row[members] = scaled / total
            rows.append(row)
            innov.append(-math.log(total / (float(conc.sum()) + rest)))
        return np.array(rows), np.array(innov), np.full(len(rows), sd**2)

    def _ln_d_level_rows(self) -> tuple[Array, Array, Array] | None:
        """One pseudo-reading per circuit with an estimated extractant (see
        ``EstimatorOptions.ln_d_level_sd``): the mean of its ln D offsets is 0. Rows (Jacobian in
        the parameters), innovations, variances."""
        sd = self.options.ln_d_level_sd
        if sd is None or not self._ln_d_groups:
            return None
        rows = np.zeros((len(self._ln_d_groups), self.theta.size))
        for r, members in enumerate(self._ln_d_groups):
            rows[r, members] = 1.0 / len(members)
        return rows, -rows @ self.theta, np.full(len(rows), sd**2)

    def _finite_sensitivities(self, z: Array, p: Array) -> Array | None:
        """:meth:`sensitivities`, or None where they are not finite (singular steady Jacobian)."""
        try:
            sens = self.sensitivities(z, p)
        except (RuntimeError, ValueError):  # splu: the factor is exactly singular
            return None
        return sens if np.all(np.isfinite(sens)) else None

    # ------------------------------------------------------------- results
    @property
    def sensitivity(self) -> Array | None:
        r"""The :math:`\partial z/\partial\theta` the next update will use (stage unknowns x
        parameters), dynamic or quasi-steady (see :class:`EstimatorOptions`); None before the first."""
        return None if self._sens is None else self._sens.copy()

    def snapshot(self) -> EstimateSnapshot:
        """Every stage's composition with 95 % bounds, and the parameter estimates."""
        z, p = self.state.z, self.p()
        if self._sens is None:
            self._sens = self._finite_sensitivities(z, p)
        sens = self._sens
        if sens is None:  # no finite sensitivities yet: a wide band (every parameter's variance at unit gain)
            var_z = np.full(z.size, float(np.trace(self.P)) + self.options.model_floor**2)
        else:
            var_z = np.einsum("ij,jk,ik->i", sens, self.P, sens) + self.options.model_floor**2
        # a filter surprised by more than it expects (averaged NIS above 1) is too confident:
        # its bands are widened by that factor (covariance matching)
        inflation = float(np.clip(self.nis_average, 1.0, self.options.band_inflation_max))
        states = self.residual.local(z, p, jacobian=False)
        circuits = []
        for st in states:
            lay = st.lay
            n, N, nv = lay.n_el, lay.n_stages, lay.nv
            idx = lay.offset + np.arange(N)[None, :] * nv + np.arange(n)[:, None]
            ln_x = np.log(np.maximum(st.x, 1e-300))
            slope = np.gradient(ln_x, axis=1) if N > 1 else np.zeros_like(ln_x)
            # capped: next to a species at the numerical floor the slope is hundreds of ln units
            # per stage, and a band of exp(1.96 x 300) is no information (and not a finite number)
            sd = np.sqrt(inflation * (var_z[idx] + (self.options.stage_position_sd * slope) ** 2))
            sd = np.minimum(np.nan_to_num(sd, nan=MAX_LOG_SD, posinf=MAX_LOG_SD), MAX_LOG_SD)
            circuits.append(
                CircuitEstimate(
                    name=lay.name,
                    stages=lay.stage_labels(),
                    elements=lay.elements,
                    aqueous_mol_per_l=st.x.copy(),
                    aqueous_low=st.x * np.exp(-1.96 * sd),
                    aqueous_high=st.x * np.exp(1.96 * sd),
                    organic_mol_per_l=st.y.copy(),
                    ph=-np.log10(np.exp(st.z[n])),
                )
            )
        std = np.sqrt(np.diag(self.P))
        return EstimateSnapshot(
            plant_time_h=self.state.t_h,
            circuits=tuple(circuits),
            parameters=dict(zip(self.theta_names, self.theta.tolist(), strict=True)),
            parameter_std=dict(zip(self.theta_names, std.tolist(), strict=True)),
            healthy=self.healthy,
            updates=self.updates,
            last_update_plant_h=self.last_update_plant_h,
            z=z.copy(),
            p=p,
            band_inflation=inflation,
        )
