"""The live twin: ingests tags, estimates the unmeasured state, proposes or applies setpoints,
and records everything.

:class:`TwinService` owns its lifecycle (``async with``): on entry it subscribes to the plant's
tags through a :class:`~twin.plant_io.PlantConnection` and starts two loops,

- the **estimation loop**: every ``estimator_interval_s`` of wall time, the usable values that
  arrived are turned into model inputs and observations (:mod:`twin.ingestion`), and the
  estimator (:mod:`twin.estimation`) predicts to the plant's clock and updates, in a worker
  thread (solves never block the event loop); the snapshot and flags are recorded;
- the **optimisation cycle**: every ``cycle_interval_h`` of plant time, when the plant is
  steady, the advisor computes setpoints on the estimated state and parameters; the proposal is
  recorded with its predicted effect, active constraints, reason and versions. In advisory mode
  (the default) it waits for an operator's decision; approving it makes the twin write the
  approved setpoints, linked in the audit to the approval. In closed loop (enabled by an
  operator, allowed at start) the twin writes through the safety gate (:mod:`twin.safety`),
  recording the intent before and the outcome after each write, and otherwise holds.

Every proposal, decision, write and mode change is recorded in the historian with who and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from models.dynamics import DynamicModel, DynamicResult, Move
from models.errors import ConflictError, IngestionError, InputError, NotFoundError, TwinError
from models.flowsheet import Flowsheet
from models.kpi import ProductKpis
from twin.compute import run_model
from twin.estimation import EstimateSnapshot, Estimator, EstimatorOptions, Observation
from twin.historian import Historian
from twin.historian_records import (
    EstimateSnapshot as EstimateRecord,
)
from twin.historian_records import (
    EventKind,
    Mode,
    NewEvent,
    NewProposal,
    Proposal,
    ProposalStatus,
    Sample,
    Severity,
    Verdict,
    WriteIntent,
    WriteOutcome,
)
from twin.historian_records import (
    Quality as HQuality,
)
from twin.ingestion import Flag, Ingestor
from twin.plant_io import PlantConnection, TagValue
from twin.safety import SafetyGate
from twin.security import Permission, Role, check
from twin.tasks import stop_tasks

__all__ = ["Advice", "SetpointAdvisor", "TwinOptions", "TwinService"]

log = logging.getLogger(__name__)
SLOW_ESTIMATE_S = 30.0
"""An estimator step longer than this (wall seconds) is logged as a warning."""


@dataclass(frozen=True)
class Advice:
    """An advisor's answer: setpoints (parameter name -> value) and what they are predicted to do."""

    success: bool
    setpoints: dict[str, float]
    predicted: dict[str, float]
    active_constraints: tuple[str, ...]
    reason: str
    message: str = ""


class SetpointAdvisor(Protocol):
    """Computes setpoints for the estimated plant (the setpoint optimiser behind it)."""

    def advise(self, z: np.ndarray, p: np.ndarray, current: Mapping[str, float]) -> Advice:
        """Setpoints for the plant at stage state ``z`` with parameters ``p``."""


@dataclass(frozen=True)
class TwinOptions:
    """Runtime options of the twin.

    Attributes
    ----------
    estimator_interval_s
        Wall time between estimator updates.
    cycle_interval_h
        Plant time between optimisation cycles.
    stale_after_h
        A value older than this (plus the instrument's own delay and period) is stale.
    allow_closed_loop
        Closed loop may be enabled by an operator (``--allow-closed-loop``); never by default.
    steady_window_h
        The plant is steady when no manipulated variable moved and the parameter estimates
        changed by less than ``steady_tolerance`` over this window.
    steady_tolerance
        Largest parameter change (log units) over the window for "steady".
    record_every
        Record every n-th estimate snapshot in the historian.
    max_data_age_h
        Closed loop writes only when the estimator was updated from Good data at most this many
        plant hours ago (the safety gate's freshness rule).
    spec_version, parameter_set_version
        Versions stamped on proposals.
    """

    estimator_interval_s: float = 2.0
    cycle_interval_h: float = 4.0
    stale_after_h: float = 2.0
    allow_closed_loop: bool = False
    steady_window_h: float = 2.0
    steady_tolerance: float = 0.05
    record_every: int = 5
    max_data_age_h: float = 2.0
    spec_version: str = "spec"
    parameter_set_version: str = "shipped"


@dataclass
class _Pending:
    observations: list[Observation] = field(default_factory=list)
    inputs: dict[str, float] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


