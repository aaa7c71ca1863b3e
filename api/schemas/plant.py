"""Schemas of the plant description."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["PlantOut"]


class PlantOut(BaseModel):
    """The plant spec and what the twin derives from it (stage labels, tags, connection)."""

    name: str
    description: str
    plant_kind: str
    plant_endpoint: str | None
    speed: float | None
    circuits: list[dict[str, Any]]
    products: list[dict[str, Any]]
    manipulated: list[dict[str, Any]]
    instruments: list[dict[str, Any]]
    spec: dict[str, Any]
