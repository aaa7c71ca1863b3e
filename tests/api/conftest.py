"""A real API server for the tests: uvicorn on a free loopback port, the twin on the in-process
simulated tb_dy plant at high speed, demo users (one per role) as ``sxtwin up`` makes them.

One server per test module (module-scoped fixture); the design steady state is cached once per
session so each server starts in a second or two.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from api.app import ApiOptions, create_app
from models.flowsheet import Flowsheet
from sxtwin.commands._stack import StackOptions, in_process_twin
from twin.service import Advice
from twin.settings import Settings
from twin.users import generate_demo_users

SPEC = Path(__file__).resolve().parents[2] / "models" / "plants" / "tb_dy.toml"
ROLES = ("viewer", "operator", "engineer", "trainer", "admin")


class NudgeAdvisor:
    """A stand-in setpoint advisor: proposes +5 L/h scrub flow and -20 L/h organic flow (inside the
    bounds and rate limits), with a made-up predicted effect. Tests the API, not the optimiser."""

    def __init__(self, fs: Flowsheet) -> None:
        self.fs = fs
        self.calls = 0

    def advise(self, z: np.ndarray, p: np.ndarray, current: Mapping[str, float]) -> Advice:
        self.calls += 1
        sp = {
            "TbDy.scrub_flow_l_per_h": current["TbDy.scrub_flow_l_per_h"] + 5.0,
            "TbDy.organic_flow_l_per_h": current["TbDy.organic_flow_l_per_h"] - 20.0,
        }
        return Advice(
            True,
            sp,
            {"Dy2O3.purity": 0.9971, "objective.improvement": 1.5},
            ("Dy2O3.purity_min",),
            "test advisor: small nudge",
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running API server: base URL, tokens per role, passwords, data directory."""

    url: str
    tokens: dict[str, str]
    passwords: dict[str, str]
    data_dir: Path
    app: object

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def client(self, role: str | None = None, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(role) if role else {}, timeout=timeout)


@pytest.fixture(scope="session")
def steady_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A steady-state cache shared by every server of the session (one cold solve)."""
    from models.flowsheet import build_flowsheet
    from models.spec import load_spec
    from opcua.plant_runtime import steady_initial_state

    cache = tmp_path_factory.mktemp("steady_cache")
    fs = build_flowsheet(load_spec(SPEC))
    steady_initial_state(fs, fs.parameter_vector(), cache)
    return cache


def start_server(
    data_dir: Path,
    steady_cache: Path,
    *,
    advisor: object = NudgeAdvisor,
    allow_closed_loop: bool = True,
    speed: float = 3600.0,
    estimator_interval_s: float = 0.5,
) -> tuple[Server, uvicorn.Server, threading.Thread]:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "steady_cache").symlink_to(steady_cache, target_is_directory=True)
    demo = generate_demo_users(data_dir)
    passwords = {c.name: c.password for c in demo.credentials}
    settings = Settings(data_dir=data_dir, api_port=free_port())
    options = StackOptions(
        spec=SPEC,
        speed=speed,
        estimator_interval_s=estimator_interval_s,
        record_every=2,
        allow_closed_loop=allow_closed_loop,
        advisor=advisor if advisor is not None else "none",  # type: ignore[arg-type]
        cycle_interval_h=1e6,  # no automatic cycles: the tests run them
    )
    app = create_app(settings, in_process_twin(options), options=ApiOptions(sse_keepalive_s=1.0))
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.api_port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-test-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.api_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the API server died on start-up")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        server.should_exit = True
        raise RuntimeError("the API server was not ready within 60 s")
    tokens = {}
    for role in ROLES:
        r = httpx.post(f"{url}/auth/token", data={"username": role, "password": passwords[role]}, timeout=30)
        r.raise_for_status()
        tokens[role] = r.json()["access_token"]
    return Server(url, tokens, passwords, data_dir, app), server, thread


def stop_server(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, steady_cache: Path) -> Iterator[Server]:
    """One API server for the module (advisor: :class:`NudgeAdvisor`, closed loop allowed)."""
    srv, server, thread = start_server(tmp_path_factory.mktemp("api"), steady_cache)
    try:
        yield srv
    finally:
        stop_server(server, thread)
