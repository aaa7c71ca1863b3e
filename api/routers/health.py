"""Health, readiness and Prometheus metrics (no authentication: loopback by default)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from api.deps import HubDep, RuntimeDep
from api.errors import problem_response
from api.schemas.common import Problem
from api.schemas.health import Health, Readiness
from twin.historian_records import code_version

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health(status="ok", version=code_version())


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: the twin has an estimate and the historian answers",
    responses={503: {"model": Problem, "description": "Not ready yet (starting up) or the historian is down."}},
)
async def ready(runtime: RuntimeDep) -> JSONResponse | Readiness:
    snap = runtime.twin.snapshot()
    try:
        await asyncio.to_thread(runtime.historian.current_mode)
        historian_ok = True
    except Exception:
        historian_ok = False
    checks = {"estimate": snap is not None, "estimator_healthy": bool(snap and snap.healthy), "historian": historian_ok}
    if not all(checks.values()):
        failed = ", ".join(k for k, v in checks.items() if not v)
        return problem_response(
            503,
            f"not ready: {failed}",
            kind="not-ready",
            instance="/ready",
            extra={"checks": checks},
            headers={"Retry-After": "2"},
        )
    return Readiness(status="ready", checks=checks, plant_time_h=snap.plant_time_h if snap else None)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics (text format 0.0.4)",
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request, runtime: RuntimeDep, hub: HubDep) -> PlainTextResponse:
    twin = runtime.twin
    snap = twin.snapshot()
    gauges: list[tuple[str, str, str, dict[str, str], float]] = []
    nan = float("nan")
    gauges.append(
        (
            "sxtwin_estimator_wall_seconds",
            "gauge",
            "Wall time of the last estimator update, s.",
            {},
            twin.last_estimator_wall_s if twin.last_estimator_wall_s is not None else nan,
        )
    )
    gauges.append(
        (
            "sxtwin_estimator_updates",
            "gauge",
            "Estimator updates that used data since start.",
            {},
            float(snap.updates) if snap else 0.0,
        )
    )
    gauges.append(
        (
            "sxtwin_estimator_healthy",
            "gauge",
            "1 when the estimate is finite.",
            {},
            1.0 if snap is not None and snap.healthy else 0.0,
        )
    )
    gauges.append(
        (
            "sxtwin_plant_time_hours",
            "gauge",
            "Plant time of the latest estimate, h.",
            {},
            snap.plant_time_h if snap else nan,
        )
    )
    if runtime.speed is not None:
        gauges.append(("sxtwin_plant_speed", "gauge", "Plant seconds per wall second.", {}, runtime.speed))
    gauges.append(("sxtwin_live_clients", "gauge", "Connected live-update (SSE) clients.", {}, float(hub.clients)))
    gauges.append(("sxtwin_live_messages_total", "counter", "Live-update messages sent.", {}, float(hub.messages)))
    gauges.append(
        (
            "sxtwin_uptime_seconds",
            "gauge",
            "Seconds since the API started.",
            {},
            time.time() - request.app.state.metrics.started,
        )
    )
    for name, k in twin.predicted_kpis().items():
        gauges.append(
            ("sxtwin_predicted_purity", "gauge", "Predicted product purity, 0-1.", {"product": name}, k["purity"])
        )
        gauges.append(
            ("sxtwin_predicted_recovery", "gauge", "Predicted product recovery, 0-1.", {"product": name}, k["recovery"])
        )
    text = request.app.state.metrics.render(gauges)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
