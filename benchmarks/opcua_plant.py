"""OPC UA simulated plant: tag count, start-up time, clock lag at speed 60 and the highest speed that keeps up.

    .venv/bin/python benchmarks/opcua_plant.py            # tb_dy and a big plant, speeds up to 1e6 (~3 min)
    .venv/bin/python benchmarks/opcua_plant.py --quick    # tb_dy, fewer speeds (~1 min)

For each plant: tags published; "address space ready" = ``PlantServer.start()`` (standard address
space from the cache, our nodes, certificates, listening) and "plant running" = until the steady
state is solved or loaded (first run of a fresh cache: a cold solve). Then, per speed, the server
runs for ``--seconds`` of wall time with one client subscribed to every tag; the lag is
``speed x wall time - plant time`` (plant hours the clock is behind), sampled every tick after a
warm-up. A speed *keeps up* when the lag stays bounded: never more than two steps (a step is
``speed x tick`` = 0.5 s of wall time; the clock advances in whole steps, so a lag of up to one
step is inherent) and not growing by more than a step over the window. The big plant
is ``models/plants/hree_refinery.toml`` when it exists, else tb_dy with an analyser on both phases
of every stage reading all 15 elements (2,400+ tags; the tests' synthetic spec).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.spec import PlantSpec, load_spec  # noqa: E402
from opcua.client import ClientOptions, PlantClient  # noqa: E402
from opcua.server import PlantServer, PlantServerOptions  # noqa: E402
from tests.opcua.conftest import free_port, trust_client  # noqa: E402
from tests.opcua.test_tags import big_spec  # noqa: E402
from twin.security import Role  # noqa: E402
from twin.users import User, UserStore, hash_password  # noqa: E402


async def measure(
    spec: PlantSpec, speeds: list[float], seconds: float, cache: Path, work: Path, users: UserStore, password: str
) -> dict[str, Any]:
    data = work / f"data-{spec.plant.name}-{len(spec.instruments)}"
    trust_client(data, work / "client")
    opts = PlantServerOptions(port=free_port(), speed=speeds[0], cache_dir=cache, record_history=True)
    server = PlantServer(spec, data_dir=data, users=users, options=opts)
    out: dict[str, Any] = {"plant": spec.plant.name, "tags": len(server.tags), "speeds": []}
    async with server:
        out["address_space_ready_s"] = server.startup_s
        await server.wait_ready(600)
        out["plant_running_s"] = server.ready_s
        async with PlantClient(
            ClientOptions(server.endpoint_url, "viewer", password, work / "client")
        ) as client:
            changes = 0

            def count(_: Any) -> None:
                nonlocal changes
                changes += 1

            await client.subscribe([t.tag for t in server.tags], count, sampling_ms=0, publishing_ms=500)
            for speed in speeds:
                await server.set_speed(speed)
                await asyncio.sleep(4.0 * server.tick_s + 1.0)  # warm-up: integrators, tick adaptation
                await server.set_speed(speed)
                runtime = server.runtime
                assert runtime is not None
                t0, w0, lags = runtime.t_h, time.monotonic(), []
                changes = 0
                while time.monotonic() - w0 < seconds:
                    await asyncio.sleep(0.5)
                    lags.append(server.target_h() - runtime.t_h)
                wall = time.monotonic() - w0
                advanced = runtime.t_h - t0
                step_h = server.step_h
                ratio = advanced / (speed * wall / 3600.0)
                row = {
                    "speed": speed,
                    "wall_s": wall,
                    "plant_h": advanced,
                    "achieved_ratio": ratio,
                    "max_lag_h": max(lags),
                    "final_lag_h": lags[-1],
                    "step_h": step_h,
                    "tick_s": server.tick_s,
                    "notifications_per_s": changes / wall,
                    # bounded lag: never more than two steps behind, and not growing over the window
                    "keeps_up": max(lags) <= 2.0 * step_h + 1e-9 and lags[-1] - lags[0] <= step_h + 1e-9,
                }
                out["speeds"].append(row)
                print(
                    f"  speed {speed:>9g}: plant {advanced:9.2f} h in {wall:4.1f} s ({100 * ratio:5.1f} % of target), "
                    f"lag max {3600 * max(lags):9.0f} plant-s ({max(lags) / step_h:4.2f} x {server.tick_s:g} s steps), "
                    f"{changes / wall:7.0f} notifications/s  {'keeps up' if row['keeps_up'] else 'FALLS BEHIND'}",
                    flush=True,
                )
    kept = [r["speed"] for r in out["speeds"] if r["keeps_up"]]
    out["highest_speed_keeping_up"] = max(kept) if kept else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tb_dy only, fewer speeds")
    ap.add_argument("--seconds", type=float, default=8.0, help="wall seconds per speed")
    ap.add_argument("--cache", type=Path, default=None, help="cache directory (steady states, address space)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    password = "benchmark-password"
    users = UserStore.from_users([User("viewer", Role.VIEWER, hash_password(password))])
    plants: list[tuple[PlantSpec, list[float]]] = []
    fast = [60.0, 1000.0, 3600.0, 36000.0] if args.quick else [60.0, 1000.0, 3600.0, 36000.0, 100000.0, 360000.0, 1e6]
    plants.append((load_spec(REPO / "models" / "plants" / "tb_dy.toml"), fast))
    if not args.quick:
        hree = REPO / "models" / "plants" / "hree_refinery.toml"
        big = load_spec(hree) if hree.exists() else big_spec()
        plants.append((big, [60.0, 1000.0, 36000.0]))  # measured over 3 x --seconds (coarser steps)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp) / "cache"
        for spec, speeds in plants:
            print(f"{spec.plant.name} ({len(spec.instruments)} instruments), load {os.getloadavg()[0]:.2f}", flush=True)
            seconds = args.seconds * (1 if spec.plant.name == "tb_dy" else 3)
            res = asyncio.run(measure(spec, speeds, seconds, cache, Path(tmp), users, password))
            print(
                f"  {res['tags']} tags; address space ready in {res['address_space_ready_s']:.2f} s; "
                f"plant running after {res['plant_running_s']:.1f} s; "
                f"highest speed keeping up: {res['highest_speed_keeping_up']}",
                flush=True,
            )
            results.append(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
