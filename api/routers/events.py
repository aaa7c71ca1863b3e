"""Events and alarms (off spec, stale data, estimator unhealthy, solver failure, mode change) and
their acknowledgement."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from api.auth import Principal, require
from api.deps import HubDep, RuntimeDep
from api.routers._present import event_out
from api.schemas.common import Problem, ProblemResponses
from api.schemas.events import AcknowledgeIn, EventOut, EventPage
from twin.historian_records import EventKind, Severity
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api/events", tags=["events"], responses=ProblemResponses)


@router.get("", response_model=EventPage, summary="Events and alarms, newest first, filtered")
async def list_events(
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.READ_STATE))],
    acknowledged: Annotated[bool | None, Query()] = None,
    kind: Annotated[Literal["event", "alarm"] | None, Query()] = None,
    min_severity: Annotated[Literal["info", "low", "medium", "high", "critical"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
) -> EventPage:
    page = await asyncio.to_thread(
        runtime.historian.events,
        acknowledged=acknowledged,
        kind=None if kind is None else EventKind(kind),
        min_severity=None if min_severity is None else Severity(min_severity),
        limit=limit,
        cursor=cursor,
    )
    return EventPage(items=[EventOut(**event_out(e)) for e in page.items], next_cursor=page.next_cursor)


@router.post(
    "/{event_id}/acknowledge",
    response_model=EventOut,
    summary="Acknowledge an event or alarm (operator), audited",
    responses={
        404: {"model": Problem, "description": "No such event."},
        409: {"model": Problem, "description": "Already acknowledged."},
    },
)
async def acknowledge(
    runtime: RuntimeDep,
    hub: HubDep,
    user: Annotated[Principal, Depends(require(Permission.ACKNOWLEDGE_ALARM))],
    event_id: Annotated[int, Path(ge=1, le=2**53)],
    body: AcknowledgeIn | None = None,
) -> EventOut:
    assert user.name is not None
    comment = body.comment if body else ""
    ev = await asyncio.to_thread(runtime.historian.acknowledge_event, event_id, by=user.name, comment=comment)
    hub.publish({"type": "event_ack", "event_id": event_id, "by": user.name})
    return EventOut(**event_out(ev))
