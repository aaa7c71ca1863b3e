"""Schemas of events and alarms."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import StrictModel

__all__ = ["AcknowledgeIn", "EventOut", "EventPage"]


class EventOut(BaseModel):
    """An event (information) or alarm (asks for acknowledgement)."""

    id: int
    kind: str
    severity: str
    source: str
    message: str
    time: datetime
    plant_time_h: float | None
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_comment: str | None


class EventPage(BaseModel):
    """A page of events, newest first."""

    items: list[EventOut]
    next_cursor: str | None


class AcknowledgeIn(StrictModel):
    """An acknowledgement comment."""

    comment: str = Field(default="", max_length=2000)
