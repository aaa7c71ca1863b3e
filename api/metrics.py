"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

Request metrics are collected by :class:`MetricsMiddleware` (a plain ASGI middleware, cheap on
the hot path) and labelled with the route *template* (``/api/proposals/{proposal_id}``), never
the raw path, so that the number of series stays bounded. Twin metrics (estimator wall time,
plant time, updates, health, subscribers) are read from the twin when ``/metrics`` is scraped.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LATENCY_BUCKETS_S", "Metrics", "MetricsMiddleware"]

#: Upper bounds of the request-latency histogram, seconds.
LATENCY_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Metrics:
    """Request counters and a latency histogram per (method, route, status class)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[str, str, str], int] = {}
        self._hist: dict[tuple[str, str], list[int]] = {}
        self._sum: dict[tuple[str, str], float] = {}
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        key = (method, route)
        with self._lock:
            ck = (method, route, str(status))
            self._count[ck] = self._count.get(ck, 0) + 1
            buckets = self._hist.get(key)
            if buckets is None:
                buckets = self._hist[key] = [0] * (len(LATENCY_BUCKETS_S) + 1)
                self._sum[key] = 0.0
            buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            self._sum[key] += seconds

    def render(self, gauges: Iterable[tuple[str, str, str, Mapping[str, str], float]] = ()) -> str:
        """The exposition text: request metrics, then ``gauges`` as
        ``(name, type, help, labels, value)`` rows."""
        lines: list[str] = []
        with self._lock:
            count = dict(self._count)
            hist = {k: list(v) for k, v in self._hist.items()}
            sums = dict(self._sum)
        lines += [
            "# HELP sxtwin_http_requests_total HTTP requests by method, route template and status.",
            "# TYPE sxtwin_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(count.items()):
            lines.append(
                f"sxtwin_http_requests_total{_label_text({'method': method, 'route': route, 'status': status})} {n}"
            )
        lines += [
            "# HELP sxtwin_http_request_duration_seconds Time to the end of the response, seconds.",
            "# TYPE sxtwin_http_request_duration_seconds histogram",
        ]
        for (method, route), buckets in sorted(hist.items()):
            cumulative = 0
            base = {"method": method, "route": route}
            for bound, n in zip((*LATENCY_BUCKETS_S, math.inf), buckets, strict=True):
                cumulative += n
                le = "+Inf" if math.isinf(bound) else repr(bound)
                lines.append(
                    f"sxtwin_http_request_duration_seconds_bucket{_label_text({**base, 'le': le})} {cumulative}"
                )
            lines.append(
                f"sxtwin_http_request_duration_seconds_sum{_label_text(base)} {_number(sums[(method, route)])}"
            )
            lines.append(f"sxtwin_http_request_duration_seconds_count{_label_text(base)} {cumulative}")
        seen: set[str] = set()
        for name, kind, help_text, labels, value in gauges:
            if name not in seen:
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                seen.add(name)
            lines.append(f"{name}{_label_text(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Times every HTTP request and records it in a :class:`Metrics` (route template labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        streaming = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers: Any = message.get("headers") or []
                streaming = any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            if not streaming:  # an SSE stream's duration is its lifetime, not a latency
                self.metrics.observe(scope["method"], template, status, time.perf_counter() - t0)
            else:
                self.metrics.observe(scope["method"], template, status, 0.0)
