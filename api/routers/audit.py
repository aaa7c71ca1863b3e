"""The audit log: who did what, when (engineer, admin)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.auth import Principal, require
from api.deps import RuntimeDep
from api.schemas.audit import AuditEntryOut, AuditPage
from api.schemas.common import ProblemResponses
from models.errors import bad_value
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api/audit", tags=["audit"], responses=ProblemResponses)


@router.get("", response_model=AuditPage, summary="The audit log, newest first, filtered by time, user and action")
async def audit_log(
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.READ_AUDIT))],
    start: Annotated[datetime | None, Query()] = None,
    end: Annotated[datetime | None, Query()] = None,
    user: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    action: Annotated[str | None, Query(min_length=1, max_length=200, description="e.g. proposal.approve")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
) -> AuditPage:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.utcoffset() is None:
            raise bad_value(name, value.isoformat(), "a date-time with a time zone (for example 2026-01-01T00:00:00Z)")
    page = await asyncio.to_thread(
        runtime.historian.audit_log, start=start, end=end, user=user, action=action, limit=limit, cursor=cursor
    )
    return AuditPage(
        items=[
            AuditEntryOut(id=e.id, time=e.time, user=e.user, action=e.action, target=e.target, details=dict(e.details))
            for e in page.items
        ],
        next_cursor=page.next_cursor,
    )
