"""History queries on the historian: tag samples and stage estimates, by interval and aggregate, paged."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from api.auth import Principal, require
from api.deps import RuntimeDep
from api.schemas.common import ProblemResponses
from api.schemas.history import HistoryPage, HistoryPointOut, SampleOut, SamplePage
from models.errors import bad_value
from twin.historian_records import Aggregate
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api/history", tags=["history"], responses=ProblemResponses)

#: Default range when none is given: everything (source times of a simulated plant are plant times).
_DEFAULT_START = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_INTERVAL_S = 10 * 366 * 86400.0

Start = Annotated[
    datetime | None, Query(description="Range start (inclusive), ISO 8601 with a zone; default: the beginning.")
]
End = Annotated[datetime | None, Query(description="Range end (exclusive), ISO 8601 with a zone; default: far future.")]
IntervalS = Annotated[
    float | None,
    Query(
        gt=0,
        le=_MAX_INTERVAL_S,
        allow_inf_nan=False,
        description="Aggregation interval, s; omitted: raw values (samples) or one point per snapshot (estimates).",
    ),
]
AggregateQ = Annotated[Literal["mean", "min", "max", "last"], Query(description="How values in one interval combine.")]
Limit = Annotated[int, Query(ge=1, le=10000, description="Page size.")]
Cursor = Annotated[
    str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_\-]+$", description="next_cursor of the previous page.")
]


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    s = start or _DEFAULT_START
    e = end or datetime(9000, 1, 1, tzinfo=UTC)
    for name, value in (("start", s), ("end", e)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise bad_value(name, value.isoformat(), "a date-time with a time zone (for example 2026-01-01T00:00:00Z)")
    return s, e


@router.get(
    "/samples",
    summary="History of one tag: raw samples, or aggregated per interval",
    response_model=SamplePage | HistoryPage,
)
async def samples(
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))],
    tag: Annotated[str, Query(min_length=1, max_length=200, description="Tag, e.g. FIC-102.PV or AI-121.Dy.")],
    start: Start = None,
    end: End = None,
    interval_s: IntervalS = None,
    aggregate: AggregateQ = "mean",
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> SamplePage | HistoryPage:
    s, e = _range(start, end)
    h = runtime.historian
    if interval_s is None:
        page = await asyncio.to_thread(h.samples, tag, s, e, limit=limit, cursor=cursor)
        return SamplePage(
            tag=tag,
            items=[
                SampleOut(
                    tag=x.tag,
                    value=x.value,
                    quality=x.quality.value,
                    source_time=x.source_time,
                    plant_time_h=x.plant_time_h,
                )
                for x in page.items
            ],
            next_cursor=page.next_cursor,
        )
    hp = await asyncio.to_thread(
        h.sample_history, tag, s, e, timedelta(seconds=interval_s), Aggregate(aggregate), limit=limit, cursor=cursor
    )
    return HistoryPage(
        source="tag",
        name=tag,
        aggregate=aggregate,
        interval_s=interval_s,
        items=[HistoryPointOut(start=p.start, value=p.value, count=p.count, std=p.std) for p in hp.items],
        next_cursor=hp.next_cursor,
    )


@router.get(
    "/estimates",
    response_model=HistoryPage,
    summary="History of one stage and element of the estimate (mean and standard uncertainty)",
)
async def estimates(
    runtime: RuntimeDep,
    _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))],
    circuit: Annotated[str, Query(min_length=1, max_length=200)],
    stage: Annotated[str, Query(min_length=1, max_length=50, description="Stage label, e.g. E10, S20, T5.")],
    element: Annotated[str, Query(min_length=1, max_length=3)],
    quantity: Annotated[Literal["aqueous_mol_per_l"], Query()] = "aqueous_mol_per_l",
    start: Start = None,
    end: End = None,
    interval_s: IntervalS = None,
    aggregate: AggregateQ = "mean",
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> HistoryPage:
    s, e = _range(start, end)
    circuits = {c.name: c for c in runtime.flowsheet.circuits}
    if circuit not in circuits:
        raise bad_value("circuit", circuit, sorted(circuits))
    lay = circuits[circuit]
    if stage not in lay.stage_labels():
        raise bad_value(
            "stage", stage, f"a stage label of {circuit} ({lay.stage_labels()[0]}..{lay.stage_labels()[-1]})"
        )
    if element not in lay.elements:
        raise bad_value("element", element, lay.elements)
    interval = None if interval_s is None else timedelta(seconds=interval_s)
    hp = await asyncio.to_thread(
        runtime.historian.estimate_history,
        circuit,
        quantity,
        stage,
        element,
        s,
        e,
        interval,
        Aggregate(aggregate),
        limit=limit,
        cursor=cursor,
    )
    return HistoryPage(
        source="estimate",
        name=f"{circuit}.{stage}.{element}",
        aggregate=aggregate if interval else None,
        interval_s=interval_s,
        items=[HistoryPointOut(start=p.start, value=p.value, count=p.count, std=p.std) for p in hp.items],
        next_cursor=hp.next_cursor,
    )


@router.get("/tags", response_model=list[str], summary="Tags with at least one recorded sample")
async def history_tags(
    runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_HISTORY))]
) -> list[str]:
    return list(await asyncio.to_thread(runtime.historian.tags))
