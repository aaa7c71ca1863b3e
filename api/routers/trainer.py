"""The simulated plant's true state, for trainers (and benchmarks): what the twin has to estimate."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from api.auth import Principal, require
from api.deps import RuntimeDep
from api.routers._present import clean
from api.schemas.common import Problem, ProblemResponses
from models.errors import ConflictError
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api/trainer", tags=["trainer"], responses=ProblemResponses)


@router.get(
    "/true-state",
    summary="The simulated plant's true state (trainer, admin)",
    responses={409: {"model": Problem, "description": "The plant is not a simulated plant this API can read."}},
)
async def true_state(
    runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_TRUE_STATE))]
) -> dict[str, Any]:
    if runtime.true_state is None:
        raise ConflictError("the true state is only available for a simulated plant run by this process", field="plant")
    return dict(clean(await asyncio.to_thread(runtime.true_state)))
