"""Lab assays: an ICP result with its sample time, used by the estimator like a late analyser sample."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.auth import Principal, require
from api.deps import HubDep, RuntimeDep
from api.schemas.common import ProblemResponses
from api.schemas.lab import LabAssayIn, LabAssayOut, LabAssayPage
from models.errors import bad_value
from twin.historian_records import AuditEntry
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api/lab-assays", tags=["lab"], responses=ProblemResponses)


def _out(e: AuditEntry) -> LabAssayOut:
    d = e.details
    return LabAssayOut(
        id=e.id,
        tag=e.target or "",
        value_g_per_l=float(d.get("value_g_per_l", 0.0)),
        sample_time_h=float(d.get("sample_time_h", 0.0)),
        entered_by=e.user,
        time=e.time,
    )


@router.post("", response_model=LabAssayOut, status_code=201, summary="Enter a lab result (operator), audited")
async def enter(
    runtime: RuntimeDep,
    hub: HubDep,
    user: Annotated[Principal, Depends(require(Permission.ENTER_LAB_ASSAY))],
    body: LabAssayIn,
) -> LabAssayOut:
    assert user.name is not None
    assert user.role is not None
    plant_now = await runtime.plant.plant_time_h()
    if body.sample_time_h > plant_now:
        raise bad_value("sample_time_h", body.sample_time_h, f"a plant time up to now ({plant_now:.3f} h)")
    await runtime.twin.lab_assay(body.tag, body.value_g_per_l, body.sample_time_h, user=user.name, role=user.role)
    page = await asyncio.to_thread(runtime.historian.audit_log, user=user.name, action="lab_assay", limit=1)
    hub.publish({"type": "lab_assay", "tag": body.tag, "by": user.name})
    return _out(page.items[0])


@router.get("", response_model=LabAssayPage, summary="Lab assays entered, newest first")
async def list_assays(
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
) -> LabAssayPage:
    page = await asyncio.to_thread(runtime.historian.audit_log, action="lab_assay", limit=limit, cursor=cursor)
    return LabAssayPage(items=[_out(e) for e in page.items], next_cursor=page.next_cursor)
