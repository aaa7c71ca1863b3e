"""The historian's tables (SQLAlchemy Core), for SQLite and PostgreSQL alike.

Conventions
-----------
- Every time is stored as ``*_us``: integer microseconds since 1970-01-01T00:00:00 UTC. That is
  UTC wall time without any time-zone ambiguity, indexes well, and lets both databases bucket a
  time range by integer division. :mod:`twin.historian` converts to and from timezone-aware
  ``datetime`` at its edge; nothing else reads these columns.
- Plant time (the simulated plant's clock) is ``plant_time_h``, in hours, when known.
- Enumerations are stored as their string values; small JSON documents as JSON (JSONB on
  PostgreSQL); estimate arrays as little-endian float64 bytes (``stages × elements``, row-major),
  with their labels as JSON lists.
- Primary keys are 64-bit on PostgreSQL and SQLite's rowid on SQLite; they increase with insertion.

:data:`SCHEMA_VERSION` is stored in ``sxtwin_meta``; the historian refuses a database with another
version instead of guessing.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "SCHEMA_VERSION",
    "audit",
    "decisions",
    "estimates",
    "events",
    "meta",
    "metadata",
    "mode_changes",
    "proposals",
    "samples",
    "writes",
]

SCHEMA_VERSION: Final = 1

# 64-bit ids on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY (its rowid).
_Id = BigInteger().with_variant(Integer(), "sqlite")
_Json = JSON().with_variant(JSONB(), "postgresql")
_NAME = 200  # tags, user names, circuit names, versions

metadata = MetaData()

meta = Table(
    "sxtwin_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)

samples = Table(
    "samples",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("tag", String(_NAME), nullable=False),
    Column("value", Float(precision=53), nullable=True),  # NULL: no usable value (Bad, NaN)
    Column("quality", String(16), nullable=False),
    Column("source_time_us", BigInteger, nullable=False),
    Column("plant_time_h", Float(precision=53), nullable=True),
    Column("recorded_us", BigInteger, nullable=False),
    Index("ix_samples_tag_time", "tag", "source_time_us"),
    Index("ix_samples_recorded", "recorded_us"),
)

estimates = Table(
    "estimates",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("circuit", String(_NAME), nullable=False),
    Column("quantity", String(_NAME), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("plant_time_h", Float(precision=53), nullable=True),
    Column("stages", _Json, nullable=False),
    Column("elements", _Json, nullable=False),
    Column("mean", LargeBinary, nullable=False),
    Column("std", LargeBinary, nullable=False),
    Column("recorded_us", BigInteger, nullable=False),
    Index("ix_estimates_key_time", "circuit", "quantity", "time_us"),
    Index("ix_estimates_recorded", "recorded_us"),
)

proposals = Table(
    "proposals",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("created_by", String(_NAME), nullable=False),
    Column("status", String(16), nullable=False),
    Column("circuit", String(_NAME), nullable=True),
    Column("setpoints", _Json, nullable=False),
    Column("current_setpoints", _Json, nullable=True),
    Column("predicted_effect", _Json, nullable=False),
    Column("active_constraints", _Json, nullable=False),
    Column("reason", Text, nullable=False),
    Column("spec_version", String(_NAME), nullable=False),
    Column("parameter_set_version", String(_NAME), nullable=False),
    Column("code_version", String(_NAME), nullable=False),
    Index("ix_proposals_status", "status", "id"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("proposal_id", _Id, ForeignKey("proposals.id"), nullable=False, unique=True),
    Column("verdict", String(16), nullable=False),
    Column("decided_by", String(_NAME), nullable=False),
    Column("comment", Text, nullable=False),
    Column("time_us", BigInteger, nullable=False),
)

writes = Table(
    "writes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("proposal_id", _Id, ForeignKey("proposals.id"), nullable=True),
    Column("tag", String(_NAME), nullable=False),
    Column("value", Float(precision=53), nullable=False),
    Column("previous_value", Float(precision=53), nullable=True),
    Column("requested_by", String(_NAME), nullable=False),
    Column("approved_by", String(_NAME), nullable=True),
    Column("mode", String(16), nullable=False),
    Column("intent_us", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("outcome_us", BigInteger, nullable=True),
    Column("message", Text, nullable=False),
    Index("ix_writes_proposal", "proposal_id"),
    Index("ix_writes_outcome", "outcome", "id"),
)

mode_changes = Table(
    "mode_changes",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("time_us", BigInteger, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("changed_by", String(_NAME), nullable=False),
    Column("reason", Text, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("time_us", BigInteger, nullable=False),
    Column("plant_time_h", Float(precision=53), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("source", String(_NAME), nullable=False),
    Column("message", Text, nullable=False),
    Column("acknowledged_by", String(_NAME), nullable=True),
    Column("acknowledged_us", BigInteger, nullable=True),
    Column("ack_comment", Text, nullable=True),
    Index("ix_events_time", "time_us"),
    Index("ix_events_ack", "acknowledged_us", "id"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("time_us", BigInteger, nullable=False),
    Column("user_name", String(_NAME), nullable=False),
    Column("action", String(_NAME), nullable=False),
    Column("target", String(_NAME), nullable=True),
    Column("details", _Json, nullable=False),
    Index("ix_audit_time", "time_us"),
    Index("ix_audit_user", "user_name", "time_us"),
)
