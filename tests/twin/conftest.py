"""Fixtures for the twin tests: a historian on a real SQLite file and, when
SXTWIN_TEST_POSTGRES_URL is set (``.ci/postgres.sh`` prints one), on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from twin import historian_schema
from twin.historian import Historian

POSTGRES_URL_VARIABLE = "SXTWIN_TEST_POSTGRES_URL"
NO_POSTGRES = (
    f"{POSTGRES_URL_VARIABLE} is not set: no PostgreSQL to test against "
    "(start one with `url=$(bash .ci/postgres.sh)` and export the URL)"
)


class FakeClock:
    """A settable clock for the historian (UTC, timezone-aware)."""

    def __init__(self, start: datetime = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def fresh_postgres_url() -> str:
    """The test PostgreSQL URL, with the historian's tables dropped (skip when unset)."""
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(NO_POSTGRES)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        historian_schema.metadata.drop_all(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty historian database: a SQLite file, then PostgreSQL if available."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'historian.sqlite3'}"
    return fresh_postgres_url()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def historian(db_url: str, clock: FakeClock) -> Iterator[Historian]:
    with Historian(db_url, clock=clock) as h:
        yield h
