"""A plant connection that survives a server restart: watchdog, reconnection, re-subscription.

:class:`ReconnectingPlant` wraps connections made by a factory (for example
``lambda: PlantClient(options)``). A watchdog reads the plant clock every ``watchdog_s``; when
that fails the connection is declared lost, the gap is reported (``on_gap``), and new
connections are tried with exponential back-off until one succeeds; the subscriptions are then
made again and the end of the gap is reported. While disconnected, reads raise
:class:`~models.errors.IngestionError` and writes are refused (never silently dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from models.errors import IngestionError
from twin.plant_io import OnChange, PlantConnection, TagValue, WriteResult
from twin.tasks import stop_tasks

__all__ = ["Connectable", "Gap", "ReconnectingPlant"]

log = logging.getLogger(__name__)


class Connectable(PlantConnection, Protocol):
    """A plant connection with an explicit connect step (the OPC UA client)."""

    async def connect(self) -> None:
        """Open the connection (raises on failure)."""


@dataclass(frozen=True)
class Gap:
    """A loss of connection: when it started and ended (wall seconds since the epoch)."""

    started_s: float
    ended_s: float | None
    reason: str


class ReconnectingPlant:
    """:class:`PlantConnection` that reconnects (see module docstring)."""

    def __init__(
        self,
        factory: Callable[[], Connectable],
        *,
        on_gap: Callable[[Gap], Awaitable[None]] | None = None,
        watchdog_s: float = 2.0,
        backoff_max_s: float = 10.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.factory = factory
        self.on_gap = on_gap
        self.watchdog_s = watchdog_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self._inner: Connectable | None = None
        self._subs: list[tuple[tuple[str, ...], OnChange, int, int]] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.gaps: list[Gap] = []

    async def __aenter__(self) -> ReconnectingPlant:
        await self._connect()
        self._task = asyncio.create_task(self._watchdog(), name="plant-watchdog")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect(self) -> None:
        inner = self.factory()
        async with asyncio.timeout(self.timeout_s):
            await inner.connect()
        for tags, cb, sampling, publishing in self._subs:
            await inner.subscribe(tags, cb, sampling_ms=sampling, publishing_ms=publishing)
        self._inner = inner
        self.connected = True

    async def _drop(self) -> None:
        inner, self._inner = self._inner, None
        self.connected = False
        if inner is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await inner.close()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.watchdog_s)
            if self._inner is None:
                continue
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._inner.plant_time_h()
                continue
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            start = time.time()
            log.warning("plant connection lost (%s); reconnecting", reason)
            await self._drop()
            await self._report(Gap(start, None, reason))
            delay = 0.5
            while True:
                try:
                    await self._connect()
                    break
                except Exception as exc:
                    log.info("reconnect failed: %s", exc)
                    await self._drop()
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, self.backoff_max_s)
            gap = Gap(start, time.time(), reason)
            self.gaps.append(gap)
            log.warning("plant connection restored after %.1f s", gap.ended_s - gap.started_s if gap.ended_s else 0)
            await self._report(gap)

    async def _report(self, gap: Gap) -> None:
        if self.on_gap is not None:
            with contextlib.suppress(Exception):
                await self.on_gap(gap)

    def _require(self) -> Connectable:
        if self._inner is None:
            raise IngestionError("the plant connection is down; reconnecting", field="connection")
        return self._inner

    async def read(self, tags: Sequence[str]) -> dict[str, TagValue]:
        return await self._require().read(tags)

    async def subscribe(
        self, tags: Sequence[str], on_change: OnChange, *, sampling_ms: int = 1000, publishing_ms: int = 1000
    ) -> None:
        self._subs.append((tuple(tags), on_change, sampling_ms, publishing_ms))
        if self._inner is not None:
            await self._inner.subscribe(tags, on_change, sampling_ms=sampling_ms, publishing_ms=publishing_ms)

    async def write(self, tag: str, value: float) -> WriteResult:
        if self._inner is None:
            return WriteResult(tag, float(value), False, "BadNotConnected", "the plant connection is down")
        return await self._inner.write(tag, value)

    async def plant_time_h(self) -> float:
        return await self._require().plant_time_h()

    async def close(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
        await self._drop()

    def __getattr__(self, name: str) -> Any:
        # trainer helpers of the OPC UA client (true_state, call) pass through when connected
        return getattr(self._require(), name)
