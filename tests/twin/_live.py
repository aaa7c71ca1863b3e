"""Helpers of the live-twin end-to-end tests (tests/twin/test_twin_e2e.py,
tests/interop/test_node_opcua_server.py): a simulated plant in its own process (``sxtwin plant``),
the twin wired to a plant over OPC UA as ``sxtwin twin`` wires it, and polling with deadlines.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from asyncua import ua

from models.flowsheet import Flowsheet
from opcua.client import ClientOptions, PlantClient
from tests.opcua.conftest import TB_DY, TB_DY_MISMATCH, Credentials, free_port, trust_client
from twin.connection import Gap, ReconnectingPlant
from twin.estimation import Observation
from twin.historian import Historian
from twin.historian_records import Sample
from twin.security import Role
from twin.service import SetpointAdvisor, TwinOptions, TwinService
from twin.users import write_users_file

SXTWIN = Path(sys.executable).parent / "sxtwin"
T = TypeVar("T")


def clean_env() -> dict[str, str]:
    """The environment without any ``SXTWIN_`` setting of the machine running the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SXTWIN_")}


def wait_for_line(log: Path, start: int, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``text`` appears in ``log`` after byte ``start`` (raise with the log if the process
    exits first or the deadline passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_bytes()[start:].decode(errors="replace")
        if text in out:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited with {proc.returncode} before {text!r}:\n{out[-3000:]}")
        time.sleep(0.1)
    out = log.read_bytes()[start:].decode(errors="replace")
    raise TimeoutError(f"no {text!r} within {timeout:.0f} s:\n{out[-3000:]}")


class PlantProcess:
    """``sxtwin plant`` (tb_dy with the standard mismatch) in its own process, on a free port, with
    one user per role; it can be stopped and started again on the same port and data directory."""

    def __init__(self, root: Path, cache: Path, credentials: Credentials, *, speed: float, seed: int) -> None:
        self.data_dir = root / "plant"
        self.client_pki = root / "client-pki"
        self.credentials = credentials
        self.speed = speed
        self.seed = seed
        self.port = free_port()
        self.log = root / "plant.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        trust_client(self.data_dir, self.client_pki)
        (self.data_dir / "cache").symlink_to(cache, target_is_directory=True)
        write_users_file(self.data_dir / "users.toml", list(credentials.store))

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/sxtwin/plant"

    def options(self, role: Role) -> ClientOptions:
        name, password = self.credentials.of(role)
        return ClientOptions(self.url, name, password, self.client_pki)

    def start(self, timeout: float = 240.0) -> None:
        """Start the process and wait until the plant runs."""
        self.launch()
        self.wait_running(timeout)

    def launch(self) -> None:
        """Start the process (see :meth:`wait_running`)."""
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        cmd = [str(SXTWIN), "plant", str(TB_DY), "--mismatch", str(TB_DY_MISMATCH), "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--speed", f"{self.speed:g}", "--seed", str(self.seed)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=clean_env())

    def wait_running(self, timeout: float = 240.0) -> None:
        """Wait until the launched plant runs (its steady state solved or read from the cache)."""
        assert self.proc is not None
        wait_for_line(self.log, self._log_start, "plant running", self.proc, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop the process (by its id) and return its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return int(proc.returncode)

    def historian(self) -> Historian:
        """The plant's own historian (its audit of writes and trainer calls), read beside the process."""
        return Historian(self.data_dir / "historian.sqlite3")


@asynccontextmanager
async def trainer(plant: PlantProcess) -> AsyncIterator[PlantClient]:
    """A client of the plant as the trainer (true state, scenarios, clock)."""
    async with PlantClient(plant.options(Role.TRAINER)) as client:
        yield client


async def fresh_run(client: PlantClient, speed: float) -> None:
    """Back to the plant's initial state (a new run epoch, no scenario, design setpoints) at ``speed``."""
    await client.call("Reset")
    await client.call("SetSpeed", ua.Variant(float(speed), ua.VariantType.Double))


async def load_scenario(client: PlantClient, text: str) -> None:
    """Load a scenario (TOML text) now, as the trainer does over OPC UA."""
    await client.call("LoadScenario", ua.Variant(text, ua.VariantType.String))


@asynccontextmanager
async def live_twin(
    fs: Flowsheet,
    z0: np.ndarray,
    options: ClientOptions,
    historian: Path,
    *,
    advisor: SetpointAdvisor | None = None,
    watchdog_s: float = 1.0,
    backoff_max_s: float = 1.0,
    prepare: Callable[[TwinService], None] | None = None,
    **twin_options: Any,
) -> AsyncIterator[tuple[TwinService, ReconnectingPlant]]:
    """The twin on a plant reached over OPC UA, wired as ``sxtwin twin`` does
    (:func:`sxtwin.commands._stack.opcua_twin`): a reconnecting client whose gaps the twin records.
    ``prepare`` sees the twin before its loops start. The link is probed every ``watchdog_s`` and,
    once lost, tried again at most ``backoff_max_s`` apart."""
    holder: dict[str, TwinService] = {}

    async def on_gap(gap: Gap) -> None:
        if "twin" in holder:
            await holder["twin"].connection_gap(gap)

    hist = Historian(historian)
    try:
        async with ReconnectingPlant(
            lambda: PlantClient(options), on_gap=on_gap, watchdog_s=watchdog_s, backoff_max_s=backoff_max_s
        ) as plant:
            twin = TwinService(fs, plant, hist, z0=z0, advisor=advisor, options=TwinOptions(**twin_options))
            holder["twin"] = twin
            if prepare is not None:
                prepare(twin)
            async with twin:
                yield twin, plant
    finally:
        hist.close()


def run_bounded(coro: Coroutine[Any, Any, T], limit_s: float = 240.0) -> T:
    """Run a test scenario on a new event loop, failing (with every task's stack, to say where it
    waits) if it has not finished within ``limit_s`` seconds, before pytest's own timeout, whose
    dump shows only the idle event loop."""

    async def bounded() -> T:
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task}, timeout=limit_s)
        if done:
            return task.result()
        stacks = io.StringIO()
        for t in asyncio.all_tasks():
            if t is not asyncio.current_task():
                t.print_stack(limit=12, file=stacks)
        task.cancel()
        await asyncio.wait({task}, timeout=10.0)
        raise AssertionError(f"the scenario hung for {limit_s:.0f} s; its tasks:\n{stacks.getvalue()}")

    return asyncio.run(bounded())


async def until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        out = check()
        last = await out if asyncio.iscoroutine(out) else out
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(every)


def record_observations(seen: list[Observation]) -> Callable[[TwinService], None]:
    """A ``prepare`` for :func:`live_twin`: appends to ``seen`` every observation the estimator is
    given (tag, value, sample time)."""

    def prepare(twin: TwinService) -> None:
        update = twin.estimator.update

        def spy(observations: Any) -> Any:
            seen.extend(observations)
            return update(observations)

        twin.estimator.update = spy  # type: ignore[method-assign]

    return prepare


def all_samples(historian: Historian, tag: str) -> tuple[Sample, ...]:
    """Every sample of ``tag`` in the historian (up to 1000), oldest first."""
    return historian.samples(tag, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)).items


class LoopThread:
    """An event loop in a thread: a twin shared by the tests of a module runs there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="twin-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
