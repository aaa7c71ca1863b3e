"""Stopping background tasks (twin/tasks.py): the Python 3.11 cancellation race behind a hung test
run, and the twin's guard against it."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import pytest

from twin.connection import ReconnectingPlant
from twin.tasks import stop_tasks


async def _cancel_as_it_completes(bounded: str) -> str:
    """Cancel a task at the instant the operation it awaits (bounded by a timeout) completes."""
    fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def body() -> str:
        if bounded == "wait_for":
            await asyncio.wait_for(fut, 10.0)
        else:
            async with asyncio.timeout(10.0):
                await fut
        return "ran on"

    task = asyncio.create_task(body())
    await asyncio.sleep(0)  # body waits on fut
    fut.set_result(1.0)
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "cancelled"


def test_asyncio_timeout_keeps_a_cancellation_that_wait_for_swallows() -> None:
    """The root cause: before 3.12 ``asyncio.wait_for`` returns the result and drops a
    cancellation that arrives as the operation completes; ``asyncio.timeout`` (used by the twin)
    does not."""
    assert asyncio.run(_cancel_as_it_completes("timeout")) == "cancelled"
    if sys.version_info < (3, 12):
        assert asyncio.run(_cancel_as_it_completes("wait_for")) == "ran on"


def test_stop_tasks_ends_a_task_that_ignores_a_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    """A task that lost its first cancellation (as above) is cancelled again, named in a warning;
    a task that failed while ending does not raise into the caller."""
    rounds: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            rounds.append("ignored")
        await asyncio.sleep(3600)

    async def failing() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("failed while ending")

    async def scenario() -> list[asyncio.Task[Any]]:
        tasks = [asyncio.create_task(stubborn(), name="stubborn"), asyncio.create_task(failing(), name="failing")]
        await asyncio.sleep(0)
        async with asyncio.timeout(5.0):
            await stop_tasks(tasks, patience_s=0.05)
        return tasks

    with caplog.at_level(logging.WARNING, logger="twin.tasks"):
        tasks = asyncio.run(scenario())
    assert all(t.done() for t in tasks)
    assert rounds == ["ignored"]
    assert tasks[0].cancelled()
    assert isinstance(tasks[1].exception(), RuntimeError)
    assert "stubborn ignored a cancellation" in caplog.text


class _ProbeOnCue:
    """A plant connection whose clock answers when the test says (the seam of ReconnectingPlant)."""

    def __init__(self) -> None:
        self.probe: asyncio.Future[float] | None = None
        self.closed = False

    async def connect(self) -> None:
        return None

    async def plant_time_h(self) -> float:
        self.probe = asyncio.get_running_loop().create_future()
        return await self.probe

    async def close(self) -> None:
        self.closed = True


def test_the_plant_watchdog_stops_when_closed_as_its_probe_answers() -> None:
    """The hung run's shape: the twin shuts down while the connection watchdog's probe answers.
    Closing returns (bounded here at 5 s) and closes the connection."""

    async def scenario() -> bool:
        inner = _ProbeOnCue()
        plant = ReconnectingPlant(lambda: inner, watchdog_s=0.01, timeout_s=5.0)  # type: ignore[arg-type,return-value]
        async with asyncio.timeout(5.0):
            await plant.__aenter__()
            while inner.probe is None:
                await asyncio.sleep(0.005)
            inner.probe.set_result(1.0)
            await plant.close()
        return inner.closed

    assert asyncio.run(scenario())
