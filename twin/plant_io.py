"""How the twin talks to a plant: a small protocol, the same for a real server and the simulator.

:class:`PlantConnection` is what the twin needs: read tags, subscribe to changes, write a
setpoint, and the plant's clock. The OPC UA client (``opcua.client``) implements it over TCP;
:class:`InProcessPlant` implements it on the simulated plant's runtime in the same process (no
network), for tests and training. A measurement is value + quality + source timestamp; the twin
never acts on stale or Bad data (:mod:`twin.ingestion`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from models.errors import TwinError
from twin.compute import run_model
from twin.tasks import stop_tasks

if TYPE_CHECKING:
    from opcua.plant_runtime import PlantRuntime, Reading

__all__ = ["InProcessPlant", "PlantConnection", "Quality", "TagValue", "WriteResult"]

log = logging.getLogger(__name__)

PLANT_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Wall-clock origin used to stamp the simulated plant's plant time as a source timestamp."""


class Quality(StrEnum):
    """OPC UA quality class of a value."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"

    @classmethod
    def from_status(cls, status: int) -> Quality:
        """From an OPC UA StatusCode value (top two bits: 00 good, 01 uncertain, 10 bad)."""
        severity = (int(status) >> 30) & 0x3
        return cls.GOOD if severity == 0 else (cls.UNCERTAIN if severity == 1 else cls.BAD)


@dataclass(frozen=True)
class TagValue:
    """One value of one tag: value, quality and the time it refers to.

    Attributes
    ----------
    tag
        ``FIC-101.PV``, ``AI-121.Dy`` ...
    value
        In the tag's engineering unit (a string for a controller MODE).
    quality
        Good, Uncertain or Bad.
    source_time
        When the value was measured (UTC; the simulated plant stamps plant time).
    plant_time_h
        The same instant in plant hours, when the plant publishes a plant clock.
    """

    tag: str
    value: float | str
    quality: Quality
    source_time: datetime
    plant_time_h: float | None = None

    @property
    def usable(self) -> bool:
        """Good quality and a finite number."""
        return (
            self.quality is Quality.GOOD
            and isinstance(self.value, (int, float))
            and math.isfinite(float(self.value))
        )


@dataclass(frozen=True)
class WriteResult:
    """The outcome of a setpoint write: accepted or refused, with the server's status."""

    tag: str
    value: float
    accepted: bool
    status: str
    message: str = ""


OnChange = Callable[[TagValue], Awaitable[None] | None]


@runtime_checkable
class PlantConnection(Protocol):
    """What the twin needs from a plant (OPC UA server or in-process simulator)."""

    async def read(self, tags: Sequence[str]) -> dict[str, TagValue]:
        """Current values of ``tags``."""

    async def subscribe(
        self, tags: Sequence[str], on_change: OnChange, *, sampling_ms: int, publishing_ms: int
    ) -> None:
        """Call ``on_change`` for every new value of ``tags``."""

    async def write(self, tag: str, value: float) -> WriteResult:
        """Write a setpoint; never raises for a refusal (see :attr:`WriteResult.accepted`)."""

    async def plant_time_h(self) -> float:
        """The plant's clock, hours."""

    async def close(self) -> None:
        """Release the connection."""


def plant_timestamp(t_h: float) -> datetime:
    """Source timestamp of a simulated-plant value at plant time ``t_h``."""
    return PLANT_EPOCH + timedelta(hours=t_h)


class InProcessPlant:
    """:class:`PlantConnection` on a :class:`opcua.plant_runtime.PlantRuntime` in this process.

    The plant advances in plant time at ``speed`` x wall time (a background task; the solves run
    in a worker thread). Writes go through the runtime's own checks (range, rate, role-free: the
    caller is the twin acting for an authorised person, audited by the twin).
    """

    def __init__(self, runtime: PlantRuntime, *, speed: float = 60.0, step_h: float | None = None) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise TwinError(f"speed: {speed!r} must be > 0", field="speed")
        self.runtime = runtime
        self.speed = speed
        self.step_h = step_h or max(speed / 3600.0, 1.0 / 60.0)
        self._subscribers: list[tuple[set[str], OnChange]] = []
        self._latest: dict[str, TagValue] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    async def __aenter__(self) -> InProcessPlant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start advancing the plant."""
        report = self.runtime.drain()
        await self._publish(report.readings)
        self._task = asyncio.create_task(self._run(), name="in-process-plant")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wall_per_step = self.step_h * 3600.0 / self.speed
        while not self._stopped.is_set():
            t0 = loop.time()
            report = await run_model(self.runtime.advance, 1, self.step_h)
            await self._publish(report.readings)
            await asyncio.sleep(max(0.0, wall_per_step - (loop.time() - t0)))

    async def _publish(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            tv = TagValue(r.tag, r.value, Quality.from_status(r.status), plant_timestamp(r.t_h), r.t_h)
            self._latest[r.tag] = tv
            for tags, cb in self._subscribers:
                if r.tag in tags:
                    res = cb(tv)
                    if asyncio.iscoroutine(res):
                        await res

    async def read(self, tags: Sequence[str]) -> dict[str, TagValue]:
        return {t: self._latest[t] for t in tags if t in self._latest}

    async def subscribe(
        self, tags: Sequence[str], on_change: OnChange, *, sampling_ms: int = 1000, publishing_ms: int = 1000
    ) -> None:
        self._subscribers.append((set(tags), on_change))
        for t in tags:
            if t in self._latest:
                res = on_change(self._latest[t])
                if asyncio.iscoroutine(res):
                    await res

    async def write(self, tag: str, value: float) -> WriteResult:
        try:
            reading = await run_model(self.runtime.apply_setpoint, tag, float(value))
        except TwinError as exc:
            return WriteResult(tag, float(value), False, type(exc).__name__, exc.message)
        await self._publish([reading])
        return WriteResult(tag, float(value), True, "Good")

    async def plant_time_h(self) -> float:
        return float(self.runtime.t_h)

    async def close(self) -> None:
        self._stopped.set()
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
