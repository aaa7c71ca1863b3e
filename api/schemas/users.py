"""Schemas of user management (admin)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import StrictModel

__all__ = ["UserIn", "UserOut"]


class UserOut(BaseModel):
    """A user: name and role (never a password or hash)."""

    name: str
    role: str
    source: str


class UserIn(StrictModel):
    """Create or replace a user of the users file."""

    role: Literal["viewer", "operator", "engineer", "trainer", "admin"]
    password: str = Field(min_length=8, max_length=256)
