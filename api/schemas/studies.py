"""Schemas of offline setpoint studies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["StudyIn", "StudyOut"]


class StudyIn(BaseModel):
    """A study definition, as the study runner (``twin.studies``) reads it."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(min_length=1, max_length=64, description="Kind of study (sweep, scenarios, ...).")


class StudyOut(BaseModel):
    """A study's status and progress (0-1), as the runner reports it."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    progress: float | None = None
    message: str | None = None
    extra: dict[str, Any] | None = None
