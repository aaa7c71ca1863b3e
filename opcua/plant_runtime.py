r"""The simulated plant: true parameters, actuators, instruments and scenarios around the dynamic model.

:class:`PlantRuntime` owns one :class:`~models.dynamics.DynamicModel` run. It is synchronous and
thread-safe: the OPC UA server calls :meth:`PlantRuntime.advance` in a worker thread
(``asyncio.to_thread``) and the setpoint, mode and scenario methods from the event loop; a lock
guards the shared state and the integration itself runs outside it.

What the runtime adds to the model
    **True parameters.** The plant runs its own parameters (:mod:`opcua.mismatch`): distribution
    ratio factors, extractant concentration, feed basket, and drifts (extractant loss, basket
    drift) evaluated at the middle of every step.

    **Actuators.** A setpoint is not the flow: the actual value :math:`u` of every controlled
    manipulated variable follows its setpoint :math:`r` as a first-order lag,
    :math:`\tau\,\dot u = r - u` with :math:`\tau` = ``actuator_time_constant_h`` (2 min of plant
    time by default: a flow loop with pump and valve). Over a step of length :math:`h` the model
    receives the step average :math:`\bar u = r + (u_0 - r)\,\tfrac{\tau}{h}(1 - e^{-h/\tau})`
    (exact for the integral of the flow). In ``MAN`` mode the actuator holds its value; a pump
    trip forces it to 0 at once (it recovers with the lag after the trip); a stuck valve freezes it.

    **Instruments** (from the spec). A transmitter or analyser reading at plant time :math:`t_s`
    is the true value at :math:`t_s` (linear interpolation between steps) in engineering units,
    times :math:`1 + \epsilon\,\mathcal{N}(0,1)` (``noise_rel``), plus any scenario bias.
    Samples are taken every ``sample_period_s`` (at most one per step for transmitters) and
    **published ``delay_s`` later**: the value published at :math:`t` is the sample taken at
    :math:`t - \mathrm{delay}`, stamped with its sample time. Below ``detection_limit`` an
    analyser publishes the limit with an Uncertain/low-limit status; beyond the range, the range
    end (Uncertain, EU exceeded). Temperatures are the circuit's temperature; levels are not
    modelled (a constant 50 % of span, with noise).

    **Scenarios** (:mod:`opcua.scenarios`) take effect at the first step boundary at or after
    their time (the step is ``speed x tick`` of plant time: 30 s at speed 60).

Units inside are the internal ones (mol/L, L/h, h, K); readings are in engineering units.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from asyncua import ua

from models.dynamics import DynamicModel, PlantState
from models.elements import reo_purity
from models.errors import ConvergenceError, InputError, NotFoundError
from models.flowsheet import Flowsheet
from models.steady import SteadySolver
from opcua import status as st
from opcua.mismatch import Mismatch
from opcua.scenarios import Scenario, ScenarioEvent, ScenarioKind
from opcua.tags import TagInfo, TagRole, from_engineering_units, plant_tags, to_engineering_units

__all__ = [
    "MODES",
    "Notice",
    "PlantRuntime",
    "Reading",
    "RuntimeOptions",
    "StepReport",
    "steady_initial_state",
]

Array = npt.NDArray[np.float64]
log = logging.getLogger(__name__)

MODES: Final = ("AUTO", "MAN")
"""Controller modes: AUTO (the actuator follows SP) and MAN (the actuator holds its output)."""

RATE_WINDOW_H: Final = 1.0
"""Rate-of-change rule: over any window of this many plant hours a setpoint moves at most
``max_rate_per_h x RATE_WINDOW_H``."""


@dataclass(frozen=True)
class RuntimeOptions:
    """Options of the simulated plant.

    Attributes
    ----------
    actuator_time_constant_h
        First-order time constant from setpoint to actual value, h (2 min).
    seed
        Seed of the measurement noise (None: fresh entropy).
    max_samples_per_step
        At most this many analyser samples are reported per instrument and step (the latest).
    level_fraction
        Reading of level transmitters as a fraction of span (levels are not modelled).
    drift_step_h
        Drifting parameters of the equilibrium (extractant) change in steps of this length, h;
        each change re-solves the stage equilibria (:meth:`DynamicModel.consistent_state`).
    """

    actuator_time_constant_h: float = 2.0 / 60.0
    seed: int | None = None
    max_samples_per_step: int = 32
    level_fraction: float = 0.5
    drift_step_h: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.actuator_time_constant_h) and self.actuator_time_constant_h > 0.0):
            raise InputError(
                f"actuator_time_constant_h: {self.actuator_time_constant_h!r} must be > 0 h",
                field="actuator_time_constant_h",
            )


@dataclass(frozen=True)
class Reading:
    """One published value: tag, value in engineering units (a string for MODE), OPC UA status
    code and the plant time it refers to (the sample time for a delayed analyser)."""

    tag: str
    value: float | str
    status: int
    t_h: float


@dataclass(frozen=True)
class Notice:
    """A scenario event starting or ending (becomes an OPC UA event and a historian event)."""

    kind: str
    target: str
    message: str
    t_h: float
    starting: bool


@dataclass(frozen=True)
class StepReport:
    """What one :meth:`PlantRuntime.advance` produced."""

    t_h: float
    steps: int
    readings: tuple[Reading, ...]
    notices: tuple[Notice, ...]
    wall_s: float
    discarded: bool = False


def steady_initial_state(fs: Flowsheet, p: Array, cache_dir: Path | None = None) -> Array:
    """Steady stage unknowns of the plant at parameters ``p`` (a cold solve takes seconds).

    With ``cache_dir`` the solution is kept in ``<cache_dir>/<hash>.npy`` keyed by the spec and
    the parameter values, so a restart with the same plant starts at once.

    Raises
    ------
    models.errors.ConvergenceError
        The steady solve failed.
    """
    key = hashlib.sha256(fs.spec.model_dump_json().encode() + np.asarray(p, dtype=float).tobytes()).hexdigest()[:32]
    path = cache_dir / f"steady-{key}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            z = np.load(path)
            if z.shape == (fs.n_unknowns,) and np.all(np.isfinite(z)):
                log.info("steady state from cache %s", path)
                return np.asarray(z, dtype=float)
        except (OSError, ValueError):
            log.warning("ignoring unreadable steady-state cache %s", path)
    t0 = time.perf_counter()
    res = SteadySolver(fs).solve(p)
    if not res.success:
        raise ConvergenceError(f"steady state of the plant failed: {res.message}", details={"status": res.status})
    log.info("steady state of %s solved in %.1f s", fs.spec.plant.name, time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, res.z)
        tmp.replace(path)
    return np.asarray(res.z, dtype=float)


@dataclass
class _Sampler:
    """Sampling state of one measured tag."""

    tag: TagInfo
    probe: int
    period_h: float
    delay_h: float
    k_last: int
    last_value: float = math.nan
    last_status: int = st.WAITING.value
    outage_end_h: float | None = None  # set while in or recovering from an outage


@dataclass
class _Loop:
    """A controlled manipulated variable: setpoint, actuator, mode, setpoint history."""

    instrument: str
    variable: str
    index: int
    sp: float
    actual: float
    mode: str = "AUTO"
    history: list[tuple[float, float]] = field(default_factory=list)
    dirty: bool = True


class PlantRuntime:
    """The simulated plant (see the module docstring).

    Parameters
    ----------
    fs
        The flowsheet (the same structure as the twin's model).
    z0
        Steady stage unknowns at the plant's initial parameters (:func:`steady_initial_state`).
    mismatch
        The plant's true parameters and drifts (default: none).
    options
        Actuator and instrument options.
    model
        A :class:`DynamicModel` to reuse (built when omitted).
    """

    def __init__(
        self,
        fs: Flowsheet,
        z0: Array,
        mismatch: Mismatch | None = None,
        options: RuntimeOptions | None = None,
        model: DynamicModel | None = None,
    ) -> None:
        self.fs = fs
        self.mismatch = mismatch or Mismatch()
        self.options = options or RuntimeOptions()
        self.model = model or DynamicModel(fs)
        self.tags: tuple[TagInfo, ...] = plant_tags(fs.spec)
        self._by_tag = {t.tag: t for t in self.tags}
        self.p0 = self.mismatch.initial_parameters(fs)
        self.z0 = np.array(z0, dtype=float)
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(self.options.seed)
        self._probes: list[tuple[str, Any]] = []
        self._measured = [t for t in self.tags if t.role in (TagRole.PV, TagRole.ELEMENT)]
        for t in self._measured:
            self._probes.append(self._make_probe(t))
        names = fs.parameters.names
        self._algebraic = np.array(
            [
                i
                for i, n in enumerate(names)
                if n.endswith((".extractant_mol_per_l", ".temperature_k")) or ".ln_d_offset." in n
            ],
            dtype=int,
        )
        self._generation = 0
        self._initial = self.model.initial_state(self.z0, self.p0)
        self._reset_locked()

    # ---------------------------------------------------------------- set-up
    def _make_probe(self, t: TagInfo) -> tuple[str, Any]:
        fs = self.fs
        spec = next(i for i in fs.spec.instruments if i.tag == t.instrument)
        if t.role is TagRole.ELEMENT:
            assert t.element is not None
            if spec.stream is not None:
                if spec.stream in {f.name for f in fs.spec.feeds}:
                    name = f"{spec.stream}.conc_mol_per_l.{t.element}"
                    return ("param", fs.parameters.index(name)) if name in fs.parameters else ("const", 0.0)
                out = next(o for o in fs.outlets if o.name == spec.stream)
                lay = fs.circuits[out.circuit]
                if t.element not in lay.elements:
                    return ("const", 0.0)
                return ("conc", (out.circuit, out.phase, lay.elements.index(t.element), out.stage))
            assert spec.circuit is not None
            assert spec.stage is not None
            lay = fs.circuit(spec.circuit)
            if t.element not in lay.elements:
                return ("const", 0.0)
            phase = "aq" if spec.phase == "aqueous" else "org"
            return ("conc", (lay.index, phase, lay.elements.index(t.element), spec.stage - 1))
        if t.variable is not None:
            return ("param", fs.parameters.index(t.variable))
        if spec.kind == "temperature":
            assert spec.circuit is not None
            return ("param", fs.parameters.index(f"{spec.circuit}.temperature_k"))
        if spec.kind == "acidity":
            assert spec.circuit is not None
            assert spec.stage is not None
            return ("acid", (fs.circuit(spec.circuit).index, spec.stage - 1))
        return ("const", self.options.level_fraction)

    def _reset_locked(self) -> None:
        self._generation += 1
        self._state: PlantState = self._initial
        self._p: Array = self.p0.copy()
        self._scenario: Scenario | None = None
        self._scenario_t0 = 0.0
        self._announced: set[tuple[int, bool]] = set()
        self._loops: dict[str, _Loop] = {}
        for t in self.tags:
            if t.role is TagRole.SP:
                assert t.variable is not None
                idx = self.fs.parameters.index(t.variable)
                self._loops[t.instrument] = _Loop(
                    t.instrument, t.variable, idx, float(self.p0[idx]), float(self.p0[idx])
                )
        self._stuck: dict[str, float] = {}
        vec = self._true_vector(self._state, self._p)
        self._history: deque[tuple[float, Array]] = deque([(-1e9, vec), (0.0, vec)])
        self._samplers: list[_Sampler] = []
        for k, t in enumerate(self._measured):
            period = max(t.sample_period_s, 1e-3) / 3600.0
            delay = t.delay_s / 3600.0
            self._samplers.append(_Sampler(t, k, period, delay, math.floor(-delay / period + 1e-9)))
        self._pending: list[Reading] = []
        self._pending_notices: list[Notice] = []
        self._sample_all_at_start()

    def _sample_all_at_start(self) -> None:
        for s in self._samplers:
            ts = s.k_last * s.period_h
            self._pending.append(self._take_sample(s, ts, self._history[-1][1]))
        self._pending.extend(self._loop_readings(0.0, force=True))

    # ---------------------------------------------------------------- queries
    @property
    def t_h(self) -> float:
        """Plant hours since the start (or reset) of the run."""
        return self._state.t_h

    @property
    def generation(self) -> int:
        """Incremented by every reset (a step computed before a reset is discarded)."""
        return self._generation

    def tag(self, name: str) -> TagInfo:
        """A tag by name (raises :class:`~models.errors.NotFoundError`)."""
        try:
            return self._by_tag[name]
        except KeyError:
            raise NotFoundError(f"tag {name!r} does not exist", field="tag") from None

    def setpoint(self, instrument: str) -> float:
        """The current setpoint of a controller, in engineering units."""
        with self._lock:
            loop = self._loop(instrument)
            return to_engineering_units(loop.sp, self._by_tag[f"{instrument}.SP"])

    def mode(self, instrument: str) -> str:
        """The current mode of a controller."""
        with self._lock:
            return self._loop(instrument).mode

    def _loop(self, instrument: str) -> _Loop:
        try:
            return self._loops[instrument]
        except KeyError:
            raise NotFoundError(f"{instrument!r} is not a controller", field="tag") from None

    @property
    def scenario(self) -> Scenario | None:
        """The loaded scenario, if any."""
        return self._scenario

    # ---------------------------------------------------------------- setpoints
    def check_setpoint(self, tag: str, value: float) -> float:
        """Check a setpoint write (engineering units); return the current setpoint.

        Rules: the value lies in the SP's EURange (the manipulated bounds), and over any
        :data:`RATE_WINDOW_H` of plant time the setpoint moves at most ``max_rate_per_h x 1 h``:
        ``|value - v| <= max_rate_per_h`` for the setpoint ``v`` in force at every moment of the
        last hour (a single write may move it by the hourly allowance; a second write in the same
        hour only by what is left).

        Raises
        ------
        opcua.status.SetpointRangeError, opcua.status.SetpointRateError
        """
        info = self.tag(tag)
        lo, hi = info.eu_range
        if not (math.isfinite(value) and lo <= value <= hi):
            raise st.SetpointRangeError(
                f"{tag}: {value!r} is outside the setpoint range [{lo:g}, {hi:g}] {info.unit}",
                field=tag,
                details={"low": lo, "high": hi},
            )
        with self._lock:
            loop = self._loop(info.instrument)
            current = to_engineering_units(loop.sp, info)
            rate = info.rate_limit_per_h
            if rate is not None:
                t = self._state.t_h
                window = [v for (tc, v) in loop.history if tc > t - RATE_WINDOW_H]
                before = [v for (tc, v) in loop.history if tc <= t - RATE_WINDOW_H]
                window.append(before[-1] if before else (loop.history[0][1] if loop.history else loop.sp))
                window.append(loop.sp)
                worst = max(abs(value - to_engineering_units(v, info)) for v in window)
                allowance = rate * RATE_WINDOW_H
                if worst > allowance * (1.0 + 1e-9):
                    raise st.SetpointRateError(
                        f"{tag}: a move to {value:g} {info.unit} exceeds the rate limit of {rate:g} {info.unit}/h "
                        f"(the setpoint may move at most {allowance:g} {info.unit} in any {RATE_WINDOW_H:g} h; "
                        f"it would move {worst:g})",
                        field=tag,
                        details={"max_rate_per_h": rate, "move": worst},
                    )
            return current

    def apply_setpoint(self, tag: str, value: float) -> Reading:
        """Check (:meth:`check_setpoint`) and apply a setpoint in engineering units; returns the
        SP reading to publish. Raises the refusal, and then changes nothing."""
        info = self.tag(tag)
        with self._lock:
            self.check_setpoint(tag, value)
            loop = self._loop(info.instrument)
            t = self._state.t_h
            if not loop.history:
                loop.history.append((-math.inf, loop.sp))
            loop.sp = from_engineering_units(value, info)
            loop.history.append((t, loop.sp))
            cut = t - RATE_WINDOW_H
            older = [h for h in loop.history if h[0] <= cut]
            loop.history = older[-1:] + [h for h in loop.history if h[0] > cut]
            return Reading(tag, float(value), st.GOOD.value, t)

    def set_mode(self, instrument: str, mode: str) -> Reading:
        """Set a controller's mode (``AUTO`` or ``MAN``)."""
        if mode not in MODES:
            raise st.SetpointRangeError(f"{instrument}.MODE: {mode!r} is not allowed; expected one of {MODES}")
        with self._lock:
            loop = self._loop(instrument)
            loop.mode = mode
            return Reading(f"{instrument}.MODE", mode, st.GOOD.value, self._state.t_h)

    # ---------------------------------------------------------------- scenarios
    def load_scenario(self, scenario: Scenario) -> None:
        """Start a scenario now (its event times count from the current plant time)."""
        with self._lock:
            self._end_scenario_effects()
            self._scenario = scenario
            self._scenario_t0 = self._state.t_h
            self._announced = set()
            log.info("scenario %r loaded at %.3f h", scenario.name, self._scenario_t0)

    def clear_scenario(self) -> None:
        """Stop the loaded scenario (every effect ends now)."""
        with self._lock:
            self._end_scenario_effects()
            self._scenario = None

    def _end_scenario_effects(self) -> None:
        if self._scenario is None:
            return
        t = self._state.t_h
        for i, ev in enumerate(self._scenario.events):
            if (i, True) in self._announced and (i, False) not in self._announced:
                self._pending_notices.append(Notice(ev.kind.value, ev.target, f"{ev.describe()} (ended)", t, False))
        self._stuck.clear()
        for s in self._samplers:
            if s.outage_end_h is not None and s.outage_end_h > t:
                s.outage_end_h = t

    def _active(self, t: float, kinds: Sequence[ScenarioKind]) -> list[ScenarioEvent]:
        sc = self._scenario
        if sc is None:
            return []
        rel = t - self._scenario_t0
        return [e for e in sc.events if e.kind in kinds and e.at_h <= rel + 1e-12 and rel < e.end_h - 1e-12]

    def _overlapping(self, t_a: float, t_b: float, kind: ScenarioKind) -> list[ScenarioEvent]:
        """Events of ``kind`` active at some time in the step ``(t_a, t_b]`` (an outage shorter
        than a step still shows for one step)."""
        sc = self._scenario
        if sc is None:
            return []
        a, b = t_a - self._scenario_t0, t_b - self._scenario_t0
        return [e for e in sc.events if e.kind is kind and e.at_h <= b + 1e-12 and e.end_h > a + 1e-12]

    def reset(self) -> None:
        """Back to the initial steady state: setpoints, modes, actuators, no scenario, t = 0."""
        with self._lock:
            self._reset_locked()
            log.info("plant reset")

    # ---------------------------------------------------------------- stepping
    def advance(self, n_steps: int, step_h: float) -> StepReport:
        """Run ``n_steps`` steps of ``step_h`` plant hours (call from a worker thread).

        Raises
        ------
        models.errors.ConvergenceError
            The integrator failed (the state is left at the last good step).
        """
        if n_steps < 1 or not (math.isfinite(step_h) and step_h > 0):
            raise InputError(f"advance: n_steps {n_steps} >= 1 and step_h {step_h!r} > 0 expected", field="step_h")
        t_wall = time.perf_counter()
        steps = 0
        for _ in range(n_steps):
            with self._lock:
                generation = self._generation
                state = self._state
                p = self._step_parameters(state.t_h, step_h)
            if self._algebraic.size and not np.array_equal(p[self._algebraic], self._p[self._algebraic]):
                # a parameter of the algebraic equations moved (extractant drift, a D factor): start the
                # step from inventories consistent with the stage compositions under the new values
                state = self.model.consistent_state(state.z, p, t_h=state.t_h)
            new = self.model.advance(state, p, step_h)
            with self._lock:
                if generation != self._generation:
                    return self._report(steps, t_wall, discarded=True)
                self._state = new
                self._p = p
                self._after_step(state.t_h, new.t_h)
                steps += 1
        with self._lock:
            return self._report(steps, t_wall)

    def _report(self, steps: int, t_wall: float, *, discarded: bool = False) -> StepReport:
        readings, self._pending = tuple(self._pending), []
        notices, self._pending_notices = tuple(self._pending_notices), []
        return StepReport(self._state.t_h, steps, readings, notices, time.perf_counter() - t_wall, discarded)

    def drain(self) -> StepReport:
        """Readings and notices waiting to be published (after a reset, a write, a scenario load)."""
        with self._lock:
            return self._report(0, time.perf_counter())

    def _step_parameters(self, t: float, h: float) -> Array:
        if self.mismatch.drifts:
            p = self.mismatch.at(self.fs, self.p0, t + 0.5 * h)
            # parameters of the algebraic equations drift in steps of drift_step_h (each change
            # needs a consistent re-initialisation of the stage unknowns)
            q = self.options.drift_step_h
            p[self._algebraic] = self.mismatch.at(self.fs, self.p0, math.floor(t / q + 1e-9) * q)[self._algebraic]
        else:
            p = self.p0.copy()
        sc = self._scenario
        if sc is not None:
            # extractant drift events: like the mismatch's drift, in steps of drift_step_h
            q = self.options.drift_step_h
            rel = math.floor(t / q + 1e-9) * q - self._scenario_t0
            for ev in sc.events:
                if ev.kind is ScenarioKind.EXTRACTANT_DRIFT and ev.at_h <= rel + 1e-12:
                    p[self.fs.parameters.index(f"{ev.circuit}.extractant_mol_per_l")] *= ev.extractant_factor(rel)
        for ev in self._active(t, (ScenarioKind.FEED_COMPOSITION,)):
            for name, value in ev.concentrations_mol_per_l.items():
                p[self.fs.parameters.index(name)] = value
        tau = self.options.actuator_time_constant_h
        trips = {e.tag for e in self._active(t, (ScenarioKind.PUMP_TRIP,))}
        stuck_now = {e.tag for e in self._active(t, (ScenarioKind.STUCK_VALVE,))}
        for tag in list(self._stuck):
            if tag not in stuck_now:
                del self._stuck[tag]
        for name, loop in self._loops.items():
            if name in trips:
                loop.actual = 0.0
                avg = 0.0
            elif name in stuck_now:
                self._stuck.setdefault(name, loop.actual)
                avg = loop.actual = self._stuck[name]
            elif loop.mode == "MAN":
                avg = loop.actual
            else:
                decay = math.exp(-h / tau)
                avg = loop.sp + (loop.actual - loop.sp) * tau / h * (1.0 - decay)
                loop.actual = loop.sp + (loop.actual - loop.sp) * decay
            p[loop.index] = avg
        return p

    def _after_step(self, t_a: float, t_b: float) -> None:
        self._announce(t_b)
        vec = self._true_vector(self._state, self._p)
        self._history.append((t_b, vec))
        keep_from = t_b - max((s.delay_h + s.period_h for s in self._samplers), default=0.0) - 2 * (t_b - t_a)
        while len(self._history) > 2 and self._history[1][0] < keep_from:
            self._history.popleft()
        outages = {e.tag: e for e in self._overlapping(t_a, t_b, ScenarioKind.ANALYSER_OUTAGE)}
        for s in self._samplers:
            self._sample(s, t_b, outages.get(s.tag.instrument))
        self._pending.extend(self._loop_readings(t_b))

    def _announce(self, t: float) -> None:
        sc = self._scenario
        if sc is None:
            return
        rel = t - self._scenario_t0
        for i, ev in enumerate(sc.events):
            if ev.at_h <= rel + 1e-12 and (i, True) not in self._announced:
                self._announced.add((i, True))
                self._pending_notices.append(
                    Notice(ev.kind.value, ev.target, ev.describe(), self._scenario_t0 + ev.at_h, True)
                )
                if ev.kind is ScenarioKind.ANALYSER_OUTAGE:
                    for s in self._samplers:
                        if s.tag.instrument == ev.tag:
                            s.outage_end_h = self._scenario_t0 + ev.end_h
            if ev.end_h <= rel + 1e-12 and (i, False) not in self._announced:
                self._announced.add((i, False))
                self._pending_notices.append(
                    Notice(ev.kind.value, ev.target, f"{ev.describe()} (ended)", self._scenario_t0 + ev.end_h, False)
                )

    def _loop_readings(self, t: float, *, force: bool = False) -> list[Reading]:
        out = []
        for name, loop in self._loops.items():
            if loop.dirty or force:
                info = self._by_tag[f"{name}.SP"]
                out.append(Reading(f"{name}.SP", to_engineering_units(loop.sp, info), st.GOOD.value, t))
                out.append(Reading(f"{name}.MODE", loop.mode, st.GOOD.value, t))
                loop.dirty = False
        return out

    # ---------------------------------------------------------------- instruments
    def _true_vector(self, state: PlantState, p: Array) -> Array:
        locs = self.model.residual.local(state.z, p, jacobian=False)
        out = np.empty(len(self._probes))
        for k, (kind, arg) in enumerate(self._probes):
            if kind == "param":
                out[k] = p[arg]
            elif kind == "conc":
                c, phase, i, j = arg
                out[k] = (locs[c].x if phase == "aq" else locs[c].y)[i, j]
            elif kind == "acid":
                c, j = arg
                out[k] = locs[c].acid[j]
            else:
                out[k] = arg
        return out

    def _true_at(self, ts: float) -> Array:
        times = [h[0] for h in self._history]
        i = bisect.bisect_right(times, ts)
        if i >= len(times):
            return self._history[-1][1]
        if i == 0:
            return self._history[0][1]
        (ta, va), (tb, vb) = self._history[i - 1], self._history[i]
        w = 0.0 if tb <= ta else (ts - ta) / (tb - ta)
        return va + w * (vb - va)

    def _sample(self, s: _Sampler, t: float, outage: ScenarioEvent | None) -> None:
        k_max = math.floor((t - s.delay_h) / s.period_h + 1e-9)
        if outage is not None:
            s.k_last = max(s.k_last, k_max)
            if s.last_status != st.OUT_OF_SERVICE.value:
                s.last_status = st.OUT_OF_SERVICE.value
                self._pending.append(Reading(s.tag.tag, s.last_value, s.last_status, t))
            return
        taken = False
        if k_max > s.k_last:
            ks = range(s.k_last + 1, k_max + 1)
            limit = self.options.max_samples_per_step if s.tag.role is TagRole.ELEMENT else 1
            for k in list(ks)[-limit:]:
                ts = k * s.period_h
                if s.outage_end_h is not None and ts < s.outage_end_h:
                    continue  # not taken: the analyser was out of service
                s.outage_end_h = None
                self._pending.append(self._take_sample(s, ts, self._true_at(ts)))
                taken = True
            s.k_last = k_max
        if not taken and s.last_status == st.OUT_OF_SERVICE.value:
            s.last_status = st.LAST_USABLE.value
            self._pending.append(Reading(s.tag.tag, s.last_value, s.last_status, t))

    def _take_sample(self, s: _Sampler, ts: float, vec: Array) -> Reading:
        info = s.tag
        true_eng = to_engineering_units(float(vec[s.probe]), info)
        value = true_eng * (1.0 + info.noise_rel * float(self._rng.standard_normal())) if info.noise_rel else true_eng
        for ev in self._active(ts, (ScenarioKind.SENSOR_BIAS,)):
            if ev.tag == info.instrument and (ev.element is None or ev.element == info.element):
                value += ev.bias
        lo, hi = info.instrument_range
        code: int = st.GOOD.value
        if info.role is TagRole.ELEMENT and value < max(info.detection_limit, lo):
            value = max(info.detection_limit, lo)
            code = st.below_detection_limit().value
        elif value > hi:
            value = hi
            if true_eng > hi:
                code = st.above_range().value
        elif value < lo:
            value = lo
            if true_eng < lo:
                code = int(ua.StatusCodes.UncertainEngineeringUnitsExceeded) | st.LIMIT_LOW
        s.last_value, s.last_status = value, code
        return Reading(info.tag, value, code, ts)

    # ---------------------------------------------------------------- true state
    def true_state(self) -> dict[str, Any]:
        """The plant's full state, JSON-ready (trainer only): every stage of every circuit in both
        phases (mol/L), acidity, outlet streams, products (purity, recovery), the true parameters
        and actuators, the mismatch and the scenario."""
        with self._lock:
            state, p = self._state, self._p.copy()
            loops = {n: (lp.sp, lp.actual, lp.mode) for n, lp in self._loops.items()}
            scenario = self._scenario.to_dict() if self._scenario else None
        fs = self.fs
        locs = self.model.residual.local(state.z, p, jacobian=False)
        fv = self.model.residual.flows(p)
        circuits: dict[str, Any] = {}
        for cs in locs:
            lay = cs.lay
            circuits[lay.name] = {
                "stages": list(lay.stage_labels()),
                "sections": [lay.section(j) for j in range(lay.n_stages)],
                "aqueous_mol_per_l": {s: cs.x[i].tolist() for i, s in enumerate(lay.elements)},
                "organic_mol_per_l": {s: cs.y[i].tolist() for i, s in enumerate(lay.elements)},
                "acidity_mol_per_l": cs.acid.tolist(),
            }
        streams: dict[str, Any] = {}
        fluxes: dict[str, dict[str, float]] = {}
        for o in fs.outlets:
            cs = locs[o.circuit]
            conc = cs.x if o.phase == "aq" else cs.y
            flow = float(fv.weights[o.weight])
            comp = {s: float(conc[i, o.stage]) for i, s in enumerate(cs.lay.elements)}
            fluxes[o.name] = {s: c * flow for s, c in comp.items()}
            streams[o.name] = {"phase": o.phase, "flow_l_per_h": flow, "composition_mol_per_l": comp}
        feed_in = fs.feed_inflow_mol_per_h(p)
        products = {}
        for ps in fs.spec.products:
            flux = fluxes.get(ps.stream, {})
            fed = sum(feed_in.get(m, 0.0) for m in ps.main_elements)
            got = sum(flux.get(m, 0.0) for m in ps.main_elements)
            products[ps.name] = {
                "stream": ps.stream,
                "purity": reo_purity(flux, ps.main_elements) if flux else math.nan,
                "recovery": got / fed if fed > 0 else math.nan,
            }
        return {
            "plant": fs.spec.plant.name,
            "plant_time_h": state.t_h,
            "circuits": circuits,
            "streams": streams,
            "products": products,
            "parameters": {n: float(v) for n, v in zip(fs.parameters.names, p, strict=True)},
            "loops": {n: {"sp": sp, "actual": act, "mode": mode} for n, (sp, act, mode) in loops.items()},
            "mismatch": self.mismatch.to_dict(),
            "scenario": scenario,
        }

    def true_state_json(self) -> str:
        """:meth:`true_state` as compact JSON (NaN as null)."""
        return json.dumps(_finite(self.true_state()), separators=(",", ":"))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
