"""Latency of the control-room API under load while the twin runs.

Starts ``sxtwin api`` in its own process (the in-process simulated tb_dy plant at 60x, the
estimator updating every 2 s, the optimiser proposing setpoints unless ``--advisor none``), logs
in, then runs 100 concurrent clients (``httpx.AsyncClient`` each, polling once a second like a
control-room screen, or back to back with ``--interval 0``). Each client first connects and makes
one request (the warm-up: connection set-up of 100 clients at once, reported separately as the
first-request latency), then all poll for ``--seconds``: half ask for the
live state (``GET /api/state``: every stage profile with bounds, ~50 kB), half for a history
query (``GET /api/history/samples``: one tag, 15-min means over the whole history). Prints
p50, p90, p99 and max latency and the throughput per route. Target: p99 < 50 ms.

    .venv/bin/python benchmarks/api_latency.py [--seconds 20] [--clients 100] [--speed 60] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from twin.users import generate_demo_users

TARGET_P99_MS = 50.0
_TLS = ssl.create_default_context()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def client_loop(
    url: str,
    token: str,
    path: str,
    params: dict[str, str],
    start: asyncio.Event,
    warmed: list[float],
    window: list[float],
    out: list[float],
    errors: list[int],
    interval: float,
    offset: float,
) -> None:
    # one TLS context for all clients: building one per client costs ~50 ms of the benchmark's CPU
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=_TLS
    ) as c:
        t0 = time.perf_counter()
        r = await c.get(path, params=params)  # warm-up: connect, first request
        warmed.append(time.perf_counter() - t0)
        if r.status_code != 200:
            errors.append(r.status_code)
        await start.wait()
        await asyncio.sleep(offset)
        stop = window[0]
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = await c.get(path, params=params)
            dt = time.perf_counter() - t0
            if interval > 0:
                await asyncio.sleep(max(0.0, interval - dt))
            if r.status_code == 200:
                out.append(dt)
            else:
                errors.append(r.status_code)


async def load(
    url: str, token: str, clients: int, seconds: float, interval: float
) -> tuple[dict[str, tuple[list[float], list[int]]], list[float]]:
    """Latencies (s) and error statuses per route over the measured window, and the warm-up latencies."""
    routes = {
        "GET /api/state": ("/api/state", {}),
        "GET /api/history/samples": (
            "/api/history/samples",
            {"tag": "AI-124.Dy", "interval_s": "900", "aggregate": "mean"},
        ),
    }
    results: dict[str, tuple[list[float], list[int]]] = {k: ([], []) for k in routes}
    start = asyncio.Event()
    warmed: list[float] = []
    window = [0.0]
    tasks = []
    for i in range(clients):
        name = list(routes)[i % len(routes)]
        path, params = routes[name]
        offset = interval * i / clients  # spread the clients over the polling period
        tasks.append(
            asyncio.create_task(
                client_loop(url, token, path, params, start, warmed, window, *results[name], interval, offset)
            )
        )
    while len(warmed) < clients and not any(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    window[0] = time.perf_counter() + seconds
    start.set()
    await asyncio.gather(*tasks)
    return results, warmed


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--speed", type=float, default=60.0, help="plant seconds per wall second (60: an hour a minute)")
    ap.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="each client polls every this many seconds (dashboards poll about 1/s); 0: back to back",
    )
    ap.add_argument(
        "--advisor", choices=["optimiser", "none"], default="optimiser", help="the twin's advisor (sxtwin api)"
    )
    ap.add_argument("--quick", action="store_true", help="5 s of load")
    args = ap.parse_args(argv)
    seconds = 5.0 if args.quick else args.seconds
    data = Path(tempfile.mkdtemp(prefix="sxtwin-bench-api-"))
    demo = generate_demo_users(data)
    password = next(c.password for c in demo.credentials if c.name == "viewer")
    port = free_port()
    env = {**os.environ, "SXTWIN_DATA_DIR": str(data)}
    sxtwin = str(Path(sys.executable).with_name("sxtwin"))
    proc = subprocess.Popen(
        [sxtwin, "api", "--api-port", str(port), "--speed", f"{args.speed:g}", "--advisor", args.advisor],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                print("the API did not start", file=sys.stderr)
                return 1
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 180:
                print("the API was not ready within 180 s", file=sys.stderr)
                return 1
            time.sleep(0.3)
        ready_s = time.perf_counter() - t0
        time.sleep(8.0)  # some history to query
        token = httpx.post(f"{url}/auth/token", data={"username": "viewer", "password": password}).json()[
            "access_token"
        ]
        state_kb = len(httpx.get(f"{url}/api/state", headers={"Authorization": f"Bearer {token}"}).content) / 1024
        results, warmed = asyncio.run(load(url, token, args.clients, seconds, args.interval))
        metrics = httpx.get(f"{url}/metrics").text
        wall = next(
            (line.split()[-1] for line in metrics.splitlines() if line.startswith("sxtwin_estimator_wall_seconds")), "?"
        )
        plant_h = next(
            (line.split()[-1] for line in metrics.splitlines() if line.startswith("sxtwin_plant_time_hours")), "?"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    pace = f"each polling every {args.interval:g} s" if args.interval > 0 else "back to back"
    print(
        f"API latency: {args.clients} concurrent clients ({pace}) for {seconds:g} s while the twin runs "
        f"(tb_dy, in-process plant at {args.speed:g}x, advisor {args.advisor}, ready after {ready_s:.1f} s; "
        f"/api/state body {state_kb:.0f} kB; last estimator step "
        f"{float(wall) * 1000 if wall != '?' else float('nan'):.0f} ms; "
        f"plant time {float(plant_h) if plant_h != '?' else float('nan'):.2f} h)"
    )
    if warmed:
        ms = [v * 1000 for v in warmed]
        print(
            f"warm-up (all {len(ms)} clients connect and make their first request at once, not in the table): "
            f"p50 {pct(ms, 50):.0f} ms, max {max(ms):.0f} ms"
        )
    print(
        f"{'route':28s} {'requests':>9s} {'req/s':>7s} {'p50 ms':>7s} {'p90 ms':>7s} {'p99 ms':>7s} {'max ms':>7s} "
        f"{'errors':>6s} {'p99<50ms':>8s}"
    )
    ok = True
    for name, (lat, errors) in results.items():
        if not lat:
            print(f"{name:28s} no successful request ({len(errors)} errors)")
            ok = False
            continue
        ms = [v * 1000 for v in lat]
        p99 = pct(ms, 99)
        met = p99 < TARGET_P99_MS
        print(
            f"{name:28s} {len(ms):9d} {len(ms) / seconds:7.0f} {pct(ms, 50):7.1f} {pct(ms, 90):7.1f} {p99:7.1f} "
            f"{max(ms):7.1f} {len(errors):6d} {'met' if met else 'MISSED':>8s}"
        )
        ok = ok and not errors
    print(f"(mean of means: {statistics.mean(statistics.mean(r[0]) for r in results.values() if r[0]) * 1000:.1f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
