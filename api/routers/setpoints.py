"""Setpoints: current values, direct writes, the optimisation cycle, the mode, and the write log
(each write linked to the proposal and the approver it came from)."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from api.auth import Principal, require
from api.deps import HubDep, RuntimeDep
from api.routers._present import write_out
from api.runtime import TwinRuntime
from api.schemas.common import Problem, ProblemResponses
from api.schemas.setpoints import ModeIn, ModeOut, SetpointOut, SetpointsOut, SetpointWriteIn, WriteOut, WritePage
from models.errors import ConflictError, bad_value
from models.spec import ManipulatedSpec
from twin.historian_records import Mode, ProposalStatus, WriteIntent, WriteOutcome
from twin.security import Permission

__all__ = ["find_manipulated", "router"]

router = APIRouter(prefix="/api", tags=["setpoints"], responses=ProblemResponses)

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "Refused by the current state (plant, mode, proposal)."}
}


def find_manipulated(runtime: TwinRuntime, name: str, field: str) -> ManipulatedSpec:
    """A manipulated variable by name, parameter or controller tag (``FIC-102``, ``FIC-102.SP``)."""
    spec = runtime.spec
    for mv in spec.manipulated:
        if name in (mv.name, mv.variable):
            return mv
    base = name.removesuffix(".SP")
    for ins in spec.instruments:
        if ins.tag == base and ins.variable is not None:
            for mv in spec.manipulated:
                if mv.variable == ins.variable:
                    return mv
    raise bad_value(field, name, [m.name for m in spec.manipulated])


def _setpoint_tag(runtime: TwinRuntime, parameter: str) -> str | None:
    for plan in runtime.twin.ingestor.plan.values():
        if plan.role == "setpoint" and plan.parameter == parameter:
            return plan.tag
    return None


@router.get("/setpoints", response_model=SetpointsOut, summary="Current setpoints, mode and pending proposal")
async def setpoints(
    runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_STATE))]
) -> SetpointsOut:
    twin = runtime.twin
    current = twin.current_setpoints()
    page = await asyncio.to_thread(twin.historian.proposals, ProposalStatus.PENDING, limit=1)
    pending = page.items[0] if page.items else None
    rows = [
        SetpointOut(
            name=mv.name,
            parameter=mv.variable,
            tag=_setpoint_tag(runtime, mv.variable),
            value=current.get(mv.variable, math.nan),
            min=mv.min,
            max=mv.max,
            max_rate_per_h=mv.max_rate_per_h,
            proposed=None if pending is None else pending.setpoints.get(mv.variable),
        )
        for mv in runtime.spec.manipulated
    ]
    return SetpointsOut(
        mode=twin.mode.value,
        closed_loop_allowed=twin.options.allow_closed_loop,
        advisor=twin.advisor is not None,
        pending_proposal_id=None if pending is None else pending.id,
        setpoints=rows,
    )


@router.post(
    "/setpoints/{name}",
    response_model=WriteOut,
    summary="Write one setpoint (operator): within bounds and rate limit, audited",
    responses=_CONFLICT,
)
async def write_setpoint(
    runtime: RuntimeDep,
    hub: HubDep,
    user: Annotated[Principal, Depends(require(Permission.WRITE_SETPOINT))],
    name: Annotated[str, Path(min_length=1, max_length=100, description="Variable name, parameter or SP tag.")],
    body: SetpointWriteIn,
) -> WriteOut:
    assert user.name is not None
    mv = find_manipulated(runtime, name, "name")
    if not mv.min <= body.value <= mv.max:
        raise bad_value("value", body.value, f"a number from {mv.min:g} to {mv.max:g} ({mv.name})")
    tag = _setpoint_tag(runtime, mv.variable)
    if tag is None:
        raise ConflictError(f"{mv.name} has no setpoint tag on this plant", field="name")
    twin = runtime.twin
    previous = twin.current_setpoints().get(mv.variable)
    intent = await asyncio.to_thread(
        twin.historian.record_write_intent,
        WriteIntent(tag=tag, value=body.value, requested_by=user.name, mode=twin.mode, previous_value=previous),
    )
    result = await runtime.plant.write(tag, body.value)
    outcome = WriteOutcome.SUCCEEDED if result.accepted else WriteOutcome.FAILED
    message = result.message or body.reason
    record = await asyncio.to_thread(
        twin.historian.record_write_outcome, intent.id, outcome, message=message, by=user.name
    )
    if not result.accepted:
        raise ConflictError(
            f"the plant refused {tag} = {body.value:g}: {result.message}",
            field="value",
            details={"write_id": record.id, "status": result.status},
        )
    plant_now = await runtime.plant.plant_time_h()
    twin.gate.record_move(mv.variable, plant_now)
    hub.publish({"type": "write", "tag": tag, "value": body.value, "by": user.name})
    return WriteOut(**write_out(record))


@router.get("/mode", response_model=ModeOut, summary="Operating mode: advisory or closed loop")
async def get_mode(runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_STATE))]) -> ModeOut:
    return ModeOut(mode=runtime.twin.mode.value, closed_loop_allowed=runtime.twin.options.allow_closed_loop)


@router.put(
    "/mode", response_model=ModeOut, summary="Enable or disable closed loop (operator), audited", responses=_CONFLICT
)
async def set_mode(
    runtime: RuntimeDep, user: Annotated[Principal, Depends(require(Permission.ENABLE_CLOSED_LOOP))], body: ModeIn
) -> ModeOut:
    assert user.name is not None
    assert user.role is not None
    mode = await runtime.twin.set_mode(Mode(body.mode), user=user.name, role=user.role, reason=body.reason)
    return ModeOut(mode=mode.value, closed_loop_allowed=runtime.twin.options.allow_closed_loop)


@router.get(
    "/writes", response_model=WritePage, summary="Setpoint writes, newest first, each with its proposal and approver"
)
async def writes(
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))],
    proposal_id: Annotated[int | None, Query(ge=1, le=2**53)] = None,
    outcome: Annotated[Literal["pending", "succeeded", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
) -> WritePage:
    kwargs: dict[str, Any] = {"proposal_id": proposal_id, "limit": limit, "cursor": cursor}
    if outcome is not None:
        kwargs["outcome"] = WriteOutcome(outcome)
    page = await asyncio.to_thread(runtime.historian.writes, **kwargs)
    return WritePage(items=[WriteOut(**write_out(w)) for w in page.items], next_cursor=page.next_cursor)
