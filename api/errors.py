"""The one place where errors become HTTP responses: problem details (RFC 9457).

Every error response of the API is ``application/problem+json``::

    {"type": "urn:sxtwin:problem:input-error", "title": "Bad input", "status": 422,
     "detail": "limit: 0 is not allowed; expected an integer from 1 to 10000",
     "instance": "/api/history/samples", "field": "limit", "error": "InputError"}

Mapping of :mod:`models.errors` (the one exception tree):

==========================  ======  =======================================================
error                       status  why
==========================  ======  =======================================================
``InputError`` (and below)  422     the request is well formed but a value is not allowed
``AuthorisationError``      401     not authenticated (``details["authenticated"]`` false),
                            403     else: the role lacks the permission
``NotFoundError``           404     a named resource does not exist
``ConflictError``           409     the request clashes with the current state
``ComputationError``        422     the computation the request asked for ran and failed
                                    (a what-if whose integration fails, an infeasible study):
                                    the answer is about the request, not a server fault
``IngestionError``          503     plant data the twin must not use: retry later
any other ``TwinError``     500     a fault of the server, said so
request validation          422     names the field, the bad value and the allowed range
HTTP errors (404, 405...)   as is
anything else               500     ``internal error``, logged with its traceback
==========================  ======  =======================================================

No input a client can send produces a 500: routes validate with the schemas and the twin's own
checks raise :class:`~models.errors.InputError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import (
    AuthorisationError,
    ComputationError,
    ConflictError,
    IngestionError,
    InputError,
    NotFoundError,
    TwinError,
)

__all__ = ["PROBLEM_JSON", "install_error_handlers", "problem_response", "status_for"]

log = logging.getLogger(__name__)

PROBLEM_JSON: Final = "application/problem+json"

_TITLES: Final[Mapping[int, str]] = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Bad input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def status_for(exc: TwinError) -> int:
    """The HTTP status code of an sxtwin error (see the module docstring)."""
    if isinstance(exc, InputError):
        return 422
    if isinstance(exc, AuthorisationError):
        details = exc.details if isinstance(exc.details, Mapping) else {}
        return 401 if not details.get("authenticated", False) else 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, ComputationError):
        return 422
    if isinstance(exc, IngestionError):
        return 503
    return 500


def _kind(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("-")
        out.append(ch.lower())
    return "".join(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def problem_response(
    status: int,
    detail: str,
    *,
    kind: str,
    instance: str | None = None,
    field: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem-details response (``type``, ``title``, ``status``, ``detail``, ``instance``,
    ``field`` and any ``extra`` members)."""
    body: dict[str, Any] = {
        "type": f"urn:sxtwin:problem:{kind}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if field is not None:
        body["field"] = field
    if extra:
        body.update(_jsonable(extra))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _twin_error(request: Request, exc: TwinError) -> JSONResponse:
    status = status_for(exc)
    extra: dict[str, Any] = {"error": type(exc).__name__}
    if exc.details is not None:
        extra["details"] = exc.details
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc.message)
    return problem_response(
        status,
        exc.message,
        kind=_kind(type(exc).__name__),
        instance=request.url.path,
        field=exc.field,
        extra=extra,
        headers=headers,
    )


def _constraint_text(ctx: Mapping[str, Any]) -> str:
    parts = []
    for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            parts.append(f"{word} {ctx[key]}")
    if "min_length" in ctx:
        parts.append(f"at least {ctx['min_length']} items/characters")
    if "max_length" in ctx:
        parts.append(f"at most {ctx['max_length']} items/characters")
    if "expected" in ctx:
        parts.append(f"one of {ctx['expected']}")
    if "pattern" in ctx:
        parts.append(f"matching {ctx['pattern']}")
    return " and ".join(parts)


def _field_name(loc: Sequence[Any]) -> str:
    # ("query", "limit") -> "limit"; ("body", "moves", 0, "value") -> "moves[0].value"
    parts = [p for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or ".".join(str(p) for p in loc) or "request"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        name = _field_name(loc)
        ctx = err.get("ctx") or {}
        allowed = _constraint_text(ctx) if isinstance(ctx, Mapping) else ""
        message = f"{name}: {err.get('msg', 'invalid')}"
        if "input" in err and err.get("type") != "missing":
            message = f"{name}: {_shown(err['input'])} is not allowed; {err.get('msg', 'invalid')}"
        errors.append(
            {
                "field": name,
                "location": str(loc[0]) if loc else None,
                "message": message,
                "allowed": allowed or None,
                "type": err.get("type"),
            }
        )
    first = errors[0] if errors else {"field": None, "message": "invalid request"}
    detail = str(first["message"]) + (f" ({len(errors) - 1} more)" if len(errors) > 1 else "")
    return problem_response(
        422,
        detail,
        kind="validation-error",
        instance=request.url.path,
        field=first["field"],
        extra={"error": "RequestValidationError", "errors": errors},
    )


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"{request.url.path} does not exist"
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(
        exc.status_code,
        detail,
        kind=f"http-{exc.status_code}",
        instance=request.url.path,
        headers=getattr(exc, "headers", None),
    )


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return problem_response(
        500,
        f"internal error: {type(exc).__name__}",
        kind="internal-error",
        instance=request.url.path,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the one error mapping on ``app``."""

    async def twin_handler(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TwinError)
        return _twin_error(request, exc)

    async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_error(request, exc)

    async def http_handler(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _http_error(request, exc)

    async def unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
        return _unexpected(request, exc)

    app.add_exception_handler(TwinError, twin_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_handler)
    app.add_exception_handler(Exception, unexpected_handler)
