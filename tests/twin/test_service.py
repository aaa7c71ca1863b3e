"""The live twin in-process against the simulated plant runtime (no network): ingestion checks,
estimation loop, proposals, decisions, holds, roles and audit."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from models.dynamics import Move
from models.errors import AuthorisationError, ConflictError, InputError
from models.flowsheet import build_flowsheet
from models.spec import load_spec
from models.steady import SteadySolver
from opcua.plant_runtime import PlantRuntime, RuntimeOptions
from twin.historian import Historian
from twin.historian_records import Mode, ProposalStatus, Verdict
from twin.ingestion import Ingestor
from twin.plant_io import InProcessPlant, Quality, TagValue
from twin.security import Role
from twin.service import Advice, TwinOptions, TwinService

PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"


@pytest.fixture(scope="module")
def tb_dy():
    fs = build_flowsheet(load_spec(PLANTS / "tb_dy.toml"))
    res = SteadySolver(fs).solve()
    assert res.success
    return fs, res


class StepAdvisor:
    """An advisor at the designed seam: proposes a fixed small scrub-acid move, or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def advise(self, z, p, current):
        if self.fail:
            return Advice(False, {}, {}, (), "optimisation failed", "IPOPT: Infeasible_Problem_Detected")
        name = "TbDy.scrub_acid_mol_per_l"
        return Advice(True, {name: current[name] + 0.05}, {"Dy2O3.purity": 0.999}, ("Tb_cut purity_min",),
                      "more scrub acid")


def test_ingestor_flags_bad_values(tb_dy) -> None:
    fs, _ = tb_dy
    ing = Ingestor(fs, stale_after_h=2.0)
    now = datetime.now(UTC)
    batch = [
        TagValue("FIC-102.PV", 1000.0, Quality.GOOD, now, 10.0),
        TagValue("FIC-103.PV", float("nan"), Quality.GOOD, now, 10.0),
        TagValue("FIC-104.PV", 1e6, Quality.GOOD, now, 10.0),
        TagValue("AI-121.Dy", 50.0, Quality.BAD, now, 10.0),
        TagValue("AI-121.Tb", 5.0, Quality.GOOD, now, 1.0),  # stale: 9 h old
        TagValue("AI-122.Dy", 40.0, Quality.GOOD, now, 9.9),
    ]
    out = ing.ingest(batch, plant_now_h=10.0)
    reasons = {f.tag: f.reason for f in out.flags}
    assert set(reasons) == {"FIC-103.PV", "FIC-104.PV", "AI-121.Dy", "AI-121.Tb"}
    assert "not finite" in reasons["FIC-103.PV"]
    assert "outside the instrument range" in reasons["FIC-104.PV"]
    assert "quality bad" in reasons["AI-121.Dy"]
    assert "stale" in reasons["AI-121.Tb"]
    assert out.inputs == {"TbDy.organic_flow_l_per_h": 1000.0}
    assert [o.tag for o in out.observations] == ["AI-122.Dy"]
    with pytest.raises(InputError, match="not an analyser channel"):
        ing.lab_assay("FIC-101.PV", 1.0, 1.0)
    with pytest.raises(InputError, match="> 0 g/L"):
        ing.lab_assay("AI-121.Dy", -1.0, 1.0)


def run(coro):
    return asyncio.run(coro)


