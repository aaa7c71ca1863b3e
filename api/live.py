"""Live updates: one subscription to the twin, fanned out to every SSE client, plus the alarms
the API raises from what it sees (product off spec, stale or Bad data).

:class:`LiveHub` reads the twin's update queue (:meth:`twin.service.TwinService.subscribe`):
``state``, ``flag``, ``proposal``, ``event`` and ``mode`` messages. After each ``state`` it adds
a ``tags`` message (every tag with quality) and runs the alarm checks:

- **product off spec**: a product's predicted purity or recovery (:meth:`TwinService.predicted_kpis`)
  falls below its specification: an alarm (high) on the transition, an event when back on spec;
- **stale or Bad data**: a measured tag (not a setpoint) that was usable becomes stale (older than the ingestion limit
  against the plant clock, including an instrument that stopped publishing) or Bad: an alarm
  (medium) on the transition, an event when it recovers.

The twin itself raises estimator-unhealthy, solver-failure and mode-change events. Alarms are
recorded in the historian (:meth:`Historian.record_event`) and broadcast. A slow client loses
its oldest messages, never blocks the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from twin.historian_records import EventKind, NewEvent, Severity
from twin.service import TwinService

__all__ = ["LiveHub"]

log = logging.getLogger(__name__)


class LiveHub:
    """Fans the twin's updates out to subscribers and raises the API's alarms (module doc)."""

    def __init__(self, twin: TwinService, *, client_queue: int = 128) -> None:
        self.twin = twin
        self.client_queue = client_queue
        self._clients: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._seq = itertools.count(1)
        self._off_spec: dict[str, bool] = {}
        self._bad_tags: dict[str, str] = {}
        self._seen_good: set[str] = set()
        self.messages = 0

    @property
    def clients(self) -> int:
        """Connected subscribers."""
        return len(self._clients)

    async def start(self) -> None:
        """Subscribe to the twin and start fanning out."""
        self._queue = self.twin.subscribe()
        self._task = asyncio.create_task(self._run(), name="api-live-hub")

    async def stop(self) -> None:
        """Stop; subscribers get an end marker."""
        if self._queue is not None:
            self.twin.unsubscribe(self._queue)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for q in list(self._clients):
            self._put(q, {"type": "end"})

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of ``{"id", "type", ...}`` messages."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self.client_queue)
        self._clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        """Stop delivering to ``q``."""
        self._clients.discard(q)

    @staticmethod
    def _put(q: asyncio.Queue[dict[str, Any]], message: dict[str, Any]) -> None:
        while True:
            try:
                q.put_nowait(message)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()  # drop the oldest: a slow client must not block the others

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every subscriber (numbered)."""
        out = {"id": next(self._seq), **message}
        self.messages += 1
        for q in list(self._clients):
            self._put(q, out)

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            message = await self._queue.get()
            self.publish(message)
            if message.get("type") == "state":
                try:
                    self.publish({"type": "tags", "tags": self.twin.tag_values()})
                    await self.check_alarms()
                except Exception:  # an alarm check must never stop the live updates
                    log.exception("alarm check failed")

    async def raise_event(self, kind: EventKind, severity: Severity, source: str, message: str) -> None:
        """Record an event or alarm and broadcast it."""
        snap = self.twin.snapshot()
        ev = await asyncio.to_thread(
            self.twin.historian.record_event,
            NewEvent(
                kind=kind,
                severity=severity,
                source=source,
                message=message,
                plant_time_h=snap.plant_time_h if snap else None,
            ),
        )
        self.publish(
            {
                "type": "event",
                "event_id": ev.id,
                "kind": kind.value,
                "severity": severity.value,
                "source": source,
                "message": message,
            }
        )

    async def check_alarms(self) -> None:
        """Off-spec and data-quality checks (see the module docstring)."""
        for name, k in self.twin.predicted_kpis().items():
            short = []
            if k["purity"] < k["purity_min"]:
                short.append(f"purity {k['purity']:.5f} < {k['purity_min']:.5f}")
            if k["recovery"] < k["recovery_min"]:
                short.append(f"recovery {k['recovery']:.4f} < {k['recovery_min']:.4f}")
            off = bool(short)
            if off and not self._off_spec.get(name, False):
                await self.raise_event(
                    EventKind.ALARM, Severity.HIGH, f"product:{name}", f"{name} predicted off spec: {'; '.join(short)}"
                )
            elif not off and self._off_spec.get(name, False):
                await self.raise_event(
                    EventKind.EVENT, Severity.INFO, f"product:{name}", f"{name} predicted back on spec"
                )
            self._off_spec[name] = off
        snap = self.twin.snapshot()
        now = snap.plant_time_h if snap is not None else None
        ingestor = self.twin.ingestor
        for tag, tv in list(ingestor.latest.items()):
            plan = ingestor.plan.get(tag)
            if plan is None or plan.role == "setpoint":  # a setpoint holds until changed: never stale
                continue
            reason = ingestor.check(tv, now)
            if reason is None:
                self._seen_good.add(tag)
            bad = reason is not None and (reason.startswith("stale") or reason == "quality bad")
            was = tag in self._bad_tags
            if bad and not was and tag in self._seen_good:  # not at start-up, before any good value
                assert reason is not None
                self._bad_tags[tag] = reason
                await self.raise_event(
                    EventKind.ALARM, Severity.MEDIUM, tag, f"{tag}: {reason}: the twin does not use it"
                )
            elif not bad and was and reason is None:
                del self._bad_tags[tag]
                await self.raise_event(EventKind.EVENT, Severity.INFO, tag, f"{tag}: good data again")
