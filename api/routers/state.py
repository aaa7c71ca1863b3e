"""Live state: stage profiles from the estimator with 95 % bounds, tags with quality, KPIs."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from api.auth import Principal, require
from api.deps import RuntimeDep
from api.routers._present import clean, kpis_out, state_payload
from api.runtime import TwinRuntime
from api.schemas.common import Problem, ProblemResponses
from api.schemas.state import KpiOut, StateOut, TagOut
from models.errors import ConflictError
from twin.security import Permission

__all__ = ["router", "tag_rows"]

router = APIRouter(prefix="/api", tags=["state"], responses=ProblemResponses)

_NO_ESTIMATE: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "No estimate yet (the twin is starting)."}
}


@router.get(
    "/state",
    response_model=StateOut,
    summary="Estimated stage profiles per circuit (mol/L, 95 % bounds), parameters, predicted KPIs",
    responses=_NO_ESTIMATE,
)
async def state(
    request: Request, runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_STATE))]
) -> Response:
    snap = runtime.twin.snapshot()
    if snap is None:
        raise ConflictError("no estimate yet: the twin has not received enough data", field="state")
    # one serialisation per estimate: the hot path of the control room is a cache hit
    key = (id(snap), runtime.twin.mode.value)
    cache = request.app.state.state_cache
    if cache.get("key") != key:
        body = json.dumps(state_payload(runtime, snap), separators=(",", ":"), allow_nan=False).encode()
        cache.update(key=key, body=body, snap=snap)
    return Response(content=cache["body"], media_type="application/json")


def tag_rows(runtime: TwinRuntime) -> list[dict[str, Any]]:
    """Every tag the twin reads, latest value first known, with its instrument's metadata."""
    values = runtime.twin.tag_values()
    out = []
    for tag, plan in runtime.twin.ingestor.plan.items():
        ins = plan.instrument
        v = values.get(tag)
        out.append(
            {
                "tag": tag,
                "value": clean(v["value"]) if v else None,
                "quality": v["quality"] if v else "bad",
                "source_time": v["source_time"] if v else "",
                "plant_time_h": v["plant_time_h"] if v else None,
                "used": bool(v["used"]) if v else False,
                "flag": (v["flag"] if v else "no value yet"),
                "unit": ins.unit,
                "description": ins.description,
                "range_min": ins.range_min,
                "range_max": ins.range_max,
                "role": plan.role,
            }
        )
    return out


@router.get("/tags", response_model=list[TagOut], summary="Latest value of every tag, with quality and use")
async def tags(runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_STATE))]) -> list[TagOut]:
    return [TagOut(**row) for row in tag_rows(runtime)]


@router.get(
    "/kpis",
    response_model=dict[str, KpiOut],
    summary="Predicted product KPIs against their specifications",
    responses=_NO_ESTIMATE,
)
async def kpis(
    runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_STATE))]
) -> dict[str, KpiOut]:
    if runtime.twin.snapshot() is None:
        raise ConflictError("no estimate yet: the twin has not received enough data", field="state")
    return {k: KpiOut(**v) for k, v in kpis_out(runtime.twin.predicted_kpis()).items()}
