"""``sxtwin up``: the whole stack on one machine, what ``make run`` starts.

1. demo users on first start (one per role; the passwords are printed once);
2. the simulated plant served over OPC UA on 127.0.0.1 (``--opcua-port``); ``--mismatch shipped``
   runs the shipped plant-model mismatch (the twin then has something to estimate);
3. the twin, connected to it over OPC UA (Basic256Sha256 SignAndEncrypt) as a service user that
   exists only for this run (a random password, never stored; the twin's client certificate is
   trusted by the plant server), or, with ``--in-process``, to the plant in this process;
4. the API and dashboard on 127.0.0.1 (``--api-port``); SQLite historian in the data directory;
   offline studies on a local Dask cluster unless ``SXTWIN_DASK_SCHEDULER`` names one.

The design steady state is cached in ``<data_dir>/steady_cache``: later starts take seconds.
Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer

from api.runtime import TwinFactory, TwinRuntime
from models.errors import bad_value
from models.spec import load_spec
from sxtwin._output import handle_errors
from sxtwin.commands._stack import OpcUaOptions, StackOptions, in_process_twin, opcua_twin
from sxtwin.commands.api import default_spec, serve, settings_from
from twin.security import Role
from twin.settings import Settings
from twin.users import User, UserStore, generate_demo_users, hash_password, load_user_store

__all__ = ["up"]

log = logging.getLogger(__name__)

TWIN_SERVICE_USER = "sxtwin-twin"


def _default_mismatch(spec: Path) -> Path | None:
    candidate = spec.with_name(spec.stem + "_mismatch.toml")
    return candidate if candidate.exists() else None


def _opcua_stack(settings: Settings, options: StackOptions, users: UserStore, speed: float) -> TwinFactory:
    from opcua.client import CLIENT_APPLICATION_URI
    from opcua.security import ensure_certificate, pki_layout
    from opcua.server import PlantServer, PlantServerOptions

    password = secrets.token_urlsafe(24)
    service = User(TWIN_SERVICE_USER, Role.OPERATOR, hash_password(password))
    plant_users = UserStore.from_users([*users, service])
    cert, _ = ensure_certificate(
        settings.opcua_pki_dir / "client" / "own", CLIENT_APPLICATION_URI, common_name="sxtwin twin client", client=True
    )
    trusted = pki_layout(settings.opcua_pki_dir)["trusted"]
    shutil.copyfile(cert, trusted / "sxtwin-twin-client.der")
    server = PlantServer(
        load_spec(options.spec),
        data_dir=settings.data_dir,
        users=plant_users,
        options=PlantServerOptions(
            host=settings.host, port=settings.opcua_port, speed=speed, allow_anonymous=settings.opcua_allow_anonymous
        ),
        mismatch=options.mismatch,
    )
    twin = opcua_twin(
        options, OpcUaOptions(url=server.endpoint_url, username=TWIN_SERVICE_USER, password=password), speed=speed
    )

    @asynccontextmanager
    async def factory(s: Settings) -> AsyncIterator[TwinRuntime]:
        async with server:
            await server.wait_ready(timeout=600)
            async with twin(s) as runtime:
                runtime.true_state = server.runtime.true_state if server.runtime is not None else None
                yield runtime

    return factory


def up(
    spec: Annotated[Path | None, typer.Option("--spec", help="Plant spec (TOML); default: the tb_dy example.")] = None,
    api_port: Annotated[
        int | None, typer.Option("--api-port", help="API port (default SXTWIN_API_PORT, 8000).")
    ] = None,
    opcua_port: Annotated[
        int | None, typer.Option("--opcua-port", help="OPC UA port (default SXTWIN_OPCUA_PORT, 4840).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (default SXTWIN_DATA_DIR).")
    ] = None,
    speed: Annotated[
        float, typer.Option("--speed", help="Plant seconds per wall second (60: an hour a minute).")
    ] = 60.0,
    mismatch: Annotated[
        str | None,
        typer.Option(
            "--mismatch",
            help="The plant's true parameters: 'shipped' (<spec>_mismatch.toml), a TOML path, or 'none' "
            "(default: none, the plant is its model).",
        ),
    ] = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run the plant in this process, without OPC UA.")
    ] = False,
    advisor: Annotated[str, typer.Option("--advisor", help="optimiser (proposals) or none.")] = "optimiser",
    allow_closed_loop: Annotated[
        bool, typer.Option("--allow-closed-loop", help="Let an operator enable closed-loop writes.")
    ] = False,
) -> None:
    """Start the simulated plant, the twin, the API and the dashboard; print the URLs and, on first
    start, the demo users' passwords. Ctrl-C stops everything."""
    with handle_errors(False):
        if advisor not in ("optimiser", "none"):
            raise bad_value("advisor", advisor, ["optimiser", "none"])
        settings = settings_from(data_dir, None, api_port, opcua_port)
        settings.ensure_data_dir()
        plant_spec = spec or default_spec()
        mm = (
            _default_mismatch(plant_spec)
            if mismatch == "shipped"
            else (Path(mismatch) if mismatch and mismatch != "none" else None)
        )
        users_env = settings.users.get_secret_value() if settings.users is not None else None
        if users_env is None or settings.resolved_users_file.exists():
            demo = generate_demo_users(settings.data_dir)
            typer.echo(demo.message)
            for cred in demo.credentials:
                typer.echo(f"  user {cred.name:9s} role {cred.role.value:9s} password {cred.password}")
        users = load_user_store(settings.resolved_users_file, users_env)
        options = StackOptions(
            spec=plant_spec, speed=speed, mismatch=mm, advisor=advisor, allow_closed_loop=allow_closed_loop
        )
        banner = [f"data       {settings.data_dir} (historian {settings.resolved_database_url.split(':')[0]})"]
        factory: TwinFactory
        if in_process:
            factory = in_process_twin(options)
            banner.append(f"plant      in-process simulation of {plant_spec.name} at {speed:g}x")
        else:
            try:
                factory = _opcua_stack(settings, options, users, speed)
            except ImportError as exc:  # the OPC UA package is incomplete: keep going without it
                log.warning("OPC UA plant unavailable (%s): running the plant in-process", exc)
                factory = in_process_twin(options)
                banner.append(f"plant      in-process simulation of {plant_spec.name} at {speed:g}x")
            else:
                banner.append(
                    f"plant      opc.tcp://{settings.host}:{settings.opcua_port}/sxtwin/plant "
                    f"({plant_spec.name} at {speed:g}x; Basic256Sha256, users as above)"
                )
        if mm is not None:
            banner.append(f"mismatch   {mm.name} (the plant is not the model: the twin estimates the difference)")
        typer.echo("starting the plant and the twin (the first start solves the steady state: about 10 s) ...")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings, factory, banner=banner))
        typer.echo("stopped")
