"""Stopping background tasks for certain.

Python 3.11's :func:`asyncio.wait_for` swallows a cancellation that arrives just as the awaited
operation completes (CPython issues 86296 and 87555, fixed in 3.12): the cancelled loop runs on,
and whoever awaits it waits forever. A full test run hung that way once in several, the twin's
plant watchdog (a ``wait_for`` every second) cancelled by the twin's shutdown. So the twin bounds
its awaits with :func:`asyncio.timeout`, which counts cancellations, and stops its tasks with
:func:`stop_tasks`, which cancels again until each task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["stop_tasks"]

log = logging.getLogger(__name__)


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, patience_s: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again a task still running
    after ``patience_s`` seconds. What they raised while ending is not re-raised (they are being
    stopped), but it is retrieved, so asyncio does not report it as never retrieved."""
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    for t in pending:
        while not t.done():
            await asyncio.wait({t}, timeout=patience_s)
            if not t.done():
                log.warning("task %s ignored a cancellation; cancelling it again", t.get_name())
                t.cancel()
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()
