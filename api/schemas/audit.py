"""Schemas of the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

__all__ = ["AuditEntryOut", "AuditPage"]


class AuditEntryOut(BaseModel):
    """Who did what, when, to what, with details."""

    id: int
    time: datetime
    user: str
    action: str
    target: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    """A page of the audit log, newest first."""

    items: list[AuditEntryOut]
    next_cursor: str | None
