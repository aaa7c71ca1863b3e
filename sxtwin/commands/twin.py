"""``sxtwin twin``: the live twin of a plant reached over OPC UA, with its control-room API.

The twin connects to ``--endpoint`` (a real plant's server, or ``sxtwin plant``), with the
user and password from ``SXTWIN_TWIN_USERNAME`` and ``SXTWIN_TWIN_PASSWORD`` (never on the
command line). It starts in advisory mode; closed loop can be switched on by an operator (API)
only when ``--allow-closed-loop`` was given. A lost connection is retried with back-off and the
gap recorded. ``--tag-map`` maps a real plant's NodeIds, units and scaling onto the spec's tags.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from models.errors import InputError
from sxtwin._output import handle_errors
from sxtwin.commands._stack import OpcUaOptions, StackOptions, opcua_twin
from sxtwin.commands.api import serve, settings_from


def twin(
    spec: Annotated[Path, typer.Argument(help="Plant spec (TOML).")],
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="OPC UA endpoint, e.g. opc.tcp://127.0.0.1:4840/sxtwin/plant.")
    ],
    tag_map: Annotated[
        Path | None, typer.Option("--tag-map", help="Map of the plant's NodeIds, units, scaling.")
    ] = None,
    allow_closed_loop: Annotated[
        bool, typer.Option("--allow-closed-loop", help="Let an operator enable closed-loop writes.")
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No OPC UA security (development servers only).")
    ] = False,
    host: Annotated[str | None, typer.Option("--host", help="API bind address (default 127.0.0.1).")] = None,
    api_port: Annotated[int | None, typer.Option("--api-port", help="API port (default 8000).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (default SXTWIN_DATA_DIR).")
    ] = None,
    advisor: Annotated[str, typer.Option("--advisor", help="optimiser (proposals) or none.")] = "optimiser",
) -> None:
    """Run the live twin against an OPC UA plant until Ctrl-C."""
    with handle_errors(False):
        user = os.environ.get("SXTWIN_TWIN_USERNAME")
        password = os.environ.get("SXTWIN_TWIN_PASSWORD")
        if not user:
            raise InputError(
                "SXTWIN_TWIN_USERNAME: the twin's user on the plant server must be set in the environment",
                field="SXTWIN_TWIN_USERNAME",
            )
        if advisor not in ("optimiser", "none"):
            raise InputError(f"advisor: {advisor!r} is not allowed; use optimiser or none", field="advisor")
        settings = settings_from(data_dir, host, api_port)
        options = StackOptions(spec=spec, advisor=advisor, allow_closed_loop=allow_closed_loop)
        factory = opcua_twin(
            options,
            OpcUaOptions(url=endpoint, username=user, password=password, secure=not insecure, tag_map=tag_map),
        )
        banner = [f"plant      {endpoint} (OPC UA{', tag map ' + str(tag_map) if tag_map else ''})"]
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings, factory, banner=banner))
