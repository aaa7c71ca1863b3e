"""Offline setpoint studies on Dask: sweeps, scenario sets, Pareto fronts, capacity, stage design,
robustness (study file format: :mod:`twin.study_spec`, docs/studies.md).

Execution. Cases run on a Dask cluster: a ``distributed.LocalCluster`` of worker processes (one
thread each: CasADi is not thread-safe) by default, or an existing cluster given its scheduler
address (``tcp://host:port``; deployment setting ``SXTWIN_DASK_SCHEDULER``). Consecutive cases are
grouped into chains (``study.chain_length``); each case of a chain is a task that depends on the
one before it, so it runs on the same worker and warm-starts from its state, while chains run in
parallel. The study's base state (the plant's steady state at its own point) is solved once and
sent with every task. Workers build each plant layout once per process (:mod:`twin._study_worker`).

Persistence. Each case is saved as JSON in ``OUT/cases/<id>.json`` the moment it finishes, with a
digest of what it computed; a rerun of the same study in the same directory reuses every case
whose digest matches and computes only the others (an interrupted study resumes where it stopped).
At the end: ``results.parquet`` and ``results.csv`` (one row per case), plots (PNG) and
``summary.md``.

Hooks for a host process (the API's study service, :mod:`twin.study_service`): ``on_case`` is
called as each case is saved or reused (progress), ``should_stop`` is checked between cases
(cancellation: outstanding tasks are cancelled and :class:`StudyCancelled` is raised, finished
cases stay saved), and ``model_lock`` is held while the driver builds flowsheets in its own
process (CasADi is not thread-safe; a live twin in the same process holds
:data:`twin.compute.MODEL_LOCK` for its solves).

Stage design is a search rather than a fixed case list: starting from the countercurrent-theory
estimate (:func:`models.countercurrent.xu_design`) it makes the counts feasible, then lowers one
section at a time by a parallel k-section search (``parallel_probes`` candidates per step, each a
new flowsheet warm-started from the nearest evaluated one) until no section can lose a stage.
It assumes that more stages never make a product worse (true of countercurrent cascades at fixed
flows, see tests/models/test_cascade.py), so a section's feasible counts form an interval.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.countercurrent import XuDesign, xu_design
from models.errors import ComputationError, InputError, SpecError, TwinError
from models.flowsheet import build_flowsheet
from models.spec import load_spec
from twin._study_worker import solve_case
from twin.study_spec import StudySpec, load_study

if TYPE_CHECKING:
    from models.flowsheet import Flowsheet
    from twin.settings import Settings
    from twin.study_service import StudyService

__all__ = ["StudyCancelled", "StudyResult", "StudyRunOptions", "api_runner", "run_study", "run_study_file"]

log = logging.getLogger(__name__)

FORMAT = "sxtwin-study-case/1"
_POLL_S = 0.2  # how often a study with a should_stop hook looks at it while no case finishes


class StudyCancelled(TwinError):
    """A study stopped because its ``should_stop`` hook asked it to (not a failure: the cases
    finished so far are saved and a rerun in the same directory reuses them)."""


@dataclass(frozen=True)
class StudyRunOptions:
    """How to run a study.

    Attributes
    ----------
    out_dir
        Output directory (cases, tables, plots, summary); created if missing.
    scheduler
        Address of an existing Dask scheduler; None starts a local cluster.
    workers
        Worker processes of the local cluster (default: ``min(4, CPUs)``); ignored with ``scheduler``.
    progress
        Show a progress bar on stderr.
    plots
        Write PNG plots.
    on_case
        Called in the driver with each case's id and result as it is saved or reused (the base
        state has id ``base``); None: no callback.
    should_stop
        Checked between cases (and every 0.2 s while none finishes); when it returns True the outstanding
        tasks are cancelled and :class:`StudyCancelled` is raised. None: run to the end.
    model_lock
        Held while the driver builds flowsheets in its own process (a live twin's
        :data:`twin.compute.MODEL_LOCK`); None: no lock.
    """

    out_dir: Path
    scheduler: str | None = None
    workers: int | None = None
    progress: bool = True
    plots: bool = True
    on_case: Callable[[str, Mapping[str, Any]], None] | None = None
    should_stop: Callable[[], bool] | None = None
    model_lock: AbstractContextManager[Any] | None = None


@dataclass(frozen=True)
class StudyResult:
    """What a study produced.

    Attributes
    ----------
    name, kind
        From the study file.
    n_cases, n_computed, n_reused, n_failed
        Cases in the study, computed in this run, reused from saved files, failed or infeasible.
    wall_time_s
        This run.
    workers
        Dask workers that ran it.
    table
        One row per case.
    findings
        Kind-specific figures (capacity, design counts, probability on spec, ...).
    files
        Paths written (results, plots, summary).
    """

    name: str
    kind: str
    out_dir: Path
    n_cases: int
    n_computed: int
    n_reused: int
    n_failed: int
    wall_time_s: float
    workers: int
    table: pd.DataFrame = field(repr=False)
    findings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the table)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "out_dir": str(self.out_dir),
            "n_cases": self.n_cases,
            "n_computed": self.n_computed,
            "n_reused": self.n_reused,
            "n_failed": self.n_failed,
            "wall_time_s": self.wall_time_s,
            "workers": self.workers,
            "findings": self.findings,
            "files": self.files,
        }


# ------------------------------------------------------------------------------------ storage
def _digest(task: Mapping[str, Any]) -> str:
    keep = {k: v for k, v in task.items() if k not in ("base", "id")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:20]


class _CaseStore:
    """One JSON file per case; a file counts only when its digest matches the task."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / "cases"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, case_id: str) -> Path:
        return self.dir / f"{case_id}.json"

    def load(self, case_id: str, digest: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path(case_id).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("digest") != digest:
            return None
        result = data.get("result")
        return result if isinstance(result, dict) else None

    def save(self, case_id: str, digest: str, result: Mapping[str, Any]) -> None:
        path = self.path(case_id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "digest": digest, "result": result}, default=_json_default))
        os.replace(tmp, path)  # atomic: an interrupted write never leaves a half file


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


