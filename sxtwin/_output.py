"""CLI output conventions, in one place (see docs/cli.md).

- With ``--json`` stdout holds exactly one JSON object and nothing else; logs go to stderr.
- Fractions (purity, recovery) are 0-1, never percent.
- Exit code 0 = success, 1 = the computation failed or is infeasible (the JSON says why),
  2 = bad input (the message names the field).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import numpy as np
import typer

from models.errors import ComputationError, InputError, TwinError

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "emit", "fail", "handle_errors", "jsonable"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

log = logging.getLogger("sxtwin")


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, NaN/inf to strict-JSON-friendly values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    return obj


def emit(payload: dict[str, Any], as_json: bool, human: Callable[[], None] | None = None) -> None:
    """Write the result: one JSON object with ``--json``, else the human rendering."""
    if as_json:
        sys.stdout.write(json.dumps(jsonable(payload), allow_nan=False) + "\n")
        sys.stdout.flush()
    elif human is not None:
        human()
    else:
        sys.stdout.write(json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n")


def fail(error: TwinError, as_json: bool) -> NoReturn:
    """Report ``error`` (JSON on stdout with ``--json``, else a line on stderr) and exit."""
    code = EXIT_BAD_INPUT if isinstance(error, InputError) else EXIT_FAILED
    if as_json:
        payload = {"status": "bad_input" if code == EXIT_BAD_INPUT else "failed", **error.to_dict()}
        sys.stdout.write(json.dumps(jsonable(payload), allow_nan=False) + "\n")
    else:
        typer.echo(f"error: {error.message}", err=True)
    raise typer.Exit(code)


@contextmanager
def handle_errors(as_json: bool) -> Iterator[None]:
    """Turn sxtwin errors into the documented exit codes; no traceback reaches the user."""
    try:
        yield
    except typer.Exit:
        raise
    except TwinError as exc:
        fail(exc, as_json)
    except (OSError, ValueError) as exc:
        fail(InputError(str(exc)), as_json)
    except ComputationError as exc:  # pragma: no cover - covered by TwinError
        fail(exc, as_json)
    except Exception as exc:  # last resort: a bug; say so without a traceback
        log.debug("unexpected error", exc_info=True)
        fail(ComputationError(f"internal error: {type(exc).__name__}: {exc}"), as_json)
