"""Schemas shared by several resources: problem details and pages."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Problem", "ProblemResponses", "StrictModel"]


class StrictModel(BaseModel):
    """Request bodies: unknown fields are refused (a typo is an error, not silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """An error response (RFC 9457 problem details) with sxtwin's ``field`` and ``error``."""

    type: str = Field(description="URI of the problem kind (urn:sxtwin:problem:...).")
    title: str
    status: int
    detail: str = Field(description="A sentence for a person: what is wrong and what is allowed.")
    instance: str | None = None
    field: str | None = Field(default=None, description="The offending field, when there is one.")
    error: str | None = Field(default=None, description="The sxtwin error class.")
    details: Any = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Every validation error.")


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {"application/problem+json": {}}}


#: The error responses every authenticated route can give (for the OpenAPI document).
ProblemResponses: dict[int | str, dict[str, Any]] = {
    401: _problem("Not authenticated (no, bad or expired bearer token)."),
    403: _problem("The caller's role lacks the permission this route needs."),
    422: _problem("Bad input: the field, the bad value and what is allowed."),
}
