"""Live updates over Server-Sent Events: state, tags, proposals, events, mode, writes.

``GET /api/stream`` (``text/event-stream``). Each message is an SSE event whose ``event`` is the
message type and whose ``data`` is JSON; ``id`` numbers them. A comment line every
``keepalive_s`` keeps proxies from closing an idle stream. Browsers' ``EventSource`` cannot send
headers, so this route also takes the token as ``?access_token=``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from api.auth import Principal, require
from api.deps import HubDep, RuntimeDep
from api.routers._present import clean
from api.schemas.common import ProblemResponses
from twin.security import Permission

__all__ = ["router", "sse"]

router = APIRouter(prefix="/api", tags=["live"], responses=ProblemResponses)


def sse(message: dict[str, Any]) -> str:
    """One SSE event."""
    data = json.dumps(clean(message), separators=(",", ":"), default=str)
    head = f"id: {message['id']}\n" if "id" in message else ""
    return f"{head}event: {message.get('type', 'message')}\ndata: {data}\n\n"


@router.get(
    "/stream",
    summary="Live updates (Server-Sent Events): state, tags, flag, proposal, event, mode, write",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream."}},
)
async def stream(
    request: Request,
    runtime: RuntimeDep,
    hub: HubDep,
    _: Annotated[Principal, Depends(require(Permission.READ_STATE))],
    access_token: Annotated[str | None, Query(description="Bearer token, for EventSource clients.")] = None,
) -> StreamingResponse:
    keepalive_s: float = request.app.state.options.sse_keepalive_s
    queue = hub.subscribe()
    snap = runtime.twin.snapshot()
    hello = {"type": "hello", "mode": runtime.twin.mode.value, "plant_time_h": snap.plant_time_h if snap else None}

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\n\n"
            yield sse(hello)
            while True:
                try:
                    async with asyncio.timeout(keepalive_s):
                        message = await queue.get()
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if message.get("type") == "end":
                    return
                yield sse(message)
        finally:
            hub.unsubscribe(queue)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
