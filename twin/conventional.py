r"""Conventional control, as SX plants run today: PI loops on the monitoring-stage analysers.

This is the baseline the twin is compared with (``benchmarks/closed_loop.py``). A plant that
has online analysers at a few monitoring stages usually closes two slow loops around them:

- **extraction monitoring stage** (``AI-121``, aqueous at E10 in ``tb_dy``): the share of the
  more extractable key element, :math:`y_1 = \mathrm{Dy}/(\mathrm{Tb}+\mathrm{Dy})` in g/L, is
  held by the **organic flow** (more organic extracts more Dy, so :math:`y_1` falls: reverse
  acting). Dy creeping down the extraction section towards the raffinate is what spoils the
  Tb cut, and it shows here first.
- **scrub monitoring stage** (``AI-122``, aqueous at S20): the share of the less extractable key
  element, :math:`y_2 = \mathrm{Tb}/(\mathrm{Tb}+\mathrm{Dy})`, is held by the **scrub acid
  strength** (more acid scrubs more Tb back, :math:`y_2` falls). Tb creeping up the scrub
  section towards the strip is what spoils the Dy product.

Setpoints are the ratios of the design steady state (the model at the spec's parameters), as a
plant's commissioning team would take them from the design simulation.

Algorithm (:class:`PiController`): velocity-form PI executed every ``period_h`` of plant time,

.. math::

    \Delta u_k = K_c\left[(e_k - e_{k-1}) + \frac{T_s}{T_i}\,e_k\right],\qquad e = r - y_f,

on a first-order filtered measurement :math:`y_f` (time constant ``filter_time_h``), with

- **bounds** and **rate limits** of the spec's ``[[manipulated]]`` variable: the move is clipped
  to :math:`\pm` ``max_rate_per_h`` :math:`\times \min(t - t_\mathrm{last\ write}, 1\,\mathrm{h})`
  (the plant's own rate rule, with a 2 % margin) and the result to ``[min, max]``;
- **anti-windup** by external reset feedback: :math:`u_{k-1}` is the setpoint *read back from the
  plant* each time, so a clipped, refused or overridden move never accumulates in an integrator
  (the velocity form has none);
- **hold on doubt**: a Bad, Uncertain, non-finite, out-of-range or stale value (checked by
  :class:`twin.ingestion.Ingestor`, the same rules as the twin), or no sample newer than the last
  one used, means no move; the next good execution resumes bumplessly (no proportional kick
  across the gap).

Writes go through the same :class:`~twin.plant_io.PlantConnection` as the twin's, so the plant
audits them and refuses out-of-range or over-rate values like any other write; a refusal is
recorded and the loop holds.

Tuning (:func:`simc_pi`): SIMC rules (Skogestad 2003, *J. Process Control* 13, 291-309) on a
first-order-plus-dead-time model identified from bump tests on the simulated plant:
:math:`K_c = \tau / (K(\tau_c + \theta))`, :math:`T_i = \min(\tau, 4(\tau_c + \theta))`. The
numbers for ``tb_dy`` are in :data:`TB_DY_TUNING` with their identification; another plant needs
its own bump tests.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from models.elements import element
from models.errors import InputError, TwinError
from models.flowsheet import Flowsheet
from models.residual import Residual
from models.spec import InstrumentSpec, ManipulatedSpec
from twin.ingestion import Ingestor, is_controller
from twin.plant_io import PlantConnection, TagValue
from twin.tasks import stop_tasks

__all__ = [
    "TB_DY_TUNING",
    "AnalyserRatio",
    "ConventionalControl",
    "LoopAction",
    "PiController",
    "PiLoop",
    "PiTuning",
    "simc_pi",
    "standard_loops",
]

log = logging.getLogger(__name__)

RATE_MARGIN = 0.98
"""Moves use at most this fraction of the rate allowance (the plant's clock runs in steps)."""


@dataclass(frozen=True)
class AnalyserRatio:
    """A measurement made of one analyser's element channels: sum(numerator) / sum(denominator), g/L basis.

    Attributes
    ----------
    instrument
        The analyser tag (``AI-121``).
    numerator, denominator
        Element symbols; every numerator element is also in the denominator (a share, 0-1).
    """

    instrument: str
    numerator: tuple[str, ...]
    denominator: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.numerator or not set(self.numerator) <= set(self.denominator):
            raise InputError(
                f"{self.instrument}: numerator {self.numerator} must be non-empty and within the denominator "
                f"{self.denominator}",
                field="numerator",
            )

    @property
    def tags(self) -> tuple[str, ...]:
        """The channels read (``AI-121.Tb``, ``AI-121.Dy``)."""
        return tuple(f"{self.instrument}.{s}" for s in self.denominator)

    def value(self, g_per_l: Mapping[str, float]) -> float:
        """The share from element concentrations (g/L) by symbol."""
        den = sum(g_per_l[s] for s in self.denominator)
        return sum(g_per_l[s] for s in self.numerator) / den if den > 0.0 else math.nan

    def describe(self) -> str:
        """``AI-121 Dy/(Tb+Dy)``."""
        return f"{self.instrument} {'+'.join(self.numerator)}/({'+'.join(self.denominator)})"


@dataclass(frozen=True)
class PiTuning:
    """Tuning of one PI loop.

    Attributes
    ----------
    gain
        Controller gain :math:`K_c`, in the manipulated variable's engineering unit per unit of the
        measurement; its sign is the action (negative: reverse acting, the output rises when the
        measurement is above its setpoint... for a process of negative gain, see :func:`simc_pi`).
    integral_time_h
        Integral (reset) time :math:`T_i`, plant hours.
    period_h
        Execution period :math:`T_s`, plant hours.
    filter_time_h
        Time constant of the first-order measurement filter, plant hours (0: none).
    """

    gain: float
    integral_time_h: float
    period_h: float = 1.0
    filter_time_h: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gain) and self.gain != 0.0):
            raise InputError(f"gain: {self.gain!r} is not allowed; expected a finite non-zero number", field="gain")
        for name in ("integral_time_h", "period_h"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise InputError(f"{name}: {v!r} is not allowed; expected a number > 0 h", field=name)
        if not (math.isfinite(self.filter_time_h) and self.filter_time_h >= 0.0):
            raise InputError(
                f"filter_time_h: {self.filter_time_h!r} is not allowed; expected a number >= 0 h", field="filter_time_h"
            )


def simc_pi(
    process_gain: float,
    time_constant_h: float,
    dead_time_h: float,
    closed_loop_time_h: float,
    *,
    period_h: float = 1.0,
    filter_time_h: float = 1.0,
) -> PiTuning:
    r"""PI tuning by the SIMC rules for a first-order-plus-dead-time process.

    :math:`K_c = \tau / (K(\tau_c + \theta))`, :math:`T_i = \min(\tau, 4(\tau_c + \theta))`
    (Skogestad 2003). Half the execution period and the filter time are added to the dead time
    (the usual allowance for sampling and filtering).

    Parameters
    ----------
    process_gain
        :math:`K`: change of the measurement per unit change of the manipulated variable (steady).
    time_constant_h, dead_time_h
        :math:`\tau` and :math:`\theta`, plant hours.
    closed_loop_time_h
        :math:`\tau_c`, the desired closed-loop time constant (SIMC's one tuning knob;
        :math:`\tau_c = \theta` for tight control, larger for smoother, more robust loops).
    """
    if not (math.isfinite(process_gain) and process_gain != 0.0):
        raise InputError(f"process_gain: {process_gain!r} must be finite and non-zero", field="process_gain")
    if not (time_constant_h > 0.0 and dead_time_h >= 0.0 and closed_loop_time_h > 0.0):
        raise InputError("time_constant_h and closed_loop_time_h must be > 0, dead_time_h >= 0", field="tuning")
    theta = dead_time_h + 0.5 * period_h + filter_time_h
    kc = time_constant_h / (process_gain * (closed_loop_time_h + theta))
    ti = min(time_constant_h, 4.0 * (closed_loop_time_h + theta))
    return PiTuning(gain=kc, integral_time_h=ti, period_h=period_h, filter_time_h=filter_time_h)


TB_DY_TUNING: Mapping[str, PiTuning] = {
    # organic flow -> Dy/(Tb+Dy) at E10: bump test +20 L/h on the simulated plant (standard mismatch):
    # the share falls -2.4e-4 at 20 h, -8.7e-4 at 80 h, -1.53e-3 at 200 h per L/h; FOPDT fit
    # K = -2.1e-3 per L/h, tau = 150 h, theta ~ 0.5 h (analyser delay and sampling);
    # tau_c = 30 h (a third of the slowest upset we want to follow; interaction with the scrub loop).
    "organic_flow": simc_pi(-2.1e-3, 150.0, 0.5, 30.0),
    # scrub acid -> Tb/(Tb+Dy) at S20: bump test +0.05 mol/L: no response for ~15 h (the acid front
    # moves through the scrub section), then -0.091 at 40 h, -0.21 at 80 h, -0.45 at 200 h per mol/L;
    # FOPDT fit K = -0.6 per mol/L, tau = 200 h, theta = 20 h; tau_c = theta (SIMC's tight choice).
    "scrub_acid": simc_pi(-0.6, 200.0, 20.0, 20.0),
}
"""SIMC tunings of the ``tb_dy`` loops from bump tests (reproduce with
``benchmarks/closed_loop.py --bump-test``)."""


@dataclass(frozen=True)
class PiLoop:
    """One PI loop: what it measures, what it moves, its setpoint and tuning.

    Attributes
    ----------
    name
        Loop name for logs and reports (``organic_flow``).
    measurement
        The measured share.
    setpoint
        Setpoint of the share (0-1).
    setpoint_tag
        The controller setpoint the loop writes (``FIC-102.SP``), in engineering units.
    manipulated
        The manipulated variable (bounds, rate) behind that setpoint.
    tuning
        PI tuning.
    """

    name: str
    measurement: AnalyserRatio
    setpoint: float
    setpoint_tag: str
    manipulated: ManipulatedSpec
    tuning: PiTuning

    def __post_init__(self) -> None:
        if not (math.isfinite(self.setpoint) and 0.0 < self.setpoint < 1.0):
            raise InputError(f"{self.name}: setpoint {self.setpoint!r} must be a share in (0, 1)", field="setpoint")


@dataclass(frozen=True)
class LoopAction:
    """What one execution of a loop did.

    Attributes
    ----------
    loop
        Loop name.
    plant_time_h
        When it ran.
    measured, filtered
        The share used (raw and filtered); NaN when held for want of data.
    error
        Setpoint minus filtered measurement.
    output_before, output
        The setpoint in force before and the one asked for (engineering units).
    written
        A write was made and accepted.
    held
        Why nothing was written (None when a move was written or the move was zero).
    clipped
        The move was limited by a bound or the rate limit.
    """

    loop: str
    plant_time_h: float
    measured: float
    filtered: float
    error: float
    output_before: float
    output: float
    written: bool
    held: str | None = None
    clipped: bool = False


@dataclass
class _LoopState:
    filtered: float | None = None
    # 0 at start (the first execution acts on the whole error, as a setpoint change would); None
    # after a hold (the next execution resumes without a proportional kick across the gap)
    last_error: float | None = 0.0
    last_sample_h: float | None = None
    last_run_h: float | None = None
    last_write_h: float | None = None


class PiController:
    """Velocity-form PI with filter, bounds, rate limit and external reset (module docstring).

    Synchronous and free of I/O: :meth:`step` takes the measurement and the setpoint in force and
    returns the new output; :class:`ConventionalControl` does the reading and writing.
    """

    def __init__(self, loop: PiLoop) -> None:
        self.loop = loop
        self.state = _LoopState()

    def due(self, plant_time_h: float) -> bool:
        """Whether an execution is due at ``plant_time_h``."""
        last = self.state.last_run_h
        return last is None or plant_time_h - last >= self.loop.tuning.period_h - 1e-9

    def hold(self, plant_time_h: float, output: float, reason: str, measured: float = math.nan) -> LoopAction:
        """Record an execution without a move; the next good one resumes without a proportional kick."""
        st = self.state
        st.last_run_h = plant_time_h
        st.last_error = None
        return LoopAction(self.loop.name, plant_time_h, measured, math.nan, math.nan, output, output, False, reason)

    def step(self, plant_time_h: float, measured: float, sample_time_h: float, output_now: float) -> LoopAction:
        """One execution with a usable measurement taken at ``sample_time_h``; ``output_now`` is the
        setpoint in force (read back from the plant)."""
        loop, tun, st = self.loop, self.loop.tuning, self.state
        if st.last_sample_h is not None and sample_time_h <= st.last_sample_h + 1e-9:
            return self.hold(plant_time_h, output_now, "no new sample since the last execution", measured)
        ts = tun.period_h if st.last_run_h is None else max(plant_time_h - st.last_run_h, 1e-6)
        if st.filtered is None or (st.last_error is None and ts > 4.0 * max(tun.filter_time_h, tun.period_h)):
            st.filtered = measured  # first value, or after a long hold: restart the filter on it
        else:
            alpha = ts / (tun.filter_time_h + ts) if tun.filter_time_h > 0 else 1.0
            st.filtered += alpha * (measured - st.filtered)
        error = loop.setpoint - st.filtered
        proportional = error - st.last_error if st.last_error is not None else 0.0
        delta = tun.gain * (proportional + ts / tun.integral_time_h * error)
        mv = loop.manipulated
        clipped = False
        if mv.max_rate_per_h is not None:
            since = 1.0 if st.last_write_h is None else min(max(plant_time_h - st.last_write_h, 0.0), 1.0)
            allowed = RATE_MARGIN * mv.max_rate_per_h * since
            if abs(delta) > allowed:
                delta = math.copysign(allowed, delta)
                clipped = True
        target = output_now + delta
        if not mv.min <= target <= mv.max:
            target = min(max(target, mv.min), mv.max)
            clipped = True
        st.last_error = error
        st.last_sample_h = sample_time_h
        st.last_run_h = plant_time_h
        return LoopAction(
            loop.name, plant_time_h, measured, st.filtered, error, output_now, target, False, None, clipped
        )

    def wrote(self, plant_time_h: float) -> None:
        """Note an accepted write (for the rate limit of the next move)."""
        self.state.last_write_h = plant_time_h


def _analysers_by_section(fs: Flowsheet, circuit: str) -> dict[str, InstrumentSpec]:
    lay = fs.circuit(circuit)
    out: dict[str, InstrumentSpec] = {}
    for ins in fs.spec.instruments:
        if ins.kind == "analyser" and ins.circuit == circuit and ins.stage is not None and ins.phase == "aqueous":
            out.setdefault(lay.section(ins.stage - 1), ins)
    return out


def _key_elements(fs: Flowsheet, circuit: str) -> tuple[str, str]:
    """(light, heavy): the main elements of the raffinate and strip-liquor products of a circuit."""
    light = heavy = None
    for ps in fs.spec.products:
        if ps.stream == f"{circuit}.raffinate":
            light = ps.main_elements[0]
        elif ps.stream == f"{circuit}.strip_liquor":
            heavy = ps.main_elements[0]
    if light is None or heavy is None:
        raise InputError(
            f"{circuit}: conventional control needs a product on both the raffinate and the strip liquor",
            field="products",
        )
    return light, heavy


def _setpoint_tag(fs: Flowsheet, variable: str) -> str:
    for ins in fs.spec.instruments:
        if ins.variable == variable and is_controller(ins):
            return f"{ins.tag}.SP"
    raise InputError(f"{variable}: no controller (setpoint tag) moves this variable", field="instruments")


def standard_loops(
    fs: Flowsheet,
    z_design: np.ndarray,
    *,
    tuning: Mapping[str, PiTuning] | None = None,
    circuit: str | None = None,
) -> tuple[PiLoop, ...]:
    """The two conventional loops of a circuit with extraction and scrub monitoring stages.

    Setpoints are the shares at the design steady state ``z_design`` (the model at the spec's
    parameters). ``tuning`` maps ``organic_flow`` and ``scrub_acid`` to their PI tuning (default
    :data:`TB_DY_TUNING`, identified on ``tb_dy``).

    Raises
    ------
    models.errors.InputError
        The circuit lacks an aqueous analyser in the extraction or the scrub section, a product on
        either outlet, or a controller on the organic flow or the scrub acid.
    """
    tun = dict(TB_DY_TUNING if tuning is None else tuning)
    name = circuit or fs.circuits[0].name
    lay = fs.circuit(name)
    light, heavy = _key_elements(fs, name)
    analysers = _analysers_by_section(fs, name)
    locs = Residual(fs).local(np.asarray(z_design, dtype=float), fs.parameter_vector(), jacobian=False)[lay.index]
    manipulated = {m.variable: m for m in fs.spec.manipulated}
    loops = []
    plan: list[tuple[str, str, str, str]] = [
        ("organic_flow", "extraction", heavy, f"{name}.organic_flow_l_per_h"),
        ("scrub_acid", "scrub", light, f"{name}.scrub_acid_mol_per_l"),
    ]
    for loop_name, section, numerator, variable in plan:
        ins = analysers.get(section)
        if ins is None:
            raise InputError(f"{name}: no aqueous analyser in the {section} section for the {loop_name} loop",
                             field="instruments")
        if not {light, heavy} <= set(ins.elements):
            raise InputError(f"{ins.tag}: must measure {light} and {heavy}", field="instruments")
        if variable not in manipulated:
            raise InputError(f"{variable}: not a manipulated variable of the spec", field="manipulated")
        assert ins.stage is not None
        g = {s: float(locs.x[lay.elements.index(s), ins.stage - 1]) * element(s).atomic_weight_g_per_mol
             for s in (light, heavy)}
        measure = AnalyserRatio(ins.tag, (numerator,), (light, heavy))
        loops.append(
            PiLoop(loop_name, measure, measure.value(g), _setpoint_tag(fs, variable), manipulated[variable],
                   tun[loop_name])
        )
    return tuple(loops)


@dataclass
class ConventionalControl:
    """The loops run against a plant connection, every ``poll_s`` of wall time (``async with``).

    Attributes
    ----------
    fs
        The plant (for the ingestion checks).
    connection
        Where to read and write (the same kind of connection the twin uses).
    loops
        The loops (:func:`standard_loops`).
    stale_after_h
        Staleness limit on top of an instrument's own delay and period (as the twin's ingestion).
    poll_s
        Wall seconds between looking at the plant clock.
    actions
        Every execution, in order (for reports and tests).
    """

    fs: Flowsheet
    connection: PlantConnection
    loops: Sequence[PiLoop]
    stale_after_h: float = 2.0
    poll_s: float = 0.25
    actions: list[LoopAction] = field(default_factory=list)
    mode: Literal["auto", "manual"] = "auto"

    def __post_init__(self) -> None:
        self.controllers = [PiController(loop) for loop in self.loops]
        self.ingestor = Ingestor(self.fs, stale_after_h=self.stale_after_h)
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    async def __aenter__(self) -> ConventionalControl:
        self._task = asyncio.create_task(self._run(), name="conventional-control")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except TwinError as exc:  # link down (IngestionError) or another refusal: hold, try again
                self.last_error = exc.message
            except Exception as exc:
                self.last_error = str(exc)
                log.exception("conventional control pass failed")
            await asyncio.sleep(self.poll_s)

    async def run_once(self) -> list[LoopAction]:
        """Execute every loop that is due now; returns what each did."""
        if self.mode != "auto":
            return []
        now = await self.connection.plant_time_h()
        due = [c for c in self.controllers if c.due(now)]
        if not due:
            return []
        tags = sorted({t for c in due for t in (*c.loop.measurement.tags, c.loop.setpoint_tag)})
        values = await self.connection.read(tags)
        out = []
        for c in due:
            action = await self._execute(c, now, values)
            self.actions.append(action)
            out.append(action)
        return out

    async def _execute(self, c: PiController, now: float, values: Mapping[str, TagValue]) -> LoopAction:
        loop = c.loop
        sp = values.get(loop.setpoint_tag)
        if sp is None or not sp.usable:
            return c.hold(now, math.nan, f"{loop.setpoint_tag}: setpoint not readable")
        u_now = float(sp.value)
        g: dict[str, float] = {}
        times: list[float] = []
        for tag in loop.measurement.tags:
            tv = values.get(tag)
            reason = "no value" if tv is None else self.ingestor.check(tv, now)
            if tv is None or reason is not None:
                return c.hold(now, u_now, f"{tag}: {reason}")
            g[tag.rsplit(".", 1)[1]] = float(tv.value)
            times.append(tv.plant_time_h if tv.plant_time_h is not None else now)
        y = loop.measurement.value(g)
        if not math.isfinite(y):
            return c.hold(now, u_now, f"{loop.measurement.describe()}: not computable from {g}")
        action = c.step(now, y, min(times), u_now)
        if action.held is not None or abs(action.output - u_now) <= 1e-9 * max(1.0, abs(u_now)):
            return action
        result = await self.connection.write(loop.setpoint_tag, action.output)
        if not result.accepted:
            log.info("%s: write of %s = %g refused: %s", loop.name, loop.setpoint_tag, action.output, result.message)
            return LoopAction(loop.name, now, action.measured, action.filtered, action.error, u_now, action.output,
                              False, f"write refused: {result.status} {result.message}", action.clipped)
        c.wrote(now)
        return LoopAction(loop.name, now, action.measured, action.filtered, action.error, u_now, action.output, True,
                          None, action.clipped)
