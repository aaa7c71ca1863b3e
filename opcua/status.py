"""The one mapping between sxtwin errors and OPC UA status codes (both directions).

Server side, :func:`status_for` turns the error a refused request raised into the status code the
client gets; client side, :func:`error_for` turns a Bad status back into the sxtwin error. The
setpoint refusals have their own leaves of the tree (:mod:`models.errors` documents the tree;
these four extend it for the OPC UA edge)::

    InputError
    ├── SetpointRangeError     outside EURange / the manipulated bounds   BadOutOfRange
    ├── SetpointTypeError      a value that is not a number (or string)   BadTypeMismatch
    └── NotWritableError       a node that is not a setpoint              BadNotWritable
    ConflictError
    └── SetpointRateError      faster than the rate-of-change limit       BadRequestNotAllowed

=============================  =========================================================
sxtwin error                   OPC UA status
=============================  =========================================================
``AuthorisationError``         ``BadUserAccessDenied``
``SetpointRangeError``         ``BadOutOfRange``
``SetpointRateError``          ``BadRequestNotAllowed`` (the move is in range but too fast)
``SetpointTypeError``          ``BadTypeMismatch``
``NotWritableError``           ``BadNotWritable``
``NotFoundError``              ``BadNodeIdUnknown``
``ConflictError`` (other)      ``BadInvalidState``
``InputError`` (other)         ``BadInvalidArgument``
``IngestionError``             ``BadDataUnavailable``
``ComputationError``           ``BadInternalError``
anything else                  ``BadUnexpectedError``
=============================  =========================================================

Measurement quality (the status of a published value) is built here too: :data:`GOOD`,
:func:`below_detection_limit` (Uncertain, low limit), :data:`OUT_OF_SERVICE` (analyser outage),
:data:`LAST_USABLE` (the value is older than it should be) and :data:`WAITING` (no value yet).
"""

from __future__ import annotations

from typing import Final

from asyncua import ua

from models.errors import (
    AuthorisationError,
    ComputationError,
    ConflictError,
    IngestionError,
    InputError,
    NotFoundError,
    TwinError,
)
from opcua import _ua
from twin.historian_records import Quality

__all__ = [
    "GOOD",
    "LAST_USABLE",
    "LIMIT_HIGH",
    "LIMIT_LOW",
    "OUT_OF_SERVICE",
    "WAITING",
    "NotWritableError",
    "SetpointRangeError",
    "SetpointRateError",
    "SetpointTypeError",
    "above_range",
    "below_detection_limit",
    "error_for",
    "quality_of",
    "status_for",
]

LIMIT_LOW: Final = 0x100
"""OPC UA limit bits (Part 4, 7.34.2): the value is at the low limit of what the source gives."""
LIMIT_HIGH: Final = 0x200
"""The value is at the high limit of what the source gives."""

GOOD: Final = _ua.status(ua.StatusCodes.Good)
OUT_OF_SERVICE: Final = _ua.status(ua.StatusCodes.BadOutOfService)
"""An instrument out of service (analyser outage): the value must not be used."""
LAST_USABLE: Final = _ua.status(ua.StatusCodes.UncertainLastUsableValue)
"""After an outage, until the first fresh sample arrives: the value is an old one."""
WAITING: Final = _ua.status(ua.StatusCodes.BadWaitingForInitialData)
"""The plant is starting (steady solve) and has no value yet."""


class SetpointRangeError(InputError):
    """A setpoint outside its EURange (the manipulated variable's bounds)."""


class SetpointRateError(ConflictError):
    """A setpoint move faster than the variable's rate-of-change limit."""


class SetpointTypeError(InputError):
    """A written value of a type the setpoint cannot take (a string for a number...)."""


class NotWritableError(InputError):
    """A write to a node (or attribute) that is not writable: only SP and MODE are."""


def below_detection_limit() -> ua.StatusCode:
    """Uncertain with the low-limit bit: the analyser reads below its detection limit and the
    published value is the limit itself (a censored value)."""
    return _ua.status(ua.StatusCodes.UncertainSensorNotAccurate | LIMIT_LOW)


def above_range() -> ua.StatusCode:
    """Uncertain, EU range exceeded, high limit: the true value is above the instrument range
    and the published value is the range maximum."""
    return _ua.status(ua.StatusCodes.UncertainEngineeringUnitsExceeded | LIMIT_HIGH)


_SERVER_MAP: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (AuthorisationError, ua.StatusCodes.BadUserAccessDenied),
    (SetpointRangeError, ua.StatusCodes.BadOutOfRange),
    (SetpointRateError, ua.StatusCodes.BadRequestNotAllowed),
    (SetpointTypeError, ua.StatusCodes.BadTypeMismatch),
    (NotWritableError, ua.StatusCodes.BadNotWritable),
    (NotFoundError, ua.StatusCodes.BadNodeIdUnknown),
    (ConflictError, ua.StatusCodes.BadInvalidState),
    (InputError, ua.StatusCodes.BadInvalidArgument),
    (IngestionError, ua.StatusCodes.BadDataUnavailable),
    (ComputationError, ua.StatusCodes.BadInternalError),
)


def status_for(exc: BaseException) -> ua.StatusCode:
    """The OPC UA status code for an error raised while serving a request (first match in the
    table of the module docstring, most specific first)."""
    for cls, code in _SERVER_MAP:
        if isinstance(exc, cls):
            return _ua.status(code)
    return _ua.status(ua.StatusCodes.BadUnexpectedError)


_CLIENT_MAP: Final[dict[int, type[TwinError]]] = {
    ua.StatusCodes.BadUserAccessDenied: AuthorisationError,
    ua.StatusCodes.BadIdentityTokenRejected: AuthorisationError,
    ua.StatusCodes.BadIdentityTokenInvalid: AuthorisationError,
    ua.StatusCodes.BadCertificateUntrusted: AuthorisationError,
    ua.StatusCodes.BadOutOfRange: SetpointRangeError,
    ua.StatusCodes.BadRequestNotAllowed: SetpointRateError,
    ua.StatusCodes.BadTypeMismatch: SetpointTypeError,
    ua.StatusCodes.BadNotWritable: NotWritableError,
    ua.StatusCodes.BadNodeIdUnknown: NotFoundError,
    ua.StatusCodes.BadInvalidState: ConflictError,
    ua.StatusCodes.BadInvalidArgument: InputError,
}


def error_for(status: ua.StatusCode | int, *, what: str) -> TwinError:
    """The sxtwin error for a Bad status a server returned (client side), naming ``what``."""
    code = status.value if isinstance(status, ua.StatusCode) else int(status)
    name = _ua.status(code).name
    cls = _CLIENT_MAP.get(code & 0xFFFF0000)
    if cls is None:
        cls = IngestionError if code & 0x80000000 else TwinError
    return cls(f"{what}: the server answered {name}", field=what, details={"status": name, "code": code})


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Good, Uncertain or Bad, from the severity bits of a status code (``None`` is Good)."""
    if status is None or status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD
