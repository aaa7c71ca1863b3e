"""Schemas of authentication."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["Me", "Token"]


class Token(BaseModel):
    """A bearer token (OAuth2 password flow)."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_at: float = Field(description="Unix time (s) when the token expires.")
    user: str
    role: str


class Me(BaseModel):
    """The caller."""

    user: str
    role: str
    permissions: list[str]
    expires_at: float | None
