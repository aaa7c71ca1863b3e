"""The live twin against a plant server that is not asyncua: tests/interop/server.js, a node-opcua
server (pinned in tests/interop/package.json, installed by ``make interop``) publishing tb_dy's
tags from a scripted model over Basic256Sha256 SignAndEncrypt with a user-name token.

The twin (the same wiring as ``sxtwin twin``: reconnecting OPC UA client, ingestion, estimator,
historian on a SQLite file) connects, ingests and estimates; the server's scripted faults (a NaN,
a value outside the instrument range, a Bad status, a value stamped hours in the past, a tag that
stops updating) are flagged with their reason and never reach the model.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from models.elements import element
from models.flowsheet import Flowsheet, build_flowsheet
from models.spec import load_spec
from opcua.client import ClientOptions
from opcua.plant_runtime import PlantRuntime, RuntimeOptions, steady_initial_state
from opcua.tags import TagRole, plant_tags
from tests.opcua.conftest import TB_DY, free_port
from tests.twin._live import LoopThread, all_samples, live_twin, record_observations, until
from twin.connection import ReconnectingPlant
from twin.estimation import Observation
from twin.historian import Historian
from twin.historian_records import Quality
from twin.ingestion import plan_tags
from twin.service import TwinService

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")
INSTALLED = (HERE / "node_modules" / "node-opcua-server").is_dir()
SPEED = 7200.0  # two plant hours per second
STALE_AFTER_H = 4.0
"""The twin's staleness rule at SPEED: the 1 s OPC UA publishing interval alone makes a value up to
two plant hours old on arrival (the default, 2 h, is for a plant in real time)."""
STEP_H = 12.0  # the raffinate Tb analyser reads 30 % lower from this plant hour on
FAULTS = {
    "FIC-103.PV": "not finite",  # the scrub flow transmitter publishes NaN
    "FIC-104.PV": "outside the instrument range",  # the strip flow reads 999 L/h (range 0-400)
    "AI-122.Dy": "quality bad",  # one analyser channel is Bad (out of service)
    "AI-121.Tb": "stale",  # one analyser channel arrives stamped 12 plant hours in the past
}
FROZEN = "AI-123.Gd"  # stops updating at 0.5 plant h: stale once its latest value is too old

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        NODE is None or not INSTALLED,
        reason="node-opcua is not installed: run `make interop` (Node.js 20 and npm needed)",
    ),
]


@dataclass
class NodeTwin:
    """The node-opcua plant, and the twin connected to it (running on its own loop thread)."""

    loop: LoopThread
    twin: TwinService
    connection: ReconnectingPlant
    historian: Historian
    observed: list[Observation]
    design: dict[str, float]
    fs: Flowsheet
    tags: list[dict[str, object]]


def design_tags(fs: Flowsheet, z0: np.ndarray) -> list[dict[str, object]]:
    """Every tag the twin reads, at the design steady state as the simulated plant's instruments read
    it (one seeded sample each), with the spec's ranges, units and noise."""
    readings = {r.tag: r.value for r in PlantRuntime(fs, z0, options=RuntimeOptions(seed=11)).drain().readings}
    wanted = {p.tag for p in plan_tags(fs)}
    out = []
    for t in plant_tags(fs.spec):
        if t.tag not in wanted:
            continue
        lo, hi = t.eu_range if t.role is TagRole.SP else t.instrument_range
        value = readings[t.tag]
        assert isinstance(value, float)
        out.append({"tag": t.tag, "value": value, "low": lo, "high": hi, "unit": t.unit,
                    "noise": 0.0 if t.writable else t.noise_rel, "writable": t.writable,
                    **({"stampLagH": 12.0} if t.tag == "AI-121.Tb" else {}),
                    **({"freezeAtH": 0.5} if t.tag == FROZEN else {})})
    return out


@pytest.fixture(scope="module")
def node_twin(tmp_path_factory: pytest.TempPathFactory, opcua_cache: Path) -> Iterator[NodeTwin]:
    tmp = tmp_path_factory.mktemp("node-plant")
    fs = build_flowsheet(load_spec(TB_DY))
    z0 = steady_initial_state(fs, fs.parameter_vector(), opcua_cache)
    tags = design_tags(fs, z0)
    port = free_port()
    config = {
        "port": port, "user": "twin", "password": "node-plant-password", "pkiDir": str(tmp / "pki"),
        "speed": SPEED, "tags": tags,
        "steps": [
            {"tag": "FIC-103.PV", "atH": 0.0, "value": "NaN"},
            {"tag": "FIC-104.PV", "atH": 0.0, "value": 999.0},
            {"tag": "AI-122.Dy", "atH": 0.0, "status": "BadOutOfService"},
            {"tag": "AI-123.Tb", "atH": STEP_H, "factor": 0.7},
        ],
    }
    cfg = tmp / "config.json"
    cfg.write_text(json.dumps(config), encoding="utf-8")
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(NODE), str(HERE / "server.js"), str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=HERE)
    loop = LoopThread()
    stack = AsyncExitStack()
    try:
        deadline = time.monotonic() + 60
        while "READY" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"server.js exited: {log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, f"server.js not ready: {log.read_text(errors='replace')[-2000:]}"
            time.sleep(0.1)
        options = ClientOptions(f"opc.tcp://127.0.0.1:{port}/sxtwin/plant", "twin", "node-plant-password",
                                tmp / "client-pki")
        observed: list[Observation] = []
        twin, connection = loop.run(stack.enter_async_context(live_twin(
            fs, z0, options, tmp / "twin.sqlite3", prepare=record_observations(observed),
            estimator_interval_s=0.5, record_every=2, stale_after_h=STALE_AFTER_H,
        )))
        design = {m.variable: float(fs.parameter_vector()[fs.parameters.index(m.variable)])
                  for m in fs.spec.manipulated}
        yield NodeTwin(loop, twin, connection, twin.historian, observed, design, fs, tags)
    finally:
        try:
            loop.run(stack.aclose(), timeout=60)
        finally:
            loop.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def raffinate_tb_g_per_l(twin: TwinService) -> tuple[float, float]:
    """The twin's estimate of what AI-123.Tb reads (raffinate = stage E1 aqueous, g/L) and its plant time."""
    snap = twin.snapshot()
    assert snap is not None
    c = snap.circuit("TbDy")
    mol_per_l = float(c.aqueous_mol_per_l[c.elements.index("Tb"), 0])
    return mol_per_l * element("Tb").atomic_weight_g_per_mol, snap.plant_time_h


