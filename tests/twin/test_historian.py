"""The historian (twin.historian): round trips of every record kind on a real SQLite file (and on
PostgreSQL when SXTWIN_TEST_POSTGRES_URL is set), WAL mode, history aggregation and paging
against values computed here, retention, state rules, bad input, and durability under SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from models.errors import ConflictError, InputError, NotFoundError
from twin import historian_schema
from twin.historian import MAX_PAGE, Historian
from twin.historian_downsampler import Downsampler
from twin.historian_records import (
    Aggregate,
    EstimateSnapshot,
    EventKind,
    HistoryPoint,
    Mode,
    NewEvent,
    NewProposal,
    Page,
    ProposalStatus,
    Quality,
    Sample,
    Severity,
    Verdict,
    WriteIntent,
    WriteOutcome,
)

from .conftest import FakeClock

T0 = datetime(2025, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
WRITER = Path(__file__).with_name("_historian_writer.py")


def _proposal(**overrides: Any) -> NewProposal:
    fields: dict[str, Any] = {
        "setpoints": {"FIC-301.SP": 120.5, "FIC-302.SP": 30.0},
        "predicted_effect": {"Dy2O3_purity": 0.9962, "hcl_cost_usd_per_h": 41.25},
        "active_constraints": ("purity_Dy >= 0.995", "organic_flow <= 400 L/h"),
        "reason": "Dy purity below target at AI-305",
        "spec_version": "tbdy-2025-01",
        "parameter_set_version": "P507-HCl@abc123",
        "code_version": "0.1.0+test",
        "circuit": "TbDy",
        "current_setpoints": {"FIC-301.SP": 118.0, "FIC-302.SP": 30.0},
    }
    fields.update(overrides)
    return NewProposal(**fields)


def _all_pages(fetch: Any) -> tuple[list[Any], int]:
    """Follow next_cursor to the end; return every item and the number of pages."""
    items: list[Any] = []
    cursor = None
    pages = 0
    while True:
        page = fetch(cursor)
        assert isinstance(page, Page)
        items.extend(page.items)
        pages += 1
        if page.next_cursor is None:
            return items, pages
        cursor = page.next_cursor


# --------------------------------------------------------------------------- storage basics


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    with Historian(tmp_path / "h.sqlite3") as h:
        assert h.backend == "sqlite"
        with h.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert (tmp_path / "h.sqlite3").exists()


def test_records_persist_across_reopening(db_url: str) -> None:
    with Historian(db_url) as h:
        pid = h.record_proposal(_proposal()).id
    with Historian(db_url) as h:
        assert h.get_proposal(pid).reason == "Dy purity below target at AI-305"


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.sqlite3'}"
    Historian(url).close()
    with Historian(url) as h, h.engine.begin() as conn:
        conn.execute(update(historian_schema.meta).values(value="99"))
    with pytest.raises(InputError, match="schema version 99") as info:
        Historian(url)
    assert info.value.field == "database_url"


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "mysql://u:p@localhost/x", "not a url"]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InputError) as info:
        Historian(url)
    assert info.value.field == "database_url"


def test_url_hides_the_password(tmp_path: Path) -> None:
    with Historian(tmp_path / "h.sqlite3") as h:
        assert h.url.startswith("sqlite:///")
    from twin.historian import _parse_url

    shown = _parse_url("postgresql://u:secret@127.0.0.1:1/x").render_as_string(hide_password=True)
    assert "secret" not in shown
    assert shown.startswith("postgresql+psycopg://")


# --------------------------------------------------------------------------- round trips


def test_samples_round_trip(historian: Historian) -> None:
    cet = timezone(timedelta(hours=1))
    samples = [
        Sample(
            tag="FIC-301.PV",
            value=120.25,
            quality=Quality.GOOD,
            source_time=T0 + timedelta(seconds=1.5),
            plant_time_h=10.5,
        ),
        Sample(
            tag="FIC-301.PV",
            value=float("nan"),
            quality="bad",  # type: ignore[arg-type]
            source_time=datetime(2025, 1, 1, 1, 0, 2, tzinfo=cet),
        ),
        Sample(tag="AI-305.Dy", value=3, quality=Quality.UNCERTAIN, source_time=T0),
        Sample(
            tag="FIC-301.PV", value=None, quality=Quality.BAD, source_time=T0 + timedelta(seconds=3)
        ),
    ]
    assert historian.record_samples(samples) == 4
    assert historian.record_samples([]) == 0
    got = historian.samples("FIC-301.PV", T0, T0 + timedelta(hours=1)).items
    assert got == (samples[0], samples[1], samples[3])
    assert got[1].value is None
    assert got[1].source_time == T0 + timedelta(seconds=2)
    assert got[1].source_time.tzinfo is UTC
    assert got[0].plant_time_h == 10.5
    assert historian.tags() == ("AI-305.Dy", "FIC-301.PV")
    assert historian.latest_sample("FIC-301.PV") == samples[3]
    assert historian.latest_sample("nothing") is None


def test_estimates_round_trip_exactly(historian: Historian) -> None:
    rng = np.random.default_rng(1)
    stages = (*tuple(f"E{i}" for i in range(1, 31)), "S1", "S2")
    elements = ("Gd", "Tb", "Dy", "Ho", "Y")
    mean = rng.lognormal(-4, 3, size=(len(stages), len(elements)))  # ten decades
    std = mean * 0.05
    snap = EstimateSnapshot(
        circuit="TbDy",
        quantity="c_aq_mol_per_l",
        stages=stages,
        elements=elements,
        mean=mean,
        std=std,
        time=T0,
        plant_time_h=1.25,
    )
    snap_id = historian.record_estimate(snap)
    back = historian.latest_estimate("TbDy", "c_aq_mol_per_l")
    assert back is not None
    assert back.id == snap_id
    assert back.stages == stages
    assert back.elements == elements
    np.testing.assert_array_equal(back.mean, mean)
    np.testing.assert_array_equal(back.std, std)
    assert back.time == T0
    assert back.plant_time_h == 1.25
    assert back.value("E3", "Dy") == (mean[2, 2], std[2, 2])
    assert not back.mean.flags.writeable
    assert historian.latest_estimate("TbDy", "c_org_mol_per_l") is None
    page = historian.estimates("TbDy", "c_aq_mol_per_l", T0, T0 + timedelta(1))
    assert [s.id for s in page.items] == [snap_id]


def test_proposal_decision_write_round_trip_with_audit(
    historian: Historian, clock: FakeClock
) -> None:
    new = _proposal()
    proposal = historian.record_proposal(new, by="twin")
    assert proposal.status is ProposalStatus.PENDING
    assert proposal.created_at == clock.now
    assert proposal.created_by == "twin"
    for name in (
        "setpoints",
        "predicted_effect",
        "active_constraints",
        "reason",
        "spec_version",
        "parameter_set_version",
        "code_version",
        "circuit",
        "current_setpoints",
    ):
        assert getattr(proposal, name) == getattr(new, name), name
    assert historian.get_proposal(proposal.id) == proposal
    assert historian.decision(proposal.id) is None

    clock.advance(timedelta(minutes=3))
    decision = historian.decide(proposal.id, Verdict.APPROVE, by="olga", comment="looks right")
    assert decision.time == clock.now
    assert decision.decided_by == "olga"
    assert historian.decision(proposal.id) == decision
    assert historian.get_proposal(proposal.id).status is ProposalStatus.APPROVED

    clock.advance(timedelta(seconds=5))
    intent = WriteIntent(
        tag="FIC-301.SP",
        value=120.5,
        previous_value=118.0,
        requested_by="olga",
        mode=Mode.ADVISORY,
        proposal_id=proposal.id,
    )
    pending = historian.record_write_intent(intent)
    assert pending.outcome is WriteOutcome.PENDING
    assert pending.outcome_at is None
    assert pending.approved_by == "olga"  # looked up from the decision
    assert pending.intent_at == clock.now
    assert historian.writes(outcome=WriteOutcome.PENDING).items == (pending,)

    clock.advance(timedelta(seconds=1))
    done = historian.record_write_outcome(pending.id, WriteOutcome.SUCCEEDED, message="Good")
    assert done.outcome is WriteOutcome.SUCCEEDED
    assert done.outcome_at == clock.now
    assert done.message == "Good"
    assert done.intent_at == pending.intent_at
    assert historian.writes(proposal_id=proposal.id).items == (done,)
    assert historian.writes(outcome=WriteOutcome.PENDING).items == ()

    applied = historian.set_proposal_status(proposal.id, ProposalStatus.APPLIED, by="twin")
    assert applied.status is ProposalStatus.APPLIED
    assert applied.updated_at == clock.now

    actions = [e.action for e in historian.audit_log().items]
    assert actions == [
        "proposal.applied",
        "write.outcome",
        "write.intent",
        "proposal.approve",
        "proposal.create",
    ]
    intent_entry = historian.audit_log(action="write.intent").items[0]
    assert intent_entry.user == "olga"
    assert intent_entry.target == "FIC-301.SP"
    assert intent_entry.details["write_id"] == pending.id
    assert intent_entry.details["approved_by"] == "olga"


def test_mode_changes_round_trip(historian: Historian, clock: FakeClock) -> None:
    assert historian.current_mode() is Mode.ADVISORY
    first = historian.record_mode_change(Mode.CLOSED_LOOP, by="olga", reason="stable shift")
    clock.advance(timedelta(hours=1))
    second = historian.record_mode_change(Mode.ADVISORY, by="twin", reason="stale analyser")
    assert historian.current_mode() is Mode.ADVISORY
    assert historian.mode_changes().items == (second, first)
    assert first.time == clock.now - timedelta(hours=1)
    entry = historian.audit_log(action="mode.change").items[0]
    assert entry.details["from"] == "closed_loop"
    assert entry.details["to"] == "advisory"


def test_events_and_acknowledgement(historian: Historian, clock: FakeClock) -> None:
    info = historian.record_event(
        NewEvent(
            kind=EventKind.EVENT,
            severity=Severity.INFO,
            source="estimator",
            message="estimate updated",
        )
    )
    alarm = historian.record_event(
        NewEvent(
            kind=EventKind.ALARM,
            severity=Severity.HIGH,
            source="AI-305",
            message="analyser Bad quality",
            time=T0,
            plant_time_h=5.0,
        )
    )
    assert alarm.time == T0
    assert alarm.plant_time_h == 5.0
    assert not alarm.acknowledged
    assert info.time == clock.now
    assert historian.events(acknowledged=False).items == (alarm, info)
    assert historian.events(min_severity=Severity.MEDIUM).items == (alarm,)
    assert historian.events(kind=EventKind.EVENT).items == (info,)
    assert historian.events(start=T0, end=T0 + timedelta(seconds=1)).items == (alarm,)

    clock.advance(timedelta(minutes=2))
    acked = historian.acknowledge_event(alarm.id, by="olga", comment="analyser tech called")
    assert acked.acknowledged
    assert acked.acknowledged_by == "olga"
    assert acked.acknowledged_at == clock.now
    assert acked.ack_comment == "analyser tech called"
    assert historian.events(acknowledged=True).items == (acked,)
    assert historian.events(acknowledged=False).items == (info,)
    with pytest.raises(ConflictError, match="already acknowledged by olga"):
        historian.acknowledge_event(alarm.id, by="piotr")
    with pytest.raises(NotFoundError):
        historian.acknowledge_event(999_999, by="olga")
    assert historian.audit_log(user="olga").items[0].action == "event.acknowledge"


def test_audit_entries_query_by_time_user_and_action(
    historian: Historian, clock: FakeClock
) -> None:
    entries = []
    for i in range(12):
        user = "ann" if i % 3 == 0 else "ben"
        entries.append(
            historian.audit(
                user, "users.create", target=f"user{i}", details={"i": i, "roles": ["viewer"]}
            )
        )
        clock.advance(timedelta(minutes=10))
    assert entries[4].details == {"i": 4, "roles": ["viewer"]}
    by_ann, _ = _all_pages(lambda c: historian.audit_log(user="ann", limit=2, cursor=c))
    assert [e.id for e in by_ann] == [e.id for e in reversed(entries) if e.user == "ann"]
    window = historian.audit_log(start=entries[2].time, end=entries[5].time).items
    assert [e.id for e in window] == [entries[4].id, entries[3].id, entries[2].id]
    everything, pages = _all_pages(lambda c: historian.audit_log(limit=5, cursor=c))
    assert [e.id for e in everything] == [e.id for e in reversed(entries)]
    assert pages == 3
    with pytest.raises(InputError, match="details"):
        historian.audit("ann", "x.y", details={"bad": float("nan")})
    with pytest.raises(InputError, match="details"):
        historian.audit("ann", "x.y", details={"bad": object()})


# --------------------------------------------------------------------------- state rules


def test_decided_proposal_cannot_be_decided_again(historian: Historian) -> None:
    p = historian.record_proposal(_proposal())
    historian.decide(p.id, Verdict.REJECT, by="olga", comment="not now")
    with pytest.raises(ConflictError, match=f"proposal {p.id} is rejected") as info:
        historian.decide(p.id, Verdict.APPROVE, by="piotr")
    assert info.value.details["status"] == "rejected"
    with pytest.raises(NotFoundError):
        historian.decide(999_999, Verdict.APPROVE, by="olga")
    with pytest.raises(ConflictError):  # a rejected proposal may not be written
        historian.record_write_intent(
            WriteIntent(
                tag="FIC-301.SP",
                value=1.0,
                requested_by="olga",
                mode=Mode.ADVISORY,
                proposal_id=p.id,
            )
        )
    assert historian.writes().items == ()
    assert historian.decision(p.id).verdict is Verdict.REJECT  # type: ignore[union-attr]


def test_pending_proposal_is_written_only_in_closed_loop(historian: Historian) -> None:
    p = historian.record_proposal(_proposal())
    advisory = WriteIntent(
        tag="FIC-301.SP", value=1.0, requested_by="twin", mode=Mode.ADVISORY, proposal_id=p.id
    )
    with pytest.raises(ConflictError, match="pending"):
        historian.record_write_intent(advisory)
    closed = WriteIntent(
        tag="FIC-301.SP",
        value=1.0,
        requested_by="twin",
        mode=Mode.CLOSED_LOOP,
        proposal_id=p.id,
        approved_by="olga",
    )
    w = historian.record_write_intent(closed)
    assert w.approved_by == "olga"
    assert w.mode is Mode.CLOSED_LOOP
    failed = historian.record_write_outcome(w.id, WriteOutcome.FAILED, message="BadOutOfRange")
    assert failed.outcome is WriteOutcome.FAILED
    with pytest.raises(ConflictError, match="already has outcome failed"):
        historian.record_write_outcome(w.id, WriteOutcome.SUCCEEDED)
    with pytest.raises(NotFoundError):
        historian.record_write_outcome(999_999, WriteOutcome.SUCCEEDED)
    with pytest.raises(NotFoundError):
        historian.record_write_intent(
            WriteIntent(
                tag="FIC-301.SP",
                value=1.0,
                requested_by="twin",
                mode=Mode.CLOSED_LOOP,
                proposal_id=999_999,
            )
        )
    free = historian.record_write_intent(
        WriteIntent(tag="FIC-9.SP", value=2.0, requested_by="olga", mode=Mode.ADVISORY)
    )
    assert free.proposal_id is None
    assert free.approved_by is None


def test_proposal_status_transitions(historian: Historian) -> None:
    p = historian.record_proposal(_proposal())
    with pytest.raises(InputError):
        historian.set_proposal_status(p.id, ProposalStatus.APPROVED, by="olga")
    assert (
        historian.set_proposal_status(
            p.id, ProposalStatus.SUPERSEDED, by="twin", reason="newer proposal"
        ).status
        is ProposalStatus.SUPERSEDED
    )
    with pytest.raises(ConflictError, match="superseded; it cannot become expired"):
        historian.set_proposal_status(p.id, ProposalStatus.EXPIRED, by="twin")
    with pytest.raises(ConflictError):
        historian.decide(p.id, Verdict.APPROVE, by="olga")
    q = historian.record_proposal(_proposal())
    historian.decide(q.id, Verdict.APPROVE, by="olga")
    historian.set_proposal_status(q.id, ProposalStatus.EXPIRED, by="twin")
    pending = historian.record_proposal(_proposal())
    assert [x.id for x in historian.proposals(ProposalStatus.PENDING).items] == [pending.id]
    both = historian.proposals([ProposalStatus.SUPERSEDED, ProposalStatus.EXPIRED]).items
    assert [x.id for x in both] == [q.id, p.id]
    all_, pages = _all_pages(lambda c: historian.proposals(limit=1, cursor=c))
    assert [x.id for x in all_] == [pending.id, q.id, p.id]
    assert pages == 3


def test_concurrent_decisions_one_wins(historian: Historian) -> None:
    p = historian.record_proposal(_proposal())
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def decide(i: int) -> None:
        barrier.wait()
        try:
            historian.decide(p.id, Verdict.APPROVE if i % 2 else Verdict.REJECT, by=f"op{i}")
            result = "won"
        except ConflictError:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    decision = historian.decision(p.id)
    assert decision is not None
    status = historian.get_proposal(p.id).status
    assert status.value == {"approve": "approved", "reject": "rejected"}[decision.verdict]
    assert len(historian.audit_log(action=f"proposal.{decision.verdict.value}").items) == 1


# --------------------------------------------------------------------------- history queries


def _expected_history(
    points: list[tuple[int, int, float]], start_us: int, interval_us: int, aggregate: Aggregate
) -> list[tuple[int, float, int]]:
    """(bucket, value, count) computed here from (time_us, order, value) triples."""
    buckets: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
    for t_us, order, value in points:
        buckets[(t_us - start_us) // interval_us].append((t_us, order, value))
    out = []
    for k in sorted(buckets):
        values = [v for _, _, v in buckets[k]]
        if aggregate is Aggregate.MEAN:
            agg = float(np.mean(values))
        elif aggregate is Aggregate.MIN:
            agg = min(values)
        elif aggregate is Aggregate.MAX:
            agg = max(values)
        else:
            agg = max(buckets[k])[2]
        out.append((k, agg, len(values)))
    return out


@pytest.mark.parametrize("aggregate", list(Aggregate))
def test_sample_history_aggregates_and_pages(historian: Historian, aggregate: Aggregate) -> None:
    rng = np.random.default_rng(42)
    n = 600
    offsets_us = np.sort(rng.choice(3 * 3600 * 1_000_000, size=n, replace=False))
    values = rng.normal(100.0, 15.0, size=n)
    qualities = rng.choice(["good", "uncertain", "bad"], size=n, p=[0.85, 0.05, 0.10])
    samples = []
    for i in range(n):
        value: float | None = float(values[i])
        if i % 97 == 0:
            value = None  # Good quality but no value: not aggregated
        samples.append(
            Sample(
                tag="FIC-301.PV",
                value=value,
                quality=Quality(qualities[i]),
                source_time=T0 + int(offsets_us[i]) * US,
            )
        )
    samples.append(
        Sample(
            tag="OTHER.PV", value=1e9, quality=Quality.GOOD, source_time=T0 + timedelta(minutes=30)
        )
    )
    historian.record_samples(samples)

    start, end, interval = (
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=170),
        timedelta(minutes=7),
    )
    start_us = (start - T0) // US
    end_us = (end - T0) // US
    interval_us = interval // US
    kept = [
        (int(offsets_us[i]), i, s.value)
        for i, s in enumerate(samples[:n])
        if s.quality is Quality.GOOD and s.value is not None and start_us <= offsets_us[i] < end_us
    ]
    expected = _expected_history(kept, start_us, interval_us, aggregate)  # type: ignore[arg-type]
    assert len(expected) > 15

    got, pages = _all_pages(
        lambda c: historian.sample_history(
            "FIC-301.PV", start, end, interval, aggregate, limit=4, cursor=c
        )
    )
    assert pages == math.ceil(len(expected) / 4)
    assert [p.start for p in got] == [start + k * interval for k, _, _ in expected]
    assert [p.count for p in got] == [c for _, _, c in expected]
    assert [p.value for p in got] == pytest.approx([v for _, v, _ in expected], rel=1e-12)
    assert all(isinstance(p, HistoryPoint) and p.std is None for p in got)
    one_page = historian.sample_history(
        "FIC-301.PV", start, end, interval, aggregate, limit=MAX_PAGE
    )
    assert list(one_page.items) == got
    assert one_page.next_cursor is None


def test_raw_samples_page_through_equal_timestamps(historian: Historian) -> None:
    same = [
        Sample(
            tag="T.PV",
            value=float(i),
            quality=Quality.GOOD,
            source_time=T0 + timedelta(seconds=i // 3),
        )
        for i in range(10)
    ]
    historian.record_samples(same)
    got, pages = _all_pages(
        lambda c: historian.samples("T.PV", T0, T0 + timedelta(hours=1), limit=4, cursor=c)
    )
    assert [s.value for s in got] == [float(i) for i in range(10)]
    assert pages == 3


def test_estimate_history_raw_and_aggregated(historian: Historian) -> None:
    rng = np.random.default_rng(3)
    stages, elements = ("E1", "E2", "E3"), ("Tb", "Dy")
    truth: list[tuple[int, int, float, float]] = []
    for i in range(40):
        t = T0 + timedelta(minutes=5 * i + int(rng.integers(0, 4)))
        mean = rng.uniform(0.0, 1.0, size=(3, 2))
        std = rng.uniform(0.0, 0.1, size=(3, 2))
        historian.record_estimate(
            EstimateSnapshot(
                circuit="TbDy",
                quantity="c_aq_mol_per_l",
                stages=stages,
                elements=elements,
                mean=mean,
                std=std,
                time=t,
            )
        )
        truth.append(((t - T0) // US, i, float(mean[1, 1]), float(std[1, 1])))
    # A snapshot of a changed spec without stage E2 is skipped, one of another circuit ignored.
    historian.record_estimate(
        EstimateSnapshot(
            circuit="TbDy",
            quantity="c_aq_mol_per_l",
            stages=("E1",),
            elements=elements,
            mean=np.ones((1, 2)),
            std=np.zeros((1, 2)),
            time=T0 + timedelta(minutes=61),
        )
    )
    historian.record_estimate(
        EstimateSnapshot(
            circuit="GdTb",
            quantity="c_aq_mol_per_l",
            stages=stages,
            elements=elements,
            mean=np.ones((3, 2)),
            std=np.zeros((3, 2)),
            time=T0 + timedelta(minutes=62),
        )
    )

    end = T0 + timedelta(hours=4)
    raw, pages = _all_pages(
        lambda c: historian.estimate_history(
            "TbDy", "c_aq_mol_per_l", "E2", "Dy", T0, end, limit=7, cursor=c
        )
    )
    assert [(p.value, p.std) for p in raw] == [(m, s) for _, _, m, s in truth]
    assert pages == math.ceil(40 / 7)

    interval = timedelta(minutes=17)
    for aggregate in Aggregate:
        expected = _expected_history(
            [(t, i, m) for t, i, m, _ in truth], 0, interval // US, aggregate
        )
        got, _ = _all_pages(
            lambda c, a=aggregate: historian.estimate_history(
                "TbDy", "c_aq_mol_per_l", "E2", "Dy", T0, end, interval, a, limit=3, cursor=c
            )
        )
        assert [p.start for p in got] == [T0 + k * interval for k, _, _ in expected]
        assert [p.value for p in got] == pytest.approx([v for _, v, _ in expected], rel=1e-12)
        assert [p.count for p in got] == [c for _, _, c in expected]
    by_bucket: dict[int, list[float]] = defaultdict(list)
    for t, _, _, s in truth:
        by_bucket[t // (interval // US)].append(s)
    got_mean, _ = _all_pages(
        lambda c: historian.estimate_history(
            "TbDy", "c_aq_mol_per_l", "E2", "Dy", T0, end, interval, Aggregate.MEAN, cursor=c
        )
    )
    assert [p.std for p in got_mean] == pytest.approx(
        [float(np.mean(by_bucket[k])) for k in sorted(by_bucket)], rel=1e-12
    )


def test_query_input_is_checked(historian: Historian) -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(InputError) as info:
        historian.samples("T.PV", naive, T0)
    assert info.value.field == "start"
    with pytest.raises(InputError, match="not after start"):
        historian.samples("T.PV", T0, T0)
    with pytest.raises(InputError) as info:
        historian.samples("T.PV", T0, T0 + timedelta(1), limit=0)
    assert info.value.field == "limit"
    with pytest.raises(InputError) as info:
        historian.sample_history("T.PV", T0, T0 + timedelta(1), timedelta(0))
    assert info.value.field == "interval"
    history_cursor = "c2g6NQ"  # a sample_history cursor is not a samples() cursor
    for cursor in ("garbage!", history_cursor):
        with pytest.raises(InputError) as info:
            historian.samples("T.PV", T0, T0 + timedelta(1), cursor=cursor)
        assert info.value.field == "cursor"
    with pytest.raises(InputError) as info:
        historian.proposals("approvedish")  # type: ignore[arg-type]
    assert info.value.field == "status"


def test_records_validate_their_fields() -> None:
    with pytest.raises(InputError) as info:
        Sample(tag="T", value=1.0, quality=Quality.GOOD, source_time=datetime(2025, 1, 1))
    assert info.value.field == "source_time"
    with pytest.raises(InputError) as info:
        Sample(tag="T", value=1.0, quality="fine", source_time=T0)  # type: ignore[arg-type]
    assert info.value.field == "quality"
    assert "good, uncertain, bad" in info.value.message
    with pytest.raises(InputError) as info:
        EstimateSnapshot(
            circuit="c",
            quantity="q",
            stages=("E1", "E2"),
            elements=("Dy",),
            mean=np.ones((2, 2)),
            std=np.ones((2, 1)),
            time=T0,
        )
    assert info.value.field == "mean"
    with pytest.raises(InputError) as info:
        EstimateSnapshot(
            circuit="c",
            quantity="q",
            stages=("E1",),
            elements=("Dy",),
            mean=np.ones((1, 1)),
            std=-np.ones((1, 1)),
            time=T0,
        )
    assert info.value.field == "std"
    with pytest.raises(InputError) as info:
        _proposal(setpoints={"FIC-301.SP": float("inf")})
    assert info.value.field == "setpoints['FIC-301.SP']"
    with pytest.raises(InputError) as info:
        WriteIntent(tag="X.SP", value=1.0, requested_by="olga", mode="manual")  # type: ignore[arg-type]
    assert info.value.field == "mode"


# --------------------------------------------------------------------------- retention


def test_retention_deletes_only_old_samples(historian: Historian, clock: FakeClock) -> None:
    old = [Sample(tag="T.PV", value=1.0, quality=Quality.GOOD, source_time=T0)]
    historian.record_samples(old)  # recorded "now"
    snap = EstimateSnapshot(
        circuit="c",
        quantity="q",
        stages=("E1",),
        elements=("Dy",),
        mean=np.ones((1, 1)),
        std=np.zeros((1, 1)),
        time=T0,
    )
    historian.record_estimate(snap)
    historian.audit("ann", "something.old")
    historian.record_proposal(_proposal())
    clock.advance(timedelta(days=10))
    new = [Sample(tag="T.PV", value=2.0, quality=Quality.GOOD, source_time=T0)]
    historian.record_samples(new)
    clock.advance(timedelta(days=2))

    result = historian.apply_retention(sample_days=5, by="cron")
    assert (result.samples_deleted, result.estimates_deleted) == (1, 0)
    assert result.samples_cutoff == clock.now - timedelta(days=5)
    remaining = historian.samples("T.PV", T0 - timedelta(1), T0 + timedelta(1)).items
    assert [s.value for s in remaining] == [2.0]
    assert historian.latest_estimate("c", "q") is not None
    actions = [e.action for e in historian.audit_log().items]
    assert actions[0] == "retention.apply"
    assert "something.old" in actions
    assert len(historian.proposals().items) == 1

    result = historian.apply_retention(sample_days=30, estimate_days=11)
    assert (result.samples_deleted, result.estimates_deleted) == (0, 1)
    assert historian.latest_estimate("c", "q") is None
    with pytest.raises(InputError) as info:
        historian.apply_retention(sample_days=0)
    assert info.value.field == "sample_days"


# --------------------------------------------------------------------------- downsampling


def test_downsampler_keeps_changes_and_one_per_interval() -> None:
    d = Downsampler(timedelta(seconds=10), deadband=0.5)

    def s(sec: float, value: float | None, quality: Quality = Quality.GOOD) -> Sample:
        return Sample(
            tag="T", value=value, quality=quality, source_time=T0 + timedelta(seconds=sec)
        )

    stream = [
        s(0, 1.0),  # first: kept
        s(1, 1.1),
        s(2, 1.2),  # within the deadband of 1.0
        s(3, 2.0),  # moved by more than the deadband: kept
        s(4, 2.1, Quality.BAD),  # quality changed: kept
        s(5, 2.1),  # quality changed back: kept
        s(4.5, 9.0),  # older than the last kept: dropped
        s(12, 2.1),
        s(13, 2.2),
        s(16, 2.1),  # 11 s after the last kept: kept
        s(17, None),  # lost its value: kept
        s(20, None),
        s(30, None),  # 13 s: kept
    ]
    kept = d.filter(stream)
    assert [x.source_time.second for x in kept] == [0, 3, 4, 5, 16, 17, 30]
    assert Downsampler(timedelta(seconds=10)).filter([s(0, 1), s(1, 100), s(10, 100)]) == [
        s(0, 1),
        s(10, 100),
    ]
    with pytest.raises(InputError):
        Downsampler(timedelta(0))


# --------------------------------------------------------------------------- durability


@pytest.mark.integration
def test_acknowledged_records_survive_sigkill(db_url: str) -> None:
    Historian(db_url).close()  # create the schema first, so the writer starts at once
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[tuple[str, int]] = []
    try:
        assert proc.stdout is not None
        while len(acknowledged) < 60:
            line = proc.stdout.readline()
            if not line:
                proc.wait(timeout=10)
                pytest.fail(f"writer ended early: {proc.stderr.read() if proc.stderr else ''}")
            kind, number = line.split()
            acknowledged.append((kind, int(number)))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with Historian(db_url) as h:
        if h.backend == "sqlite":
            with h.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        far = T0 + timedelta(days=365)
        samples = {
            int(s.value)
            for s in h.samples("SIGKILL.PV", T0, far, limit=MAX_PAGE).items
            if s.value is not None
        }
        events = {e.id for e in h.events(limit=MAX_PAGE).items}
        audits = {a.id for a in h.audit_log(action="test.write", limit=MAX_PAGE).items}
        for kind, number in acknowledged:
            if kind == "sample":
                assert number in samples
            elif kind == "proposal":
                assert h.get_proposal(number).status is ProposalStatus.PENDING
            elif kind == "event":
                assert number in events
            else:
                assert number in audits
