"""``sxtwin api``: the control-room API and dashboard over a live twin.

The twin runs on the in-process simulated plant by default, or connects to an OPC UA server
(``--plant-url``: the simulated plant of ``sxtwin plant`` or a real plant's server with the same
tag names). Settings (data directory, historian URL, token key, users, bind address) come from
the environment (docs/security.md); the options here override them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from api.app import create_app
from api.runtime import TwinFactory
from sxtwin._output import handle_errors
from sxtwin.commands._stack import OpcUaOptions, StackOptions, in_process_twin, opcua_twin
from twin.settings import Settings, get_settings

__all__ = ["api", "default_spec", "serve"]


def default_spec() -> Path:
    """The shipped tb_dy example plant."""
    return Path(str(resources.files("models") / "plants" / "tb_dy.toml"))


def settings_from(
    data_dir: Path | None, host: str | None, api_port: int | None, opcua_port: int | None = None
) -> Settings:
    """Deployment settings with the command-line overrides."""
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if host is not None:
        overrides["host"] = host
    if api_port is not None:
        overrides["api_port"] = api_port
    if opcua_port is not None:
        overrides["opcua_port"] = opcua_port
    return get_settings(**overrides)


async def serve(settings: Settings, factory: TwinFactory, *, banner: list[str] | None = None) -> None:
    """Run the API until Ctrl-C/SIGTERM; print the URLs when it listens, and when the estimate is
    first available and when it has converged (parameters steady over the twin's window)."""
    app = create_app(settings, factory)
    config = uvicorn.Config(app, host=settings.host, port=settings.api_port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    t0 = time.monotonic()

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.1)
        base = f"http://{settings.host}:{settings.api_port}"
        lines = [
            f"dashboard  {base}/",
            f"API docs   {base}/docs",
            f"metrics    {base}/metrics",
            *(banner or []),
            "Ctrl-C stops everything.",
        ]
        typer.echo("\n".join(lines))
        typer.echo(f"API up after {time.monotonic() - t0:.1f} s")
        runtime = app.state.runtime
        first = converged = False
        while not (first and converged):
            snap = runtime.twin.snapshot()
            if snap is not None and not first:
                first = True
                typer.echo(f"first estimate after {time.monotonic() - t0:.1f} s (plant time {snap.plant_time_h:.2f} h)")
            if snap is not None and snap.updates >= 3 and runtime.twin.is_steady():
                converged = True
                typer.echo(
                    f"estimate converged after {time.monotonic() - t0:.1f} s: {snap.updates} updates with data, "
                    f"parameters steady over {runtime.twin.options.steady_window_h:g} plant h "
                    f"(plant time {snap.plant_time_h:.2f} h)"
                )
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


def api(
    spec: Annotated[Path | None, typer.Option("--spec", help="Plant spec (TOML); default: the tb_dy example.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default SXTWIN_HOST, 127.0.0.1).")] = None,
    api_port: Annotated[
        int | None, typer.Option("--api-port", help="API port (default SXTWIN_API_PORT, 8000).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (default SXTWIN_DATA_DIR).")
    ] = None,
    plant_url: Annotated[
        str | None,
        typer.Option("--plant-url", help="OPC UA endpoint of the plant; default: in-process simulated plant."),
    ] = None,
    plant_user: Annotated[
        str | None, typer.Option("--plant-user", help="The twin's user on the OPC UA server.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No OPC UA security (development servers only).")
    ] = False,
    speed: Annotated[float, typer.Option("--speed", help="In-process plant: plant seconds per wall second.")] = 60.0,
    mismatch: Annotated[
        Path | None, typer.Option("--mismatch", help="In-process plant: its true parameters (TOML).")
    ] = None,
    advisor: Annotated[str, typer.Option("--advisor", help="optimiser (proposals) or none.")] = "optimiser",
    allow_closed_loop: Annotated[
        bool, typer.Option("--allow-closed-loop", help="Let an operator enable closed-loop writes.")
    ] = False,
) -> None:
    """Serve the control-room API and dashboard until Ctrl-C.

    The OPC UA password of ``--plant-user`` is read from ``SXTWIN_PLANT_PASSWORD``.
    """
    with handle_errors(False):
        if advisor not in ("optimiser", "none"):
            from models.errors import bad_value

            raise bad_value("advisor", advisor, ["optimiser", "none"])
        settings = settings_from(data_dir, host, api_port)
        options = StackOptions(
            spec=spec or default_spec(),
            speed=speed,
            mismatch=mismatch,
            advisor=advisor,
            allow_closed_loop=allow_closed_loop,
        )
        if plant_url:
            factory = opcua_twin(
                options,
                OpcUaOptions(
                    url=plant_url,
                    username=plant_user,
                    password=os.environ.get("SXTWIN_PLANT_PASSWORD"),
                    secure=not insecure,
                ),
            )
            banner = [f"plant      {plant_url} (OPC UA)"]
        else:
            factory = in_process_twin(options)
            banner = [f"plant      in-process simulation at {speed:g}x"]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings, factory, banner=banner))
