"""Schemas of setpoints, writes and the operating mode."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import StrictModel

__all__ = ["ModeIn", "ModeOut", "SetpointOut", "SetpointWriteIn", "SetpointsOut", "WriteOut", "WritePage"]


class SetpointOut(BaseModel):
    """One manipulated variable: current value (from the plant's PV), bounds, rate limit, tag."""

    name: str
    parameter: str
    tag: str | None
    value: float
    min: float
    max: float
    max_rate_per_h: float | None
    proposed: float | None = Field(description="Value in the pending proposal, if any.")


class SetpointsOut(BaseModel):
    """Current setpoints, the mode and the pending proposal (if any)."""

    mode: str
    closed_loop_allowed: bool
    advisor: bool = Field(description="Whether a setpoint advisor (optimiser) is configured.")
    pending_proposal_id: int | None
    setpoints: list[SetpointOut]


class SetpointWriteIn(StrictModel):
    """A direct setpoint write by an operator (within the variable's bounds and rate limit)."""

    value: float = Field(allow_inf_nan=False)
    reason: str = Field(default="", max_length=500)


class WriteOut(BaseModel):
    """A recorded setpoint write: intent, outcome, and its link to a proposal and approver."""

    id: int
    tag: str
    value: float
    previous_value: float | None
    requested_by: str
    approved_by: str | None
    proposal_id: int | None
    mode: str
    intent_at: datetime
    outcome: str
    outcome_at: datetime | None
    message: str


class WritePage(BaseModel):
    """A page of writes, newest first."""

    items: list[WriteOut]
    next_cursor: str | None


class ModeIn(StrictModel):
    """Switch between advisory and closed loop."""

    mode: Literal["advisory", "closed_loop"]
    reason: str = Field(default="", max_length=500)


class ModeOut(BaseModel):
    """The operating mode."""

    mode: str
    closed_loop_allowed: bool
