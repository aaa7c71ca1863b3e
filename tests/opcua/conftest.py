"""Fixtures for the OPC UA tests: a simulated plant served from a background thread (its own
event loop, as a separate process would be), users of every role, trusted client certificates.

The steady state and the OPC UA standard address space are cached in one session directory, so
only the first server of a run solves and builds them."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from models.spec import load_spec
from opcua.client import CLIENT_APPLICATION_URI, ClientOptions
from opcua.security import ensure_certificate
from opcua.server import PlantServer, PlantServerOptions
from twin.security import Role
from twin.users import User, UserStore, hash_password

REPO = Path(__file__).resolve().parents[2]
TB_DY = REPO / "models" / "plants" / "tb_dy.toml"
TB_DY_MISMATCH = REPO / "models" / "plants" / "tb_dy_mismatch.toml"
T = TypeVar("T")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Credentials:
    """One user per role (named after the role) with a test password."""

    store: UserStore
    passwords: dict[Role, str]

    def of(self, role: Role) -> tuple[str, str]:
        return role.value, self.passwords[role]


class PlantThread:
    """A :class:`PlantServer` running on its own event loop in a thread."""

    def __init__(self, server: PlantServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="plant-server", daemon=True)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def __enter__(self) -> PlantThread:
        self.thread.start()
        self.run(self.server.start())
        self.run(self.server.wait_ready(240), timeout=300)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.server.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)


@dataclass
class Plant:
    """A running plant and how to reach it."""

    thread: PlantThread
    data_dir: Path
    client_pki: Path
    credentials: Credentials

    @property
    def server(self) -> PlantServer:
        return self.thread.server

    @property
    def url(self) -> str:
        return self.server.endpoint_url

    def options(self, role: Role | None, *, secure: bool = True, pki: Path | None = None) -> ClientOptions:
        """Client options for a user of ``role`` (None: anonymous)."""
        name, password = self.credentials.of(role) if role is not None else (None, None)
        return ClientOptions(self.url, name, password, pki or self.client_pki, secure=secure)


@pytest.fixture(scope="session")
def opcua_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("opcua-cache")


@pytest.fixture(scope="session")
def credentials() -> Credentials:
    passwords = {role: f"test-{role.value}-password" for role in Role}
    store = UserStore.from_users(User(r.value, r, hash_password(p)) for r, p in passwords.items())
    return Credentials(store, passwords)


def trust_client(data_dir: Path, client_pki: Path, name: str = "client.der") -> None:
    """Create the client certificate and put it in the server's trust list."""
    cert, _ = ensure_certificate(client_pki / "own", CLIENT_APPLICATION_URI, client=True)
    trusted = data_dir / "pki" / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(cert, trusted / name)


def start_plant(
    tmp: Path, cache: Path, credentials: Credentials, **options: Any
) -> tuple[PlantThread, Path, Path]:
    data_dir, client_pki = tmp / "data", tmp / "client-pki"
    trust_client(data_dir, client_pki)
    opts = PlantServerOptions(port=free_port(), cache_dir=cache, **options)
    server = PlantServer(
        load_spec(TB_DY), data_dir=data_dir, users=credentials.store, options=opts, mismatch=TB_DY_MISMATCH
    )
    return PlantThread(server), data_dir, client_pki


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory, opcua_cache: Path, credentials: Credentials) -> Iterator[Plant]:
    """tb_dy with the standard mismatch at speed 36000 (10 plant hours per second), anonymous
    development endpoint on."""
    tmp = tmp_path_factory.mktemp("plant")
    thread, data_dir, client_pki = start_plant(
        tmp, opcua_cache, credentials, speed=36000.0, seed=7, allow_anonymous=True
    )
    with thread:
        yield Plant(thread, data_dir, client_pki, credentials)
