"""Schemas of health and readiness."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["Health", "Readiness"]


class Health(BaseModel):
    """Liveness: the process answers."""

    status: str
    version: str


class Readiness(BaseModel):
    """Readiness: the twin has an estimate and the historian answers."""

    status: str
    checks: dict[str, bool]
    plant_time_h: float | None
