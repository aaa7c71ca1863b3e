"""What-if: simulate from the current estimated state with proposed moves; nothing is written."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request

from api.auth import Principal, require
from api.deps import RuntimeDep
from api.routers._present import clean
from api.routers.setpoints import find_manipulated
from api.schemas.common import Problem, ProblemResponses
from api.schemas.what_if import WhatIfIn, WhatIfOut
from models.dynamics import Move
from models.errors import ComputationError, ConflictError, bad_value
from twin.compute import run_model
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["what-if"], responses=ProblemResponses)

_MAX_POINTS = 200


@router.post(
    "/what-if",
    response_model=WhatIfOut,
    summary="Simulate moves from the current estimate (operator): predicted trajectories, no effect on the plant",
    responses={409: {"model": Problem, "description": "No estimate yet, or another what-if is running."}},
)
async def what_if(
    request: Request,
    runtime: RuntimeDep,
    user: Annotated[Principal, Depends(require(Permission.RUN_WHAT_IF))],
    body: WhatIfIn,
) -> WhatIfOut:
    moves: list[Move] = []
    for i, m in enumerate(body.moves):
        mv = find_manipulated(runtime, m.variable, f"moves[{i}].variable")
        if not mv.min <= m.value <= mv.max:
            raise bad_value(f"moves[{i}].value", m.value, f"a number from {mv.min:g} to {mv.max:g} ({mv.name})")
        if m.at_h >= body.hours:
            raise bad_value(f"moves[{i}].at_h", m.at_h, f"a time before the horizon ({body.hours:g} h)")
        moves.append(Move(mv.variable, m.at_h, m.value, m.ramp_h))
    snap = runtime.twin.snapshot()
    if snap is None:
        raise ConflictError("no estimate yet: the twin has not received enough data", field="state")
    lock: asyncio.Lock = request.app.state.what_if_lock
    if lock.locked():
        raise ConflictError("another what-if is running; try again when it has finished", field="what_if")
    async with lock:
        res = await runtime.twin.what_if(moves, body.hours)
    if not res.success:
        raise ComputationError(f"the what-if simulation failed: {res.message}", field="moves")
    n = len(res.times_h)
    keep = np.unique(np.linspace(0, n - 1, min(n, _MAX_POINTS)).round().astype(int))
    names = list(res.parameter_names)
    setpoints = {
        mv.name: clean(res.parameters[keep, names.index(mv.variable)].tolist())
        for mv in runtime.spec.manipulated
        if mv.variable in names
    }
    locs = await run_model(runtime.twin.estimator.residual.local, res.z[-1], res.parameters[-1], jacobian=False)
    final = {st.lay.name: {s: clean(st.x[i].tolist()) for i, s in enumerate(st.lay.elements)} for st in locs}
    return WhatIfOut(
        success=res.success,
        message=res.message,
        wall_time_s=res.wall_time_s,
        start_plant_time_h=snap.plant_time_h,
        times_h=clean(res.times_h[keep].tolist()),
        products={
            name: {
                "purity": clean(res.product_purity[name][keep].tolist()),
                "recovery": clean(res.product_recovery[name][keep].tolist()),
            }
            for name in res.product_purity
        },
        setpoints=setpoints,
        final_aqueous_mol_per_l=final,
    )
