"""Offline studies on Dask: study-file validation, resume after an interruption without
recomputing finished cases, an external ``dask scheduler`` + ``dask worker``, and each kind
(sweep, Pareto, capacity, stage design, robustness) on small plants."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from models.errors import SpecError
from twin.studies import StudyRunOptions, run_study_file
from twin.study_spec import load_study, parse_study

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "tests" / "specs"
PLANTS = ROOT / "models" / "plants"
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def write_study(tmp_path: Path, body: str, plant: Path = SPECS / "binary_sf_opt.toml") -> Path:
    path = tmp_path / "study.toml"
    path.write_text(body.replace("PLANT", str(plant)), encoding="utf-8")
    return path


SWEEP = """
[study]
name = "binary_sweep"
kind = "sweep"
plant = "PLANT"
chain_length = 4

[sweep]
[[sweep.parameters]]
name = "scrub_flow"
start = 60.0
stop = 80.0
num = 12
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_study_files_are_validated_with_the_field_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"sweep") as info:
        parse_study({"study": {"name": "x", "kind": "sweep", "plant": "p.toml"}})
    assert "needs a [sweep] section" in info.value.message
    with pytest.raises(SpecError, match=r"sweep.parameters\[0\]"):
        parse_study(
            {
                "study": {"name": "x", "kind": "sweep", "plant": "p.toml"},
                "sweep": {"parameters": [{"name": "a", "start": 1.0}]},
            }
        )
    with pytest.raises(SpecError, match=r"study\.prices"):
        parse_study({"study": {"name": "x", "kind": "sweep", "plant": "p", "prices": "moon"}, "sweep": {}})
    for capacity, field in (({"feed_range": [1.5, 3.0]}, "feed_range"), ({"method": "guess"}, "method")):
        with pytest.raises(SpecError, match=rf"capacity\.{field}") as info:
            parse_study({"study": {"name": "x", "kind": "capacity", "plant": "p"}, "capacity": capacity})
        assert ("1.5" if field == "feed_range" else "continuation") in info.value.message
    for limits, field, words in (
        ({}, "capacity.specs.Tb_cut", "give purity_min, recovery_min or both"),
        ({"recovery_min": 1.5}, "capacity.specs.Tb_cut.recovery_min", r"less than 1 \(got 1.5\)"),
    ):
        with pytest.raises(SpecError, match=words) as info:
            parse_study(
                {"study": {"name": "x", "kind": "capacity", "plant": "p"}, "capacity": {"specs": {"Tb_cut": limits}}}
            )
        assert info.value.field == field
    bad = write_study(tmp_path, SWEEP.replace('plant = "PLANT"', 'plant = "nowhere.toml"'))
    with pytest.raises(SpecError, match=r"study\.plant"):
        load_study(bad)


def test_sweep_writes_tables_plots_summary_and_resumes(tmp_path: Path) -> None:
    study = write_study(tmp_path, SWEEP)
    out = tmp_path / "out"
    res = run_study_file(study, StudyRunOptions(out_dir=out, workers=2, progress=False))
    assert res.n_cases == 12
    assert res.n_computed == 12
    assert res.n_failed == 0
    table = pd.read_parquet(out / "results.parquet")
    assert list(table["label.scrub_flow"]) == pytest.approx([60.0 + 20.0 * i / 11 for i in range(12)])
    assert (out / "results.csv").is_file()
    assert (out / "sweep.png").stat().st_size > 1000
    assert "binary_sweep" in (out / "summary.md").read_text()
    # more scrub liquor: a purer extract and a less pure raffinate (countercurrent theory)
    assert table["Nd_extract.purity"].is_monotonic_increasing
    assert table["Pr_raffinate.purity"].is_monotonic_decreasing
    # a rerun recomputes nothing; a lost case is recomputed alone
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "cases").glob("case-*.json")}
    (out / "cases" / "case-00005.json").unlink()
    again = run_study_file(study, StudyRunOptions(out_dir=out, workers=1, progress=False))
    assert (again.n_computed, again.n_reused) == (1, 11)
    for name, t in mtimes.items():
        if name != "case-00005.json":
            assert (out / "cases" / name).stat().st_mtime_ns == t
    # a changed study recomputes the cases whose content changed
    changed = write_study(tmp_path, SWEEP.replace("stop = 80.0", "stop = 82.0"))
    third = run_study_file(changed, StudyRunOptions(out_dir=out, workers=1, progress=False))
    assert third.n_reused == 1  # only the first point (60 L/h) is the same case
    assert third.n_computed == 11


