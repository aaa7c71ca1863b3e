"""The live twin end to end over TCP: the simulated tb_dy plant with the standard mismatch
(``sxtwin plant`` in its own process, Basic256Sha256 SignAndEncrypt, user-name tokens) and the twin
wired as ``sxtwin twin`` wires it (reconnecting OPC UA client, ingestion, estimator, advisor,
safety gate, historian on a SQLite file), at a fast plant clock.

What holds (issue "Live twin"): the estimate tracks a feed disturbance the trainer loads; advisory
proposals are recorded and nothing is written; in closed loop the writes go through the gate, are
audited on both sides, and move the plant toward spec; a plant server stopped and started again is
survived (gap recorded, data flowing again); Bad values are flagged and not used; a failed solve
holds; a twin process killed with SIGKILL loses nothing it acknowledged and resumes.

One plant process serves the module; each test starts from the plant's initial state (the
trainer's Reset, a new run epoch) and runs its own twin. The plant clock runs at SPEED: one wall
second is SPEED / 3600 plant hours, so the twin's 1 s OPC UA publishing interval alone makes a value
up to that many plant hours old on arrival; the tests widen the twin's plant-time rules (staleness,
freshness for the gate) by that much, as one would for a plant run faster than real time.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from asyncua import ua

from models.flowsheet import Flowsheet, build_flowsheet
from models.spec import load_spec
from opcua.client import CLIENT_APPLICATION_URI
from opcua.plant_runtime import steady_initial_state
from opcua.security import ensure_certificate
from tests.opcua import conftest as opcua_fixtures
from tests.opcua.conftest import TB_DY, Credentials, free_port, trust_client
from tests.twin._live import (
    SXTWIN,
    PlantProcess,
    all_samples,
    clean_env,
    fresh_run,
    live_twin,
    load_scenario,
    record_observations,
    run_bounded,
    trainer,
    until,
    wait_for_line,
)
from twin.advisor import OptimiserAdvisor
from twin.estimation import Observation
from twin.historian import Historian
from twin.historian_records import EventKind, Mode, ProposalStatus, Quality, WriteOutcome
from twin.ingestion import plan_tags
from twin.security import Role
from twin.service import Advice
from twin.users import generate_demo_users

pytestmark = pytest.mark.integration
credentials = opcua_fixtures.credentials  # the OPC UA tests' session fixtures: users of every role,
opcua_cache = opcua_fixtures.opcua_cache  # and the steady states and address space cached once

SPEED = 18000.0  # plant seconds per wall second: 5 plant hours per second
LAG_H = 12.0  # the twin's staleness and freshness rules at SPEED (see the module docstring)
FAST: dict[str, Any] = {"estimator_interval_s": 0.5, "stale_after_h": LAG_H, "max_data_age_h": LAG_H}


@dataclass(frozen=True)
class Design:
    """The twin's model: flowsheet and design steady state (the twin's starting estimate)."""

    fs: Flowsheet
    z0: np.ndarray

    def value(self, parameter: str) -> float:
        """A parameter's design value (a manipulated variable's design setpoint)."""
        return float(self.fs.parameter_vector()[self.fs.parameters.index(parameter)])


@pytest.fixture(scope="module")
def design(opcua_cache: Path) -> Design:
    fs = build_flowsheet(load_spec(TB_DY))
    return Design(fs, steady_initial_state(fs, fs.parameter_vector(), opcua_cache))


@pytest.fixture(scope="module")
def advisor(design: Design) -> OptimiserAdvisor:
    """The real setpoint optimiser (one NLP for the module, warm-started from call to call)."""
    return OptimiserAdvisor(design.fs)


@pytest.fixture(scope="module")
def plant(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, opcua_cache: Path,
    credentials: Credentials,
) -> Iterator[PlantProcess]:
    process = PlantProcess(tmp_path_factory.mktemp("plant"), opcua_cache, credentials, speed=SPEED, seed=7)
    try:
        process.launch()
        request.getfixturevalue("design")  # the twin's design steady state, solved while the plant solves its own
        process.wait_running()
        yield process
    finally:
        process.stop()


def run(coro: Any) -> Any:
    return run_bounded(coro)


def sp_tag(fs: Flowsheet, parameter: str) -> str:
    """The SP tag of a manipulated variable (its controller)."""
    return next(p.tag for p in plan_tags(fs) if p.role == "setpoint" and p.parameter == parameter)


def plant_writes(plant: PlantProcess, since: float) -> list[Any]:
    """Setpoint writes the plant server audited after wall time ``since`` (seconds since the epoch)."""
    with plant.historian() as h:
        return [a for a in h.audit_log(action="plant.write_setpoint", limit=1000).items if a.time.timestamp() >= since]


# ----------------------------------------------------------------------------------------------- 1
HO_STEP = """
[scenario]
name = "ho-leaner-feed"
description = "The feed basket carries half the Ho (0.15 -> 0.075 % of TREO, Dy the balance)"

