"""The simulated plant served over OPC UA (asyncua): address space, clock, writes, roles, history.

:class:`PlantServer` is an async resource::

    async with PlantServer(spec, data_dir=..., users=load_user_store(...)) as plant:
        await plant.wait_ready()          # the plant's steady state is solved (or cached)
        ...                               # clients connect to plant.endpoint_url

Start-up: the address space is built and the server listens first (a big plant's thousands of
tags in a few seconds); the plant's steady state is then solved in a worker thread (cached in
``<data_dir>/steady_cache``), its values turn from ``BadWaitingForInitialData`` to Good and the
clock starts.

Clock: every ``tick_s`` of wall time the plant advances to ``speed x wall time`` in steps of
``speed x tick_s`` plant seconds, in a worker thread (``asyncio.to_thread``): the event loop
never blocks on the integrator. Values are stamped with plant time (``RunEpoch`` + plant hours);
``PlantTime``, ``Speed`` and ``LagHours`` (how far the plant is behind wall time x speed) tell
clients how fresh they are.

Access: every session carries an sxtwin role (:mod:`opcua.security`). Reads are open to every
role except ``Plant/Trainer/TrueState`` (``read_true_state``: trainer, admin); the trainer
methods need ``manage_scenarios``; setpoint and mode writes need ``write_setpoint`` (operator,
engineer, admin) and are checked item by item: node and attribute, role, type (Float and integer
types are accepted for Double setpoints), range and rate (:meth:`PlantRuntime.check_setpoint`),
then audited in the historian, then applied. A refused item gets its status code
(:mod:`opcua.status`) and changes nothing; the items of one request are independent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast

import asyncua
from asyncua import Server, ua
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession

from models.dynamics import DynamicModel
from models.errors import ConflictError, InputError, TwinError
from models.flowsheet import Flowsheet, build_flowsheet
from models.spec import PlantSpec
from opcua import _ua
from opcua import status as st
from opcua.address_space import PlantNodes, build_address_space
from opcua.mismatch import Mismatch, load_mismatch
from opcua.plant_runtime import Notice, PlantRuntime, Reading, RuntimeOptions, StepReport, steady_initial_state
from opcua.scenarios import Scenario, load_scenario, parse_scenario_text
from opcua.security import (
    SERVER_APPLICATION_URI,
    PlantPermissionRuleset,
    PlantUserManager,
    SessionUser,
    TrustList,
    ensure_certificate,
    pki_layout,
)
from opcua.tags import TagRole, plant_tags
from twin.historian import Historian
from twin.historian_records import EventKind, NewEvent, Sample, Severity
from twin.security import Permission, check, has_permission
from twin.tasks import stop_tasks
from twin.users import UserStore

__all__ = ["PlantServer", "PlantServerOptions"]

log = logging.getLogger(__name__)

MAX_SPEED: Final = 1.0e6
_NUMERIC: Final = frozenset(
    {
        ua.VariantType.Double,
        ua.VariantType.Float,
        ua.VariantType.SByte,
        ua.VariantType.Byte,
        ua.VariantType.Int16,
        ua.VariantType.UInt16,
        ua.VariantType.Int32,
        ua.VariantType.UInt32,
        ua.VariantType.Int64,
        ua.VariantType.UInt64,
    }
)
_current_user: contextvars.ContextVar[SessionUser | None] = contextvars.ContextVar("sxtwin_opcua_user", default=None)


@dataclass(frozen=True)
class PlantServerOptions:
    """Options of the plant server (deployment values come from :mod:`twin.settings`).

    Attributes
    ----------
    host, port
        Bind address (loopback by default) and TCP port.
    speed
        Plant seconds per wall second at start.
    tick_s
        Wall seconds between clock ticks (one integration step per tick when keeping up); the
        tick doubles, up to 16 x, while a step costs more than half a tick (a big plant then
        advances in coarser steps instead of falling behind).
    max_steps_per_tick
        How many steps one tick may run to catch up.
    allow_anonymous
        Add a ``None``-security endpoint and anonymous (viewer) sessions: development only.
    seed
        Measurement noise seed (None: random).
    actuator_time_constant_h
        Setpoint to actual value lag, h.
    record_history
        Record every published sample in the historian.
    cache_dir
        Steady states and the OPC UA standard address space, cached between starts (default
        ``<data_dir>/cache``).
    """

    host: str = "127.0.0.1"
    port: int = 4840
    speed: float = 60.0
    tick_s: float = 0.5
    max_steps_per_tick: int = 8
    allow_anonymous: bool = False
    seed: int | None = None
    actuator_time_constant_h: float = 2.0 / 60.0
    record_history: bool = True
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and 0.0 < self.speed <= MAX_SPEED):
            raise InputError(
                f"speed: {self.speed!r} is not allowed; expected 0 < speed <= {MAX_SPEED:g}", field="speed"
            )
        if not 0.01 <= self.tick_s <= 10.0:
            raise InputError(f"tick_s: {self.tick_s!r} is not allowed; expected 0.01..10 s", field="tick_s")
        if not 1 <= self.port <= 65535:
            raise InputError(f"port: {self.port!r} is not allowed; expected 1..65535", field="port")


class _PlantSession(InternalSession):  # type: ignore[misc]
    """A client session whose reads, subscriptions, writes and calls are checked against its role."""

    plant: PlantServer

    def _role_user(self) -> SessionUser:
        user = self.user
        if isinstance(user, SessionUser):
            return user
        return SessionUser(name=None, sx_role=None)

    def _denied_read(self, nodeid: ua.NodeId) -> bool:
        return nodeid == self.plant.nodes.true_state and not has_permission(
            self._role_user().sx_role, Permission.READ_TRUE_STATE
        )

    async def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        items = params.NodesToRead
        denied = [self._denied_read(rv.NodeId) and rv.AttributeId == ua.AttributeIds.Value for rv in items]
        if not any(denied):
            return await super().read(params)
        allowed = ua.ReadParameters()
        allowed.MaxAge = params.MaxAge
        allowed.TimestampsToReturn = params.TimestampsToReturn
        allowed.NodesToRead = [rv for rv, d in zip(items, denied, strict=True) if not d]
        got = iter(await super().read(allowed) if allowed.NodesToRead else [])
        refused = _ua.data_value(StatusCode=_ua.status(ua.StatusCodes.BadUserAccessDenied))
        return [refused if d else next(got) for d in denied]

    async def create_monitored_items(
        self, params: ua.CreateMonitoredItemsParameters
    ) -> list[ua.MonitoredItemCreateResult]:
        items = params.ItemsToCreate
        denied = [self._denied_read(it.ItemToMonitor.NodeId) for it in items]
        if not any(denied):
            return await super().create_monitored_items(params)
        kept = replace(params, ItemsToCreate=[it for it, d in zip(items, denied, strict=True) if not d])
        got = iter(await super().create_monitored_items(kept) if kept.ItemsToCreate else [])
        out = []
        for d in denied:
            if d:
                res = ua.MonitoredItemCreateResult()
                res.StatusCode = _ua.status(ua.StatusCodes.BadUserAccessDenied)
                out.append(res)
            else:
                out.append(next(got))
        return out

    async def history_read(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        if any(self._denied_read(n.NodeId) for n in params.NodesToRead):
            res = ua.HistoryReadResult()
            res.StatusCode = _ua.status(ua.StatusCodes.BadUserAccessDenied)
            return [res for _ in params.NodesToRead]
        return await super().history_read(params)

    async def write(self, params: ua.WriteParameters) -> list[ua.StatusCode]:
        user = self._role_user()
        return [await self.plant.handle_write(user, wv) for wv in params.NodesToWrite]

    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        user = self._role_user()
        out = []
        for req in params:
            if req.MethodId in self.plant.nodes.methods.values() and not has_permission(
                user.sx_role, Permission.MANAGE_SCENARIOS
            ):
                try:
                    check(user.sx_role, Permission.MANAGE_SCENARIOS, user=user.name)
                except TwinError as exc:
                    res = ua.CallMethodResult()
                    res.StatusCode = st.status_for(exc)
                    out.append(res)
                    continue
            token = _current_user.set(user)
            try:
                out.extend(await super().call([req]))
            finally:
                _current_user.reset(token)
        return out


class _PlantInternalServer(InternalServer):  # type: ignore[misc]
    plant: PlantServer
    shelf: Path | None = None

    async def load_standard_address_space(self, shelf_file: Path | None = None) -> None:
        # asyncua rebuilds the standard address space from code (about 5 s); a shelf of it,
        # made once per asyncua version (see _make_shelf), loads in a fraction of a second
        shelf = self.shelf
        if shelf is not None and shelf.with_name(shelf.name + ".ok").exists():
            try:
                self.aspace.load_aspace_shelf(shelf)
                return
            except Exception:
                log.warning("ignoring a damaged address-space cache %s", shelf)
        await super().load_standard_address_space(None)

    def create_session(self, name: str, user: Any = None, external: bool = False) -> InternalSession:
        session = _PlantSession(
            self, self.aspace, self.subscription_service, name, user=SessionUser(), external=external
        )
        session.plant = self.plant
        return session


class PlantServer:
    """The simulated plant as an OPC UA server (see the module docstring).

    Parameters
    ----------
    spec
        The plant spec (its instruments are the tags).
    data_dir
        Certificates (``pki/``), the historian (when ``historian`` is not given) and the
        steady-state cache; created if missing.
    users
        Who may log in (:func:`twin.users.load_user_store`).
    options
        Server options.
    mismatch
        The plant's true parameters (a :class:`~opcua.mismatch.Mismatch`, or a TOML path).
    scenario
        A scenario TOML path to load when the plant is ready.
    historian
        Audit log and sample history (default: SQLite in ``data_dir``); owned by the caller when given.
    """

    def __init__(
        self,
        spec: PlantSpec,
        *,
        data_dir: Path,
        users: UserStore,
        options: PlantServerOptions | None = None,
        mismatch: Mismatch | Path | None = None,
        scenario: Path | None = None,
        historian: Historian | None = None,
    ) -> None:
        self.spec = spec
        self.data_dir = Path(data_dir)
        self.users = users
        self.options = options or PlantServerOptions()
        self._mismatch_arg = mismatch
        self._scenario_path = scenario
        self._historian = historian
        self._own_historian = historian is None
        self.cache_dir = self.options.cache_dir or self.data_dir / "cache"
        self.tags = plant_tags(spec)
        self._tag_of: dict[ua.NodeId, str] = {}
        self.server: Server | None = None
        self.nodes: PlantNodes
        self.fs: Flowsheet | None = None
        self.runtime: PlantRuntime | None = None
        self._ready = asyncio.Event()
        self._failed: BaseException | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._write_lock = asyncio.Lock()
        self._speed = self.options.speed
        self._tick_s = self.options.tick_s
        self._step_cost_s = math.nan
        self._costed_step_h = math.nan
        self._paused = False
        self._epoch = datetime.now(UTC).replace(microsecond=0)
        self._anchor_wall = 0.0
        self._anchor_t = 0.0
        self.lag_h = 0.0
        self.max_lag_h = 0.0
        self.startup_s = math.nan
        self.ready_s = math.nan
        self._event_gen: Any = None
        self._samples: asyncio.Queue[list[Sample]] = asyncio.Queue(maxsize=256)
        self._last_source = self._epoch

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> PlantServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def endpoint_url(self) -> str:
        """``opc.tcp://host:port/sxtwin/plant``."""
        return f"opc.tcp://{self.options.host}:{self.options.port}/sxtwin/plant"

    @property
    def historian(self) -> Historian:
        """The historian (audit, samples, events)."""
        assert self._historian is not None
        return self._historian

    @property
    def speed(self) -> float:
        """Current plant seconds per wall second."""
        return self._speed

    @property
    def paused(self) -> bool:
        """Whether the plant clock is paused."""
        return self._paused

    @property
    def epoch(self) -> datetime:
        """Plant time zero of the current run (UTC)."""
        return self._epoch

    def plant_datetime(self, t_h: float) -> datetime:
        """The timestamp of plant time ``t_h``."""
        return self._epoch + timedelta(hours=t_h)

    async def start(self) -> None:
        """Build the address space, start listening, then bring the plant up in the background."""
        t0 = time.perf_counter()
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._historian is None:
            url = f"sqlite:///{self.data_dir / 'historian.sqlite3'}"
            self._historian = await asyncio.to_thread(Historian, url)
        pki = pki_layout(self.data_dir / "pki")
        cert, key = await asyncio.to_thread(ensure_certificate, pki["own"], SERVER_APPLICATION_URI)
        iserver = _PlantInternalServer(
            user_manager=PlantUserManager(self.users, allow_anonymous=self.options.allow_anonymous)
        )
        iserver.plant = self
        iserver.shelf = _shelf_path(self.cache_dir)
        server = Server(iserver=iserver)
        await server.init()
        server.set_endpoint(self.endpoint_url)
        server.set_server_name(f"sxtwin simulated plant {self.spec.plant.name}")
        await server.set_application_uri(SERVER_APPLICATION_URI)
        server.product_uri = "urn:sxtwin"
        server.manufacturer_name = "sxtwin"
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self.options.allow_anonymous:
            policies.append(ua.SecurityPolicyType.NoSecurity)
            tokens.append(ua.AnonymousIdentityToken)
        server.set_security_policy(policies, permission_ruleset=cast(Any, PlantPermissionRuleset()))
        server.set_identity_tokens(tokens)
        server.set_certificate_validator(TrustList(pki["trusted"], pki["rejected"]))
        self.server = server
        self.nodes = await build_address_space(server, self.spec, self.tags, self._method)
        self._tag_of = {nid: tag for tag, nid in self.nodes.variables.items()}
        server.set_attribute_value_callback(self.nodes.true_state, self._read_true_state)
        self._event_gen = await server.get_event_generator(self.nodes.event_type, ua.ObjectIds.Server)
        await server.start()
        self.startup_s = time.perf_counter() - t0
        log.info(
            "OPC UA plant %s listening on %s: %d tags, address space ready in %.2f s",
            self.spec.plant.name,
            self.endpoint_url,
            len(self.tags),
            self.startup_s,
        )
        await self._write_clock()
        self._tasks.append(asyncio.create_task(self._bring_up(t0), name="plant-bring-up"))
        if not iserver.shelf.with_name(iserver.shelf.name + ".ok").exists():
            self._tasks.append(asyncio.create_task(asyncio.to_thread(_make_shelf, iserver.shelf), name="aspace-cache"))
        if self.options.record_history:
            self._tasks.append(asyncio.create_task(self._sample_writer(), name="plant-history"))

    async def stop(self) -> None:
        """Stop the clock, the server and (if owned) the historian."""
        await stop_tasks(self._tasks)
        self._tasks.clear()
        await self._flush_samples()
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self._own_historian and self._historian is not None:
            await asyncio.to_thread(self._historian.close)
            self._historian = None

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the plant runs (its steady state is solved); re-raise a start-up failure."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()
        if self._failed is not None:
            raise self._failed

    async def _bring_up(self, t0: float) -> None:
        try:
            fs = await asyncio.to_thread(build_flowsheet, self.spec)
            mm = self._mismatch_arg
            if isinstance(mm, Path):
                mm = await asyncio.to_thread(load_mismatch, mm, fs)
            mismatch = mm or Mismatch()
            scenario = await asyncio.to_thread(load_scenario, self._scenario_path, fs) if self._scenario_path else None
            model = DynamicModel(fs)
            p0 = mismatch.initial_parameters(fs)
            z0 = await asyncio.to_thread(steady_initial_state, fs, p0, self.cache_dir)
            options = RuntimeOptions(
                actuator_time_constant_h=self.options.actuator_time_constant_h, seed=self.options.seed
            )
            runtime = await asyncio.to_thread(PlantRuntime, fs, z0, mismatch, options, model)
            self.fs, self.runtime = fs, runtime
            if scenario is not None:
                runtime.load_scenario(scenario)
            await self._publish(runtime.drain())
            self._reanchor()
            self.ready_s = time.perf_counter() - t0
            log.info("plant %s running at speed %g after %.1f s", self.spec.plant.name, self._speed, self.ready_s)
            self._ready.set()
        except Exception as exc:
            log.exception("the plant could not start")
            self._failed = exc
            self._ready.set()
            return
        await self._run_clock()

    # ------------------------------------------------------------------ clock
    def _reanchor(self) -> None:
        assert self.runtime is not None
        self._anchor_wall = time.monotonic()
        self._anchor_t = self.runtime.t_h

    def target_h(self) -> float:
        """Where the plant clock should be: anchor + speed x wall time since the anchor."""
        return self._anchor_t + self._speed * (time.monotonic() - self._anchor_wall) / 3600.0

    @property
    def tick_s(self) -> float:
        """Wall seconds per clock tick now (grows with the cost of a step, see :meth:`_adapt_tick`)."""
        return self._tick_s

    @property
    def step_h(self) -> float:
        """Plant hours per step now: ``speed x tick``."""
        return self._speed * self._tick_s / 3600.0

    def _adapt_tick(self, wall_per_step_s: float) -> None:
        # a step must cost well under a tick: the tick (and so the step) doubles while a step takes
        # more than half a tick, up to 16 x tick_s, and halves back when steps become cheap; powers
        # of two keep the set of step lengths (and of cached IDAS integrators) small
        self._step_cost_s = (
            wall_per_step_s if math.isnan(self._step_cost_s) else (0.7 * self._step_cost_s + 0.3 * wall_per_step_s)
        )
        base = self.options.tick_s
        tick = self._tick_s
        while self._step_cost_s > 0.5 * tick and tick < 16 * base:
            tick *= 2
        while tick > base and self._step_cost_s < 0.15 * tick:
            tick /= 2
        if tick != self._tick_s:
            log.info("clock tick %.2f s -> %.2f s (a step costs %.2f s)", self._tick_s, tick, self._step_cost_s)
            self._tick_s = tick

    async def _run_clock(self) -> None:
        runtime = self.runtime
        assert runtime is not None
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += self._tick_s
            delay = next_tick - loop.time()
            if delay < 0:
                next_tick = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)
            if self._paused:
                self.lag_h = 0.0
                await self._write_clock()
                continue
            step_h = self.step_h
            n = math.floor((self.target_h() - runtime.t_h) / step_h + 1e-9)
            if n >= 1:
                try:
                    report = await asyncio.to_thread(runtime.advance, min(n, self.options.max_steps_per_tick), step_h)
                except TwinError as exc:
                    log.error("plant step failed, holding the state: %s", exc)
                    await self._raise_event(
                        Notice("integrator", "plant", f"plant step failed: {exc}", runtime.t_h, True)
                    )
                    self._reanchor()
                    continue
                await self._publish(report)
                if report.steps and step_h == self._costed_step_h:
                    self._adapt_tick(report.wall_s / report.steps)
                # the first steps of a new length include building its integrator: not a cost sample
                self._costed_step_h = step_h
            self.lag_h = max(self.target_h() - runtime.t_h, 0.0)
            self.max_lag_h = max(self.max_lag_h, self.lag_h)
            await self._write_clock()

    async def _write_clock(self) -> None:
        assert self.server is not None
        t = self.runtime.t_h if self.runtime is not None else 0.0
        now = datetime.now(UTC)
        values: dict[str, ua.Variant] = {
            "PlantTime": ua.Variant(self.plant_datetime(t), ua.VariantType.DateTime),
            "PlantHours": ua.Variant(t, ua.VariantType.Double),
            "Speed": ua.Variant(self._speed, ua.VariantType.Double),
            "Paused": ua.Variant(self._paused, ua.VariantType.Boolean),
            "RunEpoch": ua.Variant(self._epoch, ua.VariantType.DateTime),
            "LagHours": ua.Variant(self.lag_h, ua.VariantType.Double),
            "Scenario": ua.Variant(
                self.runtime.scenario.name if self.runtime and self.runtime.scenario else "", ua.VariantType.String
            ),
        }
        for name, var in values.items():
            dv = _ua.data_value(var, SourceTimestamp=self.plant_datetime(t), ServerTimestamp=now)
            await self.server.write_attribute_value(self.nodes.clock[name], dv)

    # ------------------------------------------------------------------ publishing
    async def _publish(self, report: StepReport) -> None:
        if report.discarded or self.server is None:
            return
        now = datetime.now(UTC)
        samples: list[Sample] = []
        for r in report.readings:
            await self._write_reading(r, now)
            if isinstance(r.value, float) and not r.tag.endswith((".SP", ".MODE")):
                samples.append(
                    Sample(
                        tag=r.tag,
                        value=r.value,
                        quality=st.quality_of(_ua.status(r.status)),
                        source_time=self.plant_datetime(r.t_h),
                        plant_time_h=r.t_h,
                    )
                )
        if samples and self.options.record_history:
            try:
                self._samples.put_nowait(samples)
            except asyncio.QueueFull:
                log.warning("historian is behind: dropped %d samples", len(samples))
        for notice in report.notices:
            await self._raise_event(notice)

    async def _write_reading(self, r: Reading, now: datetime | None = None) -> None:
        assert self.server is not None
        vt = ua.VariantType.String if isinstance(r.value, str) else ua.VariantType.Double
        source = self.plant_datetime(r.t_h)
        self._last_source = max(self._last_source, source)
        dv = _ua.data_value(
            ua.Variant(r.value, vt),
            StatusCode=_ua.status(r.status),
            SourceTimestamp=source,
            ServerTimestamp=now or datetime.now(UTC),
        )
        await self.server.write_attribute_value(self.nodes.variables[r.tag], dv)

    async def _raise_event(self, notice: Notice) -> None:
        log.info("scenario event at %.3f h: %s", notice.t_h, notice.message)
        gen = self._event_gen
        if gen is not None:
            gen.event.Kind = notice.kind
            gen.event.Target = notice.target
            gen.event.PlantHours = notice.t_h
            gen.event.Starting = notice.starting
            gen.event.Severity = 500 if notice.starting else 300
            gen.event.SourceNode = self.nodes.plant
            gen.event.SourceName = "Plant"
            await gen.trigger(time_attr=self.plant_datetime(notice.t_h), message=notice.message)
        try:
            await asyncio.to_thread(
                self.historian.record_event,
                NewEvent(
                    kind=EventKind.EVENT,
                    severity=Severity.MEDIUM if notice.starting else Severity.INFO,
                    source=notice.target,
                    message=f"scenario {notice.kind}: {notice.message}",
                    time=self.plant_datetime(notice.t_h),
                    plant_time_h=notice.t_h,
                ),
            )
        except Exception:
            log.exception("could not record a scenario event")

    async def _sample_writer(self) -> None:
        while True:
            batch = await self._samples.get()
            while not self._samples.empty() and len(batch) < 20000:
                batch.extend(self._samples.get_nowait())
            try:
                await asyncio.to_thread(self.historian.record_samples, batch)
            except Exception:
                log.exception("could not record %d samples", len(batch))

    async def _flush_samples(self) -> None:
        batch: list[Sample] = []
        while not self._samples.empty():
            batch.extend(self._samples.get_nowait())
        if batch and self._historian is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._historian.record_samples, batch)

    # ------------------------------------------------------------------ writes
    async def handle_write(self, user: SessionUser, wv: ua.WriteValue) -> ua.StatusCode:
        """Check, audit and apply one written item; the status code says what happened."""
        tag = self._tag_of.get(wv.NodeId)
        try:
            if tag is None or wv.AttributeId != ua.AttributeIds.Value:
                if tag is None and self.server is not None and wv.NodeId not in self.server.iserver.aspace:
                    return _ua.status(ua.StatusCodes.BadNodeIdUnknown)
                raise st.NotWritableError(f"{wv.NodeId.to_string()}: only the Value of SP and MODE tags is writable")
            info = next(t for t in self.tags if t.tag == tag)
            if not info.writable:
                raise st.NotWritableError(f"{tag}: not writable (only SP and MODE are)", field=tag)
            check(user.sx_role, Permission.WRITE_SETPOINT, user=user.name)
            runtime = self.runtime
            if runtime is None:
                raise ConflictError(f"{tag}: the plant is still starting", field=tag)
            value = _coerce(wv.Value, info.role, tag)
            async with self._write_lock:
                if info.role is TagRole.SP:
                    assert isinstance(value, float)
                    previous: float | str = runtime.check_setpoint(tag, value)
                else:
                    assert isinstance(value, str)
                    if value not in ("AUTO", "MAN"):
                        raise st.SetpointRangeError(f"{tag}: {value!r} is not allowed; expected AUTO or MAN", field=tag)
                    previous = runtime.mode(info.instrument)
                t_h = runtime.t_h
                await asyncio.to_thread(
                    self.historian.audit,
                    user.name or "unknown",
                    "plant.write_setpoint" if info.role is TagRole.SP else "plant.write_mode",
                    target=tag,
                    details={
                        "value": value,
                        "previous_value": previous,
                        "unit": info.unit,
                        "plant_time_h": t_h,
                        "plant_time": self.plant_datetime(t_h).isoformat(),
                        "role": user.sx_role.value if user.sx_role else None,
                    },
                )
                if info.role is TagRole.SP:
                    assert isinstance(value, float)
                    reading = runtime.apply_setpoint(tag, value)
                else:
                    assert isinstance(value, str)
                    reading = runtime.set_mode(info.instrument, value)
                await self._write_reading(reading)
            log.info("%s wrote %s = %r (was %r) at %.3f h", user.name, tag, value, previous, t_h)
            return _ua.status(ua.StatusCodes.Good)
        except TwinError as exc:
            log.info("write refused: %s", exc.message)
            return st.status_for(exc)
        except Exception as exc:
            log.exception("write of %s failed", tag)
            return st.status_for(exc)

    # ------------------------------------------------------------------ trainer
    def _read_true_state(self, nodeid: ua.NodeId, attr: ua.AttributeIds) -> ua.DataValue:
        runtime = self.runtime
        if runtime is None:
            return _ua.data_value(ua.Variant("", ua.VariantType.String), StatusCode=st.WAITING)
        return _ua.data_value(
            ua.Variant(runtime.true_state_json(), ua.VariantType.String),
            SourceTimestamp=self.plant_datetime(runtime.t_h),
            ServerTimestamp=datetime.now(UTC),
        )

    def _method(self, name: str) -> Callable[..., Awaitable[Any]]:
        handlers: dict[str, Callable[..., Awaitable[None]]] = {
            "LoadScenario": self._m_load_scenario,
            "ClearScenario": self._m_clear_scenario,
            "Pause": self._m_pause,
            "SetSpeed": self._m_set_speed,
            "Reset": self._m_reset,
        }
        handler = handlers[name]

        async def call(parent: ua.NodeId, *args: ua.Variant) -> Any:
            user = _current_user.get()
            try:
                check(user.sx_role if user else None, Permission.MANAGE_SCENARIOS, user=user.name if user else None)
                if self.runtime is None:
                    raise ConflictError("the plant is still starting")
                values = [a.Value if isinstance(a, ua.Variant) else a for a in args]
                await handler(*values)
                await self._audit_method(user, name, values)
                return []
            except TwinError as exc:
                log.info("method %s refused: %s", name, exc.message)
                return st.status_for(exc)
            except TypeError:
                return _ua.status(ua.StatusCodes.BadArgumentsMissing)

        return call

    async def _audit_method(self, user: SessionUser | None, name: str, values: list[Any]) -> None:
        shown = [v if not isinstance(v, str) or len(v) < 200 else f"<{len(v)} characters>" for v in values]
        await asyncio.to_thread(
            self.historian.audit,
            (user.name if user else None) or "unknown",
            f"plant.{name}",
            target="Plant/Trainer",
            details={"arguments": shown, "plant_time_h": self.runtime.t_h if self.runtime else None},
        )

    async def _m_load_scenario(self, text: str) -> None:
        assert self.runtime is not None
        assert self.fs is not None
        if not isinstance(text, str):
            raise InputError("ScenarioToml: expected a String", field="ScenarioToml")
        scenario = parse_scenario_text(text, self.fs)
        await self.load_scenario(scenario)

    async def _m_clear_scenario(self) -> None:
        assert self.runtime is not None
        self.runtime.clear_scenario()
        await self._publish(self.runtime.drain())
        await self._write_clock()

    async def _m_pause(self, paused: bool) -> None:
        await self.pause(bool(paused))

    async def _m_set_speed(self, speed: float) -> None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)):
            raise InputError("Speed: expected a Double", field="Speed")
        await self.set_speed(float(speed))

    async def _m_reset(self) -> None:
        await self.reset()

    # ------------------------------------------------------------------ control (also for in-process use)
    async def load_scenario(self, scenario: Scenario) -> None:
        """Start a scenario now."""
        assert self.runtime is not None
        self.runtime.load_scenario(scenario)
        await self._publish(self.runtime.drain())
        await self._write_clock()

    async def pause(self, paused: bool) -> None:
        """Pause or resume the plant clock."""
        if self.runtime is not None and not paused and self._paused:
            self._reanchor()
        self._paused = paused
        await self._write_clock()

    async def set_speed(self, speed: float) -> None:
        """Change the speed (plant seconds per wall second, 0 < speed <= 1e6)."""
        if not (math.isfinite(speed) and 0.0 < speed <= MAX_SPEED):
            raise InputError(f"Speed: {speed!r} is not allowed; expected 0 < speed <= {MAX_SPEED:g}", field="Speed")
        self._speed = speed
        if self.runtime is not None:
            self._reanchor()
        self.max_lag_h = 0.0
        await self._write_clock()

    async def reset(self) -> None:
        """Back to the initial state; a new run epoch (never earlier than any value published)."""
        assert self.runtime is not None
        async with self._write_lock:
            self.runtime.reset()
            self._epoch = max(datetime.now(UTC), self._last_source + timedelta(seconds=1)).replace(microsecond=0)
            self._reanchor()
            self.max_lag_h = 0.0
            await self._publish(self.runtime.drain())
            await self._write_clock()


