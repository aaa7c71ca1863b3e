"""The API's study service (twin.study_service): a small real sweep on tb_dy checked against a
direct steady solve, the one-at-a-time queue and its bound, cancelling a queued and a running
study, statuses that survive a restart, no Dask process left behind, and bad studies refused with
the field named."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from models.errors import ConflictError, InputError, NotFoundError, SpecError
from models.flowsheet import Flowsheet, build_flowsheet
from models.spec import load_spec, parse_spec
from models.steady import SteadySolver
from twin.study_service import StudyService, StudyServiceOptions, _plant_toml, _study_toml, _to_toml
from twin.study_spec import load_study, parse_study

ROOT = Path(__file__).resolve().parents[2]
TB_DY = ROOT / "models" / "plants" / "tb_dy.toml"
SCRUB = [200.0, 210.0, 220.0]  # L/h around the design 200 L/h (inside the 100-320 L/h bounds)


def sweep(name: str, values: list[float] | None = None, **study: Any) -> dict[str, Any]:
    return {
        "kind": "sweep",
        "study": {"name": name, **study},
        "sweep": {"parameters": [{"name": "scrub_flow", "values": values or SCRUB}]},
    }


def wait_for(service: StudyService, study_id: str, done: Any, timeout_s: float = 240.0) -> Mapping[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = service.status(study_id)
        if done(st):
            return st
        time.sleep(0.05)
    pytest.fail(f"study {study_id}: still {service.status(study_id)} after {timeout_s} s")


def dask_children() -> set[int]:
    """This process's children except multiprocessing's resource tracker (lives as long as we do)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def tb_dy() -> Flowsheet:
    return build_flowsheet(load_spec(TB_DY))


@pytest.fixture(scope="module")
def service(tb_dy: Flowsheet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudyService]:
    svc = StudyService(tb_dy, tmp_path_factory.mktemp("studies"), options=StudyServiceOptions(max_queued=1))
    try:
        yield svc
    finally:
        svc.close()


# ----------------------------------------------------------------------------- real runs


