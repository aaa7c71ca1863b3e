"""``sxtwin plant``: run a plant spec as a simulated plant served over OPC UA (docs/opcua.md)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from models.spec import load_spec
from opcua.server import PlantServer, PlantServerOptions
from opcua.tags import tags_markdown
from sxtwin._output import handle_errors
from twin.settings import get_settings
from twin.users import generate_demo_users, load_user_store


def plant(
    spec: Annotated[Path, typer.Argument(help="Plant spec (TOML), e.g. models/plants/tb_dy.toml.")],
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default SXTWIN_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port (default SXTWIN_OPCUA_PORT, 4840).")] = None,
    speed: Annotated[float, typer.Option("--speed", help="Plant seconds per wall second.")] = 60.0,
    mismatch: Annotated[
        Path | None, typer.Option("--mismatch", help="The plant's true parameters (TOML), e.g. tb_dy_mismatch.toml.")
    ] = None,
    scenario: Annotated[Path | None, typer.Option("--scenario", help="A scenario (TOML) to start with.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Certificates, historian, caches (default SXTWIN_DATA_DIR).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the measurement noise.")] = None,
    tags: Annotated[bool, typer.Option("--tags", help="Print the tag list (Markdown, docs/tags.md) and exit.")] = False,
) -> None:
    """Serve the plant over OPC UA until Ctrl-C (Basic256Sha256 SignAndEncrypt; users from the users file)."""
    with handle_errors(False):
        plant_spec = load_spec(spec)
        if tags:
            sys.stdout.write(tags_markdown(plant_spec))
            return
        overrides: dict[str, Any] = {}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if host is not None:
            overrides["host"] = host
        if port is not None:
            overrides["opcua_port"] = port
        settings = get_settings(**overrides)
        settings.ensure_data_dir()
        users_env = settings.users.get_secret_value() if settings.users is not None else None
        if not settings.resolved_users_file.exists() and not users_env:
            demo = generate_demo_users(settings.data_dir)
            typer.echo(demo.message, err=True)
            for cred in demo.credentials:
                typer.echo(f"  {cred.name:9s} {cred.role.value:9s} {cred.password}", err=True)
        users = load_user_store(settings.resolved_users_file, users_env)
        options = PlantServerOptions(
            host=settings.host,
            port=settings.opcua_port,
            speed=speed,
            allow_anonymous=settings.opcua_allow_anonymous,
            seed=seed,
        )
        server = PlantServer(
            plant_spec, data_dir=settings.data_dir, users=users, options=options, mismatch=mismatch, scenario=scenario
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(server, settings.opcua_pki_dir))


async def _serve(server: PlantServer, pki_dir: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGINT too: a process started in the background of a non-interactive shell inherits SIGINT
    # ignored, and Python then raises no KeyboardInterrupt (the plant ignored Ctrl-C there)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        typer.echo(
            f"plant {server.spec.plant.name}: {len(server.tags)} tags on {server.endpoint_url} "
            f"(address space ready in {server.startup_s:.1f} s); trust clients by copying their certificates "
            f"to {pki_dir / 'trusted'}; Ctrl-C stops",
            err=True,
        )
        await server.wait_ready()
        typer.echo(f"plant running at speed {server.speed:g} (ready after {server.ready_s:.1f} s)", err=True)
        await stop.wait()