def _shelf_path(cache_dir: Path) -> Path:
    return cache_dir / f"asyncua-{asyncua.__version__}-standard-address-space"


def _make_shelf(path: Path) -> None:
    """Build the standard-address-space shelf at ``path`` (once; other processes skip while one
    builds it, and readers only use it once its ``.ok`` marker exists)."""
    ok = path.with_name(path.name + ".ok")
    if ok.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        if ok.exists():
            return
        from asyncua.server.address_space import AddressSpace, NodeManagementService
        from asyncua.server.standard_address_space import standard_address_space

        t0 = time.perf_counter()
        aspace = AddressSpace()
        standard_address_space.fill_address_space(NodeManagementService(aspace))
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        aspace.make_aspace_shelf(tmp)
        for part in path.parent.glob(tmp.name + "*"):
            part.replace(path.with_name(path.name + part.name[len(tmp.name) :]))
        ok.write_text(asyncua.__version__ + "\n", encoding="utf-8")
        log.info("cached the OPC UA standard address space in %s (%.1f s)", path, time.perf_counter() - t0)
    finally:
        os.close(fd)


def _coerce(dv: ua.DataValue, role: TagRole, tag: str) -> float | str:
    """The written value as the setpoint's type: numbers (Float, integers) for SP, a String for MODE."""
    var = dv.Value
    if var is None or var.Value is None or (dv.StatusCode is not None and not dv.StatusCode.is_good()):
        raise st.SetpointTypeError(f"{tag}: no value (or a Bad status) was written", field=tag)
    if role is TagRole.MODE:
        if var.VariantType is not ua.VariantType.String:
            raise st.SetpointTypeError(f"{tag}: expected a String (AUTO or MAN), got {var.VariantType.name}", field=tag)
        return str(var.Value).strip().upper()
    if var.VariantType not in _NUMERIC or isinstance(var.Value, (list, tuple, bool)):
        raise st.SetpointTypeError(
            f"{tag}: expected a number (Double, Float or an integer), got {var.VariantType.name}", field=tag
        )
    return float(var.Value)