@pytest.mark.slow
@pytest.mark.integration
def test_a_small_sweep_runs_queued_one_at_a_time_and_matches_a_direct_solve(
    service: StudyService, tb_dy: Flowsheet
) -> None:
    first = service.submit(sweep("scrub_sweep"), user="eng")
    assert first["status"] in ("queued", "running")
    assert first["cases_total"] == 3
    assert first["user"] == "eng"
    wait_for(service, first["id"], lambda s: s["status"] != "queued")
    # a study file's text is accepted too (its plant line names the twin's plant)
    capacity = (ROOT / "models" / "studies" / "tb_dy_capacity.toml").read_text()
    second = service.submit({"kind": "capacity", "toml": capacity}, user="eng")
    assert second["status"] == "queued"  # one at a time: it waits for the first
    assert (second["queue_position"], second["cases_total"]) == (1, 2)
    with pytest.raises(ConflictError, match="waiting already") as full:
        service.submit(sweep("third", [206.0]), user="eng")  # max_queued = 1
    assert full.value.details == {"waiting": 1, "max_queued": 1}
    dropped = service.cancel(second["id"], user="boss")
    assert dropped["status"] == "cancelled"
    assert dropped["cancelled_by"] == "boss"
    assert "before it started" in dropped["message"]
    assert dropped["started_at"] is None
    with pytest.raises(ConflictError, match="cancelled"):
        service.result(second["id"])

    st = wait_for(service, first["id"], lambda s: s["status"] not in ("queued", "running"))
    assert st["status"] == "done", st["message"]
    assert st["progress"] == 1.0
    assert (st["cases_done"], st["cases_total"]) == (3, 3)
    assert st["plots"] == ["sweep"]
    assert st["submitted_at"] <= st["started_at"] <= st["finished_at"]
    assert [s["id"] for s in service.list()][:2] == [second["id"], first["id"]]  # newest first
    with pytest.raises(ConflictError, match="done already"):
        service.cancel(first["id"], user="eng")

    res = service.result(first["id"])
    json.dumps(res, allow_nan=False)  # strict JSON
    assert (res["n_cases"], res["n_failed"], res["workers"]) == (3, 0, 1)
    rows = res["cases"]
    assert [r["label.scrub_flow"] for r in rows] == SCRUB
    for r in rows:
        assert r["status"] == "ok"
        for prod in ("Dy2O3", "Tb_cut"):
            assert 0.0 < r[f"{prod}.purity"] < 1.0
            assert 0.0 < r[f"{prod}.recovery"] <= 1.0
        assert r["feed_reo_kg_per_h"] > 0
        assert 0.0 < r["max_loading_fraction"] < 1.0
    assert "scrub_sweep" in res["summary_md"]

    # the last case against an independent steady solve in this process, warm-started from the
    # study's base state (the study reached it through the chain 200 -> 210 -> 220 L/h)
    out_dir = Path(st["out_dir"])
    base = json.loads((out_dir / "cases" / "base.json").read_text())["result"]
    solver = SteadySolver(tb_dy)
    direct = solver.solve(
        tb_dy.parameter_vector({"TbDy.scrub_flow_l_per_h": SCRUB[-1]}), z0=np.array(base["z"]), p0=np.array(base["p"])
    )
    assert direct.success
    for pr in direct.products:
        assert rows[-1][f"{pr.name}.purity"] == pytest.approx(pr.purity, abs=1e-7)
        assert rows[-1][f"{pr.name}.recovery"] == pytest.approx(pr.recovery, abs=1e-7)

    content, media_type = service.plot(first["id"], "sweep")
    assert media_type == "image/png"
    assert content.startswith(b"\x89PNG\r\n\x1a\n")
    assert service.plot(first["id"], "sweep.png")[0] == content
    with pytest.raises(NotFoundError, match="plots: sweep"):
        service.plot(first["id"], "pareto")

    # what ran is on disk and reruns from the command line: the twin's plant and the study
    spec, plant = load_study(out_dir / "study.toml")
    assert plant == out_dir / "plant.toml"
    assert load_spec(plant) == tb_dy.spec
    assert spec.study.name == "scrub_sweep"

    # statuses and results survive a restart; what was running then is reported as interrupted
    ghost = json.loads((out_dir / "status.json").read_text())
    ghost.update(id="20000101-000000-ghost-000000", status="running", finished_at=None)
    (service.root / ghost["id"]).mkdir()
    (service.root / ghost["id"] / "status.json").write_text(json.dumps(ghost))
    again = StudyService(tb_dy, service.root)
    try:
        assert again.result(first["id"])["cases"] == rows
        assert again.status(second["id"])["status"] == "cancelled"
        interrupted = again.status(ghost["id"])
        assert interrupted["status"] == "failed"
        assert "interrupted" in interrupted["message"]
    finally:
        again.close()


@pytest.mark.slow
@pytest.mark.integration
def test_a_running_study_stops_when_cancelled_and_close_leaves_no_process(tb_dy: Flowsheet, tmp_path: Path) -> None:
    before = dask_children()
    svc = StudyService(tb_dy, tmp_path / "studies")
    try:
        # 300 small steps (30 chains of 10): several seconds of work, cancelled after a few cases
        big = sweep("long_sweep", list(np.linspace(195.0, 205.0, 300)))
        st = svc.submit(big, user="eng")
        wait_for(svc, st["id"], lambda s: s["cases_done"] >= 3 or s["status"] in ("done", "failed", "cancelled"))
        asked = svc.cancel(st["id"], user="boss")
        assert asked["status"] == "running"  # it stops at its next check between cases
        assert asked["cancel_requested"]
        # queued behind the stopping study, then the service closes: dropped, never run
        late = svc.submit(sweep("late"), user="eng")
        assert late["status"] == "queued"
        t0 = time.monotonic()
    finally:
        svc.close()
    assert time.monotonic() - t0 < 30
    end = svc.status(st["id"])
    assert end["status"] == "cancelled"
    assert end["message"].startswith("cancelled by boss after ")
    assert 3 <= end["cases_done"] < 300
    assert 0.0 < end["progress"] < 1.0
    saved = list((Path(end["out_dir"]) / "cases").glob("case-*.json"))
    assert len(saved) >= end["cases_done"]  # finished cases stay saved (a rerun reuses them)
    with pytest.raises(ConflictError, match="cancelled by boss"):
        svc.result(st["id"])
    assert svc.cancel(st["id"], user="boss")["status"] == "cancelled"  # again: no change
    dropped = svc.status(late["id"])
    assert (dropped["status"], dropped["started_at"]) == ("cancelled", None)
    assert "stopped before it started" in dropped["message"]
    with pytest.raises(ConflictError, match="shutting down"):
        svc.submit(sweep("later"), user="eng")
    deadline = time.monotonic() + 20
    while dask_children() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not dask_children() - before, "Dask processes outlived the service"


