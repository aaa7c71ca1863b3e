"""Typed records that go into and come out of the historian (:mod:`twin.historian`).

Every record is a frozen, keyword-only dataclass validated at construction: a bad field raises
:class:`models.errors.InputError` naming it. Times are timezone-aware ``datetime`` (converted to
UTC); a naive ``datetime`` is refused, since the historian cannot guess its zone. Records read
back from the historian carry their ``id``; records to be written have none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from importlib import metadata
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from models.errors import InputError, bad_value

__all__ = [
    "Aggregate",
    "AuditEntry",
    "Decision",
    "EstimateSnapshot",
    "Event",
    "EventKind",
    "HistoryPoint",
    "Mode",
    "ModeChange",
    "NewEvent",
    "NewProposal",
    "Page",
    "Proposal",
    "ProposalStatus",
    "Quality",
    "RetentionResult",
    "Sample",
    "Severity",
    "Verdict",
    "WriteIntent",
    "WriteOutcome",
    "WriteRecord",
    "code_version",
    "from_us",
    "to_us",
    "utc_now",
]

T = TypeVar("T")

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_MAX_NAME: Final = 200


# --------------------------------------------------------------------------- time and checks


def utc_now() -> datetime:
    """The current UTC wall time, timezone-aware (the historian's default clock)."""
    return datetime.now(UTC)


def to_us(value: datetime, field: str = "time") -> int:
    """A timezone-aware ``datetime`` as integer microseconds since the Unix epoch (UTC)."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise bad_value(field, value, "a timezone-aware datetime (for example in UTC)")
    return (value - EPOCH) // _ONE_US


def from_us(value: int) -> datetime:
    """Integer microseconds since the Unix epoch to a UTC ``datetime``."""
    return EPOCH + timedelta(microseconds=int(value))


def _utc(value: datetime, field: str) -> datetime:
    return from_us(to_us(value, field))


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_NAME:
        raise bad_value(field, value, f"a non-empty string of at most {_MAX_NAME} characters")
    return value


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise bad_value(field, value, "a finite number")
    out = float(value)
    if not math.isfinite(out):
        raise bad_value(field, value, "a finite number")
    return out


def _optional_finite(value: Any, field: str) -> float | None:
    return None if value is None else _finite(value, field)


def _float_map(value: Any, field: str) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise bad_value(field, value, "a mapping of names to numbers")
    out = {_name(k, f"{field} key"): _finite(v, f"{field}[{k!r}]") for k, v in value.items()}
    return MappingProxyType(out)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def code_version() -> str:
    """The installed sxtwin version (the default ``code_version`` of a proposal)."""
    try:
        return metadata.version("sxtwin")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


# --------------------------------------------------------------------------- enumerations


class Quality(StrEnum):
    """Quality of a measurement (the class of its OPC UA status code)."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Aggregate(StrEnum):
    """How the values in one history interval are combined (Good-quality values only)."""

    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    LAST = "last"


class ProposalStatus(StrEnum):
    """Life of a setpoint proposal.

    ``pending`` → ``approved`` | ``rejected`` (a decision) | ``superseded`` | ``expired``, and
    in closed-loop mode → ``applied`` | ``failed``; ``approved`` → ``applied`` | ``failed`` |
    ``superseded`` | ``expired``. The others are final.
    """

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    APPLIED = "applied"
    FAILED = "failed"


class Verdict(StrEnum):
    """An operator's decision on a proposal."""

    APPROVE = "approve"
    REJECT = "reject"


class Mode(StrEnum):
    """Operating mode of the twin. Advisory is the default."""

    ADVISORY = "advisory"
    CLOSED_LOOP = "closed_loop"


class WriteOutcome(StrEnum):
    """Outcome of a setpoint write; ``pending`` between intent and outcome."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class EventKind(StrEnum):
    """An event is information; an alarm asks an operator to act and acknowledge."""

    EVENT = "event"
    ALARM = "alarm"


class Severity(StrEnum):
    """Severity, ordered as listed (ISA-18.2-like priorities, with ``info`` for events)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for ``info`` up to 4 for ``critical``."""
        return list(Severity).index(self)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a query: the items and the cursor of the next page (``None``: last page)."""

    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, kw_only=True)