def test_twin_connects_ingests_and_estimates_from_a_node_opcua_plant(node_twin: NodeTwin) -> None:
    nt = node_twin
    twin = nt.twin

    async def estimating() -> bool:
        snap = twin.snapshot()
        return snap is not None and snap.updates >= 3

    nt.loop.run(until("three estimator updates from the node-opcua plant's data", estimating, 60))
    assert nt.connection.connected
    snap = twin.snapshot()
    assert snap is not None
    assert snap.healthy
    plant_now = nt.loop.run(nt.connection.plant_time_h())
    assert 0.0 < snap.plant_time_h <= plant_now + 1e-9
    assert plant_now - snap.plant_time_h < 12.0  # the estimate keeps up with the plant's clock
    # every tag the twin reads arrived over TCP, with the node server's source timestamps in plant hours
    values = twin.tag_values()
    assert set(values) == set(twin.ingestor.tags)
    healthy = [t for t in values if t not in FAULTS and t != FROZEN]
    for tag in healthy:
        assert values[tag]["quality"] == "good", (tag, values[tag])
        assert values[tag]["plant_time_h"] is not None
    assert all(values[t]["used"] for t in healthy), {t: values[t]["flag"] for t in healthy if not values[t]["used"]}
    # the setpoints in force are the node server's SPs
    for name, value in twin.current_setpoints().items():
        assert value == pytest.approx(nt.design[name], rel=1e-9), name
    # ingested samples are in the historian, Good ones with their values
    got = all_samples(nt.historian, "AI-124.Dy")
    assert got
    assert all(s.quality is Quality.GOOD and s.value is not None and s.value > 0 for s in got)
    assert {"AI-121.Dy", "AI-123.Tb", "AI-124.Dy"} <= {o.tag for o in nt.observed}

    # the raffinate Tb analyser reads 30 % lower from STEP_H on: the estimate follows it down
    async def past_step() -> bool:
        return raffinate_tb_g_per_l(twin)[1] > STEP_H + 1.0

    nt.loop.run(until("the plant past the step", past_step, 30))
    recorded = nt.historian.estimates("TbDy", "aqueous_mol_per_l", datetime(2000, 1, 1, tzinfo=UTC),
                                      datetime(2100, 1, 1, tzinfo=UTC), limit=1000).items
    before = [e for e in recorded if e.plant_time_h is not None and e.plant_time_h < STEP_H]
    assert before, "no estimate recorded before the step"
    e1 = before[-1]
    est_before = float(e1.mean[e1.stages.index("E1"), e1.elements.index("Tb")]) * element("Tb").atomic_weight_g_per_mol

    async def followed() -> float | None:
        est, _ = raffinate_tb_g_per_l(twin)
        return est if est < (1.0 - 0.5 * 0.3) * est_before else None

    nt.loop.run(until("the estimate half-way down the raffinate analyser's 30 % step", followed, 40))


def test_nan_out_of_range_bad_and_stale_values_are_flagged_and_not_used(node_twin: NodeTwin) -> None:
    nt = node_twin
    twin = nt.twin

    async def all_flagged() -> dict[str, str] | None:
        flags = {t: f.reason for t, f in twin.ingestor.flags.items()}
        return flags if set(FAULTS) | {FROZEN} <= set(flags) else None

    flags = nt.loop.run(until("every scripted fault flagged", all_flagged, 60))
    for tag, words in FAULTS.items():
        assert words in flags[tag], (tag, flags[tag])
    assert "stale" in flags[FROZEN]
    assert "outside the instrument range [0, 400]" in flags["FIC-104.PV"]
    values = twin.tag_values()
    for tag in [*FAULTS, FROZEN]:
        assert values[tag]["used"] is False
        assert values[tag]["flag"] == flags[tag]
    # not used: the model's scrub and strip flows stay at the last usable value (here the design's),
    # the estimator never saw the Bad or stale channels, and it stays healthy
    p = twin.estimator.p_base
    for name in ("TbDy.scrub_flow_l_per_h", "TbDy.strip_flow_l_per_h"):
        assert math.isfinite(p[nt.fs.parameters.index(name)])
        assert p[nt.fs.parameters.index(name)] == pytest.approx(nt.design[name])
    observed = {o.tag for o in nt.observed}
    assert "AI-121.Tb" not in observed
    assert "AI-122.Dy" not in observed
    # the frozen channel was used while it was fresh, and turned stale once older than the rule allows
    assert FROZEN in observed
    frozen = twin.ingestor.latest[FROZEN]
    assert frozen.plant_time_h is not None
    assert frozen.plant_time_h < 1.0
    snap = twin.snapshot()
    assert snap is not None
    assert snap.healthy
    # what arrived is still recorded as it arrived: the NaN without a value, the Bad channel as Bad
    nan = all_samples(nt.historian, "FIC-103.PV")
    assert nan
    assert all(s.value is None for s in nan)
    bad = all_samples(nt.historian, "AI-122.Dy")
    assert bad
    assert all(s.quality is Quality.BAD for s in bad)