# ----------------------------------------------------------------------------- no runs


def test_bad_studies_are_refused_with_the_field_named(tb_dy: Flowsheet, tmp_path: Path) -> None:
    svc = StudyService(tb_dy, tmp_path)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"kind": "sweep", "study": {"name": "x"}}, "sweep", "needs a [sweep] section"),
        ({"kind": "sweep", "sweep": {"parameters": []}}, "study.name", "Field required"),
        (sweep("x", [1.0]) | {"kind": "robustness"}, "robustness", "needs a [robustness] section"),
        ({**sweep("x"), "study": {"name": "x", "kind": "pareto"}}, "study.kind", "must agree with kind 'sweep'"),
        ({**sweep("x"), "study": {"name": "x", "plant": "/etc/passwd"}}, "study.plant", "twin's plant 'tb_dy'"),
        (
            {"kind": "sweep", "study": {"name": "x"}, "sweep": {"parameters": [{"name": "nope", "values": [1.0]}]}},
            "sweep.parameters",
            "'nope' is neither a plant parameter nor a manipulated variable",
        ),
        (
            {
                "kind": "sweep",
                "study": {"name": "x"},
                "sweep": {"parameters": [{"name": "scrub_flow", "start": 100, "stop": 300, "num": 100_000}]},
            },
            "sweep",
            "100000 cases is more than the 5000",
        ),
        ({"kind": "sweep", "toml": "[study\nname="}, "toml", "malformed TOML"),
        ({"kind": "sweep", "toml": 3}, "toml", "text of a study file"),
        ({"kind": "sweep", "toml": "", "sweep": {}}, "sweep", "either as 'toml' text or as tables"),
        ({"kind": "sweep", "study": "x"}, "study", "the [study] table"),
        (
            {"kind": "pareto", "study": {"name": "x"}, "pareto": {"product": "Gold", "purity": [0.99]}},
            "pareto.product",
            "'Gold' is not a product of the plant",
        ),
    ]
    for body, field, text in cases:
        with pytest.raises(SpecError) as info:
            svc.submit(body, user="eng")
        assert info.value.field == field, (body, info.value.message)
        assert text in info.value.message, (body, info.value.message)
    svc.close()


def test_unknown_ids_are_a_clear_not_found(tb_dy: Flowsheet, tmp_path: Path) -> None:
    svc = StudyService(tb_dy, tmp_path)
    for call in (
        lambda: svc.status("nope"),
        lambda: svc.result("nope"),
        lambda: svc.plot("nope", "sweep"),
        lambda: svc.cancel("nope", user="eng"),
    ):
        with pytest.raises(NotFoundError, match="study 'nope' does not exist") as info:
            call()
        assert info.value.field == "study_id"
    assert svc.list() == []
    svc.close()


def test_options_are_validated_with_the_field_named() -> None:
    for kw, field in (({"workers": 0}, "workers"), ({"max_queued": -1}, "max_queued"), ({"max_cases": 0}, "max_cases")):
        with pytest.raises(InputError, match=rf"^{field}: ") as info:
            StudyServiceOptions(**kw)
        assert info.value.field == field


def test_plants_and_studies_are_written_as_toml_that_reads_back_unchanged(tb_dy: Flowsheet) -> None:
    assert parse_spec(tomllib.loads(_plant_toml(tb_dy))) == tb_dy.spec
    plants = [*sorted((ROOT / "models" / "plants").glob("*.toml")), *sorted((ROOT / "tests" / "specs").glob("*.toml"))]
    for path in plants:
        if "mismatch" in path.name:  # a parameter overlay, not a plant spec
            continue
        spec = load_spec(path)
        assert parse_spec(tomllib.loads(_to_toml(json.loads(spec.model_dump_json())))) == spec, path
    for path in sorted((ROOT / "models" / "studies").glob("*.toml")):
        study, _ = load_study(path)
        assert parse_study(tomllib.loads(_study_toml(study))) == study, path
    tricky = {"a": {'key "quoted"': "tab\there\x7f", "x.y": [1.5e-300, float("inf"), True]}, "n": None}
    assert tomllib.loads(_to_toml(tricky)) == {"a": tricky["a"]}