[[events]]
kind = "feed_composition"
feed = "feed"
composition = { Gd = 0.05, Tb = 23.0, Dy = 76.875, Ho = 0.075 }
at_h = 0.0
message = "Ho-leaner upstream cut"
"""


def test_estimate_tracks_a_feed_disturbance(plant: PlantProcess, design: Design, tmp_path: Path) -> None:
    """A feed-basket step (half the Ho) loaded by the trainer as the run starts reaches the Dy
    product's analyser some 50 plant hours later: the twin's estimate of the feed's Ho, and its
    predicted Dy2O3 purity, then move toward the plant's true ones (read with the trainer role).

    (The step goes toward the design basket: the estimator keeps its parameters within a few prior
    standard deviations of the model's, and the standard mismatch already has 1.5 x the design Ho.)"""
    fs = design.fs
    ho = fs.parameters.index("feed.conc_mol_per_l.Ho")

    async def scenario() -> None:
        async with trainer(plant) as tr:
            await fresh_run(tr, SPEED)
            ho_before = (await tr.true_state())["parameters"]["feed.conc_mol_per_l.Ho"]
            await load_scenario(tr, HO_STEP)

            async def stepped() -> Mapping[str, Any] | None:
                s = await tr.true_state()  # the step takes effect at the plant's next step
                # not merely different: the mismatch's feed drift moves Ho a little at every step
                return s if s["parameters"]["feed.conc_mol_per_l.Ho"] < 0.75 * ho_before else None

            true_at_load = await until("the plant's feed stepped", stepped, 10)
            true_ho = true_at_load["parameters"]["feed.conc_mol_per_l.Ho"]
            assert true_ho == pytest.approx(0.5 * ho_before, rel=0.02)  # half the Ho it had
            async with live_twin(fs, design.z0, plant.options(Role.OPERATOR), tmp_path / "twin.sqlite3",
                                 **FAST) as (twin, _):

                async def settled() -> bool:
                    snap = twin.snapshot()
                    return snap is not None and snap.updates >= 2 and snap.plant_time_h >= 8.0

                await until("the estimate settled on the plant's data", settled, 30)
                snap = twin.snapshot()
                assert snap is not None
                assert snap.plant_time_h < 30.0  # before the new feed reaches any analyser
                est_before = float(snap.p[ho])
                pur_before = twin.predicted_kpis()["Dy2O3"]["purity"]
                gap_before = math.log(est_before / true_ho)
                assert gap_before > 0.25  # the twin has not seen it yet: it knows the Ho-richer basket

                async def tracked() -> float | None:
                    s = twin.snapshot()
                    gap = math.log(float(s.p[ho]) / true_ho) if s is not None else gap_before
                    return gap if abs(gap) < 0.5 * abs(gap_before) else None

                gap_after = await until("the estimated feed Ho half-way to the plant's", tracked, 60)
                true_after = await tr.true_state()
                pur_after = twin.predicted_kpis()["Dy2O3"]["purity"]
                # the setpoints, published when they change, hold: used however old their stamp
                sps = [v for t, v in twin.tag_values().items() if t.endswith(".SP")]
                assert all(v["used"] for v in sps)
                assert max(true_after["plant_time_h"] - v["plant_time_h"] for v in sps) > LAG_H
        assert gap_after < gap_before  # from above, toward the truth
        # less Ho reached the Dy product: the plant's purity rose, and the twin's prediction followed
        true_pur = true_after["products"]["Dy2O3"]["purity"]
        assert true_pur - true_at_load["products"]["Dy2O3"]["purity"] > 5e-4
        assert abs(pur_after - true_pur) < abs(pur_before - true_pur)

    run(scenario())


# ----------------------------------------------------------------------------------------------- 2
ADVISE: dict[str, Any] = {"cycle_interval_h": 10.0, "steady_window_h": 1.0, "steady_tolerance": 0.5}
"""The optimisation cycle at SLOW: the first cycle once the estimate has held for a plant hour (a
solve takes seconds of wall time, as many plant hours at SLOW; the estimator waits for it)."""
SLOW = 3600.0


def test_advisory_proposals_are_recorded_and_nothing_is_written(
    plant: PlantProcess, design: Design, advisor: OptimiserAdvisor, tmp_path: Path
) -> None:
    """In advisory mode the twin's own cycle proposes setpoints (the standard mismatch leaves the Tb
    cut off spec: a recovery move); each proposal is recorded with its predicted effect, and nothing
    reaches the plant."""
    fs = design.fs
    t0 = time.time()

    async def scenario() -> tuple[list[Any], dict[str, float]]:
        async with trainer(plant) as tr:
            await fresh_run(tr, SLOW)
            async with live_twin(fs, design.z0, plant.options(Role.OPERATOR), tmp_path / "twin.sqlite3",
                                 advisor=advisor, **ADVISE, **FAST) as (twin, _):
                assert twin.mode is Mode.ADVISORY
                await until("a proposal from the twin's own cycle",
                            lambda: twin.historian.proposals(limit=10).items, 90)
                proposals = list(twin.historian.proposals(limit=10).items)
                assert twin.historian.writes().items == ()
                read = await tr.read([sp_tag(fs, m.variable) for m in fs.spec.manipulated])
                return proposals, {tag: float(tv.value) for tag, tv in read.items()}

    proposals, sp_now = run(scenario())
    newest = proposals[0]
    assert newest.created_by == "twin"
    assert newest.status is ProposalStatus.PENDING  # waits for an operator
    names = {m.variable for m in fs.spec.manipulated}
    assert newest.setpoints
    assert set(newest.setpoints) <= names
    assert set(newest.current_setpoints) == names
    assert any(abs(v - newest.current_setpoints[n]) > 1e-6 for n, v in newest.setpoints.items())
    assert {"Dy2O3.purity", "Tb_cut.purity"} <= set(newest.predicted_effect)
    # the plant starts off spec (true Tb cut 0.908 < 0.98): the advisor's answer is a recovery move,
    # predicted to raise the Tb cut's purity along its path (not necessarily to spec in one write)
    effect = newest.predicted_effect
    assert newest.reason.startswith("off spec now (Tb_cut "), newest.reason
    assert effect["recovery.mean_purity_gain"] > 0.0
    assert effect["Tb_cut.purity"] > effect["Tb_cut.lowest_purity_48h"] + 0.02, (newest.reason, effect)
    assert 0.0 < effect["path.fraction_of_move"] <= 1.0
    # the plant still runs its design setpoints, and its server audited no write
    for m in fs.spec.manipulated:
        assert sp_now[sp_tag(fs, m.variable)] == pytest.approx(design.value(m.variable))
    assert plant_writes(plant, t0) == []


# ----------------------------------------------------------------------------------------------- 3
def test_closed_loop_writes_through_the_gate_move_the_plant_toward_spec(
    plant: PlantProcess, design: Design, advisor: OptimiserAdvisor, tmp_path: Path
) -> None:
    """Closed loop switched on by an operator: the twin's first cycle writes through the gate; the
    writes are audited on both sides, stay within the move limits toward the proposal, the plant's
    SPs read them back, and the off-spec Tb cut's true purity rises (the twin stopped after that
    first cycle, the plant then run on fast)."""
    fs = design.fs
    t0 = time.time()
    rates = {m.variable: float(m.max_rate_per_h or math.inf) for m in fs.spec.manipulated}

    async def scenario() -> tuple[Any, ...]:
        async with trainer(plant) as tr:
            await fresh_run(tr, SLOW)
            start = await tr.true_state()
            async with live_twin(fs, design.z0, plant.options(Role.OPERATOR), tmp_path / "twin.sqlite3",
                                 advisor=advisor, allow_closed_loop=True, **ADVISE, **FAST) as (twin, _):
                await twin.set_mode(Mode.CLOSED_LOOP, user="operator", role=Role.OPERATOR, reason="e2e test")
                hist = twin.historian

                def applied() -> list[Any]:
                    return [p for p in hist.proposals(limit=100).items if p.status is ProposalStatus.APPLIED]

                proposal = (await until("a proposal applied in closed loop", applied, 90))[-1]
                at_write = await tr.true_state()
                writes = list(hist.writes(proposal_id=proposal.id, limit=100).items)
                read = await tr.read(sorted({w.tag for w in writes}))
                every_write = hist.writes(limit=100).items
                events = hist.events(limit=100).items
            await tr.call("SetSpeed", ua.Variant(SPEED, ua.VariantType.Double))

            async def later() -> Mapping[str, Any] | None:
                s = await tr.true_state()
                return s if s["plant_time_h"] >= at_write["plant_time_h"] + 20.0 else None

            after = await until("20 plant hours after the write", later, 30)
        return start, at_write, after, proposal, writes, every_write, read, events

    start, at_write, after, proposal, writes, every_write, read, events = run(scenario())
    assert start["products"]["Tb_cut"]["purity"] < 0.98  # off spec at the design setpoints
    by_tag = {sp_tag(fs, m.variable): m.variable for m in fs.spec.manipulated}
    assert {w.tag for w in writes} == {sp_tag(fs, n) for n in proposal.setpoints}  # one write per setpoint
    for w in writes:
        assert w.outcome is WriteOutcome.SUCCEEDED
        assert w.mode is Mode.CLOSED_LOOP
        assert w.approved_by is None
        assert w.requested_by == "twin"
        name = by_tag[w.tag]
        proposed = proposal.setpoints[name]
        assert w.previous_value is not None
        assert w.previous_value == pytest.approx(design.value(name))
        step = w.value - w.previous_value
        # within the move limit of one write; and the advisor proposes no more than that, so the
        # value written is the value proposed (the point the optimiser evaluated), not clipped
        assert abs(step) <= rates[name] + 1e-9, (w.tag, step)
        assert w.value == pytest.approx(proposed, rel=1e-9, abs=1e-9), (w.tag, w.value, proposed)
        assert float(read[w.tag].value) == pytest.approx(w.value, rel=1e-9)  # the plant's SP reads it back
    # the plant's server audited each write, as the twin's user, with the value written, and no other
    audited = {(a.user, a.target, a.details["value"]) for a in plant_writes(plant, t0)}
    assert audited == {("operator", w.tag, w.value) for w in every_write if w.outcome is WriteOutcome.SUCCEEDED}
    assert any(e.source == "mode" and "closed_loop" in e.message for e in events)
    # the Tb cut's true purity rose toward its spec (it held at the design setpoints before); one
    # write moves each variable by at most an hour of its rate (the proposal is limited to that
    # too), so one cycle raises it by about 0.01 in 20 plant hours, not to the spec
    assert at_write["products"]["Tb_cut"]["purity"] < start["products"]["Tb_cut"]["purity"] + 0.005
    assert after["products"]["Tb_cut"]["purity"] > at_write["products"]["Tb_cut"]["purity"] + 0.005


# ----------------------------------------------------------------------------------------------- 4
def test_a_plant_server_restart_is_survived(plant: PlantProcess, design: Design, tmp_path: Path) -> None:
    """The plant server stops and starts again on the same port: the reconnecting client notices,
    the twin records the gap (lost, restored), keeps running, and data and estimates flow again."""
    fs = design.fs

    async def scenario() -> None:
        async with trainer(plant) as tr:
            await fresh_run(tr, SPEED)
        async with live_twin(fs, design.z0, plant.options(Role.OPERATOR), tmp_path / "twin.sqlite3",
                             watchdog_s=0.5, **FAST) as (twin, conn):
            hist = twin.historian

            async def estimating() -> bool:
                snap = twin.snapshot()
                return snap is not None and snap.updates >= 2

            await until("estimates before the restart", estimating, 30)
            n_before = len(all_samples(hist, "FIC-102.PV"))
            await asyncio.to_thread(plant.stop)

            def lost() -> list[Any]:
                return [e for e in hist.events(limit=100).items if "connection lost" in e.message]

            gone = await until("the lost connection recorded", lost, 30)
            assert gone[0].kind is EventKind.ALARM
            assert not conn.connected
            snap = twin.snapshot()
            assert snap is not None
            updates_in_gap = snap.updates
            await asyncio.to_thread(plant.start)

            def restored() -> list[Any]:
                return [e for e in hist.events(limit=100).items if "connection restored" in e.message]

            back = await until("the restored connection recorded", restored, 60)
            assert "a gap in the data" in back[0].message
            assert conn.connected
            assert len(conn.gaps) == 1
            assert conn.gaps[0].ended_s is not None

            async def flowing() -> bool:
                s = twin.snapshot()
                return (len(all_samples(hist, "FIC-102.PV")) > n_before + 2 and s is not None
                        and s.updates > updates_in_gap + 1)

            await until("data and estimates flowing again", flowing, 30)
            assert all(not t.done() for t in twin._tasks)  # the twin's loops are still running
            snap = twin.snapshot()
            assert snap is not None
            assert snap.healthy
            assert twin.tag_values()["FIC-102.PV"]["used"] is True

    run(scenario())


# ----------------------------------------------------------------------------------------------- 5
OUTAGE = """
[scenario]
name = "xrf-outage"

[[events]]
kind = "analyser_outage"
tag = "AI-121"
at_h = 0.0
duration_h = 8.0
message = "E10 XRF in maintenance"
"""


def test_an_analyser_outage_over_tcp_is_flagged_and_not_used(
    plant: PlantProcess, design: Design, tmp_path: Path
) -> None:
    """The trainer takes the E10 analyser out of service for 8 plant hours: its values arrive over TCP
    as Bad (the last value, stamped during the outage), are flagged and recorded as such, and the
    estimator is given none of them; once the analyser samples again its values are used."""
    fs = design.fs
    observed: list[Observation] = []
    flags: list[tuple[str, str]] = []

    async def scenario() -> tuple[float, list[Any]]:
        async with trainer(plant) as tr:
            await fresh_run(tr, SPEED)
            async with live_twin(fs, design.z0, plant.options(Role.OPERATOR), tmp_path / "twin.sqlite3",
                                 prepare=record_observations(observed), **FAST) as (twin, _):
                queue = twin.subscribe()
                await until("AI-121 used before the outage", lambda: any(o.tag == "AI-121.Dy" for o in observed), 30)
                await load_scenario(tr, OUTAGE)

                def bad() -> bool:
                    return "quality bad" in (twin.tag_values()["AI-121.Dy"]["flag"] or "")

                await until("the out-of-service analyser flagged", bad, 20)
                t_out = twin.ingestor.latest["AI-121.Dy"].plant_time_h  # the Bad value's stamp
                assert t_out is not None

                async def back() -> bool:
                    return any(o.tag == "AI-121.Dy" and o.sample_time_h > t_out for o in observed)

                await until("the analyser used again after the outage", back, 30)
                while not queue.empty():
                    m = queue.get_nowait()
                    if m["type"] == "flag":
                        flags.append((m["tag"], m["reason"]))
                received = [s for tag in ("AI-121.Dy", "AI-121.Tb") for s in all_samples(twin.historian, tag)]
                return t_out, received

    t_out, received = run(scenario())
    assert ("AI-121.Dy", "quality bad") in flags
    assert ("AI-121.Tb", "quality bad") in flags
    # the Bad values arrived and were recorded as such, and none of them reached the estimator
    bad = {(s.tag, s.plant_time_h) for s in received if s.quality is Quality.BAD}
    assert {tag for tag, _ in bad} == {"AI-121.Dy", "AI-121.Tb"}
    assert not bad & {(o.tag, o.sample_time_h) for o in observed}, "a Bad value was used"
    # the others were used meanwhile (and AI-121 again once it sampled after the outage: see `back`)
    assert any(o.tag == "AI-124.Dy" and t_out < o.sample_time_h < t_out + 5.0 for o in observed)


# ----------------------------------------------------------------------------------------------- 6
class FailingAdvisor:
    """The optimiser's seam with a solver that always fails (as in tests/twin/test_service.py)."""

    def __init__(self) -> None:
        self.calls = 0

    def advise(self, z: np.ndarray, p: np.ndarray, current: Mapping[str, float]) -> Advice:
        self.calls += 1
        return Advice(False, {}, {}, (), "optimisation failed", "IPOPT: Restoration_Failed")


def test_a_failed_solve_holds_in_closed_loop(plant: PlantProcess, design: Design, tmp_path: Path) -> None:
    """Closed loop over TCP with a solver that fails: the twin's cycles raise alarms and hold; nothing
    is written, the plant keeps its setpoints."""
    fs = design.fs
    failing = FailingAdvisor()
    t0 = time.time()

    async def scenario() -> tuple[Any, Any, dict[str, float]]:
        async with trainer(plant) as tr:
            await fresh_run(tr, SPEED)
            async with live_twin(fs, design.z0, plant.options(Role.OPERATOR), tmp_path / "twin.sqlite3",
                                 advisor=failing, cycle_interval_h=2.0, steady_tolerance=10.0,
                                 allow_closed_loop=True, **FAST) as (twin, _):
                await twin.set_mode(Mode.CLOSED_LOOP, user="operator", role=Role.OPERATOR, reason="e2e test")
                await until("two failed cycles", lambda: failing.calls >= 2, 30)
                assert await twin.run_cycle(by="operator") is None
                read = await tr.read([sp_tag(fs, m.variable) for m in fs.spec.manipulated])
                return twin.historian.writes().items, twin.historian.events(limit=100).items, {
                    t: float(v.value) for t, v in read.items()}

    writes, events, sps = run(scenario())
    assert writes == ()
    alarms = [e for e in events if e.source == "optimiser"]
    assert len(alarms) >= 3
    assert all(e.kind is EventKind.ALARM and "Restoration_Failed" in e.message for e in alarms)
    assert plant_writes(plant, t0) == []
    for m in fs.spec.manipulated:
        assert sps[sp_tag(fs, m.variable)] == pytest.approx(design.value(m.variable))


# ----------------------------------------------------------------------------------------------- 7
class TwinProcess:
    """``sxtwin twin`` in its own process with its API on a free port."""

    def __init__(self, root: Path, plant: PlantProcess, cache: Path) -> None:
        self.data_dir = root / "twin"
        self.data_dir.mkdir(parents=True)
        (self.data_dir / "steady_cache").symlink_to(cache, target_is_directory=True)
        demo = generate_demo_users(self.data_dir)
        self.passwords = {c.name: c.password for c in demo.credentials}
        # the twin's client certificate, trusted by the plant
        ensure_certificate(self.data_dir / "pki" / "client" / "own", CLIENT_APPLICATION_URI, client=True)
        trust_client(plant.data_dir, self.data_dir / "pki" / "client", name="twin-cli.der")
        self.port = free_port()
        self.plant = plant
        self.log = root / "twin.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready: bool = True) -> None:
        """Start; wait until the API answers (and, with ``ready``, until the twin has an estimate)."""
        name, password = self.plant.credentials.of(Role.OPERATOR)
        env = clean_env() | {"SXTWIN_TWIN_USERNAME": name, "SXTWIN_TWIN_PASSWORD": password}
        cmd = [str(SXTWIN), "twin", str(TB_DY), "--endpoint", self.plant.url, "--api-port", str(self.port),
               "--data-dir", str(self.data_dir), "--advisor", "none", "--allow-closed-loop"]
        start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for_line(self.log, start, "API up", self.proc, 120)
        deadline = time.monotonic() + 60
        while ready and httpx.get(f"{self.url}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the twin has no estimate within 60 s"
            time.sleep(0.2)

    def client(self, role: str) -> httpx.Client:
        r = httpx.post(f"{self.url}/auth/token", data={"username": role, "password": self.passwords[role]}, timeout=30)
        r.raise_for_status()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {r.json()['access_token']}"},
                            timeout=30)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def test_kill_9_of_the_twin_process_loses_nothing_acknowledged(
    plant: PlantProcess, opcua_cache: Path, tmp_path: Path
) -> None:
    """``sxtwin twin`` against the plant, with its API: lab assays, a mode change and an alarm
    acknowledgement are acknowledged (2xx), the process is killed with SIGKILL at once, and after a
    restart every one of them is in the historian and the twin estimates on."""
    run(_fresh(plant))
    twin = TwinProcess(tmp_path, plant, opcua_cache)
    try:
        twin.start(ready=False)  # the API answers: lab assays need the plant's clock, not an estimate
        with twin.client("operator") as op:
            assays = []
            for k, tag in enumerate(("AI-121.Dy", "AI-122.Tb", "AI-124.Dy")):
                r = op.post("/api/lab-assays", json={"tag": tag, "value_g_per_l": 10.0 + k, "sample_time_h": 0.1})
                assert r.status_code == 201, r.text
                assays.append(r.json())
            r = op.put("/api/mode", json={"mode": "closed_loop", "reason": "night shift"})
            assert r.status_code == 200, r.text
            event = next(e for e in op.get("/api/events").json()["items"] if e["source"] == "mode")
            r = op.post(f"/api/events/{event['id']}/acknowledge", json={"comment": "seen"})
            assert r.status_code == 200, r.text
            twin.kill()  # the instant after the last acknowledgement
        killed_at_h = run(_plant_hours(plant))
        # before any restart: the file holds every acknowledged record
        with Historian(twin.data_dir / "historian.sqlite3") as h:
            ids = {a.id for a in h.audit_log(action="lab_assay", limit=100).items}
            assert {a["id"] for a in assays} <= ids
            assert h.current_mode() is Mode.CLOSED_LOOP
            assert next(e for e in h.events(limit=100).items if e.id == event["id"]).acknowledged_by == "operator"
        twin.start()
        with twin.client("operator") as op:
            listed = {a["id"]: a for a in op.get("/api/lab-assays").json()["items"]}
            for a in assays:
                assert listed[a["id"]] == a
            assert op.get("/api/mode").json()["mode"] == "closed_loop"  # the recorded mode, restored
            acked = next(e for e in op.get("/api/events", params={"limit": 1000}).json()["items"]
                         if e["id"] == event["id"])
            assert acked["acknowledged_by"] == "operator"
            # the twin resumes: estimates from data, at plant times after the kill
            deadline = time.monotonic() + 30
            while True:
                state = op.get("/api/state").json()
                if state["updates"] >= 1 and state["plant_time_h"] > killed_at_h:
                    break
                assert time.monotonic() < deadline, state
                time.sleep(0.3)
            assert state["healthy"] is True
    finally:
        twin.stop()


async def _plant_hours(plant: PlantProcess) -> float:
    async with trainer(plant) as tr:
        return await tr.plant_time_h()


async def _fresh(plant: PlantProcess) -> None:
    async with trainer(plant) as tr:
        await fresh_run(tr, SPEED)
