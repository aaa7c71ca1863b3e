"""Setpoint proposals: list, details (decision and writes), approve or reject with a comment."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from api.auth import Principal, require
from api.deps import RuntimeDep
from api.routers._present import proposal_out
from api.runtime import TwinRuntime
from api.schemas.common import Problem, ProblemResponses
from api.schemas.proposals import DecisionIn, DecisionResult, ProposalOut, ProposalPage
from models.errors import ComputationError, ConflictError
from twin.historian_records import ProposalStatus, Verdict
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api/proposals", tags=["proposals"], responses=ProblemResponses)

ProposalId = Annotated[int, Path(ge=1, le=2**53, description="Proposal id.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such proposal."},
    409: {"model": Problem, "description": "The proposal is not pending (already decided, superseded...)."},
}


def _full(runtime: TwinRuntime, proposal_id: int) -> ProposalOut:
    h = runtime.historian
    p = runtime.twin.proposal(proposal_id)
    return ProposalOut(**proposal_out(p, h.decision(proposal_id), list(h.writes(proposal_id=proposal_id).items)))


@router.get(
    "", response_model=ProposalPage, summary="Proposals with their decisions, newest first (none without an advisor)"
)
async def list_proposals(
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.READ_STATE))],
    status: Annotated[
        Literal["pending", "approved", "rejected", "superseded", "expired", "applied", "failed"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_\-]+$")] = None,
) -> ProposalPage:
    st = None if status is None else ProposalStatus(status)
    h = runtime.historian

    def query() -> ProposalPage:
        page = h.proposals(st, limit=limit, cursor=cursor)
        items = [ProposalOut(**proposal_out(p, h.decision(p.id))) for p in page.items]
        return ProposalPage(items=items, next_cursor=page.next_cursor)

    return await asyncio.to_thread(query)


@router.post(
    "",
    response_model=ProposalOut,
    summary="Run the optimisation cycle now: a new pending proposal (advisory) or written (closed loop)",
    responses={409: {"model": Problem, "description": "No advisor configured, or no estimate yet."}},
)
async def run_cycle(
    runtime: RuntimeDep, user: Annotated[Principal, Depends(require(Permission.APPROVE_PROPOSAL))]
) -> ProposalOut:
    assert user.name is not None
    if runtime.twin.advisor is None:
        raise ConflictError(
            "no setpoint advisor is configured on this twin: proposals come only from an optimiser "
            "(start it with the optimiser enabled)",
            field="advisor",
        )
    proposal = await runtime.twin.run_cycle(by=user.name)
    if proposal is None:
        raise ComputationError("the optimiser found no setpoints; the alarm in /api/events says why", field="advisor")
    return ProposalOut(**proposal_out(proposal))


@router.get(
    "/{proposal_id}", response_model=ProposalOut, summary="One proposal with its decision and writes", responses=_ERRORS
)
async def get_proposal(
    runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_STATE))], proposal_id: ProposalId
) -> ProposalOut:
    return await asyncio.to_thread(_full, runtime, proposal_id)


async def _decide(
    runtime: TwinRuntime, user: Principal, proposal_id: int, verdict: Verdict, comment: str
) -> DecisionResult:
    assert user.name is not None
    assert user.role is not None
    out = await runtime.twin.decide(proposal_id, verdict, user=user.name, role=user.role, comment=comment)
    full = await asyncio.to_thread(_full, runtime, proposal_id)
    return DecisionResult(decision_id=out["decision_id"], verdict=out["verdict"], written=out["written"], proposal=full)


@router.post(
    "/{proposal_id}/approve",
    response_model=DecisionResult,
    responses=_ERRORS,
    summary="Approve a pending proposal (operator): the twin writes its setpoints, linked to the approval",
)
async def approve(
    runtime: RuntimeDep,
    user: Annotated[Principal, Depends(require(Permission.APPROVE_PROPOSAL))],
    proposal_id: ProposalId,
    body: DecisionIn | None = None,
) -> DecisionResult:
    return await _decide(runtime, user, proposal_id, Verdict.APPROVE, body.comment if body else "")


@router.post(
    "/{proposal_id}/reject",
    response_model=DecisionResult,
    responses=_ERRORS,
    summary="Reject a pending proposal (operator), with a comment",
)
async def reject(
    runtime: RuntimeDep,
    user: Annotated[Principal, Depends(require(Permission.APPROVE_PROPOSAL))],
    proposal_id: ProposalId,
    body: DecisionIn | None = None,
) -> DecisionResult:
    return await _decide(runtime, user, proposal_id, Verdict.REJECT, body.comment if body else "")