def test_interrupted_study_resumes_without_recomputing(tmp_path: Path) -> None:
    # enough cases (about 0.01 s each on a fast machine) that the kill lands in the middle
    n = 300
    body = SWEEP.replace("num = 12", f"num = {n}").replace("chain_length = 4", "chain_length = 2")
    study = write_study(tmp_path, body)
    out = tmp_path / "out"
    cmd = [str(BIN / "sxtwin"), "study", str(study), "--workers", "1", "--out", str(out), "--no-plots"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done = list((out / "cases").glob("case-*.json")) if (out / "cases").is_dir() else []
            if len(done) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail("the study finished before it could be interrupted")
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: driver, scheduler, workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:  # pragma: no cover - cleanup on failure
            os.killpg(proc.pid, signal.SIGKILL)
    saved = {p.name: p.stat().st_mtime_ns for p in (out / "cases").glob("case-*.json")}
    assert 3 <= len(saved) < n
    res = run_study_file(study, StudyRunOptions(out_dir=out, workers=1, progress=False, plots=False))
    assert res.n_cases == n
    assert res.n_reused == len(saved)
    assert res.n_computed == n - len(saved)
    for name, t in saved.items():
        assert (out / "cases" / name).stat().st_mtime_ns == t  # finished cases were not recomputed


def test_study_runs_on_an_external_dask_scheduler(tmp_path: Path) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sched = subprocess.Popen(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        worker = subprocess.Popen(
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--nworkers",
                "1",
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(1, timeout=60)
        study = write_study(tmp_path, SWEEP.replace("num = 12", "num = 6"))
        res = run_study_file(study, StudyRunOptions(out_dir=tmp_path / "out", scheduler=address, progress=False))
        assert res.workers == 1
        assert res.n_cases == 6
        assert res.n_failed == 0
    finally:
        for p in (worker, sched):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    os.killpg(p.pid, signal.SIGKILL)


def test_pareto_front_of_the_binary_case(tmp_path: Path) -> None:
    study = write_study(
        tmp_path,
        """
[study]
name = "binary_pareto"
kind = "pareto"
plant = "PLANT"

[pareto]
product = "Nd_extract"
purity = [0.90, 0.92, 0.94, 0.995]
objective = "reagent"
""",
    )
    res = run_study_file(study, StudyRunOptions(out_dir=tmp_path / "out", workers=2, progress=False))
    front = [e for e in res.findings["front"] if e["status"] == "ok"]
    assert len(front) >= 3
    costs = [e["reagent_cost_usd_per_h"] for e in sorted(front, key=lambda e: e["purity_min"])]
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(costs))  # purer costs more
    assert (tmp_path / "out" / "pareto.png").is_file()


def test_stage_design_finds_a_locally_minimal_layout(tmp_path: Path) -> None:
    study = write_study(
        tmp_path,
        """
[study]
name = "binary_design"
kind = "stage_design"
plant = "PLANT"

[stage_design]
circuit = "X"
sections = ["extraction", "scrub"]
start = { extraction = 10, scrub = 10 }
max_stages = 60
""",
    )
    res = run_study_file(study, StudyRunOptions(out_dir=tmp_path / "out", workers=2, progress=False))
    f = res.findings
    n, m = f["design"]["extraction"], f["design"]["scrub"]
    table = res.table.set_index("id")

    def on_spec(a: int, b: int) -> bool:
        return bool(table.loc[f"design-n{a}-m{b}-k0", "on_spec"])

    assert on_spec(n, m)
    assert not on_spec(n - 1, m)
    assert not on_spec(n, m - 1)
    assert "Fewest stages" in (tmp_path / "out" / "summary.md").read_text()


def test_robustness_gives_a_probability_with_its_interval(tmp_path: Path) -> None:
    study = write_study(
        tmp_path,
        """
[study]
name = "binary_mc"
kind = "robustness"
plant = "PLANT"
chain_length = 8

[robustness]
samples = 24
seed = 7
[[robustness.uncertain]]
parameter = "X.ln_d_offset.Nd"
low = -0.05
high = 0.05
source = "test"
[[robustness.uncertain]]
parameter = "X.extractant_mol_per_l"
distribution = "normal"
mean = 1.0
sd = 0.02
source = "test"
""",
    )
    res = run_study_file(study, StudyRunOptions(out_dir=tmp_path / "out", workers=2, progress=False))
    f = res.findings
    assert f["samples"] == 24
    assert 0.0 <= f["probability_on_spec"] <= 1.0
    lo, hi = f["probability_ci95"]
    assert lo <= f["probability_on_spec"] <= hi
    assert (tmp_path / "out" / "robustness.png").is_file()
    saved = json.loads((tmp_path / "out" / "cases" / "sample-00000.json").read_text())
    assert "X.ln_d_offset.Nd" in saved["result"]["labels"]


CAPACITY = """
[study]
name = "tb_dy_capacity"
kind = "capacity"
plant = "PLANT"

[capacity]
method = "METHOD"
rel_tol = 0.01
"""


def test_capacity_of_tb_dy_by_two_methods(tmp_path: Path) -> None:
    """The throughput NLP and the feed-rate continuation (models.capacity) find the same capacity;
    a recovery minimum given in the study (``[capacity.specs]``) lowers it and holds at the answer."""
    shutil.copy(PLANTS / "tb_dy.toml", tmp_path / "tb_dy.toml")
    found = {}
    for method in ("throughput", "continuation"):
        study = write_study(tmp_path, CAPACITY.replace("METHOD", method), plant=tmp_path / "tb_dy.toml")
        res = run_study_file(study, StudyRunOptions(out_dir=tmp_path / method, workers=1, progress=False))
        found[method] = cap = res.findings["capacity"]["nominal"]
        assert cap["feed_reo_kg_per_h"] > cap["current_feed_reo_kg_per_h"]
        assert cap["limited_by"]  # what stops a larger feed is named
    thr, cont = found["throughput"], found["continuation"]
    lo, hi = cont["bracket"]
    assert hi / lo - 1.0 <= 0.01
    # the NLP's optimum lies in the continuation's bracket (1e-3: the NLP's own tolerance on the specs)
    scale = thr["feed_reo_kg_per_h"] / thr["current_feed_reo_kg_per_h"]
    assert lo * (1 - 1e-3) <= scale <= hi * (1 + 1e-3)
    assert cont["feed_reo_kg_per_h"] == pytest.approx(thr["feed_reo_kg_per_h"], rel=0.01)
    # at that capacity the Tb cut's recovery is above its spec's 0.95: a study minimum of 0.995 binds
    # and the capacity falls below the bracket found without it
    rec = cont["products"]["Tb_cut"]["recovery"]
    assert 0.95 < rec < 0.995
    unknown = CAPACITY.replace("METHOD", "continuation") + '[capacity.specs]\nTb4O7 = { recovery_min = 0.9 }\n'
    with pytest.raises(SpecError, match="'Tb4O7' is not a product of the plant; products: Dy2O3, Tb_cut") as info:
        run_study_file(write_study(tmp_path, unknown, plant=tmp_path / "tb_dy.toml"),
                       StudyRunOptions(out_dir=tmp_path / "unknown", workers=1, progress=False))
    assert info.value.field == "capacity.specs.Tb4O7"
    tight = CAPACITY.replace("METHOD", "continuation") + '[capacity.specs]\nTb_cut = { recovery_min = 0.995 }\n'
    study = write_study(tmp_path, tight, plant=tmp_path / "tb_dy.toml")
    res = run_study_file(study, StudyRunOptions(out_dir=tmp_path / "tight", workers=1, progress=False))
    capped = res.findings["capacity"]["nominal"]
    assert capped["bracket"][1] <= lo
    assert capped["products"]["Tb_cut"]["recovery"] >= 0.995 - 1e-7
    assert "Tb_cut recovery_min" in capped["specs_at_limit"]
