"""The API's alarms (product off spec, stale or Bad data) and the live-update fan-out, on a fake twin."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from api.live import LiveHub
from twin.historian import Historian
from twin.ingestion import TagPlan
from twin.plant_io import Quality, TagValue


class FakeIngestor:
    def __init__(self) -> None:
        ins = SimpleNamespace(delay_s=0.0, sample_period_s=60.0)
        self.plan = {
            "AI-1.Dy": TagPlan("AI-1.Dy", ins, "observation"),
            "FIC-1.SP": TagPlan("FIC-1.SP", ins, "setpoint"),
        }
        self.latest: dict[str, TagValue] = {}

    def check(self, tv: TagValue, now: float | None) -> str | None:
        if tv.quality is not Quality.GOOD:
            return f"quality {tv.quality.value}"
        if now is not None and tv.plant_time_h is not None and now - tv.plant_time_h > 2.0:
            return f"stale: {now - tv.plant_time_h:.2f} h old (limit 2.00 h)"
        return None


class FakeTwin:
    def __init__(self, historian: Historian) -> None:
        self.historian = historian
        self.ingestor = FakeIngestor()
        self.kpis = {"Dy2O3": {"purity": 0.999, "recovery": 0.99, "purity_min": 0.995, "recovery_min": 0.95}}
        self.t = 1.0
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def snapshot(self) -> Any:
        return SimpleNamespace(plant_time_h=self.t)

    def predicted_kpis(self) -> dict[str, dict[str, float]]:
        return self.kpis

    def tag_values(self) -> dict[str, Any]:
        return {}

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        return self.queue

    def unsubscribe(self, q: Any) -> None:
        pass


def _tv(tag: str, t: float, quality: Quality = Quality.GOOD) -> TagValue:
    return TagValue(tag, 1.0, quality, datetime(2026, 1, 1, tzinfo=UTC), t)


def test_off_spec_and_stale_alarms_on_transitions_only(tmp_path: Path) -> None:
    async def run() -> None:
        with Historian(tmp_path / "h.sqlite3") as h:
            twin = FakeTwin(h)
            hub = LiveHub(twin)  # type: ignore[arg-type]
            q = hub.subscribe()
            twin.ingestor.latest = {"AI-1.Dy": _tv("AI-1.Dy", 1.0), "FIC-1.SP": _tv("FIC-1.SP", 0.0)}
            await hub.check_alarms()
            assert h.events().items == ()
            twin.kpis["Dy2O3"]["purity"] = 0.99
            twin.t = 5.0  # the analyser went quiet: stale; the setpoint is old but never stale
            await hub.check_alarms()
            await hub.check_alarms()  # no repeat while the condition holds
            alarms = h.events(kind="alarm").items
            assert sorted(a.source for a in alarms) == ["AI-1.Dy", "product:Dy2O3"]
            off = next(a for a in alarms if a.source == "product:Dy2O3")
            assert off.severity.value == "high"
            assert "purity 0.99000 < 0.99500" in off.message
            twin.kpis["Dy2O3"]["purity"] = 0.999
            twin.ingestor.latest["AI-1.Dy"] = _tv("AI-1.Dy", 5.0)
            await hub.check_alarms()
            back = [e.message for e in h.events(kind="event").items]
            assert "Dy2O3 predicted back on spec" in back
            assert "AI-1.Dy: good data again" in back
            messages = []
            while not q.empty():
                messages.append(q.get_nowait())
            assert [m["type"] for m in messages] == ["event"] * 4
            assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)
            # a Bad value of a tag that was good is an alarm too
            twin.ingestor.latest["AI-1.Dy"] = _tv("AI-1.Dy", 5.0, Quality.BAD)
            await hub.check_alarms()
            assert h.events(kind="alarm").items[0].message.startswith("AI-1.Dy: quality bad")

    asyncio.run(run())


def test_slow_client_loses_oldest_messages_not_the_hub(tmp_path: Path) -> None:
    async def run() -> None:
        with Historian(tmp_path / "h.sqlite3") as h:
            hub = LiveHub(FakeTwin(h), client_queue=3)  # type: ignore[arg-type]
            q = hub.subscribe()
            for i in range(10):
                hub.publish({"type": "x", "n": i})
            assert [q.get_nowait()["n"] for _ in range(3)] == [7, 8, 9]
            assert math.isclose(hub.messages, 10)

    asyncio.run(run())
