"""``sxtwin calibrate``: JSON output, parity plot, saved system, exit codes for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from models.parameters import load_system_file
from models.provenance import ProvenanceClass
from sxtwin.cli import app

runner = CliRunner()
LLEPE = Path(str(resources.files("models").joinpath("data/llepe_pc88a_hcl.csv")))
HEADER = (
    "label,Feed H+[M],Feed H+[M].1,PC88A[M],PC88A[M].1,"
    "Feed Nd[M],Xaq Nd,D Nd,Feed Pr[M],Xaq Pr,D Pr"
)
ROWS = [
    "A,0.05,0.05,1,1,0.05,0.04,0.25,0.02,0.0175,0.142857",
    "A,0.10,0.10,1,1,0.05,0.045,0.111111,0.02,0.019,0.052632",
    "B,0.02,0.02,1,1,0.05,0.03,0.666667,0.02,0.014,0.428571",
    "B,0.20,0.20,1,1,0.05,0.048,0.041667,0.02,0.0195,0.025641",
]
REQUIRED = {
    "parameters",
    "std_errors",
    "rmse_log10_d",
    "cv_rmse_log10_d",
    "baseline",
    "n_points",
    "excluded",
    "status",
    "wall_time_s",
}


def one_json_object(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, stdout  # exactly one JSON object on stdout
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["calibrate", *args])


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_json_output_has_the_required_keys(tmp_path: Path) -> None:
    data = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    result = invoke(
        str(data),
        "--system",
        "P507-T21",
        "--json",
        "--no-study-offsets",
        "--fix-ph-slope",
        "--cv-folds",
        "2",
    )
    assert result.exit_code == 0, result.output
    payload = one_json_object(result.stdout)
    assert set(payload) >= REQUIRED
    assert payload["status"] == "ok"
    assert payload["n_points"] == 8
    assert {"overall", "Nd", "Pr"} <= set(payload["rmse_log10_d"])
    assert {"overall", "Nd", "Pr"} <= set(payload["cv_rmse_log10_d"])
    assert {"overall", "Nd", "Pr"} <= set(payload["baseline"]["rmse_log10_d"])
    assert set(payload["parameters"]) == set(payload["std_errors"])
    assert payload["parameters"]["extractant_order"] > 0
    assert payload["excluded"]["total"] == 0


@pytest.mark.slow
def test_llepe_run_in_a_real_process_prints_one_json_object(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sxtwin.cli import main; main()",
            "calibrate",
            str(LLEPE),
            "--system",
            "P507-T21",
            "--json",
            "--plot",
            str(tmp_path / "parity.png"),
            "--save",
            str(tmp_path / "saved"),
            "--key",
            "P507-TEST",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    payload = one_json_object(proc.stdout)
    assert set(payload) >= REQUIRED
    assert payload["n_points"] == 249
    assert payload["excluded"]["total"] == 16
    assert payload["cv_rmse_log10_d"]["overall"] < payload["baseline"]["rmse_log10_d"]["overall"]
    assert payload["rmse_log10_d"]["overall"] < 0.25  # the target, with the RE3+ term
    assert payload["options"]["re_activity"] is True
    assert "--re-activity" in payload["command"]
    assert set(payload["rmse_log10_d"]) >= {"overall", "La", "Ce", "Pr", "Nd", "Sm", "Dy", "Y"}
    assert (tmp_path / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    system = load_system_file(Path(payload["saved"]["toml"]))
    assert system.key == "P507-TEST"
    assert system.cation_activity.active  # the saved set carries the term it was fitted with
    assert system.provenance["cation_activity_epsilon_kg_per_mol"].cls is ProvenanceClass.ESTIMATED
    prov = system.provenance["log10_k.Dy"]
    assert prov.cls is ProvenanceClass.DERIVED
    assert prov.locus.startswith("fit to 249 points")
    assert "sxtwin calibrate llepe_pc88a_hcl.csv --system P507-T21" in prov.note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.png", "saved"]


def test_human_output_names_the_figures(tmp_path: Path) -> None:
    data = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    result = invoke(
        str(data), "--system", "P507-T21", "--no-study-offsets", "--fix-ph-slope", "--cv-folds", "2"
    )
    assert result.exit_code == 0, result.output
    assert "calibrated, cross-valid." in result.stdout
    assert "literature P507-T21" in result.stdout


@pytest.mark.parametrize(
    ("text", "system", "needles"),
    [
        ("\n".join([HEADER, ROWS[0] + ",9"]), "P507-T21", ["line 2", "fields"]),
        ("\n".join([HEADER, *ROWS]), "NO-SUCH", ["unknown chemistry system 'NO-SUCH'"]),
        (
            "\n".join([HEADER, ROWS[0].replace("0.04,", "-0.04,")]),
            "P507-T21",
            ["line 2", "'Xaq Nd'", "negative"],
        ),
        (
            "\n".join([HEADER + ",Feed Zz[M],Xaq Zz,D Zz", ROWS[0] + ",0,0,0"]),
            "P507-T21",
            ["'Feed Zz[M]'", "unknown element 'Zz'"],
        ),
        (
            "\n".join([HEADER + ",Feed Fe[M],Xaq Fe,D Fe", ROWS[0] + ",0.01,0.009,0.111111"]),
            "P507-T21",
            ["'Fe' has no parameters in system 'P507-T21'"],
        ),
    ],
)
def test_bad_input_exits_2_naming_the_field(
    tmp_path: Path, text: str, system: str, needles: list[str]
) -> None:
    data = write(tmp_path, text + "\n")
    result = invoke(str(data), "--system", system)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for needle in needles:
        assert needle in result.stderr
    as_json = invoke(str(data), "--system", system, "--json")
    assert as_json.exit_code == 2
    payload = one_json_object(as_json.stdout)
    assert payload["status"] == "bad_input"
    for needle in needles:
        assert needle in payload["message"]


def test_missing_file_and_unknown_source_key_exit_2(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope.csv"), "--system", "P507-T21")
    assert result.exit_code == 2
    assert "nope.csv" in result.stderr
    data = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    result = invoke(str(data), "--system", "P507-T21", "--source-key", "NOPE")
    assert result.exit_code == 2
    assert "NOPE" in result.stderr


def test_bad_option_value_exits_2(tmp_path: Path) -> None:
    data = write(tmp_path, "\n".join([HEADER, *ROWS]) + "\n")
    result = invoke(str(data), "--system", "P507-T21", "--min-extracted", "0.7")
    assert result.exit_code == 2
    assert "min_extracted_fraction" in result.stderr
    result = invoke(str(data), "--system", "P507-T21", "--weighting", "magic")
    assert result.exit_code == 2
