"""``sxtwin optimize`` and ``sxtwin study``: one JSON object with --json, the documented fields,
infeasible specs with exit code 1 naming the spec, bad input with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from models.flowsheet import build_flowsheet
from models.spec import load_spec
from models.steady import SteadySolver
from sxtwin.cli import app
from sxtwin.state_files import save_state

ROOT = Path(__file__).resolve().parents[2]
TB_DY = ROOT / "models" / "plants" / "tb_dy.toml"
BINARY = ROOT / "tests" / "specs" / "binary_sf_opt.toml"

runner = CliRunner()
pytestmark = pytest.mark.slow


def run_json(args: list[str], code: int) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1  # exactly one JSON object on stdout
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


@pytest.fixture(scope="module")
def tb_dy_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fs = build_flowsheet(load_spec(TB_DY))
    res = SteadySolver(fs).solve()
    assert res.success
    return save_state(tmp_path_factory.mktemp("state") / "tb_dy.json", fs, res.z, res.parameters.values)


def test_optimize_reagent_json(tb_dy_state: Path) -> None:
    out = run_json(["optimize", str(TB_DY), "--objective", "reagent", "--from", str(tb_dy_state)], 0)
    assert out["status"] == "optimal"
    for key in ("wall_time_s", "objective", "setpoints", "kpis", "active_constraints", "rests_on", "warnings"):
        assert key in out
    assert out["objective"]["name"] == "reagent"
    assert out["objective"]["value"] < out["objective"]["current_value"]
    assert set(out["setpoints"]) == {"organic_flow", "scrub_flow", "scrub_acid", "strip_flow", "saponification"}
    assert all(k["on_spec"] for k in out["kpis"])
    # each active constraint says in plain units what relaxing it is worth
    assert out["active_constraints"]
    assert all(" would save " in a["statement"] and "USD/h" in a["statement"] for a in out["active_constraints"])
    held = out["inventory"]
    assert held["kg_reo"] == pytest.approx(sum(held["kg_reo_by_element"].values()))
    assert held["charge"] == pytest.approx(0.10 / 8760.0 * held["value_usd"])  # the carrying cost alone
    assert "oxalic_acid" in out["economics"]["excluded_costs"]


def test_optimize_infeasible_spec_exit_1(tb_dy_state: Path, tmp_path: Path) -> None:
    spec = tmp_path / "tb_dy.toml"
    spec.write_text(TB_DY.read_text().replace("purity_min = 0.995", "purity_min = 0.99999"))
    out = run_json(["optimize", str(spec), "--objective", "reagent", "--from", str(tb_dy_state)], 1)
    assert out["status"] == "infeasible"
    assert out["error"] == "InfeasibleError"
    assert "Dy2O3 purity_min 0.99999 cannot be met" in out["message"]
    assert out["details"]["violated"][0]["best"] < 0.99999


def test_optimize_bad_input_exit_2() -> None:
    out = run_json(["optimize", str(TB_DY), "--prices", "mars"], 2)
    assert out["field"] == "prices"
    out = run_json(["optimize", str(BINARY), "--circuit", "nope"], 2)
    assert out["field"] == "circuit"


def test_study_cli_json_and_bad_study(tmp_path: Path) -> None:
    study = tmp_path / "s.toml"
    study.write_text(
        f"""
[study]
name = "cli_sweep"
kind = "sweep"
plant = "{BINARY}"

[sweep]
[[sweep.parameters]]
name = "scrub_flow"
values = [65.0, 70.0, 75.0]
"""
    )
    out = run_json(["study", str(study), "--workers", "1", "--out", str(tmp_path / "out"), "--no-plots"], 0)
    assert out["status"] == "ok"
    assert out["n_cases"] == 3
    assert Path(out["files"]["results_parquet"]).is_file()
    study.write_text(study.read_text().replace('kind = "sweep"', 'kind = "sweeps"'))
    bad = run_json(["study", str(study)], 2)
    assert bad["field"] == "study.kind"
