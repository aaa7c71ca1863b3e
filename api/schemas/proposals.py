"""Schemas of setpoint proposals and decisions."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import StrictModel
from api.schemas.setpoints import WriteOut

__all__ = ["DecisionIn", "DecisionOut", "DecisionResult", "ProposalOut", "ProposalPage"]


class DecisionOut(BaseModel):
    """An operator's approval or rejection."""

    id: int
    verdict: str
    decided_by: str
    comment: str
    time: datetime


class ProposalOut(BaseModel):
    """A setpoint proposal: setpoints (parameter names), predicted effect, constraints, reason."""

    id: int
    status: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    setpoints: dict[str, float]
    current_setpoints: dict[str, float] | None
    predicted_effect: dict[str, float]
    active_constraints: list[str]
    reason: str
    circuit: str | None
    spec_version: str
    parameter_set_version: str
    code_version: str
    decision: DecisionOut | None = None
    writes: list[WriteOut] = Field(default_factory=list)


class ProposalPage(BaseModel):
    """A page of proposals, newest first."""

    items: list[ProposalOut]
    next_cursor: str | None


class DecisionIn(StrictModel):
    """The comment that goes with an approval or rejection."""

    comment: str = Field(default="", max_length=2000)


class DecisionResult(BaseModel):
    """What a decision did: its id, the verdict and the tags written (approval)."""

    decision_id: int
    verdict: str
    written: list[str]
    proposal: ProposalOut
