"""Schemas of history queries (historian samples and estimates)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

__all__ = ["HistoryPage", "HistoryPointOut", "SampleOut", "SamplePage"]


class HistoryPointOut(BaseModel):
    """One interval: start, aggregate value, how many values, and (estimates) uncertainty."""

    start: datetime
    value: float
    count: int
    std: float | None = None


class HistoryPage(BaseModel):
    """A page of aggregated history; pass ``next_cursor`` as ``cursor`` for the next page."""

    source: str
    name: str
    aggregate: str | None
    interval_s: float | None
    items: list[HistoryPointOut]
    next_cursor: str | None


class SampleOut(BaseModel):
    """A raw sample: value + quality + source timestamp (+ plant time)."""

    tag: str
    value: float | None
    quality: str
    source_time: datetime
    plant_time_h: float | None


class SamplePage(BaseModel):
    """A page of raw samples, oldest first."""

    tag: str
    items: list[SampleOut]
    next_cursor: str | None