class TwinService:
    """The live twin of one plant (see module docstring)."""

    def __init__(
        self,
        flowsheet: Flowsheet,
        connection: PlantConnection,
        historian: Historian,
        *,
        z0: np.ndarray,
        advisor: SetpointAdvisor | None = None,
        options: TwinOptions | None = None,
        estimator_options: EstimatorOptions | None = None,
    ) -> None:
        self.fs = flowsheet
        self.connection = connection
        self.historian = historian
        self.advisor = advisor
        self.options = options or TwinOptions()
        self.ingestor = Ingestor(flowsheet, stale_after_h=self.options.stale_after_h)
        self.estimator = Estimator(flowsheet, z0, flowsheet.parameter_vector(), options=estimator_options)
        self.gate = SafetyGate(
            {m.variable: m for m in flowsheet.spec.manipulated}, max_data_age_h=self.options.max_data_age_h
        )
        self.kpis = ProductKpis(flowsheet)
        self._pending = _Pending()
        self._snapshot: EstimateSnapshot | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._theta_history: list[tuple[float, np.ndarray]] = []
        self._last_cycle_h: float | None = None
        self._subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        self.mode = historian.current_mode() if hasattr(historian, "current_mode") else Mode.ADVISORY
        self.last_estimator_wall_s: float | None = None
        self.last_error: str | None = None
        self._plant_now_h: float | None = None  # the plant clock at the last estimator step

    # -------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> TwinService:
        # the clock first: the values the subscription delivers at once are judged against it
        with contextlib.suppress(IngestionError):  # a link down at this instant: at the first step
            self._plant_now_h = await self.connection.plant_time_h()
        await self.connection.subscribe(self.ingestor.tags, self._on_value, sampling_ms=1000, publishing_ms=1000)
        self._tasks = [
            asyncio.create_task(self._estimation_loop(), name="twin-estimation"),
            asyncio.create_task(self._cycle_loop(), name="twin-cycle"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_tasks(self._tasks)
        self._tasks = []

    # -------------------------------------------------------------- ingestion
    async def _on_value(self, tv: TagValue) -> None:
        quality = HQuality(tv.quality.value)
        value = float(tv.value) if isinstance(tv.value, (int, float)) and math.isfinite(float(tv.value)) else None
        self._pending.samples.append(
            Sample(tag=tv.tag, value=value, quality=quality, source_time=tv.source_time, plant_time_h=tv.plant_time_h)
        )
        # the age of a value is judged against the plant's clock (read at every estimator step),
        # never against the value's own timestamp: a value that arrives old is stale
        now = self._plant_now_h if self._plant_now_h is not None else tv.plant_time_h
        result = self.ingestor.ingest([tv], now)
        self._pending.observations += result.observations
        self._pending.inputs.update(result.inputs)
        for flag in result.flags:
            await self._flag(flag)

    async def _flag(self, flag: Flag) -> None:
        self._broadcast({"type": "flag", "tag": flag.tag, "reason": flag.reason})

    # ------------------------------------------------------------- estimation
    async def _estimation_loop(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.options.estimator_interval_s)
            try:
                await self.estimate_now()
                n += 1
                if n % self.options.record_every == 0 and self._snapshot is not None:
                    await asyncio.to_thread(self._record_snapshot, self._snapshot)
            except IngestionError as exc:
                # the plant link is down: the connection reports the gap once; hold the estimate
                self.last_error = exc.message
            except TwinError as exc:
                self.last_error = exc.message
                await self._event(
                    EventKind.ALARM, Severity.HIGH, "estimator", f"estimator update failed: {exc.message}"
                )
            except Exception as exc:
                self.last_error = str(exc)
                log.exception("estimation loop error")

    async def estimate_now(self) -> EstimateSnapshot:
        """Run one estimator step now with whatever data arrived (also used by tests)."""
        async with self._lock:
            pending, self._pending = self._pending, _Pending()
            plant_now = await self.connection.plant_time_h()
            self._plant_now_h = plant_now
            gone_stale = self.ingestor.recheck(plant_now)
            t0 = time.perf_counter()
            t_before = self.estimator.state.t_h
            snap = await run_model(self._estimate, plant_now, pending)
            self.last_estimator_wall_s = time.perf_counter() - t0
            if self.last_estimator_wall_s > SLOW_ESTIMATE_S:
                # for diagnosis: a long step (IDAS retries, a recovery, or the optimiser holding the
                # model lock) leaves the estimate behind a plant that runs faster than real time
                log.warning(
                    "estimator step took %.0f s of wall time (model lock wait included) for %.2f plant h",
                    self.last_estimator_wall_s, plant_now - t_before,
                )
            self._snapshot = snap
            self._theta_history.append((snap.plant_time_h, np.array(list(snap.parameters.values()))))
            self._theta_history = [(t, v) for t, v in self._theta_history if t >= snap.plant_time_h - 48.0]
        for flag in gone_stale:
            await self._flag(flag)
        if pending.samples:
            await asyncio.to_thread(self.historian.record_samples, pending.samples)
        if not snap.healthy:
            await self._event(EventKind.ALARM, Severity.HIGH, "estimator", "estimator unhealthy (non-finite state)")
        self._broadcast({"type": "state", "plant_time_h": snap.plant_time_h})
        return snap

    def _estimate(self, plant_now: float, pending: _Pending) -> EstimateSnapshot:
        self.estimator.predict(plant_now, pending.inputs)
        if pending.observations:
            report = self.estimator.update(pending.observations)
            for tag, why in report.rejected:
                log.info("observation %s not used: %s", tag, why)
        return self.estimator.snapshot()

    def _record_snapshot(self, snap: EstimateSnapshot) -> None:
        now = datetime.now(UTC)
        for c in snap.circuits:
            log_sd = np.log(np.maximum(c.aqueous_high, 1e-300) / np.maximum(c.aqueous_mol_per_l, 1e-300)) / 1.96
            self.historian.record_estimate(
                EstimateRecord(
                    circuit=c.name, quantity="aqueous_mol_per_l", stages=c.stages, elements=c.elements,
                    # the historian stores (stages x elements); the estimator's arrays are (elements x stages)
                    mean=c.aqueous_mol_per_l.T, std=(c.aqueous_mol_per_l * log_sd).T, time=now,
                    plant_time_h=snap.plant_time_h,
                )
            )

    # ---------------------------------------------------------------- queries
    def snapshot(self) -> EstimateSnapshot | None:
        """The latest estimate (None before the first update)."""
        return self._snapshot

    def tag_values(self) -> dict[str, dict[str, Any]]:
        """Latest value of every tag with quality and, when not used, why."""
        out = {}
        for tag, tv in self.ingestor.latest.items():
            flag = self.ingestor.flags.get(tag)
            out[tag] = {
                "value": tv.value, "quality": tv.quality.value, "source_time": tv.source_time.isoformat(),
                "plant_time_h": tv.plant_time_h, "used": flag is None, "flag": flag.reason if flag else None,
            }
        return out

    def current_setpoints(self) -> dict[str, float]:
        """The setpoints in force: the latest Good ``SP`` reading of each manipulated variable's
        controller, else the model's input (the measured PV) for variables without one.

        An SP is published when it changes, so its age says nothing about its validity (it is
        not checked for staleness here); the move limits of the gate and the plant's own rate
        rule are both about the setpoint, which a noisy PV would misplace by its noise."""
        p = self.estimator.p_base
        out = {m.variable: float(p[self.fs.parameters.index(m.variable)]) for m in self.fs.spec.manipulated}
        for plan in self.ingestor.plan.values():
            if plan.role != "setpoint" or plan.parameter not in out:
                continue
            tv = self.ingestor.latest.get(plan.tag)
            if tv is not None and tv.usable:
                out[plan.parameter] = float(tv.value)
        return out

    def predicted_kpis(self) -> dict[str, dict[str, float]]:
        """Purity and recovery of every product predicted from the current estimate."""
        snap = self._snapshot
        if snap is None:
            return {}
        out = self.kpis.function(snap.z, snap.p)
        pur, rec = np.asarray(out[0]).ravel(), np.asarray(out[1]).ravel()
        return {
            ps.name: {"purity": float(pur[i]), "recovery": float(rec[i]),
                      "purity_min": ps.purity_min or 0.0, "recovery_min": ps.recovery_min or 0.0}
            for i, ps in enumerate(self.kpis.products)
        }

    # ------------------------------------------------------------ subscribers
    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of live updates (state, flags, proposals, events, mode) for SSE/WebSocket."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to ``q``."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(q)

    def _broadcast(self, message: dict[str, Any]) -> None:
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(message)

    async def connection_gap(self, gap: Any) -> None:
        """Record a lost or restored plant connection (the ``on_gap`` of :class:`ReconnectingPlant`)."""
        if gap.ended_s is None:
            await self._event(EventKind.ALARM, Severity.HIGH, "connection", f"plant connection lost: {gap.reason}")
        else:
            await self._event(
                EventKind.EVENT, Severity.INFO, "connection",
                f"plant connection restored after {gap.ended_s - gap.started_s:.1f} s (a gap in the data)",
            )

    async def _event(self, kind: EventKind, severity: Severity, source: str, message: str) -> None:
        t = self._snapshot.plant_time_h if self._snapshot else None
        ev = await asyncio.to_thread(
            self.historian.record_event,
            NewEvent(kind=kind, severity=severity, source=source, message=message, plant_time_h=t),
        )
        self._broadcast({"type": "event", "id": ev.id, "kind": kind.value, "severity": severity.value,
                         "message": message})

    # ------------------------------------------------------------ optimisation
    def is_steady(self) -> bool:
        """The estimator has used plant data, and the parameter estimates barely changed over the
        whole steady window (the history must reach back to its start)."""
        snap = self._snapshot
        if snap is None or snap.updates < 1 or len(self._theta_history) < 2:
            return False
        start = snap.plant_time_h - self.options.steady_window_h
        if self._theta_history[0][0] > start:
            return False
        # the window reaches back to the last estimate at or before its start: when estimates are
        # further apart in plant time than the window (a fast plant clock), it still holds two
        before = [v for t, v in self._theta_history if t < start]
        window = before[-1:] + [v for t, v in self._theta_history if t >= start]
        if len(window) < 2:
            return False
        spread = np.max(np.abs(np.array(window) - window[-1]))
        return bool(spread < self.options.steady_tolerance)

    async def _cycle_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.estimator_interval_s)
            snap = self._snapshot
            if snap is None or self.advisor is None:
                continue
            due = self._last_cycle_h is None or snap.plant_time_h - self._last_cycle_h >= self.options.cycle_interval_h
            if not due or not self.is_steady():
                continue
            self._last_cycle_h = snap.plant_time_h
            try:
                await self.run_cycle(by="twin")
            except TwinError as exc:
                await self._event(EventKind.ALARM, Severity.MEDIUM, "optimiser", f"optimisation failed: {exc.message}")
            except Exception as exc:
                log.exception("cycle error")
                self.last_error = str(exc)

    async def run_cycle(self, *, by: str = "twin") -> Proposal | None:
        """Compute a proposal now from the current estimate (advisory: recorded, pending)."""
        snap = self._snapshot
        if snap is None:
            raise ConflictError("no estimate yet: the twin has not received enough data", field="state")
        if self.advisor is None:
            raise ConflictError("no setpoint advisor is configured", field="advisor")
        current = self.current_setpoints()
        advice = await run_model(self.advisor.advise, snap.z, snap.p, current)
        if not advice.success:
            why = f"no proposal, holding ({advice.reason}): {advice.message}"
            await self._event(EventKind.ALARM, Severity.MEDIUM, "optimiser", why)
            return None
        for old in self.historian.proposals(ProposalStatus.PENDING).items:
            self.historian.set_proposal_status(old.id, ProposalStatus.SUPERSEDED, by=by, reason="a newer proposal")
        proposal = await asyncio.to_thread(
            self.historian.record_proposal,
            NewProposal(
                setpoints=advice.setpoints, predicted_effect=advice.predicted,
                active_constraints=advice.active_constraints, reason=advice.reason,
                spec_version=self.options.spec_version, parameter_set_version=self.options.parameter_set_version,
                current_setpoints=current,
            ),
            by=by,
        )
        self._broadcast({"type": "proposal", "id": proposal.id, "status": proposal.status.value})
        if self.mode is Mode.CLOSED_LOOP:
            # the estimator waited for the solve: bring it up to date so that the gate judges the
            # freshness of the data at the time of writing (a failed refresh leaves it stale: hold)
            with contextlib.suppress(TwinError):
                await self.estimate_now()
            await self._apply(proposal, approved_by=None, requested_by="twin")
        return proposal

    async def _apply(self, proposal: Proposal, *, approved_by: str | None, requested_by: str) -> list[str]:
        """Write a proposal's setpoints through the gate; returns the tags written."""
        snap = self._snapshot
        plant_now = await self.connection.plant_time_h()
        closed = self.mode is Mode.CLOSED_LOOP and approved_by is None
        # an operator's approval stands in for the closed-loop conditions (mode, freshness);
        # bounds and move limits always apply
        decision = self.gate.check(
            proposed=proposal.setpoints, current=self.current_setpoints(), plant_time_h=plant_now,
            closed_loop_enabled=self.mode is Mode.CLOSED_LOOP if closed else True,
            closed_loop_allowed=self.options.allow_closed_loop if closed else True,
            estimator_healthy=bool(snap and snap.healthy),
            last_update_h=(snap.last_update_plant_h if snap else None) if closed else plant_now,
            solve_ok=True,
        )
        if not decision.allowed:
            reason = "; ".join(decision.reasons)
            await self._event(EventKind.EVENT, Severity.LOW, "safety_gate", f"holding setpoints: {reason}")
            self.historian.audit(requested_by, "hold", target=f"proposal:{proposal.id}", details={"reasons": reason})
            return []
        written: list[str] = []
        failed = False
        for name, value in decision.setpoints.items():
            tag = self._setpoint_tag(name)
            if tag is None:
                continue
            intent = await asyncio.to_thread(
                self.historian.record_write_intent,
                WriteIntent(tag=tag, value=value, requested_by=requested_by,
                            mode=Mode.CLOSED_LOOP if closed else Mode.ADVISORY, proposal_id=proposal.id,
                            approved_by=approved_by, previous_value=self.current_setpoints().get(name)),
            )
            result = await self.connection.write(tag, value)
            await asyncio.to_thread(
                self.historian.record_write_outcome, intent.id,
                WriteOutcome.SUCCEEDED if result.accepted else WriteOutcome.FAILED, message=result.message,
            )
            if result.accepted:
                written.append(tag)
                self.gate.record_move(name, plant_now)
            else:
                failed = True
        status = ProposalStatus.FAILED if failed or not written else ProposalStatus.APPLIED
        await asyncio.to_thread(self.historian.set_proposal_status, proposal.id, status, by=requested_by,
                                reason=f"wrote {', '.join(written) or 'nothing'}")
        self._broadcast({"type": "proposal", "id": proposal.id, "status": status.value})
        return written

    def _setpoint_tag(self, parameter: str) -> str | None:
        for plan in self.ingestor.plan.values():
            if plan.role == "setpoint" and plan.parameter == parameter:
                return plan.tag
        return None

    # --------------------------------------------------------------- commands
    async def decide(self, proposal_id: int, verdict: Verdict, *, user: str, role: Role, comment: str = "") -> dict:
        """Approve or reject a pending proposal; approval writes its setpoints (audited)."""
        check(role, Permission.APPROVE_PROPOSAL, user=user)
        decision = await asyncio.to_thread(self.historian.decide, proposal_id, verdict, by=user, comment=comment)
        self._broadcast({"type": "proposal", "id": proposal_id, "status": "approved" if verdict is Verdict.APPROVE
                         else "rejected"})
        written: list[str] = []
        if verdict is Verdict.APPROVE:
            proposal = self.historian.get_proposal(proposal_id)
            written = await self._apply(proposal, approved_by=user, requested_by=user)
        return {"decision_id": decision.id, "verdict": verdict.value, "written": written}

    async def set_mode(self, mode: Mode, *, user: str, role: Role, reason: str = "") -> Mode:
        """Switch advisory/closed loop (closed loop only when allowed at start)."""
        check(role, Permission.ENABLE_CLOSED_LOOP, user=user)
        if mode is Mode.CLOSED_LOOP and not self.options.allow_closed_loop:
            raise ConflictError(
                "closed loop is not allowed on this twin: start it with --allow-closed-loop", field="mode"
            )
        await asyncio.to_thread(self.historian.record_mode_change, mode, by=user, reason=reason)
        self.mode = mode
        self._broadcast({"type": "mode", "mode": mode.value, "by": user})
        await self._event(EventKind.EVENT, Severity.INFO, "mode", f"mode set to {mode.value} by {user}")
        return mode

    async def lab_assay(self, tag: str, value_g_per_l: float, sample_time_h: float, *, user: str, role: Role) -> None:
        """Enter a lab result; used at the next estimator update like a late analyser sample."""
        check(role, Permission.ENTER_LAB_ASSAY, user=user)
        ob = self.ingestor.lab_assay(tag, value_g_per_l, sample_time_h)
        self._pending.observations.append(ob)
        await asyncio.to_thread(
            self.historian.audit, user, "lab_assay", target=tag,
            details={"value_g_per_l": value_g_per_l, "sample_time_h": sample_time_h},
        )

    async def what_if(self, moves: Sequence[Move], hours: float) -> DynamicResult:
        """Simulate from the current estimated state with proposed moves (no effect on the plant)."""
        snap = self._snapshot
        if snap is None:
            raise ConflictError("no estimate yet: the twin has not received enough data", field="state")
        if not (math.isfinite(hours) and 0 < hours <= 24 * 30):
            raise InputError(f"hours: {hours!r} must be in (0, 720]", field="hours")
        model: DynamicModel = self.estimator.model
        return await run_model(model.simulate, snap.z, hours, snap.p, moves)

    def proposal(self, proposal_id: int) -> Proposal:
        """A proposal by id."""
        try:
            return self.historian.get_proposal(proposal_id)
        except TwinError:
            raise
        except Exception:
            raise NotFoundError(f"proposal {proposal_id} does not exist", field="proposal_id") from None
