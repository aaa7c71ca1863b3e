"""Offline setpoint studies (engineer): submit, watch progress, fetch results and plots, cancel.

The runner is ``twin.studies`` (sweeps, scenario sets, capacity, stage-count design, robustness;
on Dask). The API only relays: it validates the envelope, checks the permission, audits, and
maps the runner's errors. Without a runner every route answers 503 and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from api.auth import Principal, require
from api.deps import HubDep, RuntimeDep
from api.routers._present import clean
from api.runtime import StudyRunner, TwinRuntime
from api.schemas.common import Problem, ProblemResponses
from api.schemas.studies import StudyIn, StudyOut
from models.errors import IngestionError
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api/studies", tags=["studies"], responses=ProblemResponses)

StudyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such study."},
    409: {"model": Problem, "description": "The study is not in a state that allows this."},
    503: {"model": Problem, "description": "No study runner on this deployment."},
}


class StudiesUnavailable(IngestionError):
    """No study runner is configured (HTTP 503)."""


def _runner(runtime: TwinRuntime) -> StudyRunner:
    if runtime.studies is None:
        raise StudiesUnavailable(
            "offline studies are not available: the study runner (twin.studies) is not running", field="studies"
        )
    return runtime.studies


def _status(s: Mapping[str, Any]) -> StudyOut:
    return StudyOut(**clean(dict(s)))


@router.post(
    "", response_model=StudyOut, status_code=202, summary="Submit a study (engineer), audited", responses=_ERRORS
)
async def submit(
    runtime: RuntimeDep,
    hub: HubDep,
    user: Annotated[Principal, Depends(require(Permission.SUBMIT_STUDY))],
    body: StudyIn,
) -> StudyOut:
    assert user.name is not None
    runner = _runner(runtime)
    status = await asyncio.to_thread(runner.submit, body.model_dump(), user=user.name)
    await asyncio.to_thread(
        runtime.historian.audit, user.name, "study.submit", target=f"study:{status['id']}", details={"kind": body.kind}
    )
    hub.publish({"type": "study", "id": status["id"], "status": status.get("status")})
    return _status(status)


@router.get("", response_model=list[StudyOut], summary="Studies, newest first", responses=_ERRORS)
async def list_studies(
    runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))]
) -> list[StudyOut]:
    return [_status(s) for s in await asyncio.to_thread(_runner(runtime).list)]


@router.get("/{study_id}", response_model=StudyOut, summary="Status and progress of a study", responses=_ERRORS)
async def get_study(
    runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))], study_id: StudyId
) -> StudyOut:
    return _status(await asyncio.to_thread(_runner(runtime).status, study_id))


@router.get("/{study_id}/result", summary="Result of a finished study (numbers)", responses=_ERRORS)
async def result(
    runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))], study_id: StudyId
) -> dict[str, Any]:
    return dict(clean(dict(await asyncio.to_thread(_runner(runtime).result, study_id))))


@router.get(
    "/{study_id}/plots/{name}",
    summary="A plot of a finished study (SVG or PNG)",
    responses=_ERRORS,
    response_class=Response,
)
async def plot(
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))],
    study_id: StudyId,
    name: Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,100}$")],
) -> Response:
    content, media_type = await asyncio.to_thread(_runner(runtime).plot, study_id, name)
    return Response(content=content, media_type=media_type)


@router.post(
    "/{study_id}/cancel", response_model=StudyOut, summary="Cancel a study (engineer), audited", responses=_ERRORS
)
async def cancel(
    runtime: RuntimeDep,
    hub: HubDep,
    user: Annotated[Principal, Depends(require(Permission.CANCEL_STUDY))],
    study_id: StudyId,
) -> StudyOut:
    assert user.name is not None
    status = await asyncio.to_thread(_runner(runtime).cancel, study_id, user=user.name)
    await asyncio.to_thread(runtime.historian.audit, user.name, "study.cancel", target=f"study:{study_id}")
    hub.publish({"type": "study", "id": study_id, "status": status.get("status")})
    return _status(status)