# ------------------------------------------------------------------------------------ execution
@contextmanager
def _client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close()
        return
    if not log.isEnabledFor(logging.INFO):  # the in-process scheduler logs at INFO otherwise
        logging.getLogger("distributed").setLevel(logging.ERROR)
    n = workers or min(4, os.cpu_count() or 1)
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class _Runner:
    """Submits chains of case tasks and saves each result as it finishes."""

    def __init__(
        self,
        client: Any,
        store: _CaseStore,
        progress: bool,
        study: str,
        on_case: Callable[[str, Mapping[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.progress = progress
        self.study = study
        self.on_case = on_case
        self.should_stop = should_stop
        self.computed = 0
        self.reused = 0

    def _done(self, case_id: str, result: Mapping[str, Any]) -> None:
        if self.on_case is not None:
            self.on_case(case_id, result)

    def _check_stop(self, pending: Sequence[Any]) -> None:
        if self.should_stop is not None and self.should_stop():
            if pending:
                self.client.cancel(list(pending))
            raise StudyCancelled(f"study {self.study!r} was cancelled", field="study")

    def _completed(self, futures: Sequence[Any]) -> Iterator[Any]:
        """The futures as they finish; with a ``should_stop`` hook, checked between them and every
        ``_POLL_S`` while none finishes."""
        from distributed import as_completed

        ac = as_completed(futures)
        if self.should_stop is None:
            yield from ac
            return
        while ac.count():
            self._check_stop(futures)
            with ac.thread_condition:  # a finished future notifies it after queueing itself
                if not ac.has_ready():
                    ac.thread_condition.wait(timeout=_POLL_S)
            yield from ac.next_batch(block=False)

    def run_chains(self, chains: Sequence[Sequence[dict[str, Any]]], desc: str) -> dict[str, dict[str, Any]]:
        """Run every chain (list of tasks, each warm-starting from the one before); returns results by id."""
        self._check_stop(())
        results: dict[str, dict[str, Any]] = {}
        futures = []
        digests: dict[str, str] = {}
        for chain in chains:
            prev: Any = None
            for task in chain:
                digest = _digest(task)
                digests[task["id"]] = digest
                saved = self.store.load(task["id"], digest)
                if saved is not None:
                    results[task["id"]] = saved
                    self.reused += 1
                    self._done(task["id"], saved)
                    prev = saved if saved.get("status") == "ok" else prev
                    continue
                fut = self.client.submit(
                    solve_case, task, prev, key=f"{self.study}-{task['id']}-{digest}", pure=False, retries=0
                )
                futures.append(fut)
                prev = fut
        if not futures:
            return results
        from tqdm import tqdm

        bar = tqdm(total=len(futures), desc=desc, file=sys.stderr, disable=not self.progress, unit="case")
        try:
            for fut in self._completed(futures):
                res = fut.result()
                self.store.save(res["id"], digests[res["id"]], res)
                results[res["id"]] = res
                self.computed += 1
                self._done(res["id"], res)
                bar.update(1)
        finally:
            bar.close()
        return results

    def run_one(self, task: dict[str, Any], warm: dict[str, Any] | None = None) -> dict[str, Any]:
        """One task (with its own store entry)."""
        self._check_stop(())
        digest = _digest(task)
        saved = self.store.load(task["id"], digest)
        if saved is not None:
            self.reused += 1
            self._done(task["id"], saved)
            return saved
        fut = self.client.submit(solve_case, task, warm, key=f"{self.study}-{task['id']}-{digest}", pure=False)
        res: dict[str, Any] = next(iter(self._completed([fut]))).result()
        self.store.save(task["id"], digest, res)
        self.computed += 1
        self._done(task["id"], res)
        return res


# ------------------------------------------------------------------------------------ cases
def _chains(tasks: list[dict[str, Any]], length: int) -> list[list[dict[str, Any]]]:
    return [tasks[i : i + length] for i in range(0, len(tasks), length)]


def _base_task(plant: dict[str, Any], info: Any) -> dict[str, Any]:
    return {"id": "base", "plant": plant, "overrides": {}, "prices": info.prices, "action": "steady", "labels": {}}


def _task(plant: dict[str, Any], base: dict[str, Any] | None, case_id: str, **kw: Any) -> dict[str, Any]:
    task: dict[str, Any] = {"id": case_id, "plant": plant, "base": base, "overrides": {}, "labels": {}}
    task.update(kw)
    return task


def _products_at(res: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Purity and recovery of every product in a case's final steady state."""
    return {name: {"purity": k["purity"], "recovery": k["recovery"]} for name, k in res.get("kpis", {}).items()}


def _slim(res: Mapping[str, Any]) -> dict[str, Any] | None:
    if res.get("status") != "ok" or res.get("z") is None:
        return None
    return {"z": res["z"], "p": res["p"], "layout": res["layout"]}


def _check_product(fs: Flowsheet, name: str, where: str) -> None:
    products = [ps.name for ps in fs.spec.products]
    if name not in products:
        raise SpecError(
            f"{where}: {name!r} is not a product of the plant; products: {', '.join(products)}", field=where
        )


def _check_names(fs_names: set[str], mv_names: set[str], names: Sequence[str], where: str) -> None:
    for n in names:
        if n not in fs_names and n not in mv_names:
            raise SpecError(
                f"{where}: {n!r} is neither a plant parameter nor a manipulated variable "
                "(see `sxtwin steady --json` parameters, or the spec's [[manipulated]] names)",
                field=where,
            )


# ------------------------------------------------------------------------------------ driver
def api_runner(settings: Settings, flowsheet: Flowsheet) -> StudyService:
    """The study service that the control-room API relays to (:mod:`twin.study_service`).

    Studies run on ``flowsheet``'s plant, one at a time, with their outputs under
    ``<settings.data_dir>/studies/<id>``, on ``settings.dask_scheduler`` or on a local cluster of
    one worker process that each study starts and closes (:meth:`StudyService.close` stops the
    running study, and with it its cluster).
    """
    from twin.study_service import StudyService, StudyServiceOptions

    return StudyService(
        flowsheet, settings.data_dir / "studies", options=StudyServiceOptions(scheduler=settings.dask_scheduler)
    )


def run_study_file(path: str | Path, options: StudyRunOptions) -> StudyResult:
    """Load a study file and run it."""
    spec, plant_path = load_study(path)
    return run_study(spec, plant_path, options)


def run_study(spec: StudySpec, plant_path: Path, options: StudyRunOptions) -> StudyResult:
    """Run a study (module docstring); cases already saved in ``options.out_dir`` are reused."""
    t0 = time.perf_counter()
    info = spec.study
    plant_spec = load_spec(plant_path)
    plant = json.loads(plant_spec.model_dump_json())
    lock = options.model_lock if options.model_lock is not None else nullcontext()
    with lock:  # CasADi builds in this process: not while a live twin's solve runs
        fs = build_flowsheet(plant_spec)
    names = set(fs.parameters.names)
    mvs = {m.name for m in fs.spec.manipulated}
    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = _CaseStore(out_dir)
    with _client(options.scheduler, options.workers) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        runner = _Runner(client, store, options.progress, info.name, options.on_case, options.should_stop)
        base_res = runner.run_one(_base_task(plant, info))
        runner.computed = runner.reused = 0  # the base state is not a case
        if base_res.get("status") != "ok":
            raise ComputationError(
                f"the plant's steady state at its own point was not found: {base_res.get('message')}"
            )
        base = _slim(base_res)
        kind = info.kind
        findings: dict[str, Any] = {}
        if kind == "stage_design":
            assert spec.stage_design is not None
            if spec.stage_design.purity_min:
                with lock:
                    plant, fs = _with_purities(plant, spec.stage_design.purity_min)
            results, findings = _stage_design(spec, plant, fs, runner, n_workers, base)
        else:
            chains = _case_chains(spec, plant, fs, names, mvs, base, runner)
            results = runner.run_chains(chains, desc=info.name)
            order = [t["id"] for c in chains for t in c]
            results = {i: results[i] for i in order}
            findings = _findings(spec, results, fs)
    table = _table(results)
    files: dict[str, str] = {}
    results_parquet = out_dir / "results.parquet"
    table.to_parquet(results_parquet, index=False)
    table.to_csv(out_dir / "results.csv", index=False)
    files["results_parquet"] = str(results_parquet)
    files["results_csv"] = str(out_dir / "results.csv")
    if options.plots:
        from twin.study_plots import study_plots

        files.update(study_plots(spec, table, findings, out_dir))
    n_failed = int((table["status"] != "ok").sum()) if len(table) else 0
    result = StudyResult(
        name=info.name,
        kind=info.kind,
        out_dir=out_dir,
        n_cases=len(table),
        n_computed=runner.computed,
        n_reused=runner.reused,
        n_failed=n_failed,
        wall_time_s=time.perf_counter() - t0,
        workers=n_workers,
        table=table,
        findings=findings,
        files=files,
    )
    summary = out_dir / "summary.md"
    summary.write_text(_summary(spec, plant_path, result), encoding="utf-8")
    files["summary"] = str(summary)
    return result


def _case_chains(
    spec: StudySpec,
    plant: dict[str, Any],
    fs: Any,
    names: set[str],
    mvs: set[str],
    base: dict[str, Any] | None,
    runner: _Runner,
) -> list[list[dict[str, Any]]]:
    info = spec.study
    kind = info.kind
    length = info.chain_length
    if kind == "sweep":
        assert spec.sweep is not None
        params = spec.sweep.parameters
        _check_names(names, mvs, [p.name for p in params], "sweep.parameters")
        grid = (
            list(itertools.product(*[p.points() for p in params]))
            if spec.sweep.mode == "grid"
            else list(zip(*[p.points() for p in params], strict=True))
        )
        tasks = [
            _task(
                plant,
                base,
                f"case-{i:05d}",
                overrides={p.name: float(v) for p, v in zip(params, values, strict=True)},
                labels={p.name: float(v) for p, v in zip(params, values, strict=True)},
                prices=info.prices,
                action=info.action,
                objective=info.objective.value,
            )
            for i, values in enumerate(grid)
        ]
        # chains follow the sweep order (the last parameter varies fastest): neighbours warm-start
        return _chains(tasks, length)
    if kind == "scenarios":
        tasks = []
        for sc in spec.scenarios:
            _check_names(names, mvs, list(sc.set), f"scenarios.{sc.name}.set")
            tasks.append(
                _task(
                    plant,
                    base,
                    f"scenario-{sc.name}",
                    overrides=dict(sc.set),
                    labels={"scenario": sc.name},
                    prices=sc.prices or info.prices,
                    action=info.action,
                    objective=info.objective.value,
                    structure={"baskets": dict(sc.baskets)} if sc.baskets else None,
                )
            )
        return [[t] for t in tasks]
    if kind == "capacity":
        assert spec.capacity is not None
        scenarios = spec.capacity.scenarios or ()
        tasks = []
        entries: list[tuple[str, dict[str, float], str, dict[str, str]]] = (
            [(sc.name, dict(sc.set), sc.prices or info.prices, dict(sc.baskets)) for sc in scenarios]
            if scenarios
            else [("nominal", {}, info.prices, {})]
        )
        # the capacity is the plant's, not the operating window's: feed-flow variables may move over
        # feed_range times their current value, beyond their [[manipulated]] bounds
        lo_f, hi_f = spec.capacity.feed_range
        feed_flows = {f"{f.name}.flow_l_per_h" for f in fs.spec.feeds}
        continuation = spec.capacity.method == "continuation"
        for prod in spec.capacity.specs:
            _check_product(fs, prod, f"capacity.specs.{prod}")
        limits = {prod: lim.model_dump(exclude_none=True) for prod, lim in spec.capacity.specs.items()}
        release: dict[str, float] = {}
        for m in fs.spec.manipulated:
            if m.variable not in feed_flows:
                continue
            if spec.capacity.release_feed_bounds and not continuation:
                release[f"{m.name} min"] = lo_f * fs.parameters[m.variable]
                release[f"{m.name} max"] = hi_f * fs.parameters[m.variable]
            elif not spec.capacity.release_feed_bounds and continuation:  # the feed stays in its window
                lo_f = max(lo_f, m.min / fs.parameters[m.variable])
                hi_f = min(hi_f, m.max / fs.parameters[m.variable])
        method: dict[str, Any] = (
            {
                "action": "capacity",
                "feed_range": [lo_f, hi_f],
                "rel_tol": spec.capacity.rel_tol,
                "max_wall_s": spec.capacity.max_wall_s,
            }
            if continuation
            else {
                "action": "optimise",
                "objective": "throughput",
                "feed_range": [lo_f, hi_f],
                "bound_overrides": release,
            }
        )
        if limits:
            method["specs"] = limits
        for name, overrides, prices, baskets in entries:
            _check_names(names, mvs, list(overrides), f"capacity.scenarios.{name}.set")
            tasks.append(
                _task(
                    plant,
                    base,
                    f"capacity-{name}",
                    overrides=overrides,
                    labels={"scenario": name},
                    prices=prices,
                    structure={"baskets": baskets} if baskets else None,
                    **method,
                )
            )
        return [[t] for t in tasks]
    if kind == "pareto":
        assert spec.pareto is not None
        pa = spec.pareto
        _check_product(fs, pa.product, "pareto.product")
        recoveries: list[float | None] = list(pa.recovery) or [None]
        chains = []
        i = 0
        for rec in recoveries:
            chain = []
            for pur in sorted(pa.purity):
                specs: dict[str, dict[str, float | None]] = {pa.product: {"purity_min": pur}}
                if rec is not None:
                    specs[pa.product]["recovery_min"] = rec
                chain.append(
                    _task(
                        plant,
                        base,
                        f"pareto-{i:04d}",
                        labels={"purity_min": pur, "recovery_min": rec},
                        prices=info.prices,
                        action="optimise",
                        objective=pa.objective.value,
                        specs=specs,
                    )
                )
                i += 1
            chains.append(chain)
        return chains
    if kind == "robustness":
        assert spec.robustness is not None
        rb = spec.robustness
        _check_names(names, mvs, [u.parameter for u in rb.uncertain], "robustness.uncertain")
        setpoints: dict[str, float]
        if rb.setpoints == "design":
            setpoints = {}
        elif rb.setpoints == "optimum":
            nominal = runner.run_one(
                _task(
                    plant,
                    base,
                    "nominal-optimum",
                    prices=info.prices,
                    action="optimise",
                    objective=info.objective.value,
                    labels={"role": "nominal optimum"},
                )
            )
            if nominal.get("status") != "ok":
                raise ComputationError(f"robustness: the nominal optimisation failed: {nominal.get('message')}")
            setpoints = dict(nominal["optimisation"]["setpoints"])
        else:
            assert isinstance(rb.setpoints, dict)
            _check_names(names, mvs, list(rb.setpoints), "robustness.setpoints")
            setpoints = dict(rb.setpoints)
        rng = np.random.default_rng(rb.seed)
        draws = np.empty((rb.samples, len(rb.uncertain)))
        for j, u in enumerate(rb.uncertain):
            if u.distribution == "uniform":
                assert u.low is not None
                assert u.high is not None
                draws[:, j] = rng.uniform(u.low, u.high, size=rb.samples)
            else:
                assert u.mean is not None
                assert u.sd is not None
                draws[:, j] = rng.normal(u.mean, u.sd, size=rb.samples)
        tasks = []
        for i in range(rb.samples):
            sample = {u.parameter: float(draws[i, j]) for j, u in enumerate(rb.uncertain)}
            tasks.append(
                _task(
                    plant,
                    base,
                    f"sample-{i:05d}",
                    overrides={**setpoints, **sample},
                    labels={"sample": i, **sample},
                    prices=info.prices,
                    action="steady",
                )
            )
        return _chains(tasks, length)
    raise InputError(f"study.kind: {kind!r} is not handled here", field="study.kind")  # pragma: no cover


# ------------------------------------------------------------------------------------ stage design
def _xu_start(spec: StudySpec, fs: Any) -> tuple[dict[str, int], XuDesign | None, dict[str, Any]]:
    sd = spec.stage_design
    assert sd is not None
    lay = fs.circuit(sd.circuit)
    start = {s: int(v) for s, v in sd.start.items()}
    if sd.xu is None:
        return start, None, {}
    xu = sd.xu
    # feed fractions of the heavy (A) and light (B) groups, mole basis, from the circuit's feed
    p = fs.parameters
    feed = lay.spec.feed
    conc: dict[str, float] = {}
    for f in fs.spec.feeds:
        if f.name == feed:
            for s in f.concentrations_mol_per_l():
                conc[s] = p[f"{f.name}.conc_mol_per_l.{s}"]
    if not conc:
        raise SpecError(
            f"stage_design.xu: circuit {sd.circuit!r} is fed by another circuit; give 'start' counts instead",
            field="stage_design.xu",
        )
    heavy = sum(conc.get(s, 0.0) for s in xu.heavy)
    light = sum(conc.get(s, 0.0) for s in xu.light)
    if heavy <= 0 or light <= 0:
        raise SpecError("stage_design.xu: heavy and light elements must both be in the feed", field="stage_design.xu")
    f_a = heavy / (heavy + light)
    purity: dict[str, float] = {}
    for ps in fs.spec.products:
        if ps.stream.startswith(f"{sd.circuit}.") and ps.purity_min is not None:
            heavy_product = all(s in xu.heavy for s in ps.main_elements)
            purity["a" if heavy_product else "b"] = ps.purity_min
    p_a = xu.purity_a or purity.get("a")
    p_b = xu.purity_b or purity.get("b")
    if p_a is None or p_b is None:
        raise SpecError("stage_design.xu: give purity_a and purity_b (or product specs)", field="stage_design.xu")
    design = xu_design(
        f_a, p_a, p_b, beta_extraction=xu.beta_extraction, beta_scrub=xu.beta_scrub, s=xu.s, w=xu.w, feed=xu.feed
    )
    est = {"extraction": design.n_stages, "scrub": design.m_stages}
    for s in sd.sections:
        if s not in start:
            if s not in est or est[s] <= 0:
                raise SpecError(
                    f"stage_design: the theory gives no finite count for {s} (n = {design.n:.3g}, m = {design.m:.3g}); "
                    "give a start",
                    field="stage_design.start",
                )
            start[s] = est[s]
    info = {
        "f_a": f_a,
        "purity_a": p_a,
        "purity_b": p_b,
        "n": design.n,
        "m": design.m,
        "s": design.s,
        "w": design.w,
        "e_m": design.e_m,
        "e_m_scrub": design.e_m_scrub,
        "a": design.a,
        "b": design.b,
        "beta_extraction": xu.beta_extraction,
        "beta_scrub": xu.beta_scrub,
        "feed": xu.feed,
        "source": xu.source,
    }
    return start, design, info


_FIELD = {"extraction": "extraction_stages", "scrub": "scrub_stages", "strip": "strip_stages"}


def _with_purities(plant: dict[str, Any], purity: Mapping[str, float]) -> tuple[dict[str, Any], Any]:
    """The plant data with products' purity_min replaced (stage design at another target)."""
    from models.spec import parse_spec

    data = json.loads(json.dumps(plant))
    names = {p["name"] for p in data.get("products", [])}
    for name in purity:
        if name not in names:
            raise SpecError(
                f"stage_design.purity_min.{name}: not a product of the plant ({', '.join(sorted(names))})",
                field=f"stage_design.purity_min.{name}",
            )
    for p in data["products"]:
        if p["name"] in purity:
            p["purity_min"] = float(purity[p["name"]])
    return data, build_flowsheet(parse_spec(data, where="study plant"))


def _stage_design(
    spec: StudySpec, plant: dict[str, Any], fs: Any, runner: _Runner, n_workers: int, base: dict[str, Any] | None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    sd = spec.stage_design
    assert sd is not None
    info = spec.study
    lay = fs.circuit(sd.circuit)
    fixed = {"extraction": lay.n_extraction, "scrub": lay.n_scrub, "strip": lay.n_strip}
    start, _design, xu_info = _xu_start(spec, fs)
    probes = sd.parallel_probes or n_workers
    evaluated: dict[tuple[int, ...], dict[str, Any]] = {}
    results: dict[str, dict[str, Any]] = {}

    def counts_key(c: Mapping[str, int]) -> tuple[int, int, int]:
        return (c["extraction"], c["scrub"], c["strip"])

    def nearest(c: Mapping[str, int]) -> dict[str, Any] | None:
        best, dist = None, math.inf
        for k, r in evaluated.items():
            if r.get("status") != "ok":
                continue
            d = sum(abs(a - b) for a, b in zip(k, counts_key(c), strict=True))
            if d < dist:
                best, dist = r, d
        return _slim(best) if best is not None else base

    def evaluate(cands: list[dict[str, int]]) -> None:
        todo = [c for c in cands if counts_key(c) not in evaluated]
        todo = list({counts_key(c): c for c in todo}.values())
        if not todo:
            return
        chains = []
        for c in todo:
            structure = {"circuits": {sd.circuit: {_FIELD[s]: c[s] for s in ("extraction", "scrub", "strip")}}}
            ident = f"design-n{c['extraction']}-m{c['scrub']}-k{c['strip']}"
            task = _task(
                plant,
                nearest(c),
                ident,
                structure=structure,
                prices=info.prices,
                action="steady",
                labels={"extraction": c["extraction"], "scrub": c["scrub"], "strip": c["strip"]},
                adjust=sd.adjust.model_dump() if sd.adjust is not None else None,
                overrides=dict(sd.set),
            )
            chains.append([task])
        out = runner.run_chains(chains, desc=f"{info.name} ({len(todo)} layouts)")
        for c in todo:
            ident = f"design-n{c['extraction']}-m{c['scrub']}-k{c['strip']}"
            evaluated[counts_key(c)] = out[ident]
            results[ident] = out[ident]

    def ok(c: Mapping[str, int]) -> bool:
        r = evaluated[counts_key(c)]
        return bool(r.get("status") == "ok" and r.get("on_spec"))

    current = {**fixed, **start}
    trace: list[str] = []
    # 1. make the start feasible: grow every designed section by 25 % until all specs are met
    evaluate([current])
    grow = 0
    feasible = ok(current)
    while not feasible:
        grow += 1
        bigger = {
            s: min(sd.max_stages, max(current[s] + 1, math.ceil(current[s] * 1.25))) if s in sd.sections else current[s]
            for s in current
        }
        if bigger == current or grow > 30:
            break
        current = bigger
        evaluate([current])
        trace.append(f"grow to {current}")
        feasible = ok(current)
    if not feasible:
        best = max(
            (r for r in evaluated.values() if r.get("status") == "ok"),
            key=lambda r: min((k["purity"] - (k["purity_min"] or 0.0)) for k in r["kpis"].values()),
            default=None,
        )
        findings_inf: dict[str, Any] = {
            "circuit": sd.circuit,
            "sections": list(sd.sections),
            "start": {s: start.get(s, fixed[s]) for s in sd.sections},
            "design": None,
            "feasible": False,
            "message": f"no layout up to {sd.max_stages} stages per section meets every spec at these flows",
            "best": {"labels": best.get("labels"), "kpis": best.get("kpis"), "adjusted": best.get("adjust")}
            if best
            else None,
            "fixed": {s: fixed[s] for s in fixed if s not in sd.sections},
            "evaluations": len(evaluated),
            "trace": trace,
            "xu": xu_info,
        }
        if sd.reference:
            findings_inf["reference"] = dict(sd.reference)
            findings_inf["reference_source"] = sd.reference_source
        return results, findings_inf
    # 2. lower one section at a time (k-section search on the feasible interval)
    changed = True
    rounds = 0
    while changed and rounds < 6:
        changed = False
        rounds += 1
        for s in sd.sections:
            hi_ok = current[s]
            lo_fail = sd.min_stages - 1
            while hi_ok - lo_fail > 1:
                span = hi_ok - lo_fail - 1
                k = min(probes, span)
                pts = sorted({lo_fail + max(1, round((i + 1) * (hi_ok - lo_fail) / (k + 1))) for i in range(k)})
                pts = [q for q in pts if lo_fail < q < hi_ok] or [lo_fail + 1]
                cands = [{**current, s: q} for q in pts]
                evaluate(cands)
                passing = [q for q in pts if ok({**current, s: q})]
                failing = [q for q in pts if not ok({**current, s: q})]
                if passing:
                    hi_ok = min(passing)
                lower_fail = [q for q in failing if q < hi_ok]
                if lower_fail:
                    lo_fail = max(lower_fail)
                if not passing and not lower_fail:  # pragma: no cover - defensive
                    break
            if hi_ok != current[s]:
                trace.append(f"{s}: {current[s]} -> {hi_ok}")
                current = {**current, s: hi_ok}
                changed = True
    final = evaluated[counts_key(current)]
    findings: dict[str, Any] = {
        "circuit": sd.circuit,
        "sections": list(sd.sections),
        "start": {s: start.get(s, fixed[s]) for s in sd.sections},
        "design": {s: current[s] for s in sd.sections},
        "fixed": {s: fixed[s] for s in fixed if s not in sd.sections},
        "feasible": True,
        "evaluations": len(evaluated),
        "trace": trace,
        "kpis": final.get("kpis", {}),
        "adjusted": final.get("adjust"),
        "xu": xu_info,
    }
    if sd.reference:
        findings["reference"] = dict(sd.reference)
        findings["reference_source"] = sd.reference_source
        findings["difference"] = {s: current[s] - sd.reference[s] for s in sd.reference if s in current}
    return results, findings


# ------------------------------------------------------------------------------------ tables
def _table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for case_id, r in results.items():
        row: dict[str, Any] = {"id": case_id, "status": r.get("status", "failed"), "message": r.get("message", "")}
        for k, v in (r.get("labels") or {}).items():
            row[f"label.{k}"] = v
        for prod, k in (r.get("kpis") or {}).items():
            row[f"{prod}.purity"] = k.get("purity")
            row[f"{prod}.recovery"] = k.get("recovery")
            row[f"{prod}.on_spec"] = k.get("on_spec")
        row["on_spec"] = r.get("on_spec")
        for k, v in (r.get("economics") or {}).items():
            row[k] = v
        row["max_loading_fraction"] = r.get("max_loading_fraction")
        opt = r.get("optimisation")
        if opt:
            row["objective"] = opt.get("objective")
            row["objective_value"] = opt.get("objective_value")
            row["objective_unit"] = opt.get("objective_unit")
            for k, v in (opt.get("setpoints") or {}).items():
                row[f"sp.{k}"] = v
            row["active_constraints"] = "; ".join(a["name"] for a in opt.get("active_constraints", []))
        if r.get("adjust"):
            row["adjust.parameter"] = r["adjust"].get("parameter")
            row["adjust.value"] = r["adjust"].get("value")
        row["wall_time_s"] = r.get("wall_time_s")
        row["steady_wall_time_s"] = r.get("steady_wall_time_s")
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in df.columns:
        if df[col].dtype == object and col not in (
            "id",
            "status",
            "message",
            "objective",
            "objective_unit",
            "active_constraints",
        ):
            try:
                df[col] = pd.to_numeric(df[col])
            except (TypeError, ValueError):
                df[col] = df[col].astype(str)
    return df


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def _findings(spec: StudySpec, results: Mapping[str, Mapping[str, Any]], fs: Any) -> dict[str, Any]:
    kind = spec.study.kind
    ok = [r for r in results.values() if r.get("status") == "ok"]
    out: dict[str, Any] = {
        "ok": len(ok),
        "failed": sum(1 for r in results.values() if r.get("status") == "failed"),
        "infeasible": sum(1 for r in results.values() if r.get("status") == "infeasible"),
    }
    if kind == "robustness":
        n = len(results)
        k = sum(1 for r in ok if r.get("on_spec"))
        out["samples"] = n
        out["on_spec"] = k
        out["probability_on_spec"] = k / n if n else math.nan
        out["probability_ci95"] = _wilson(k, n)
        per: dict[str, float] = {}
        for ps in fs.spec.products:
            m = sum(1 for r in ok if (r.get("kpis") or {}).get(ps.name, {}).get("on_spec"))
            per[ps.name] = m / n if n else math.nan
        out["probability_by_product"] = per
        out["note"] = "failed steady solves count as off spec"
    elif kind == "capacity":
        cap = {}
        for r in results.values():
            name = r["labels"].get("scenario")
            if r.get("status") != "ok":
                cap[name] = {"status": r.get("status"), "message": r.get("message", "")}
                continue
            if "capacity" in r:  # feed-rate continuation (models.capacity)
                c = r["capacity"]
                cap[name] = {
                    "feed_reo_kg_per_h": c["feed_reo_kg_per_h"],
                    "current_feed_reo_kg_per_h": c["current_feed_reo_kg_per_h"],
                    "feed_scale": c["feed_scale"],
                    "bracket": c["bracket"],
                    "feed_setpoints": c["feed_flows_l_per_h"],
                    "limited_by": c["limited_by"],
                    "specs_at_limit": c["specs_at_limit"],
                    "worth": [f"capacity search: {c['reason']}"],
                    "solves": len(c["steps"]),
                    "products": _products_at(r),
                }
                continue
            opt = r["optimisation"]
            feeds = {k: v for k, v in opt["setpoints"].items() if "flow_l_per_h" in k or "feed" in k}
            cap[name] = {
                "feed_reo_kg_per_h": opt["objective_value"],
                "current_feed_reo_kg_per_h": opt["current_objective_value"],
                "feed_setpoints": feeds,
                "limited_by": [a["name"] for a in opt["active_constraints"]],
                "worth": [a["statement"] for a in opt["active_constraints"]],
                "products": _products_at(r),
            }
        out["capacity"] = cap
    elif kind == "pareto":
        front = []
        for r in results.values():
            lab = r.get("labels", {})
            entry = {
                "purity_min": lab.get("purity_min"),
                "recovery_min": lab.get("recovery_min"),
                "status": r.get("status"),
            }
            if r.get("status") == "ok":
                entry["objective_value"] = r["optimisation"]["objective_value"]
                entry["reagent_cost_usd_per_h"] = r["economics"]["reagent_cost_usd_per_h"]
            front.append(entry)
        out["front"] = front
    return out


def _summary(spec: StudySpec, plant_path: Path, result: StudyResult) -> str:
    info = spec.study
    lines = [
        f"# Study `{info.name}` ({info.kind})",
        "",
        info.description or "",
        "",
        f"- plant: `{plant_path}`",
        f"- cases: {result.n_cases} ({result.n_computed} computed in this run, {result.n_reused} reused from "
        f"`cases/`, {result.n_failed} failed or infeasible)",
        f"- wall time of this run: {result.wall_time_s:.1f} s on {result.workers} Dask worker(s)",
        f"- prices: {info.prices}"
        + (f", action: {info.action} ({info.objective.value})" if info.kind in ("sweep", "scenarios") else ""),
        "",
    ]
    f = result.findings
    if info.kind == "robustness" and spec.robustness is not None:
        lo, hi = f["probability_ci95"]
        sp = spec.robustness.setpoints
        sp_text = sp if isinstance(sp, str) else ", ".join(f"{k} = {v:g}" for k, v in sp.items())
        lines += [
            "## Probability that the products meet spec",
            "",
            f"**{f['probability_on_spec']:.3f}** ({f['on_spec']} of {f['samples']} samples; 95 % Wilson interval "
            f"{lo:.3f}-{hi:.3f}); setpoints: {sp_text}.",
            "",
            "| product | probability on spec |",
            "| --- | --- |",
            *[f"| {k} | {v:.3f} |" for k, v in f["probability_by_product"].items()],
            "",
            "Uncertain parameters:",
            "",
            *[
                f"- `{u.parameter}`: {u.distribution} "
                + (f"[{u.low:g}, {u.high:g}]" if u.distribution == "uniform" else f"mean {u.mean:g}, sd {u.sd:g}")
                + (f" - {u.source}" if u.source else "")
                for u in spec.robustness.uncertain
            ],
            "",
        ]
    elif info.kind == "capacity":
        lines += [
            "## Largest feed at spec",
            "",
            "| scenario | feed REO kg/h | now | limited by |",
            "| --- | --- | --- | --- |",
        ]
        for name, c in f["capacity"].items():
            if "feed_reo_kg_per_h" in c:
                lines.append(
                    f"| {name} | {c['feed_reo_kg_per_h']:.3f} | {c['current_feed_reo_kg_per_h']:.3f} | "
                    f"{', '.join(c['limited_by']) or '-'} |"
                )
            else:
                lines.append(f"| {name} | {c['status']} | | {c['message']} |")
        lines.append("")
        for name, c in f["capacity"].items():
            for w in c.get("worth", []):
                lines.append(f"- {name}: {w}")
        lines.append("")
    elif info.kind == "stage_design" and not f.get("feasible", True):
        lines += [f"## No feasible layout ({f['circuit']})", "", f["message"] + ".", ""]
        if f.get("best"):
            b = f["best"]
            lines += [
                f"Best layout evaluated: {b['labels']}" + (f", split {b['adjusted']}" if b.get("adjusted") else "")
            ]
            for name, k in (b.get("kpis") or {}).items():
                lines.append(
                    f"- {name}: purity {k['purity']:.6f} (min {k['purity_min']}), recovery {k['recovery']:.6f}"
                )
            lines.append("")
        if f.get("xu"):
            x = f["xu"]
            lines += [f"Countercurrent theory start: n = {x['n']:.2f}, m = {x['m']:.2f}.", ""]
        if "reference" in f:
            lines += [f"Reference ({f.get('reference_source', '')}): {f['reference']}.", ""]
    elif info.kind == "stage_design":
        lines += [
            f"## Fewest stages meeting every spec ({f['circuit']})",
            "",
            "| section | theory start | design | reference |",
            "| --- | --- | --- | --- |",
        ]
        for s in f["sections"]:
            lines.append(f"| {s} | {f['start'].get(s)} | **{f['design'][s]}** | {f.get('reference', {}).get(s, '')} |")
        lines += ["", f"Layouts evaluated: {f['evaluations']}; fixed sections: {f['fixed']}.", ""]
        if f.get("xu"):
            x = f["xu"]
            lines += [
                "Countercurrent theory (Xu): "
                f"f_A = {x['f_a']:.4f}, P_A = {x['purity_a']}, P_B = {x['purity_b']}, "
                f"S = {x['s']:.4f}, W = {x['w']:.4f}, "
                f"E_M = {x['e_m']:.4f}, E'_M = {x['e_m_scrub']:.4f}, beta {x['beta_extraction']}/{x['beta_scrub']} -> "
                f"n = {x['n']:.2f}, m = {x['m']:.2f}" + (f" ({x['source']})" if x.get("source") else ""),
                "",
            ]
        if "reference" in f:
            lines += [
                f"Difference from the reference ({f.get('reference_source', '')}): "
                + ", ".join(f"{s} {d:+d}" for s, d in f["difference"].items()),
                "",
            ]
        if f.get("adjusted"):
            a = f["adjusted"]
            lines += [f"Split balanced per layout with `{a.get('parameter')}`: {a.get('value')} at the design.", ""]
        lines += ["Products at the design:", ""]
        for name, k in f["kpis"].items():
            lines.append(f"- {name}: purity {k['purity']:.6f}, recovery {k['recovery']:.6f}")
        lines.append("")
    elif info.kind == "pareto":
        lines += [
            "## Front",
            "",
            "| purity_min | recovery_min | status | objective | reagent USD/h |",
            "| --- | --- | --- | --- | --- |",
        ]
        for e in f["front"]:
            lines.append(
                f"| {e['purity_min']} | {e['recovery_min']} | {e['status']} | {e.get('objective_value', '')} | "
                f"{e.get('reagent_cost_usd_per_h', '')} |"
            )
        lines.append("")
    else:
        table = result.table
        show = [c for c in table.columns if c.startswith("label.") or c.endswith((".purity", ".recovery"))]
        show += [c for c in ("margin_usd_per_h", "reagent_cost_usd_per_h", "objective_value") if c in table.columns]
        lines += ["## Cases (first 20)", "", _markdown(table[["id", "status", *show]].head(20)), ""]
    lines += [f"Files: {', '.join(sorted(result.files.values()))}", ""]
    return "\n".join(lines)


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(f"{v:.6g}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
