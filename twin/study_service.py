"""Offline studies for the control-room API: submit, status, list, result, plot, cancel.

:class:`StudyService` implements :class:`api.runtime.StudyRunner`. It runs studies of
:mod:`twin.studies` on the live twin's plant, **one at a time**: submitted studies wait in a queue
(at most ``max_queued``) and one worker thread of this process drives them, each on its own Dask
cluster (a local cluster of ``workers`` processes, started and closed by the study, or the
deployment's scheduler, ``SXTWIN_DASK_SCHEDULER``). The cases are solved in the Dask workers, not
here; the driver builds the study's flowsheet in this process, under
:data:`twin.compute.MODEL_LOCK` (CasADi is not thread-safe and the live twin solves in this
process too), so a study waits for the twin's current solve before it starts and holds the twin
up only for that build (0.03 s for tb_dy).

A study submitted through the API is a study file (docs/studies.md) given as a mapping::

    {"kind": "sweep",                                  # the API envelope's kind
     "study": {"name": "scrub", "chain_length": 10},   # the [study] table: kind may be left out,
     "sweep": {"parameters": [{"name": "scrub_flow", "values": [200, 210, 220]}]}}

or as the text of a study file: ``{"kind": "sweep", "toml": "<study file>"}``. The plant is the
twin's own: ``study.plant`` may be left out and, if given, must name the twin's plant (its name,
or a file whose stem is that name); no path sent by a client is ever read.

Outputs. Every study has a directory ``<root>/<id>`` (the API's root: ``<data_dir>/studies``)
holding ``study.toml`` and ``plant.toml`` (what ran: ``sxtwin study <dir>/study.toml --out <dir>``
reruns it, reusing every saved case), ``status.json``, the per-case JSON files (``cases/``),
``results.parquet``/``.csv``, the PNG plots, ``summary.md`` and ``result.json`` (what
:meth:`StudyService.result` returns). Statuses survive a restart: a study that was queued or
running when the process stopped is reported as failed (interrupted).

Cancellation sets a flag that the study checks between cases (and every 0.2 s while none
finishes): the outstanding tasks are cancelled, its cluster closes (a case still computing is
abandoned with its worker), and the cases finished so far stay saved. A queued study is dropped at
once. :meth:`StudyService.close` drops the queue, stops the running
study and joins the worker thread, so no Dask process outlives the service.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import threading
import tomllib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import TracebackType
from typing import Any, Final, Literal, get_args

import numpy as np

from models.errors import ConflictError, InputError, NotFoundError, SpecError, TwinError, bad_value
from models.flowsheet import Flowsheet
from models.spec import parse_spec
from twin.study_spec import StudySpec, parse_study

__all__ = ["StudyService", "StudyServiceOptions", "StudyState"]

log = logging.getLogger(__name__)

StudyState = Literal["queued", "running", "done", "failed", "cancelled"]
_STATES: Final = frozenset(get_args(StudyState))
STUDY_FILE: Final = "study.toml"
PLANT_FILE: Final = "plant.toml"
STATUS_FILE: Final = "status.json"
RESULT_FILE: Final = "result.json"
_FORMAT: Final = "sxtwin-study-status/1"
_ID_NAME_CHARS: Final = 40  # ids stay within the API's 100-character path pattern


@dataclass(frozen=True)
class StudyServiceOptions:
    """How the service runs studies.

    Attributes
    ----------
    scheduler
        Address of a running Dask scheduler (``tcp://host:port``); None: each study starts a local
        cluster of ``workers`` processes on 127.0.0.1 and closes it when it ends.
    workers
        Worker processes of the local cluster (one thread each); ignored with ``scheduler``.
    max_queued
        Studies that may wait behind the running one; a further submission is refused
        (:class:`~models.errors.ConflictError`).
    max_cases
        Largest number of cases of one submitted study (sweep grid, scenarios, Pareto points,
        robustness samples); larger studies belong on the command line (``sxtwin study``).
    plots
        Write the study's PNG plots.
    use_model_lock
        Build the study's flowsheets in this process under :data:`twin.compute.MODEL_LOCK`
        (needed whenever a live twin runs in the same process).
    join_timeout_s
        How long :meth:`StudyService.close` waits for the running study to stop, s.
    """

    scheduler: str | None = None
    workers: int = 1
    max_queued: int = 8
    max_cases: int = 5000
    plots: bool = True
    use_model_lock: bool = True
    join_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise bad_value("workers", self.workers, "an integer >= 1")
        if isinstance(self.max_queued, bool) or not isinstance(self.max_queued, int) or self.max_queued < 0:
            raise bad_value("max_queued", self.max_queued, "an integer >= 0")
        if isinstance(self.max_cases, bool) or not isinstance(self.max_cases, int) or self.max_cases < 1:
            raise bad_value("max_cases", self.max_cases, "an integer >= 1")
        if not (isinstance(self.join_timeout_s, (int, float)) and self.join_timeout_s > 0):
            raise bad_value("join_timeout_s", self.join_timeout_s, "a number of seconds > 0")


@dataclass
class _Record:
    """One study as the service tracks it (mutable; guarded by the service's lock)."""

    id: str
    name: str
    kind: str
    user: str
    out_dir: Path
    submitted_at: datetime
    cases_total: int | None
    status: StudyState = "queued"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cases_done: int = 0
    message: str | None = None
    cancelled_by: str | None = None
    plots: dict[str, str] = field(default_factory=dict)  # name -> file in out_dir, once done
    stop: bool = field(default=False, repr=False)  # read by the running study between cases

    def to_status(self, queue_position: int | None) -> dict[str, Any]:
        if self.status == "done":
            progress: float | None = 1.0
        elif self.cases_total:
            progress = min(1.0, self.cases_done / self.cases_total)
        elif self.status == "queued":
            progress = 0.0
        else:
            progress = None
        return {
            "id": self.id,
            "status": self.status,
            "progress": progress,
            "message": self.message,
            "name": self.name,
            "kind": self.kind,
            "user": self.user,
            "submitted_at": _iso(self.submitted_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "cases_done": self.cases_done,
            "cases_total": self.cases_total,
            "queue_position": queue_position,
            "cancel_requested": self.stop and self.status == "running",
            "cancelled_by": self.cancelled_by,
            "out_dir": str(self.out_dir),
            "plots": sorted(self.plots),
        }

    def to_file(self) -> dict[str, Any]:
        return {"format": _FORMAT, **self.to_status(None), "plots": dict(self.plots)}

    @classmethod
    def from_file(cls, data: Mapping[str, Any], out_dir: Path) -> _Record:
        if data.get("format") != _FORMAT or data.get("status") not in _STATES:
            raise ValueError("not a study status file")
        submitted = _parse_time(data.get("submitted_at"))
        if submitted is None:
            raise ValueError("submitted_at missing")
        total = data.get("cases_total")
        return cls(
            id=str(data["id"]),
            name=str(data.get("name", "")),
            kind=str(data.get("kind", "")),
            user=str(data.get("user", "")),
            out_dir=out_dir,
            submitted_at=submitted,
            cases_total=int(total) if isinstance(total, int) else None,
            status=data["status"],
            started_at=_parse_time(data.get("started_at")),
            finished_at=_parse_time(data.get("finished_at")),
            cases_done=int(data.get("cases_done") or 0),
            message=data.get("message") if isinstance(data.get("message"), str) else None,
            cancelled_by=data.get("cancelled_by") if isinstance(data.get("cancelled_by"), str) else None,
            plots={str(k): str(v) for k, v in (data.get("plots") or {}).items()}
            if isinstance(data.get("plots"), dict)
            else {},
        )


class StudyService:
    """Runs offline studies on one plant, one at a time (module docstring); a
    :class:`api.runtime.StudyRunner`.

    Parameters
    ----------
    flowsheet
        The plant the studies run on (the live twin's).
    root
        Directory of the studies' outputs, one subdirectory per study id; created if missing.
        Studies found there (``status.json``) are listed again.
    options
        See :class:`StudyServiceOptions`.

    Every method raises :class:`~models.errors.NotFoundError` for an unknown id; ``submit``
    raises :class:`~models.errors.InputError` (a :class:`~models.errors.SpecError` naming the
    field) for a bad study and :class:`~models.errors.ConflictError` when the queue is full or
    the service is closed. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, flowsheet: Flowsheet, root: Path, *, options: StudyServiceOptions | None = None) -> None:
        self.flowsheet = flowsheet
        self.root = Path(root)
        self.options = options or StudyServiceOptions()
        self._plant_toml = _plant_toml(flowsheet)
        self._cond = threading.Condition(threading.Lock())
        self._records: dict[str, _Record] = {}
        self._queue: deque[str] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.root.mkdir(parents=True, exist_ok=True)
        self._load_existing()

    # ------------------------------------------------------------------------------ protocol
    def submit(self, study: Mapping[str, Any], *, user: str) -> Mapping[str, Any]:
        """Validate a study and queue it; its status (with ``id``).

        Parameters
        ----------
        study
            A study file as a mapping with the API's ``kind``, or ``{"kind": ..., "toml": text}``
            (module docstring).
        user
            Who submits it (kept in the status).

        Raises
        ------
        models.errors.SpecError
            The study is malformed, names unknown parameters, or has more than ``max_cases`` cases.
        models.errors.ConflictError
            ``max_queued`` studies are waiting already, or the service is closed.
        """
        data = self._study_data(study)
        spec = parse_study(data, where="submitted study")
        self._check_against_plant(spec)
        total = _count_cases(spec)
        if total is not None and total > self.options.max_cases:
            raise SpecError(
                f"{spec.study.kind}: {total} cases is more than the {self.options.max_cases} that one study "
                "submitted through the API may have; run it with `sxtwin study`",
                field=spec.study.kind,
            )
        study_text = _study_toml(spec)
        with self._cond:  # check, create and queue at once (a few small files)
            self._check_open()
            pending = len(self._queue) + sum(1 for r in self._records.values() if r.status == "running")
            if pending > self.options.max_queued:  # one runs (or is about to), the others wait
                raise ConflictError(
                    f"{pending - 1} studies are waiting already (the limit); wait for them or cancel one",
                    field="study",
                    details={"waiting": pending - 1, "max_queued": self.options.max_queued},
                )
            now = datetime.now(UTC)
            study_id = self._new_id(spec.study.name, now)
            out_dir = self.root / study_id
            out_dir.mkdir(parents=True)
            (out_dir / PLANT_FILE).write_text(self._plant_toml, encoding="utf-8")
            (out_dir / STUDY_FILE).write_text(study_text, encoding="utf-8")
            rec = _Record(
                id=study_id,
                name=spec.study.name,
                kind=spec.study.kind,
                user=user,
                out_dir=out_dir,
                submitted_at=now,
                cases_total=total,
            )
            _write_json(out_dir / STATUS_FILE, rec.to_file())
            self._records[study_id] = rec
            self._queue.append(study_id)
            self._start_thread()
            self._cond.notify_all()
            status = rec.to_status(self._position(study_id))
        log.info("study %s (%s, %s cases) submitted by %s", study_id, rec.kind, total, user)
        return status

    def status(self, study_id: str) -> Mapping[str, Any]:
        """Status of a study: ``status`` (queued, running, done, failed, cancelled), ``progress``
        (cases done / cases in the study, 0-1; None when the total is not known in advance, as in
        a stage-design search), ``cases_done``, ``cases_total``, ``submitted_at``, ``started_at``,
        ``finished_at`` (ISO 8601, UTC), ``message`` (the error of a failed study), ``user``,
        ``queue_position`` (1 = next), ``cancel_requested``, ``cancelled_by``, ``out_dir``, ``plots``
        (names for :meth:`plot`, once done)."""
        with self._cond:
            rec = self._get(study_id)
            return rec.to_status(self._position(study_id))

    def list(self) -> list[Mapping[str, Any]]:
        """Every known study's status, newest first."""
        with self._cond:
            recs = sorted(self._records.values(), key=lambda r: (r.submitted_at, r.id), reverse=True)
            return [r.to_status(self._position(r.id)) for r in recs]

    def result(self, study_id: str) -> Mapping[str, Any]:
        """The result of a finished study: counts, ``findings`` (kind-specific), ``columns`` and
        ``cases`` (one row per case: labels, purity/recovery/on_spec per product, economics,
        optimised setpoints), ``plots`` (names for :meth:`plot`), ``files`` and ``summary_md``.

        Raises
        ------
        models.errors.ConflictError
            The study is not done (queued, running, failed or cancelled).
        """
        with self._cond:
            rec = self._get(study_id)
            state, message, out_dir = rec.status, rec.message, rec.out_dir
        if state != "done":
            why = f": {message}" if message and state in ("failed", "cancelled") else ""
            raise ConflictError(
                f"study {study_id!r} has no result: it is {state}{why} (a result exists once it is done)",
                field="study_id",
                details={"status": state},
            )
        try:
            data = json.loads((out_dir / RESULT_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise NotFoundError(
                f"study {study_id!r}: its result file is missing or unreadable ({exc})", field="study_id"
            ) from None
        return {"id": study_id, "status": state, **data}

    def plot(self, study_id: str, name: str) -> tuple[bytes, str]:
        """A plot of a finished study as ``(PNG bytes, "image/png")``; ``name`` as listed in the
        result's ``plots`` (``sweep``, ``pareto``, ...; ``.png`` may be added)."""
        with self._cond:
            rec = self._get(study_id)
            state, plots, out_dir = rec.status, dict(rec.plots), rec.out_dir
        if state != "done":
            raise ConflictError(
                f"study {study_id!r} has no plots: it is {state} (plots exist once it is done)",
                field="study_id",
                details={"status": state},
            )
        key = name.removesuffix(".png")
        if key not in plots:
            raise NotFoundError(
                f"study {study_id!r} has no plot {name!r}; plots: {', '.join(sorted(plots)) or 'none'}",
                field="name",
            )
        path = out_dir / plots[key]
        try:
            return path.read_bytes(), "image/png"
        except OSError:
            raise NotFoundError(f"study {study_id!r}: plot file {plots[key]!r} is missing", field="name") from None

    def cancel(self, study_id: str, *, user: str) -> Mapping[str, Any]:
        """Cancel a study: a queued one is dropped at once; a running one stops at its next check
        between cases (its status says ``cancel_requested`` until then). Cancelling a cancelled
        study again changes nothing.

        Raises
        ------
        models.errors.ConflictError
            The study is done or failed already.
        """
        with self._cond:
            rec = self._get(study_id)
            snapshot = None
            if rec.status == "queued":
                self._queue.remove(study_id)
                rec.status = "cancelled"
                rec.finished_at = datetime.now(UTC)
                rec.cancelled_by = user
                rec.message = f"cancelled by {user} before it started"
                snapshot = rec.to_file()
            elif rec.status == "running":
                rec.stop = True
                rec.cancelled_by = user
            elif rec.status != "cancelled":
                raise ConflictError(
                    f"study {study_id!r} is {rec.status} already: nothing to cancel",
                    field="study_id",
                    details={"status": rec.status},
                )
            status = rec.to_status(self._position(study_id))
        if snapshot is not None:
            _write_json(rec.out_dir / STATUS_FILE, snapshot)
        log.info("study %s: cancel by %s (%s)", study_id, user, status["status"])
        return status

    # ------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Drop the queued studies, stop the running one and wait for the worker thread (up to
        ``join_timeout_s``); the running study's Dask cluster is closed before this returns."""
        snapshots = []
        with self._cond:
            self._closed = True
            now = datetime.now(UTC)
            for sid in self._queue:
                rec = self._records[sid]
                rec.status = "cancelled"
                rec.finished_at = now
                rec.message = "dropped: the study service stopped before it started"
                snapshots.append((rec.out_dir, rec.to_file()))
            self._queue.clear()
            for rec in self._records.values():
                if rec.status == "running":
                    rec.stop = True
            self._cond.notify_all()
            thread = self._thread
        for out_dir, snap in snapshots:
            _write_json(out_dir / STATUS_FILE, snap)
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.options.join_timeout_s)
            if thread.is_alive():
                log.warning("the running study did not stop within %.0f s", self.options.join_timeout_s)

    def __enter__(self) -> StudyService:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------ worker
    def _start_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="sxtwin-studies", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                rec = self._records[self._queue.popleft()]
                rec.status = "running"
                rec.started_at = datetime.now(UTC)
                snapshot = rec.to_file()
            try:
                _write_json(rec.out_dir / STATUS_FILE, snapshot)
                self._run(rec)
            except Exception as exc:  # the thread serves the next study whatever happened to this one
                log.exception("study %s", rec.id)
                with self._cond:
                    if rec.status == "running":
                        rec.status, rec.message = "failed", f"internal error: {type(exc).__name__}: {exc}"
                        rec.finished_at = datetime.now(UTC)

    def _run(self, rec: _Record) -> None:
        from twin.studies import StudyCancelled, StudyRunOptions, run_study_file

        def on_case(case_id: str, result: Mapping[str, Any]) -> None:
            if case_id != "base":  # the study's base state is not one of its cases
                with self._cond:
                    rec.cases_done += 1

        lock = None
        if self.options.use_model_lock:
            from twin.compute import MODEL_LOCK

            lock = MODEL_LOCK
        options = StudyRunOptions(
            out_dir=rec.out_dir,
            scheduler=self.options.scheduler,
            workers=self.options.workers,
            progress=False,
            plots=self.options.plots,
            on_case=on_case,
            should_stop=lambda: rec.stop,
            model_lock=lock,
        )
        log.info("study %s started", rec.id)
        state: StudyState
        plots: dict[str, str] = {}
        try:
            result = run_study_file(rec.out_dir / STUDY_FILE, options)
            payload = _result_payload(result)
            _write_json(rec.out_dir / RESULT_FILE, payload)
            plots = payload["plots"]
            state = "done"
            message = (
                f"{result.n_cases} cases ({result.n_failed} failed or infeasible) in {result.wall_time_s:.1f} s "
                f"on {result.workers} worker(s)"
            )
        except StudyCancelled:
            state = "cancelled"
            message = (
                f"cancelled by {rec.cancelled_by}" if rec.cancelled_by else "stopped: the study service closed"
            ) + f" after {rec.cases_done} case(s)"
        except TwinError as exc:
            state, message = "failed", exc.message
        except Exception as exc:  # a bug must not end the service's thread: the study fails, says why
            log.exception("study %s failed", rec.id)
            state, message = "failed", f"internal error: {type(exc).__name__}: {exc}"
        with self._cond:
            rec.status = state
            rec.message = message
            rec.finished_at = datetime.now(UTC)
            rec.plots = plots
            if state == "done" and rec.cases_total is None:
                rec.cases_total = rec.cases_done
            snapshot = rec.to_file()
        _write_json(rec.out_dir / STATUS_FILE, snapshot)
        log.info("study %s %s: %s", rec.id, state, message)

    # ------------------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise ConflictError("the study service is shutting down: no new studies", field="study")

    def _get(self, study_id: str) -> _Record:
        rec = self._records.get(study_id)
        if rec is None:
            raise NotFoundError(f"study {study_id!r} does not exist", field="study_id")
        return rec

    def _position(self, study_id: str) -> int | None:
        try:
            return self._queue.index(study_id) + 1
        except ValueError:
            return None

    def _new_id(self, name: str, now: datetime) -> str:
        while True:
            study_id = f"{now:%Y%m%d-%H%M%S}-{name[:_ID_NAME_CHARS]}-{secrets.token_hex(3)}"
            if study_id not in self._records and not (self.root / study_id).exists():
                return study_id

    def _load_existing(self) -> None:
        for path in sorted(self.root.glob(f"*/{STATUS_FILE}")):
            try:
                rec = _Record.from_file(json.loads(path.read_text(encoding="utf-8")), path.parent)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring %s: %s", path, exc)
                continue
            if rec.id != path.parent.name:
                log.warning("ignoring %s: its id %r is not its directory's name", path, rec.id)
                continue
            if rec.status in ("queued", "running"):
                rec.status = "failed"
                rec.message = "interrupted: the study service stopped while it was " + (
                    "running" if rec.started_at else "queued"
                )
                rec.finished_at = rec.finished_at or rec.started_at or rec.submitted_at
                _write_json(path, rec.to_file())
            self._records[rec.id] = rec

    def _study_data(self, study: Mapping[str, Any]) -> dict[str, Any]:
        """The submitted mapping as a study file's data, on the twin's plant."""
        if not isinstance(study, Mapping):
            raise bad_value("study", type(study).__name__, "a mapping (a study file's tables)", cls=SpecError)
        data = dict(study)
        for key in ("study", "toml"):  # the API's schema names them: None there means absent
            if data.get(key, 0) is None:
                del data[key]
        kind = data.pop("kind", None)
        text = data.pop("toml", None)
        if text is not None:
            if not isinstance(text, str):
                raise SpecError("toml: expected the text of a study file (a string)", field="toml")
            if data:
                first = sorted(data)[0]
                raise SpecError(f"{first}: give the study either as 'toml' text or as tables, not both", field=first)
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise SpecError(f"toml: malformed TOML: {exc}", field="toml") from None
            except RecursionError:
                raise SpecError("toml: arrays or tables nested too deeply", field="toml") from None
        table = data.get("study", {})
        if not isinstance(table, Mapping):
            raise SpecError(
                "study: expected the [study] table (name, description, action, objective, prices, chain_length)",
                field="study",
            )
        table = dict(table)
        if kind is not None:
            if "kind" in table and table["kind"] != kind:
                raise SpecError(
                    f"study.kind: {table['kind']!r} is not allowed; it must agree with kind {kind!r}",
                    field="study.kind",
                )
            table["kind"] = kind
        if "plant" in table:
            self._check_plant(table["plant"])
        table["plant"] = PLANT_FILE
        data["study"] = table
        return data

    def _check_plant(self, plant: Any) -> None:
        name = self.flowsheet.spec.plant.name
        if isinstance(plant, str) and (
            plant == name or PurePosixPath(plant).stem == name or PureWindowsPath(plant).stem == name
        ):
            return
        shown = repr(plant) if len(repr(plant)) <= 80 else repr(plant)[:77] + "..."
        raise SpecError(
            f"study.plant: {shown} is not allowed; studies run on the twin's plant {name!r} "
            "(leave study.plant out, or name that plant)",
            field="study.plant",
        )

    def _check_against_plant(self, spec: StudySpec) -> None:
        """Names that only the plant can judge, checked before anything is queued."""
        from twin.studies import _check_names

        fs = self.flowsheet
        params = set(fs.parameters.names)
        mvs = {m.name for m in fs.spec.manipulated}
        if spec.sweep is not None:
            _check_names(params, mvs, [p.name for p in spec.sweep.parameters], "sweep.parameters")
        for sc in spec.scenarios:
            _check_names(params, mvs, list(sc.set), f"scenarios.{sc.name}.set")
        if spec.capacity is not None:
            for sc in spec.capacity.scenarios:
                _check_names(params, mvs, list(sc.set), f"capacity.scenarios.{sc.name}.set")
        if spec.pareto is not None and spec.pareto.product not in {p.name for p in fs.spec.products}:
            raise SpecError(
                f"pareto.product: {spec.pareto.product!r} is not a product of the plant; products: "
                + ", ".join(p.name for p in fs.spec.products),
                field="pareto.product",
            )
        if spec.robustness is not None:
            _check_names(params, mvs, [u.parameter for u in spec.robustness.uncertain], "robustness.uncertain")
            if isinstance(spec.robustness.setpoints, dict):
                _check_names(params, mvs, list(spec.robustness.setpoints), "robustness.setpoints")
        if spec.stage_design is not None:
            circuits = [c.name for c in fs.circuits]
            if spec.stage_design.circuit not in circuits:
                raise SpecError(
                    f"stage_design.circuit: {spec.stage_design.circuit!r} is not a circuit of the plant; "
                    f"circuits: {', '.join(circuits)}",
                    field="stage_design.circuit",
                )
            _check_names(params, mvs, list(spec.stage_design.set), "stage_design.set")


# ---------------------------------------------------------------------------------- cases
def _count_cases(spec: StudySpec) -> int | None:
    """Cases of a study known before it runs (None: a stage-design search decides as it goes)."""
    kind = spec.study.kind
    if kind == "sweep" and spec.sweep is not None:
        sizes = [len(p.points()) for p in spec.sweep.parameters]
        return math.prod(sizes) if spec.sweep.mode == "grid" else sizes[0]
    if kind == "scenarios":
        return len(spec.scenarios)
    if kind == "capacity" and spec.capacity is not None:
        return max(1, len(spec.capacity.scenarios))
    if kind == "pareto" and spec.pareto is not None:
        return len(spec.pareto.purity) * max(1, len(spec.pareto.recovery))
    if kind == "robustness" and spec.robustness is not None:
        return spec.robustness.samples + (1 if spec.robustness.setpoints == "optimum" else 0)
    return None


def _result_payload(result: Any) -> dict[str, Any]:
    """JSON-ready result of a :class:`twin.studies.StudyResult`, paths relative to its directory."""
    out_dir = Path(result.out_dir)
    files = {k: _relative(v, out_dir) for k, v in result.files.items()}
    plots = {k.removeprefix("plot_"): v for k, v in files.items() if k.startswith("plot_")}
    summary_path = out_dir / "summary.md"
    table = result.table
    return _jsonable(
        {
            "name": result.name,
            "kind": result.kind,
            "n_cases": result.n_cases,
            "n_computed": result.n_computed,
            "n_reused": result.n_reused,
            "n_failed": result.n_failed,
            "wall_time_s": result.wall_time_s,
            "workers": result.workers,
            "findings": result.findings,
            "columns": [str(c) for c in table.columns],
            "cases": table.to_dict(orient="records"),
            "plots": plots,
            "files": files,
            "summary_md": summary_path.read_text(encoding="utf-8") if summary_path.is_file() else "",
        }
    )


def _relative(path: str, root: Path) -> str:
    p = Path(path)
    try:
        return str(p.relative_to(root))
    except ValueError:
        return p.name


def _jsonable(value: Any) -> Any:
    """Strict-JSON values: non-finite floats become None, numpy and paths become Python."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a file


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------- TOML
# The study and the plant are written as TOML so that the study directory reruns from the command
# line (load_spec reads TOML). No TOML writer is a dependency; this one covers what specs and
# studies hold: tables, arrays of tables, strings, numbers, booleans, arrays, nested mappings
# (inline tables). None means "absent" and is left out.
_BARE_KEY: Final = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # a JSON string is a TOML basic string, except that TOML also wants DEL escaped
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        items = [f"{_toml_key(str(k))} = {_toml_value(v, f'{where}.{k}')}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    raise InputError(f"{where}: {value!r} has no TOML form", field=where)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _toml_table(body: Mapping[str, Any], where: str) -> list[str]:
    return [f"{_toml_key(str(k))} = {_toml_value(v, f'{where}.{k}')}" for k, v in body.items() if v is not None]


def _to_toml(data: Mapping[str, Any]) -> str:
    """TOML text of a mapping (top-level tables and arrays of tables as such, deeper ones inline)."""
    lines: list[str] = []
    simple = {k: v for k, v in data.items() if not isinstance(v, Mapping) and not _is_table_array(v)}
    lines += _toml_table(simple, "")
    for k, v in data.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{_toml_key(str(k))}]", *_toml_table(v, str(k))]
        elif _is_table_array(v):
            for i, item in enumerate(v):
                lines += ["", f"[[{_toml_key(str(k))}]]", *_toml_table(item, f"{k}[{i}]")]
    return "\n".join(lines).lstrip("\n") + "\n"


def _plant_toml(fs: Flowsheet) -> str:
    """The flowsheet's plant spec as TOML, checked to read back as the same spec."""
    text = _to_toml(json.loads(fs.spec.model_dump_json()))
    if parse_spec(tomllib.loads(text), where=PLANT_FILE) != fs.spec:
        raise SpecError(
            f"the plant spec {fs.spec.plant.name!r} does not read back from TOML unchanged; "
            "studies cannot run on it through the API",
            field="plant",
        )
    return text


def _study_toml(spec: StudySpec) -> str:
    header = (
        f"# Submitted through the control-room API; the plant is {PLANT_FILE} (the twin's).\n"
        f"# Rerun: sxtwin study {STUDY_FILE} --out . (in this directory; saved cases are reused)\n\n"
    )
    return header + _to_toml(spec.model_dump(mode="json", exclude_unset=True))
