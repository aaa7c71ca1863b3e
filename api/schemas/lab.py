"""Schemas of lab assays."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import StrictModel

__all__ = ["LabAssayIn", "LabAssayOut", "LabAssayPage"]


class LabAssayIn(StrictModel):
    """A lab result (ICP) for an analyser channel, with the plant time the sample was taken."""

    tag: str = Field(min_length=1, max_length=64, description="Analyser channel, e.g. AI-121.Dy.")
    value_g_per_l: float = Field(gt=0, le=1000, allow_inf_nan=False, description="Concentration, g/L.")
    sample_time_h: float = Field(ge=0, le=1e6, allow_inf_nan=False, description="Plant time of the sample, h.")


class LabAssayOut(BaseModel):
    """A recorded lab assay."""

    id: int
    tag: str
    value_g_per_l: float
    sample_time_h: float
    entered_by: str
    time: datetime


class LabAssayPage(BaseModel):
    """Lab assays, newest first."""

    items: list[LabAssayOut]
    next_cursor: str | None
