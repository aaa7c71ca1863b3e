"""The historian: everything the twin measured, estimated, proposed, decided, wrote and logged.

One :class:`Historian` wraps one database: a SQLite file by default, PostgreSQL when given a
``postgresql+psycopg://`` URL (``postgresql://`` means the same). The schema is in
:mod:`twin.historian_schema`, the records in :mod:`twin.historian_records`.

Durability
    Every method that records something returns only after its transaction has committed. What a
    caller has been told is recorded survives the process being killed (SIGKILL) the next
    instant. SQLite runs in WAL mode with ``synchronous=FULL`` (so a commit also survives a power
    cut), with foreign keys on; write transactions take the write lock at ``BEGIN IMMEDIATE`` so
    a read-check-write transaction cannot race another writer. PostgreSQL commits durably by
    default.

Threads and asyncio
    The API is synchronous and thread-safe (one connection pool per historian). Async code must
    not call it on the event loop: use ``await asyncio.to_thread(historian.record_samples,
    batch)``. Nothing here creates an event loop, a thread or a connection at import.

Audit
    Every mutating action (proposal, decision, status change, write intent and outcome, mode
    change, acknowledgement, retention) writes an audit entry in the same transaction; other
    components record theirs with :meth:`Historian.audit`. Samples, estimates and raised events
    are data, not actions, and are not audited. Retention never deletes audit entries.

Queries
    Time ranges are half-open, ``[start, end)``. History with an interval returns one
    :class:`~twin.historian_records.HistoryPoint` per non-empty interval ``[start + k*interval,
    start + (k+1)*interval)``, aggregating Good samples only; empty intervals are omitted (a gap
    on a trend). Lists are paged: pass ``limit`` and the previous page's ``next_cursor``.
    Proposals, events, writes, mode changes and the audit log come newest first; time series
    oldest first.

Times
    In: timezone-aware ``datetime``. Out: UTC ``datetime``. Stored as integer microseconds since
    the Unix epoch, UTC.

Errors
    Bad input raises :class:`~models.errors.InputError` naming the field; an unknown id
    :class:`~models.errors.NotFoundError`; a move the state does not allow (deciding a decided
    proposal, acknowledging twice) :class:`~models.errors.ConflictError`. Failures of the database
    itself (server unreachable, disk full) propagate as ``sqlalchemy.exc.SQLAlchemyError``: they
    are not sxtwin's to explain, and nothing was recorded.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import numpy as np
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL, Row, make_url
from sqlalchemy.exc import ArgumentError

from models.errors import ConflictError, InputError, NotFoundError, bad_value
from twin import historian_schema as schema
from twin.historian_records import (
    Aggregate,
    AuditEntry,
    Decision,
    EstimateSnapshot,
    Event,
    EventKind,
    HistoryPoint,
    Mode,
    ModeChange,
    NewEvent,
    NewProposal,
    Page,
    Proposal,
    ProposalStatus,
    Quality,
    RetentionResult,
    Sample,
    Severity,
    Verdict,
    WriteIntent,
    WriteOutcome,
    WriteRecord,
    check_interval,
    check_name,
    check_positive_int,
    check_range,
    from_us,
    to_us,
    utc_now,
)

if TYPE_CHECKING:
    from twin.settings import Settings

__all__ = ["MAX_PAGE", "PROPOSAL_TRANSITIONS", "Historian"]

log = logging.getLogger(__name__)

#: Largest page any query returns.
MAX_PAGE: Final = 10_000

#: Allowed proposal status changes (from → to). Pending → approved/rejected only by a decision.
PROPOSAL_TRANSITIONS: Final[Mapping[ProposalStatus, frozenset[ProposalStatus]]] = MappingProxyType(
    {
        ProposalStatus.PENDING: frozenset(
            {
                ProposalStatus.APPROVED,
                ProposalStatus.REJECTED,
                ProposalStatus.SUPERSEDED,
                ProposalStatus.EXPIRED,
                ProposalStatus.APPLIED,
                ProposalStatus.FAILED,
            }
        ),
        ProposalStatus.APPROVED: frozenset(
            {
                ProposalStatus.APPLIED,
                ProposalStatus.FAILED,
                ProposalStatus.SUPERSEDED,
                ProposalStatus.EXPIRED,
            }
        ),
    }
)

_WRITE: Final = "sxtwin_write"  # execution option: this transaction writes
_DAY: Final = timedelta(days=1)


# --------------------------------------------------------------------------- engine set-up


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy's recipe for pysqlite: let SQLAlchemy emit BEGIN itself (see _sqlite_on_begin),
    # so that a transaction covers reads too and writers can take the lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    write = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _parse_url(url: str | Path) -> URL:
    if isinstance(url, Path):
        return URL.create("sqlite", database=str(url.expanduser().absolute()))
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise bad_value(
            "database_url", url, "a SQLAlchemy URL (sqlite:///path or postgresql://...)"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername not in {"sqlite", "sqlite+pysqlite"}:
            raise bad_value("database_url", parsed.drivername, ["sqlite", "sqlite+pysqlite"])
        database = parsed.database or ""
        if database in {"", ":memory:"} or "mode=memory" in str(parsed.query):
            raise bad_value(
                "database_url", url, "a SQLite file (sqlite:///path); in-memory is not durable"
            )
        return parsed
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            return parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            raise bad_value("database_url", parsed.drivername, ["postgresql+psycopg"])
        return parsed
    shown = parsed.render_as_string(hide_password=True)
    raise bad_value("database_url", shown, "a sqlite:/// or postgresql:// URL")


def _make_engine(url: URL, busy_timeout_s: float) -> Engine:
    if url.get_backend_name() == "sqlite":
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


# --------------------------------------------------------------------------- small helpers


def _encode_cursor(kind: str, *values: int) -> str:
    raw = ":".join([kind, *(str(int(v)) for v in values)]).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str, kind: str, n: int) -> tuple[int, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        parts = raw.split(":")
        if parts[0] != kind or len(parts) != n + 1:
            raise ValueError(raw)
        return tuple(int(p) for p in parts[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise bad_value("cursor", cursor, "the next_cursor of a page of the same query") from None


def _json_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise bad_value("details", details, "a mapping")
    try:
        return dict(json.loads(json.dumps(dict(details), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise bad_value("details", str(exc), "JSON-serialisable values, finite numbers") from None


def _enums(cls: type[Any], value: Any, field: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    try:
        return tuple(cls(v).value for v in items)
    except ValueError:
        raise bad_value(field, value, [m.value for m in cls]) from None


def _decode_array(blob: bytes, shape: tuple[int, int]) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype="<f8").reshape(shape)


def _proposal(row: Row[Any]) -> Proposal:
    return Proposal(
        id=row.id,
        status=ProposalStatus(row.status),
        created_by=row.created_by,
        created_at=from_us(row.created_us),
        updated_at=from_us(row.updated_us),
        setpoints=row.setpoints,
        predicted_effect=row.predicted_effect,
        active_constraints=tuple(row.active_constraints),
        reason=row.reason,
        spec_version=row.spec_version,
        parameter_set_version=row.parameter_set_version,
        code_version=row.code_version,
        circuit=row.circuit,
        current_setpoints=row.current_setpoints,
    )


def _write_record(row: Row[Any]) -> WriteRecord:
    return WriteRecord(
        id=row.id,
        tag=row.tag,
        value=row.value,
        previous_value=row.previous_value,
        proposal_id=row.proposal_id,
        requested_by=row.requested_by,
        approved_by=row.approved_by,
        mode=Mode(row.mode),
        intent_at=from_us(row.intent_us),
        outcome=WriteOutcome(row.outcome),
        outcome_at=None if row.outcome_us is None else from_us(row.outcome_us),
        message=row.message,
    )


def _event(row: Row[Any]) -> Event:
    return Event(
        id=row.id,
        kind=EventKind(row.kind),
        severity=Severity(row.severity),
        source=row.source,
        message=row.message,
        time=from_us(row.time_us),
        plant_time_h=row.plant_time_h,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=None if row.acknowledged_us is None else from_us(row.acknowledged_us),
        ack_comment=row.ack_comment,
    )


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        time=from_us(row.time_us),
        user=row.user_name,
        action=row.action,
        target=row.target,
        details=MappingProxyType(dict(row.details)),
    )


def _estimate(row: Row[Any]) -> EstimateSnapshot:
    shape = (len(row.stages), len(row.elements))
    return EstimateSnapshot(
        id=row.id,
        circuit=row.circuit,
        quantity=row.quantity,
        stages=tuple(row.stages),
        elements=tuple(row.elements),
        mean=_decode_array(row.mean, shape),
        std=_decode_array(row.std, shape),
        time=from_us(row.time_us),
        plant_time_h=row.plant_time_h,
    )


def _page_newest_first(
    rows: list[Row[Any]], limit: int, kind: str
) -> tuple[list[Row[Any]], str | None]:
    if len(rows) > limit:
        return rows[:limit], _encode_cursor(kind, rows[limit - 1].id)
    return rows, None


@dataclass
class _Bucket:
    k: int
    values: list[tuple[float, float, int]]  # (mean, std, time_us)


# --------------------------------------------------------------------------- the historian


class Historian:
    """Records and queries the twin's history in SQLite or PostgreSQL.

    Parameters
    ----------
    url
        ``sqlite:///path/to/file.sqlite3`` (or a :class:`~pathlib.Path` to one; the directory is
        created), or ``postgresql+psycopg://user:password@host:port/db``.
    clock
        Returns the current timezone-aware time; injectable for tests.
    busy_timeout_s
        SQLite only: how long a writer waits for another writer's lock, in seconds.

    The tables are created if missing. Use as a context manager, or call :meth:`close`.

    Raises
    ------
    models.errors.InputError
        A bad URL, or a database whose schema version is not this code's.
    """

    def __init__(
        self,
        url: str | Path,
        *,
        clock: Callable[[], datetime] = utc_now,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self._url = _parse_url(url)
        self._clock = clock
        self._engine = _make_engine(self._url, busy_timeout_s)
        try:
            self._init_schema()
        except Exception:
            self._engine.dispose()
            raise
        log.info("historian open: %s", self.url)

    @classmethod
    def from_settings(cls, settings: Settings) -> Historian:
        """A historian on ``settings.resolved_database_url`` (a :class:`twin.settings.Settings`).

        Creates the data directory first.
        """
        settings.ensure_data_dir()
        return cls(settings.resolved_database_url)

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection. Everything recorded is already committed."""
        self._engine.dispose()

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._url.render_as_string(hide_password=True)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._url.get_backend_name()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for diagnostics and tests; record through the methods)."""
        return self._engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            yield conn

    def _now_us(self) -> int:
        return to_us(self._clock(), "clock()")

    def _init_schema(self) -> None:
        with self._write() as conn:
            schema.metadata.create_all(conn)
            row = conn.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            ).first()
            if row is None:
                conn.execute(
                    insert(schema.meta).values(
                        key="schema_version", value=str(schema.SCHEMA_VERSION)
                    )
                )
            elif row.value != str(schema.SCHEMA_VERSION):
                raise InputError(
                    f"database_url: {self.url} has historian schema version {row.value}; this "
                    f"sxtwin expects {schema.SCHEMA_VERSION}",
                    field="database_url",
                )

    def _audit(
        self,
        conn: Connection,
        now_us: int,
        user: str,
        action: str,
        target: str | None,
        details: Mapping[str, Any] | None,
    ) -> int:
        return int(
            conn.execute(
                insert(schema.audit)
                .values(
                    time_us=now_us,
                    user_name=user,
                    action=action,
                    target=target,
                    details=_json_details(details),
                )
                .returning(schema.audit.c.id)
            ).scalar_one()
        )

    # ----------------------------------------------------------------- samples

    def record_samples(self, samples: Iterable[Sample]) -> int:
        """Record measurements in one transaction; returns how many (all committed).

        Downsample before, if wanted (:class:`twin.historian_downsampler.Downsampler`). NaN
        values are stored as no value.
        """
        now_us = self._now_us()
        rows = []
        for i, s in enumerate(samples):
            if not isinstance(s, Sample):
                raise bad_value(f"samples[{i}]", type(s).__name__, "a Sample")
            rows.append(
                {
                    "tag": s.tag,
                    "value": s.value,
                    "quality": s.quality.value,
                    "source_time_us": to_us(s.source_time),
                    "plant_time_h": s.plant_time_h,
                    "recorded_us": now_us,
                }
            )
        if not rows:
            return 0
        with self._write() as conn:
            conn.execute(insert(schema.samples), rows)
        return len(rows)

    def tags(self) -> tuple[str, ...]:
        """Every tag with at least one sample, sorted."""
        with self._read() as conn:
            result = conn.execute(select(schema.samples.c.tag).distinct().order_by("tag"))
            return tuple(r.tag for r in result)

    def latest_sample(self, tag: str) -> Sample | None:
        """The sample of ``tag`` with the latest source time, or ``None``."""
        t = schema.samples
        with self._read() as conn:
            row = conn.execute(
                select(t)
                .where(t.c.tag == check_name(tag, "tag"))
                .order_by(t.c.source_time_us.desc(), t.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else self._sample(row)

    @staticmethod
    def _sample(row: Row[Any]) -> Sample:
        return Sample(
            tag=row.tag,
            value=row.value,
            quality=Quality(row.quality),
            source_time=from_us(row.source_time_us),
            plant_time_h=row.plant_time_h,
        )

    def samples(
        self,
        tag: str,
        start: datetime,
        end: datetime,
        *,
        limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[Sample]:
        """Raw samples of ``tag`` with source time in ``[start, end)``, oldest first, every
        quality."""
        check_name(tag, "tag")
        start_us, end_us = check_range(start, end)
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        t = schema.samples
        q = select(t).where(
            t.c.tag == tag, t.c.source_time_us >= start_us, t.c.source_time_us < end_us
        )
        if cursor is not None:
            t0, id0 = _decode_cursor(cursor, "s", 2)
            q = q.where(or_(t.c.source_time_us > t0, and_(t.c.source_time_us == t0, t.c.id > id0)))
        q = q.order_by(t.c.source_time_us, t.c.id).limit(limit + 1)
        with self._read() as conn:
            rows = list(conn.execute(q))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = _encode_cursor("s", rows[-1].source_time_us, rows[-1].id)
        return Page(tuple(self._sample(r) for r in rows), next_cursor)

    def sample_history(
        self,
        tag: str,
        start: datetime,
        end: datetime,
        interval: timedelta,
        aggregate: Aggregate = Aggregate.MEAN,
        *,
        limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[HistoryPoint]:
        """History of ``tag`` in ``[start, end)``: one point per non-empty ``interval``.

        Good samples with a value only; the aggregation runs in the database.
        """
        check_name(tag, "tag")
        start_us, end_us = check_range(start, end)
        interval_us = check_interval(interval)
        aggregate = Aggregate(aggregate)
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        k0 = _decode_cursor(cursor, "sh", 1)[0] if cursor is not None else 0
        t = schema.samples
        bucket = (t.c.source_time_us - literal(start_us, BigInteger)) // literal(
            interval_us, BigInteger
        )
        where: list[ColumnElement[bool]] = [
            t.c.tag == tag,
            t.c.quality == Quality.GOOD.value,
            t.c.value.is_not(None),
            t.c.source_time_us >= start_us + k0 * interval_us,
            t.c.source_time_us < end_us,
        ]
        if aggregate is Aggregate.LAST:
            ranked = (
                select(
                    bucket.label("b"),
                    t.c.value,
                    func.count().over(partition_by=bucket).label("n"),
                    func.row_number()
                    .over(partition_by=bucket, order_by=(t.c.source_time_us.desc(), t.c.id.desc()))
                    .label("rn"),
                )
                .where(*where)
                .subquery()
            )
            q = (
                select(ranked.c.b, ranked.c.value.label("v"), ranked.c.n)
                .where(ranked.c.rn == 1)
                .order_by(ranked.c.b)
                .limit(limit + 1)
            )
        else:
            inner = select(bucket.label("b"), t.c.value).where(*where).subquery()
            if aggregate is Aggregate.MEAN:
                combined: ColumnElement[Any] = func.avg(inner.c.value)
            elif aggregate is Aggregate.MIN:
                combined = func.min(inner.c.value)
            else:
                combined = func.max(inner.c.value)
            q = (
                select(inner.c.b, combined.label("v"), func.count().label("n"))
                .group_by(inner.c.b)
                .order_by(inner.c.b)
                .limit(limit + 1)
            )
        with self._read() as conn:
            rows = list(conn.execute(q))
        next_cursor = None
        if len(rows) > limit:
            next_cursor = _encode_cursor("sh", rows[limit].b)
            rows = rows[:limit]
        points = tuple(
            HistoryPoint(
                start=from_us(start_us + int(r.b) * interval_us), value=float(r.v), count=int(r.n)
            )
            for r in rows
        )
        return Page(points, next_cursor)

    # ----------------------------------------------------------------- estimates

    def record_estimate(self, snapshot: EstimateSnapshot) -> int:
        """Record one estimate snapshot; returns its id (committed)."""
        if not isinstance(snapshot, EstimateSnapshot):
            raise bad_value("snapshot", type(snapshot).__name__, "an EstimateSnapshot")
        with self._write() as conn:
            return int(
                conn.execute(
                    insert(schema.estimates)
                    .values(
                        circuit=snapshot.circuit,
                        quantity=snapshot.quantity,
                        time_us=to_us(snapshot.time),
                        plant_time_h=snapshot.plant_time_h,
                        stages=list(snapshot.stages),
                        elements=list(snapshot.elements),
                        mean=snapshot.mean.astype("<f8").tobytes(),
                        std=snapshot.std.astype("<f8").tobytes(),
                        recorded_us=self._now_us(),
                    )
                    .returning(schema.estimates.c.id)
                ).scalar_one()
            )

    def latest_estimate(self, circuit: str, quantity: str) -> EstimateSnapshot | None:
        """The latest snapshot of ``quantity`` in ``circuit``, or ``None``."""
        e = schema.estimates
        with self._read() as conn:
            row = conn.execute(
                select(e)
                .where(e.c.circuit == circuit, e.c.quantity == quantity)
                .order_by(e.c.time_us.desc(), e.c.id.desc())
                .limit(1)
            ).first()
        return None if row is None else _estimate(row)

    def estimates(
        self,
        circuit: str,
        quantity: str,
        start: datetime,
        end: datetime,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[EstimateSnapshot]:
        """Whole snapshots of ``quantity`` in ``circuit`` with time in ``[start, end)``,
        oldest first."""
        start_us, end_us = check_range(start, end)
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        e = schema.estimates
        q = select(e).where(
            e.c.circuit == circuit,
            e.c.quantity == quantity,
            e.c.time_us >= start_us,
            e.c.time_us < end_us,
        )
        if cursor is not None:
            t0, id0 = _decode_cursor(cursor, "e", 2)
            q = q.where(or_(e.c.time_us > t0, and_(e.c.time_us == t0, e.c.id > id0)))
        q = q.order_by(e.c.time_us, e.c.id).limit(limit + 1)
        with self._read() as conn:
            rows = list(conn.execute(q))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = _encode_cursor("e", rows[-1].time_us, rows[-1].id)
        return Page(tuple(_estimate(r) for r in rows), next_cursor)

    def estimate_history(
        self,
        circuit: str,
        quantity: str,
        stage: str,
        element: str,
        start: datetime,
        end: datetime,
        interval: timedelta | None = None,
        aggregate: Aggregate = Aggregate.MEAN,
        *,
        limit: int = 1000,
        cursor: str | None = None,
    ) -> Page[HistoryPoint]:
        """History of one stage and element of an estimate in ``[start, end)``.

        Without ``interval``, one point per snapshot (``count`` 1, ``std`` its uncertainty).
        With one, one point per non-empty interval: ``value`` aggregates the snapshot means and
        ``std`` is the mean uncertainty (``mean``) or that of the chosen snapshot. Snapshots
        without that stage or element (a changed spec) are skipped.
        """
        start_us, end_us = check_range(start, end)
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        aggregate = Aggregate(aggregate)
        interval_us = None if interval is None else check_interval(interval)
        e = schema.estimates
        q = select(e.c.id, e.c.time_us, e.c.stages, e.c.elements, e.c.mean, e.c.std).where(
            e.c.circuit == circuit,
            e.c.quantity == quantity,
            e.c.time_us < end_us,
        )
        if interval_us is None:
            q = q.where(e.c.time_us >= start_us)
            if cursor is not None:
                t0, id0 = _decode_cursor(cursor, "eh", 2)
                q = q.where(or_(e.c.time_us > t0, and_(e.c.time_us == t0, e.c.id > id0)))
        else:
            k0 = _decode_cursor(cursor, "ehi", 1)[0] if cursor is not None else 0
            q = q.where(e.c.time_us >= start_us + k0 * interval_us)
        q = q.order_by(e.c.time_us, e.c.id)

        def values(conn: Connection) -> Iterator[tuple[int, int, float, float]]:
            for row in conn.execution_options(yield_per=200).execute(q):
                if stage not in row.stages or element not in row.elements:
                    continue
                shape = (len(row.stages), len(row.elements))
                i, j = row.stages.index(stage), row.elements.index(element)
                yield (
                    row.id,
                    row.time_us,
                    float(_decode_array(row.mean, shape)[i, j]),
                    float(_decode_array(row.std, shape)[i, j]),
                )

        points: list[HistoryPoint] = []
        next_cursor = None
        with self._read() as conn:
            if interval_us is None:
                last: tuple[int, int] = (0, 0)
                for row_id, t_us, mean, std in values(conn):
                    if len(points) == limit:
                        next_cursor = _encode_cursor("eh", last[0], last[1])
                        break
                    points.append(HistoryPoint(start=from_us(t_us), value=mean, count=1, std=std))
                    last = (t_us, row_id)
            else:
                buckets: list[_Bucket] = []
                for _, t_us, mean, std in values(conn):
                    k = (t_us - start_us) // interval_us
                    if not buckets or buckets[-1].k != k:
                        if len(buckets) == limit:
                            next_cursor = _encode_cursor("ehi", k)
                            break
                        buckets.append(_Bucket(k, []))
                    buckets[-1].values.append((mean, std, t_us))
                points = [_aggregate(b, aggregate, start_us, interval_us) for b in buckets]
        return Page(tuple(points), next_cursor)

    # ----------------------------------------------------------------- proposals

    def record_proposal(self, proposal: NewProposal, *, by: str = "twin") -> Proposal:
        """Record a new, pending proposal (and its audit entry); returns it with its id."""
        if not isinstance(proposal, NewProposal):
            raise bad_value("proposal", type(proposal).__name__, "a NewProposal")
        check_name(by, "by")
        now_us = self._now_us()
        p = schema.proposals
        with self._write() as conn:
            pid = conn.execute(
                insert(p)
                .values(
                    created_us=now_us,
                    updated_us=now_us,
                    created_by=by,
                    status=ProposalStatus.PENDING.value,
                    circuit=proposal.circuit,
                    setpoints=dict(proposal.setpoints),
                    current_setpoints=(
                        None
                        if proposal.current_setpoints is None
                        else dict(proposal.current_setpoints)
                    ),
                    predicted_effect=dict(proposal.predicted_effect),
                    active_constraints=list(proposal.active_constraints),
                    reason=proposal.reason,
                    spec_version=proposal.spec_version,
                    parameter_set_version=proposal.parameter_set_version,
                    code_version=proposal.code_version,
                )
                .returning(p.c.id)
            ).scalar_one()
            self._audit(
                conn,
                now_us,
                by,
                "proposal.create",
                f"proposal:{pid}",
                {"setpoints": dict(proposal.setpoints), "circuit": proposal.circuit},
            )
            row = conn.execute(select(p).where(p.c.id == pid)).one()
        return _proposal(row)

    def get_proposal(self, proposal_id: int) -> Proposal:
        """The proposal ``proposal_id``.

        Raises
        ------
        models.errors.NotFoundError
            No such proposal.
        """
        p = schema.proposals
        with self._read() as conn:
            row = conn.execute(select(p).where(p.c.id == proposal_id)).first()
        if row is None:
            raise NotFoundError(f"proposal {proposal_id} does not exist", field="proposal_id")
        return _proposal(row)

    def proposals(
        self,
        status: ProposalStatus | Collection[ProposalStatus] | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Proposal]:
        """Proposals, newest first, optionally only those with ``status`` (one or several)."""
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        p = schema.proposals
        q = select(p)
        if status is not None:
            q = q.where(p.c.status.in_(_enums(ProposalStatus, status, "status")))
        if cursor is not None:
            q = q.where(p.c.id < _decode_cursor(cursor, "p", 1)[0])
        with self._read() as conn:
            rows = list(conn.execute(q.order_by(p.c.id.desc()).limit(limit + 1)))
        rows, next_cursor = _page_newest_first(rows, limit, "p")
        return Page(tuple(_proposal(r) for r in rows), next_cursor)

    def _move_proposal(
        self,
        conn: Connection,
        proposal_id: int,
        to: ProposalStatus,
        now_us: int,
    ) -> None:
        p = schema.proposals
        allowed_from = [f.value for f, tos in PROPOSAL_TRANSITIONS.items() if to in tos]
        result = conn.execute(
            update(p)
            .where(p.c.id == proposal_id, p.c.status.in_(allowed_from))
            .values(status=to.value, updated_us=now_us)
        )
        if result.rowcount == 1:
            return
        row = conn.execute(select(p.c.status).where(p.c.id == proposal_id)).first()
        if row is None:
            raise NotFoundError(f"proposal {proposal_id} does not exist", field="proposal_id")
        raise ConflictError(
            f"proposal {proposal_id} is {row.status}; it cannot become {to.value} (only from "
            f"{', '.join(allowed_from)})",
            field="status",
            details={"proposal_id": proposal_id, "status": row.status, "requested": to.value},
        )

    def decide(
        self,
        proposal_id: int,
        verdict: Verdict,
        *,
        by: str,
        comment: str = "",
    ) -> Decision:
        """Approve or reject a pending proposal; records the decision and the audit entry.

        Raises
        ------
        models.errors.NotFoundError
            No such proposal.
        models.errors.ConflictError
            The proposal is not pending (already decided, superseded, expired...).
        """
        verdict = Verdict(verdict)
        check_name(by, "by")
        if not isinstance(comment, str):
            raise bad_value("comment", comment, "a string")
        to = ProposalStatus.APPROVED if verdict is Verdict.APPROVE else ProposalStatus.REJECTED
        now_us = self._now_us()
        with self._write() as conn:
            self._move_proposal(conn, proposal_id, to, now_us)
            decision_id = conn.execute(
                insert(schema.decisions)
                .values(
                    proposal_id=proposal_id,
                    verdict=verdict.value,
                    decided_by=by,
                    comment=comment,
                    time_us=now_us,
                )
                .returning(schema.decisions.c.id)
            ).scalar_one()
            self._audit(
                conn,
                now_us,
                by,
                f"proposal.{verdict.value}",
                f"proposal:{proposal_id}",
                {"comment": comment, "decision_id": decision_id},
            )
        return Decision(
            id=decision_id,
            proposal_id=proposal_id,
            verdict=verdict,
            decided_by=by,
            comment=comment,
            time=from_us(now_us),
        )

    def decision(self, proposal_id: int) -> Decision | None:
        """The decision on ``proposal_id``, or ``None`` while undecided."""
        d = schema.decisions
        with self._read() as conn:
            row = conn.execute(select(d).where(d.c.proposal_id == proposal_id)).first()
        if row is None:
            return None
        return Decision(
            id=row.id,
            proposal_id=row.proposal_id,
            verdict=Verdict(row.verdict),
            decided_by=row.decided_by,
            comment=row.comment,
            time=from_us(row.time_us),
        )

    def set_proposal_status(
        self,
        proposal_id: int,
        status: ProposalStatus,
        *,
        by: str,
        reason: str = "",
    ) -> Proposal:
        """Move a proposal to ``superseded``, ``expired``, ``applied`` or ``failed``.

        Approval and rejection go through :meth:`decide`. Allowed moves:
        :data:`PROPOSAL_TRANSITIONS`.

        Raises
        ------
        models.errors.InputError
            ``status`` is approved, rejected or pending.
        models.errors.ConflictError
            The move is not allowed from the proposal's current status.
        """
        status = ProposalStatus(status)
        allowed = (
            ProposalStatus.SUPERSEDED,
            ProposalStatus.EXPIRED,
            ProposalStatus.APPLIED,
            ProposalStatus.FAILED,
        )
        if status not in allowed:
            raise bad_value("status", status.value, [s.value for s in allowed])
        check_name(by, "by")
        now_us = self._now_us()
        p = schema.proposals
        with self._write() as conn:
            self._move_proposal(conn, proposal_id, status, now_us)
            self._audit(
                conn,
                now_us,
                by,
                f"proposal.{status.value}",
                f"proposal:{proposal_id}",
                {"reason": reason},
            )
            row = conn.execute(select(p).where(p.c.id == proposal_id)).one()
        return _proposal(row)

    # ----------------------------------------------------------------- writes

    def record_write_intent(self, intent: WriteIntent) -> WriteRecord:
        """Record a setpoint write *before* making it; returns the record (outcome pending).

        When ``intent.proposal_id`` is given the proposal must be approved (or, in closed-loop
        mode, pending), and ``approved_by`` defaults to who approved it.

        Raises
        ------
        models.errors.NotFoundError
            No such proposal.
        models.errors.ConflictError
            The proposal may not be written (rejected, superseded, expired, applied...).
        """
        if not isinstance(intent, WriteIntent):
            raise bad_value("intent", type(intent).__name__, "a WriteIntent")
        now_us = self._now_us()
        approved_by = intent.approved_by
        p, w = schema.proposals, schema.writes
        with self._write() as conn:
            if intent.proposal_id is not None:
                row = conn.execute(
                    select(p.c.status).where(p.c.id == intent.proposal_id).with_for_update()
                ).first()
                if row is None:
                    raise NotFoundError(
                        f"proposal {intent.proposal_id} does not exist", field="proposal_id"
                    )
                status = ProposalStatus(row.status)
                ok = status is ProposalStatus.APPROVED or (
                    status is ProposalStatus.PENDING and intent.mode is Mode.CLOSED_LOOP
                )
                if not ok:
                    raise ConflictError(
                        f"proposal {intent.proposal_id} is {status.value}; only an approved "
                        "proposal (or a pending one in closed-loop mode) may be written",
                        field="proposal_id",
                        details={"proposal_id": intent.proposal_id, "status": status.value},
                    )
                if approved_by is None:
                    approved_by = conn.execute(
                        select(schema.decisions.c.decided_by).where(
                            schema.decisions.c.proposal_id == intent.proposal_id,
                            schema.decisions.c.verdict == Verdict.APPROVE.value,
                        )
                    ).scalar_one_or_none()
            values = {
                "proposal_id": intent.proposal_id,
                "tag": intent.tag,
                "value": intent.value,
                "previous_value": intent.previous_value,
                "requested_by": intent.requested_by,
                "approved_by": approved_by,
                "mode": intent.mode.value,
                "intent_us": now_us,
                "outcome": WriteOutcome.PENDING.value,
                "outcome_us": None,
                "message": "",
            }
            write_id = conn.execute(insert(w).values(**values).returning(w.c.id)).scalar_one()
            self._audit(
                conn,
                now_us,
                intent.requested_by,
                "write.intent",
                intent.tag,
                {
                    "write_id": write_id,
                    "value": intent.value,
                    "previous_value": intent.previous_value,
                    "proposal_id": intent.proposal_id,
                    "approved_by": approved_by,
                    "mode": intent.mode.value,
                },
            )
            row = conn.execute(select(w).where(w.c.id == write_id)).one()
        return _write_record(row)

    def record_write_outcome(
        self,
        write_id: int,
        outcome: WriteOutcome,
        *,
        message: str = "",
        by: str = "twin",
    ) -> WriteRecord:
        """Record how a write ended (``succeeded`` or ``failed``, with the status message).

        Raises
        ------
        models.errors.NotFoundError
            No such write.
        models.errors.ConflictError
            Its outcome is already recorded.
        """
        outcome = WriteOutcome(outcome)
        if outcome is WriteOutcome.PENDING:
            raise bad_value("outcome", outcome.value, ["succeeded", "failed"])
        check_name(by, "by")
        now_us = self._now_us()
        w = schema.writes
        with self._write() as conn:
            result = conn.execute(
                update(w)
                .where(w.c.id == write_id, w.c.outcome == WriteOutcome.PENDING.value)
                .values(outcome=outcome.value, outcome_us=now_us, message=message)
            )
            row = conn.execute(select(w).where(w.c.id == write_id)).first()
            if row is None:
                raise NotFoundError(f"write {write_id} does not exist", field="write_id")
            if result.rowcount != 1:
                raise ConflictError(
                    f"write {write_id} already has outcome {row.outcome}", field="write_id"
                )
            self._audit(
                conn,
                now_us,
                by,
                "write.outcome",
                row.tag,
                {"write_id": write_id, "outcome": outcome.value, "message": message},
            )
        return _write_record(row)

    def writes(
        self,
        *,
        proposal_id: int | None = None,
        outcome: WriteOutcome | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[WriteRecord]:
        """Writes, newest first; ``outcome=WriteOutcome.PENDING`` finds writes whose outcome was
        never recorded (a crash between intent and outcome: check the plant)."""
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        w = schema.writes
        q = select(w)
        if proposal_id is not None:
            q = q.where(w.c.proposal_id == proposal_id)
        if outcome is not None:
            q = q.where(w.c.outcome == WriteOutcome(outcome).value)
        if cursor is not None:
            q = q.where(w.c.id < _decode_cursor(cursor, "w", 1)[0])
        with self._read() as conn:
            rows = list(conn.execute(q.order_by(w.c.id.desc()).limit(limit + 1)))
        rows, next_cursor = _page_newest_first(rows, limit, "w")
        return Page(tuple(_write_record(r) for r in rows), next_cursor)

    # ----------------------------------------------------------------- mode

    def record_mode_change(self, mode: Mode, *, by: str, reason: str = "") -> ModeChange:
        """Record a switch to ``mode`` (also when it already was; the audit says so)."""
        mode = Mode(mode)
        check_name(by, "by")
        now_us = self._now_us()
        m = schema.mode_changes
        with self._write() as conn:
            previous = conn.execute(
                select(m.c.mode).order_by(m.c.id.desc()).limit(1)
            ).scalar_one_or_none()
            change_id = conn.execute(
                insert(m)
                .values(time_us=now_us, mode=mode.value, changed_by=by, reason=reason)
                .returning(m.c.id)
            ).scalar_one()
            self._audit(
                conn,
                now_us,
                by,
                "mode.change",
                "mode",
                {
                    "from": previous or Mode.ADVISORY.value,
                    "to": mode.value,
                    "reason": reason,
                    "mode_change_id": change_id,
                },
            )
        return ModeChange(
            id=change_id, mode=mode, changed_by=by, reason=reason, time=from_us(now_us)
        )

    def current_mode(self) -> Mode:
        """The mode last recorded; advisory when none was."""
        m = schema.mode_changes
        with self._read() as conn:
            value = conn.execute(
                select(m.c.mode).order_by(m.c.id.desc()).limit(1)
            ).scalar_one_or_none()
        return Mode.ADVISORY if value is None else Mode(value)

    def mode_changes(self, *, limit: int = 100, cursor: str | None = None) -> Page[ModeChange]:
        """Mode changes, newest first."""
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        m = schema.mode_changes
        q = select(m)
        if cursor is not None:
            q = q.where(m.c.id < _decode_cursor(cursor, "m", 1)[0])
        with self._read() as conn:
            rows = list(conn.execute(q.order_by(m.c.id.desc()).limit(limit + 1)))
        rows, next_cursor = _page_newest_first(rows, limit, "m")
        items = tuple(
            ModeChange(
                id=r.id,
                mode=Mode(r.mode),
                changed_by=r.changed_by,
                reason=r.reason,
                time=from_us(r.time_us),
            )
            for r in rows
        )
        return Page(items, next_cursor)

    # ----------------------------------------------------------------- events and alarms

    def record_event(self, new: NewEvent) -> Event:
        """Record an event or alarm (time: ``new.time`` or now); returns it with its id."""
        if not isinstance(new, NewEvent):
            raise bad_value("event", type(new).__name__, "a NewEvent")
        time_us = self._now_us() if new.time is None else to_us(new.time)
        e = schema.events
        with self._write() as conn:
            row = conn.execute(
                insert(e)
                .values(
                    time_us=time_us,
                    plant_time_h=new.plant_time_h,
                    kind=new.kind.value,
                    severity=new.severity.value,
                    source=new.source,
                    message=new.message,
                )
                .returning(*e.c)
            ).one()
        return _event(row)

    def acknowledge_event(self, event_id: int, *, by: str, comment: str = "") -> Event:
        """Acknowledge an event or alarm.

        Raises
        ------
        models.errors.NotFoundError
            No such event.
        models.errors.ConflictError
            Already acknowledged (the message says by whom).
        """
        check_name(by, "by")
        now_us = self._now_us()
        e = schema.events
        with self._write() as conn:
            result = conn.execute(
                update(e)
                .where(e.c.id == event_id, e.c.acknowledged_us.is_(None))
                .values(acknowledged_by=by, acknowledged_us=now_us, ack_comment=comment)
            )
            row = conn.execute(select(e).where(e.c.id == event_id)).first()
            if row is None:
                raise NotFoundError(f"event {event_id} does not exist", field="event_id")
            if result.rowcount != 1:
                raise ConflictError(
                    f"event {event_id} was already acknowledged by {row.acknowledged_by}",
                    field="event_id",
                )
            self._audit(
                conn, now_us, by, "event.acknowledge", f"event:{event_id}", {"comment": comment}
            )
        return _event(row)

    def events(
        self,
        *,
        acknowledged: bool | None = None,
        kind: EventKind | None = None,
        min_severity: Severity | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[Event]:
        """Events and alarms, newest first, filtered by acknowledgement, kind, severity, time."""
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        e = schema.events
        q = select(e)
        if acknowledged is not None:
            ack = e.c.acknowledged_us
            q = q.where(ack.is_not(None) if acknowledged else ack.is_(None))
        if kind is not None:
            q = q.where(e.c.kind == _enums(EventKind, kind, "kind")[0])
        if min_severity is not None:
            rank = Severity(min_severity).rank
            q = q.where(e.c.severity.in_([s.value for s in Severity if s.rank >= rank]))
        if start is not None:
            q = q.where(e.c.time_us >= to_us(start, "start"))
        if end is not None:
            q = q.where(e.c.time_us < to_us(end, "end"))
        if cursor is not None:
            q = q.where(e.c.id < _decode_cursor(cursor, "ev", 1)[0])
        with self._read() as conn:
            rows = list(conn.execute(q.order_by(e.c.id.desc()).limit(limit + 1)))
        rows, next_cursor = _page_newest_first(rows, limit, "ev")
        return Page(tuple(_event(r) for r in rows), next_cursor)

    # ----------------------------------------------------------------- audit

    def audit(
        self,
        user: str,
        action: str,
        *,
        target: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Record a mutating action done elsewhere (user management, scenario load, study
        submission...). ``action`` is dotted (``users.create``); ``details`` JSON-ready."""
        check_name(user, "user")
        check_name(action, "action")
        if target is not None:
            check_name(target, "target")
        clean = _json_details(details)
        now_us = self._now_us()
        with self._write() as conn:
            entry_id = self._audit(conn, now_us, user, action, target, clean)
        return AuditEntry(
            id=entry_id,
            time=from_us(now_us),
            user=user,
            action=action,
            target=target,
            details=MappingProxyType(clean),
        )

    def audit_log(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        user: str | None = None,
        action: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditEntry]:
        """The audit log, newest first, filtered by time ``[start, end)``, user and action."""
        limit = check_positive_int(limit, "limit", MAX_PAGE)
        a = schema.audit
        q = select(a)
        if start is not None:
            q = q.where(a.c.time_us >= to_us(start, "start"))
        if end is not None:
            q = q.where(a.c.time_us < to_us(end, "end"))
        if user is not None:
            q = q.where(a.c.user_name == user)
        if action is not None:
            q = q.where(a.c.action == action)
        if cursor is not None:
            q = q.where(a.c.id < _decode_cursor(cursor, "a", 1)[0])
        with self._read() as conn:
            rows = list(conn.execute(q.order_by(a.c.id.desc()).limit(limit + 1)))
        rows, next_cursor = _page_newest_first(rows, limit, "a")
        return Page(tuple(_audit_entry(r) for r in rows), next_cursor)

    # ----------------------------------------------------------------- retention

    def apply_retention(
        self,
        sample_days: float,
        estimate_days: float | None = None,
        *,
        by: str = "system",
    ) -> RetentionResult:
        """Delete samples (and, if ``estimate_days`` is given, estimates) recorded more than
        that many days ago. Age is counted from when the historian recorded them, not from the
        source timestamp (a simulated plant stamps plant time). Nothing else is deleted; the
        audit log keeps an entry of what was.
        """
        for name, days in (("sample_days", sample_days), ("estimate_days", estimate_days)):
            if days is not None and (
                isinstance(days, bool) or not isinstance(days, (int, float)) or not days > 0
            ):
                raise bad_value(name, days, "a number of days > 0")
        check_name(by, "by")
        now = self._clock()
        now_us = to_us(now, "clock()")
        samples_cutoff = now - sample_days * _DAY
        estimates_cutoff = None if estimate_days is None else now - estimate_days * _DAY
        with self._write() as conn:
            n_samples = conn.execute(
                delete(schema.samples).where(schema.samples.c.recorded_us < to_us(samples_cutoff))
            ).rowcount
            n_estimates = 0
            if estimates_cutoff is not None:
                n_estimates = conn.execute(
                    delete(schema.estimates).where(
                        schema.estimates.c.recorded_us < to_us(estimates_cutoff)
                    )
                ).rowcount
            self._audit(
                conn,
                now_us,
                by,
                "retention.apply",
                None,
                {
                    "sample_days": sample_days,
                    "estimate_days": estimate_days,
                    "samples_deleted": n_samples,
                    "estimates_deleted": n_estimates,
                },
            )
        log.info("retention: deleted %d samples, %d estimates", n_samples, n_estimates)
        return RetentionResult(
            samples_deleted=n_samples,
            estimates_deleted=n_estimates,
            samples_cutoff=samples_cutoff,
            estimates_cutoff=estimates_cutoff,
        )


def _aggregate(
    bucket: _Bucket, aggregate: Aggregate, start_us: int, interval_us: int
) -> HistoryPoint:
    values = bucket.values
    if aggregate is Aggregate.MEAN:
        value = float(np.mean([v[0] for v in values]))
        std = float(np.mean([v[1] for v in values]))
    else:
        if aggregate is Aggregate.LAST:
            chosen = values[-1]
        elif aggregate is Aggregate.MIN:
            chosen = min(values, key=lambda v: v[0])
        else:
            chosen = max(values, key=lambda v: v[0])
        value, std = chosen[0], chosen[1]
    return HistoryPoint(
        start=from_us(start_us + bucket.k * interval_us), value=value, count=len(values), std=std
    )