class Sample:
    """A measurement: value + quality + source timestamp (and plant time, when known).

    Attributes
    ----------
    tag
        Instrument tag, for example ``FIC-301.PV``.
    value
        The value in internal units (see :mod:`models.units`); ``None`` (or NaN, stored as
        ``None``) when there is no usable value.
    quality
        Good, Uncertain or Bad.
    source_time
        Timestamp from the source (timezone-aware; stored as UTC).
    plant_time_h
        The simulated plant's clock in hours, if the source gives it.
    """

    tag: str
    value: float | None
    quality: Quality
    source_time: datetime
    plant_time_h: float | None = None

    def __post_init__(self) -> None:
        _name(self.tag, "tag")
        value = self.value
        if value is not None:
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, (int, float, np.floating, np.integer)):
                raise bad_value("value", value, "a number or None")
            value = float(value)
            if math.isnan(value):
                value = None
            elif math.isinf(value):
                raise bad_value("value", value, "a finite number, NaN or None")
        _set(self, "value", value)
        _set(self, "quality", _enum(Quality, self.quality, "quality"))
        _set(self, "source_time", _utc(self.source_time, "source_time"))
        _set(self, "plant_time_h", _optional_finite(self.plant_time_h, "plant_time_h"))


def _enum(cls: type[Any], value: Any, field: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise bad_value(field, value, [m.value for m in cls]) from None


def _labels(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise bad_value(field, value, "a sequence of names")
    out = tuple(_name(v, f"{field}[{i}]") for i, v in enumerate(value))
    if not out or len(set(out)) != len(out):
        raise bad_value(field, value, "a non-empty sequence of distinct names")
    return out


@dataclass(frozen=True, kw_only=True, eq=False)
class EstimateSnapshot:
    """The estimate of one quantity over the stages and elements of one circuit at one time.

    Attributes
    ----------
    circuit
        Circuit name as in the plant spec.
    quantity
        What is estimated, with its unit in the name (``c_aq_mol_per_l``, ``c_org_mol_per_l``).
    stages, elements
        Row and column labels of ``mean`` and ``std`` (for example ``("E1", ..., "S8")`` and
        ``("Tb", "Dy")``).
    mean, std
        Estimate and its standard uncertainty, shape ``(len(stages), len(elements))``, finite,
        ``std >= 0``. Stored as read-only float64 arrays.
    time
        When the estimate applies (timezone-aware).
    plant_time_h
        The plant clock in hours, when known.
    id
        Set on snapshots read from the historian.
    """

    circuit: str
    quantity: str
    stages: tuple[str, ...]
    elements: tuple[str, ...]
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    time: datetime
    plant_time_h: float | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        _name(self.circuit, "circuit")
        _name(self.quantity, "quantity")
        _set(self, "stages", _labels(self.stages, "stages"))
        _set(self, "elements", _labels(self.elements, "elements"))
        shape = (len(self.stages), len(self.elements))
        for name in ("mean", "std"):
            try:
                arr = np.array(getattr(self, name), dtype=np.float64)
            except (TypeError, ValueError):
                kind = type(getattr(self, name)).__name__
                raise bad_value(name, kind, "an array of numbers") from None
            if arr.shape != shape:
                raise bad_value(name, f"shape {arr.shape}", f"shape {shape} (stages × elements)")
            if not np.all(np.isfinite(arr)):
                raise bad_value(name, "non-finite values", "finite numbers")
            arr.setflags(write=False)
            _set(self, name, arr)
        if np.any(self.std < 0):
            raise bad_value("std", "negative values", "standard uncertainties >= 0")
        _set(self, "time", _utc(self.time, "time"))
        _set(self, "plant_time_h", _optional_finite(self.plant_time_h, "plant_time_h"))

    def value(self, stage: str, element: str) -> tuple[float, float]:
        """``(mean, std)`` at one stage and element.

        Raises
        ------
        models.errors.InputError
            Unknown stage or element.
        """
        if stage not in self.stages:
            raise bad_value("stage", stage, self.stages)
        if element not in self.elements:
            raise bad_value("element", element, self.elements)
        i, j = self.stages.index(stage), self.elements.index(element)
        return float(self.mean[i, j]), float(self.std[i, j])


@dataclass(frozen=True, kw_only=True)
class HistoryPoint:
    """One interval of a history query.

    Attributes
    ----------
    start
        Start of the interval (``query start + k * interval``); for a query without an interval,
        the time of the one value.
    value
        The aggregate of the values in the interval.
    count
        How many values were combined.
    std
        For estimates: the uncertainty of the chosen snapshot (``last``/``min``/``max``) or the
        mean uncertainty (``mean``); ``None`` for samples.
    """

    start: datetime
    value: float
    count: int
    std: float | None = None


@dataclass(frozen=True, kw_only=True)
class NewProposal:
    """A setpoint proposal as the optimisation cycle makes it.

    Attributes
    ----------
    setpoints
        Proposed setpoint per tag, internal units (``{"FIC-301.SP": 120.0}``).
    predicted_effect
        Predicted effect per named quantity with unit in the name
        (``{"Dy2O3_purity": 0.996, "hcl_cost_usd_per_h": 41.0}``).
    active_constraints
        Names of the constraints active at the optimum.
    reason
        Why, in a sentence for the operator.
    spec_version, parameter_set_version
        Versions (hashes or names) of the plant spec and the parameter set used.
    code_version
        sxtwin version (default: the installed one).
    circuit
        The circuit concerned, or ``None`` for the whole flowsheet.
    current_setpoints
        Setpoints in force when proposed, per tag, if known.
    """

    setpoints: Mapping[str, float]
    predicted_effect: Mapping[str, float]
    active_constraints: tuple[str, ...]
    reason: str
    spec_version: str
    parameter_set_version: str
    code_version: str = field(default_factory=code_version)
    circuit: str | None = None
    current_setpoints: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        _set(self, "setpoints", _float_map(self.setpoints, "setpoints"))
        if not self.setpoints:
            raise bad_value("setpoints", {}, "at least one tag and value")
        _set(self, "predicted_effect", _float_map(self.predicted_effect, "predicted_effect"))
        if isinstance(self.active_constraints, str):
            raise bad_value("active_constraints", self.active_constraints, "a sequence of names")
        _set(
            self,
            "active_constraints",
            tuple(
                _name(c, f"active_constraints[{i}]") for i, c in enumerate(self.active_constraints)
            ),
        )
        if not isinstance(self.reason, str):
            raise bad_value("reason", self.reason, "a string")
        for name in ("spec_version", "parameter_set_version", "code_version"):
            _name(getattr(self, name), name)
        if self.circuit is not None:
            _name(self.circuit, "circuit")
        if self.current_setpoints is not None:
            _set(
                self,
                "current_setpoints",
                _float_map(self.current_setpoints, "current_setpoints"),
            )


@dataclass(frozen=True, kw_only=True)
class Proposal(NewProposal):
    """A proposal as recorded: :class:`NewProposal` plus id, status, who and when."""

    id: int
    status: ProposalStatus
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class Decision:
    """An operator's approval or rejection of a proposal."""

    id: int
    proposal_id: int
    verdict: Verdict
    decided_by: str
    comment: str
    time: datetime


@dataclass(frozen=True, kw_only=True)
class WriteIntent:
    """A setpoint write about to be made, recorded before the write.

    Attributes
    ----------
    tag, value
        The setpoint tag and the value to write (internal units).
    requested_by
        Who asks for the write: a user, or ``twin`` in closed-loop mode.
    mode
        Mode in force.
    proposal_id
        The proposal being applied, if any.
    approved_by
        Who approved; looked up from the proposal's decision when omitted.
    previous_value
        The setpoint before the write, if known.
    """

    tag: str
    value: float
    requested_by: str
    mode: Mode
    proposal_id: int | None = None
    approved_by: str | None = None
    previous_value: float | None = None

    def __post_init__(self) -> None:
        _name(self.tag, "tag")
        _set(self, "value", _finite(self.value, "value"))
        _name(self.requested_by, "requested_by")
        _set(self, "mode", _enum(Mode, self.mode, "mode"))
        if self.approved_by is not None:
            _name(self.approved_by, "approved_by")
        _set(self, "previous_value", _optional_finite(self.previous_value, "previous_value"))


@dataclass(frozen=True, kw_only=True)
class WriteRecord(WriteIntent):
    """A recorded write: the intent plus id, times, outcome and message."""

    id: int
    intent_at: datetime
    outcome: WriteOutcome
    outcome_at: datetime | None
    message: str


@dataclass(frozen=True, kw_only=True)
class ModeChange:
    """A switch between advisory and closed-loop mode."""

    id: int
    mode: Mode
    changed_by: str
    reason: str
    time: datetime


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An event or alarm to record.

    Attributes
    ----------
    kind
        Event or alarm.
    severity
        From ``info`` to ``critical``.
    source
        What raised it: a tag, a component (``estimator``, ``safety_gate``).
    message
        A sentence for the operator.
    time
        When it happened (default: now).
    plant_time_h
        Plant clock in hours, when known.
    """

    kind: EventKind
    severity: Severity
    source: str
    message: str
    time: datetime | None = None
    plant_time_h: float | None = None

    def __post_init__(self) -> None:
        _set(self, "kind", _enum(EventKind, self.kind, "kind"))
        _set(self, "severity", _enum(Severity, self.severity, "severity"))
        _name(self.source, "source")
        if not isinstance(self.message, str) or not self.message.strip():
            raise bad_value("message", self.message, "a non-empty string")
        if self.time is not None:
            _set(self, "time", _utc(self.time, "time"))
        _set(self, "plant_time_h", _optional_finite(self.plant_time_h, "plant_time_h"))


@dataclass(frozen=True, kw_only=True)
class Event:
    """A recorded event or alarm, with its acknowledgement."""

    id: int
    kind: EventKind
    severity: Severity
    source: str
    message: str
    time: datetime
    plant_time_h: float | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_comment: str | None

    @property
    def acknowledged(self) -> bool:
        """Whether someone has acknowledged it."""
        return self.acknowledged_at is not None


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """One line of the audit log: who did what, when, with details."""

    id: int
    time: datetime
    user: str
    action: str
    target: str | None
    details: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class RetentionResult:
    """What :meth:`twin.historian.Historian.apply_retention` deleted."""

    samples_deleted: int
    estimates_deleted: int
    samples_cutoff: datetime
    estimates_cutoff: datetime | None


def check_name(value: Any, field: str) -> str:
    """A non-empty name of at most 200 characters, else :class:`InputError` naming ``field``."""
    return _name(value, field)


def check_positive_int(value: Any, field: str, maximum: int) -> int:
    """An ``int`` in ``1..maximum``, else :class:`InputError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise bad_value(field, value, f"an integer from 1 to {maximum}")
    return value


def check_interval(value: Any, field: str = "interval") -> int:
    """A positive ``timedelta`` in whole microseconds, as microseconds."""
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise bad_value(field, value, "a positive timedelta")
    return value // _ONE_US


def check_range(start: datetime, end: datetime) -> tuple[int, int]:
    """``(start_us, end_us)`` of a half-open range ``[start, end)``; ``start < end``."""
    start_us, end_us = to_us(start, "start"), to_us(end, "end")
    if end_us <= start_us:
        raise InputError(f"end: {end} is not after start {start}", field="end")
    return start_us, end_us
