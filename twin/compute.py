"""One place where model computations run: a worker thread, one at a time.

CasADi functions and integrators are not safe to build or evaluate from several threads at
once, so every model computation of the twin (estimator steps, optimisation, what-if runs, the
in-process simulated plant) goes through :func:`run_model`: off the event loop, serialised by one
process-wide lock. The event loop itself never blocks on a solve.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["MODEL_LOCK", "run_model"]

P = ParamSpec("P")
T = TypeVar("T")

MODEL_LOCK = threading.Lock()
"""Held while a model computation runs (process-wide)."""


async def run_model(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` in a worker thread under :data:`MODEL_LOCK` and await its result."""
    def call() -> T:
        with MODEL_LOCK:
            return fn(*args, **kwargs)

    return await asyncio.to_thread(call)
