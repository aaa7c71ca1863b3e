"""Property-based fuzzing of the whole OpenAPI document (schemathesis): every operation, with each
role's token and without one, never answers 5xx.

The operations are read from the app's OpenAPI document at collection time (no server needed for
that); the requests go to a real server. Examples are bounded (``EXAMPLES`` per operation, each
sent with six identities) so that the module runs in about a minute. ``/api/stream`` (an endless
response) is exercised by the SSE test in test_api.py instead.

The study routes run against the real study runner (``twin.study_service``). Generated bodies do
not launch studies: a study needs a valid ``[study]`` table and a section for its kind on the
twin's plant, which the schema does not describe (it has no example), so every generated one is
refused with 422; should one ever be valid, it is one small study among at most ``max_queued``
(8) waiting, and the server's shutdown stops them (test_api.py runs a real one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode

from api.app import create_app
from tests.api.conftest import ROLES, Server, start_server, stop_server
from twin.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLES = 3  # per operation and generation mode (valid and invalid inputs)
SKIPPED = {("GET", "/api/stream"): "an endless event stream; covered by test_sse_* in test_api.py"}


def _openapi() -> dict[str, Any]:
    @asynccontextmanager
    async def never(settings: Settings) -> Any:  # the document does not need a running twin
        raise RuntimeError("not started")
        yield

    return create_app(Settings(secret_key="x" * 32), never).openapi()


SCHEMA = schemathesis.openapi.from_dict(_openapi())
OPERATIONS = [op.ok() for op in SCHEMA.get_all_operations()]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, steady_cache: Path) -> Iterator[Server]:
    srv, server, thread = start_server(tmp_path_factory.mktemp("fuzz"), steady_cache, allow_closed_loop=False)
    try:
        yield srv
    finally:
        stop_server(server, thread)


def _send(client: httpx.Client, case: Any, base_url: str, token: str | None) -> httpx.Response:
    kw = case.as_transport_kwargs(base_url=base_url)
    headers = {k: v for k, v in kw.get("headers", {}).items() if k.lower() != "authorization"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    args: dict[str, Any] = {"params": kw.get("params"), "headers": headers}
    if "json" in kw:
        args["json"] = kw["json"]
    elif isinstance(kw.get("data"), (bytes, str)):
        args["content"] = kw["data"]
    elif "data" in kw:
        args["data"] = kw["data"]
    return client.request(kw["method"], kw["url"], **args)


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_5xx_for_any_input_and_any_role(fuzz_server: Server, operation: Any) -> None:
    key = (operation.method.upper(), operation.path)
    if key in SKIPPED:
        pytest.skip(SKIPPED[key])
    # logging in is the same for every caller (and scrypt is slow on purpose): anonymous only
    identities: list[str | None] = [None] if operation.path == "/auth/token" else [None, *ROLES]
    failures: list[str] = []

    with httpx.Client(timeout=60) as client:

        @hypothesis.settings(
            max_examples=2 * EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @hypothesis.given(
            case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)
        )
        def run(case: Any) -> None:
            for who in identities:
                token = None if who is None else fuzz_server.tokens[who]
                r = _send(client, case, fuzz_server.url, token)
                if r.status_code >= 500:
                    failures.append(f"{who or 'anonymous'}: {case.as_curl_command()} -> {r.status_code} {r.text[:300]}")

        run()
    assert not failures, "\n".join(failures[:5])
