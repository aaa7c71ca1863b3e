"""The one exception tree of sxtwin.

Every error that sxtwin raises on purpose derives from :class:`TwinError`. The tree::

    TwinError
    ├── InputError                 bad input from a user, a file or a client (CLI exit 2, HTTP 422)
    │   ├── SpecError              a plant spec or study file that is malformed or inconsistent
    │   ├── UnknownElementError    an element symbol that is not one of the supported elements
    │   ├── ParameterError         a chemistry system or element without parameters in that system
    │   └── DataFileError          a malformed data file (CSV, TOML) or a value without provenance
    ├── ComputationError           a computation that ran but did not succeed (CLI exit 1)
    │   ├── ConvergenceError       a solver did not converge
    │   └── InfeasibleError        the requested specification cannot be met
    ├── IngestionError             plant data that cannot be used (stale, Bad quality, NaN)
    ├── AuthorisationError         the caller is not allowed to do this (HTTP 401/403)
    ├── ConflictError              the request clashes with the current state (HTTP 409)
    └── NotFoundError              a named resource does not exist (HTTP 404)

The mapping to CLI exit codes lives in ``sxtwin.cli``, to HTTP status codes in ``api.errors`` and
to OPC UA status codes in ``opcua.status``; each in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "AuthorisationError",
    "ComputationError",
    "ConflictError",
    "ConvergenceError",
    "DataFileError",
    "InfeasibleError",
    "IngestionError",
    "InputError",
    "NotFoundError",
    "ParameterError",
    "SpecError",
    "TwinError",
    "UnknownElementError",
    "bad_value",
]


class TwinError(Exception):
    """Base of every error sxtwin raises on purpose.

    Parameters
    ----------
    message
        A sentence for a person: what is wrong and, for bad input, what is allowed.
    field
        The dotted name of the offending field (``circuits[0].sections.scrub``), if any.
    details
        Extra machine-readable context (JSON-serialisable).
    """

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``error`` (class name), ``message``, ``field``, ``details``."""
        out: dict[str, Any] = {"error": type(self).__name__, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.details is not None:
            out["details"] = self.details
        return out


class InputError(TwinError):
    """Bad input: the message names the field, the bad value and what is allowed."""


class SpecError(InputError):
    """A plant spec or study file that is malformed or inconsistent."""


class UnknownElementError(InputError):
    """An element symbol that sxtwin does not know."""


class ParameterError(InputError):
    """A chemistry system, or an element, without parameters."""


class DataFileError(InputError):
    """A malformed data file, or a value in it without source and class."""


class ComputationError(TwinError):
    """A computation that ran to its end without success."""


class ConvergenceError(ComputationError):
    """A solver did not converge; ``details`` carries status, iterations and residual norms."""


class InfeasibleError(ComputationError):
    """A specification that cannot be met; ``details`` says how close the best point gets."""


class IngestionError(TwinError):
    """Plant data that must not be used: stale, Bad or Uncertain quality, NaN, out of range."""


class AuthorisationError(TwinError):
    """The caller is not authenticated, or its role does not allow the action."""


class ConflictError(TwinError):
    """The request clashes with the current state (for example approving a decided proposal)."""


class NotFoundError(TwinError):
    """A named resource does not exist."""


def bad_value(
    field: str,
    value: Any,
    allowed: str | Iterable[Any],
    *,
    cls: type[InputError] = InputError,
) -> InputError:
    """Build an :class:`InputError` whose message names the field, the value and what is allowed.

    ``allowed`` is either a phrase (``"a number > 0"``) or an iterable of allowed values.
    """
    if isinstance(allowed, str):
        allowed_text = allowed
    else:
        items = [str(a) for a in allowed]
        allowed_text = "one of " + ", ".join(items)
    return cls(f"{field}: {value!r} is not allowed; expected {allowed_text}", field=field)
