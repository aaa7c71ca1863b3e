"""Schemas of offline setpoint studies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["StudyIn", "StudyOut"]


class StudyIn(BaseModel):
    """A study definition, as the study runner (``twin.study_service``) reads it: a study file
    (docs/studies.md) as JSON tables, or its TOML text.

    Besides ``kind`` and ``study`` (or ``toml``), the body holds the section of its kind, as in a
    study file: ``sweep``, ``scenarios``, ``pareto``, ``capacity``, ``stage_design`` or
    ``robustness``. The plant is always the twin's own.
    """

    model_config = ConfigDict(extra="allow")

    kind: str = Field(
        min_length=1,
        max_length=64,
        description="Kind of study: sweep, scenarios, pareto, capacity, stage_design or robustness.",
    )
    study: dict[str, Any] | None = Field(
        default=None,
        description="The [study] table: name (required), description, action, objective, prices, "
        "chain_length; kind may be left out (it must agree with the body's), plant left out or naming "
        "the twin's plant.",
    )
    toml: str | None = Field(
        default=None,
        max_length=1_000_000,
        description="Instead of tables: the text of a study file (its plant line, if any, must name the twin's plant).",
    )


class StudyOut(BaseModel):
    """A study's status and progress (0-1), as the runner reports it.

    ``status`` is queued, running, done, failed or cancelled; ``progress`` is cases done / cases
    in the study (None while unknown, as in a stage-design search); the runner adds
    ``cases_done``, ``cases_total``, ``submitted_at``, ``started_at``, ``finished_at``, ``user``,
    ``queue_position``, ``cancel_requested``, ``cancelled_by``, ``out_dir`` and ``plots``.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    status: str
    progress: float | None = None
    message: str | None = None
    extra: dict[str, Any] | None = None
