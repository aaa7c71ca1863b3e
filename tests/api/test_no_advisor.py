"""Without a setpoint advisor the API still serves: no proposals, and running a cycle says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory, steady_cache: Path) -> Iterator[Server]:
    srv, server, thread = start_server(
        tmp_path_factory.mktemp("noadv"), steady_cache, advisor=None, allow_closed_loop=False
    )
    try:
        yield srv
    finally:
        stop_server(server, thread)


def test_no_advisor_no_proposals_and_a_clear_409(plain_server: Server) -> None:
    with plain_server.client("operator") as op:
        assert op.get("/api/proposals").json() == {"items": [], "next_cursor": None}
        sp = op.get("/api/setpoints").json()
        assert sp["advisor"] is False
        assert sp["pending_proposal_id"] is None
        assert all(r["proposed"] is None for r in sp["setpoints"])
        r = op.post("/api/proposals")
        assert r.status_code == 409
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "no setpoint advisor is configured" in r.json()["detail"]
        assert r.json()["field"] == "advisor"


def test_closed_loop_refused_when_not_allowed_at_start(plain_server: Server) -> None:
    r = httpx.put(
        f"{plain_server.url}/api/mode", json={"mode": "closed_loop"}, headers=plain_server.headers("operator")
    )
    assert r.status_code == 409
    assert "--allow-closed-loop" in r.json()["detail"]
    assert httpx.get(f"{plain_server.url}/api/mode", headers=plain_server.headers("viewer")).json() == {
        "mode": "advisory",
        "closed_loop_allowed": False,
    }