def test_twin_estimates_proposes_and_writes_on_approval(tb_dy, tmp_path: Path) -> None:
    fs, res = tb_dy

    async def scenario():
        runtime = PlantRuntime(fs, res.z, options=RuntimeOptions(seed=3))
        hist = Historian(tmp_path / "h.sqlite")
        async with InProcessPlant(runtime, speed=3600.0) as plant:
            opts = TwinOptions(estimator_interval_s=0.5, cycle_interval_h=1e9)
            async with TwinService(fs, plant, hist, z0=res.z, advisor=StepAdvisor(), options=opts) as twin:
                for _ in range(40):
                    await asyncio.sleep(0.25)
                    snap = twin.snapshot()
                    if snap is not None and snap.updates >= 1:
                        break
                snap = twin.snapshot()
                assert snap is not None
                assert snap.updates >= 1
                c = snap.circuit("TbDy")
                assert np.all(c.aqueous_low <= c.aqueous_mol_per_l)
                assert np.all(c.aqueous_mol_per_l <= c.aqueous_high)
                tags = twin.tag_values()
                assert tags["FIC-102.PV"]["used"] is True
                proposal = await twin.run_cycle(by="test")
                assert proposal is not None
                assert proposal.status is ProposalStatus.PENDING
                with pytest.raises(AuthorisationError):
                    await twin.decide(proposal.id, Verdict.APPROVE, user="vera", role=Role.VIEWER)
                before = twin.current_setpoints()["TbDy.scrub_acid_mol_per_l"]
                out = await twin.decide(proposal.id, Verdict.APPROVE, user="olga", role=Role.OPERATOR, comment="go")
                assert out["written"] == ["AIC-111.SP"]
                writes = hist.writes(proposal_id=proposal.id).items
                assert len(writes) == 1
                assert writes[0].approved_by == "olga"
                assert writes[0].outcome.value == "succeeded"
                assert writes[0].value == pytest.approx(before + 0.05, abs=1e-6)
                assert hist.get_proposal(proposal.id).status is ProposalStatus.APPLIED
                with pytest.raises(ConflictError, match="allow-closed-loop"):
                    await twin.set_mode(Mode.CLOSED_LOOP, user="olga", role=Role.OPERATOR)
                await twin.lab_assay("AI-121.Dy", 80.0, snap.plant_time_h, user="liam", role=Role.OPERATOR)
                audit_actions = {a.action for a in hist.audit_log().items}
                assert "lab_assay" in audit_actions
                traj = await twin.what_if([Move("TbDy.organic_flow_l_per_h", 0.5, 1050.0)], 4.0)
                assert traj.plant_hours == pytest.approx(4.0)
                assert np.all(np.isfinite(traj.product_purity["Dy2O3"]))

    run(scenario())


def test_failed_solve_holds_in_closed_loop(tb_dy, tmp_path: Path) -> None:
    """With closed loop allowed and enabled, a failed optimisation writes nothing."""
    fs, res = tb_dy

    async def scenario():
        runtime = PlantRuntime(fs, res.z, options=RuntimeOptions(seed=4))
        hist = Historian(tmp_path / "h.sqlite")
        async with InProcessPlant(runtime, speed=3600.0) as plant:
            opts = TwinOptions(estimator_interval_s=0.5, cycle_interval_h=1e9, allow_closed_loop=True)
            async with TwinService(fs, plant, hist, z0=res.z, advisor=StepAdvisor(fail=True), options=opts) as twin:
                await twin.estimate_now()
                await twin.set_mode(Mode.CLOSED_LOOP, user="olga", role=Role.OPERATOR, reason="test")
                assert await twin.run_cycle(by="twin") is None
                assert hist.writes().items == ()
                alarms = [e for e in hist.events().items if e.source == "optimiser"]
                assert alarms
                assert "holding (optimisation failed): IPOPT: Infeasible_Problem_Detected" in alarms[0].message
                assert hist.current_mode() is Mode.CLOSED_LOOP

    run(scenario())


def test_closed_loop_write_goes_through_the_gate(tb_dy, tmp_path: Path) -> None:
    fs, res = tb_dy

    async def scenario():
        runtime = PlantRuntime(fs, res.z, options=RuntimeOptions(seed=5))
        hist = Historian(tmp_path / "h.sqlite")
        async with InProcessPlant(runtime, speed=3600.0) as plant:
            opts = TwinOptions(estimator_interval_s=0.5, cycle_interval_h=1e9, allow_closed_loop=True)
            async with TwinService(fs, plant, hist, z0=res.z, advisor=StepAdvisor(), options=opts) as twin:
                for _ in range(40):
                    await asyncio.sleep(0.25)
                    snap = twin.snapshot()
                    if snap is not None and snap.last_update_plant_h is not None:
                        break
                await twin.set_mode(Mode.CLOSED_LOOP, user="olga", role=Role.OPERATOR)
                proposal = await twin.run_cycle(by="twin")
                assert proposal is not None
                status = hist.get_proposal(proposal.id).status
                writes = hist.writes(proposal_id=proposal.id).items
                # either written (fresh data) or held with a recorded reason; never a silent write
                if status is ProposalStatus.APPLIED:
                    assert writes
                    assert writes[0].mode is Mode.CLOSED_LOOP
                    assert writes[0].approved_by is None
                else:
                    assert not writes
                    assert any(e.source == "safety_gate" for e in hist.events().items)
                assert math.isfinite(twin.current_setpoints()["TbDy.scrub_acid_mol_per_l"])

    run(scenario())
