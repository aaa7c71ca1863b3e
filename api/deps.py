"""Dependencies shared by the routers (``Annotated`` aliases): the twin runtime and the caller.

Permissions are declared per route with ``Depends(require(Permission.X))`` (:mod:`api.auth`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import Principal, current_principal
from api.live import LiveHub
from api.runtime import TwinRuntime

__all__ = ["Caller", "HubDep", "RuntimeDep", "get_hub", "get_runtime"]


def get_runtime(request: Request) -> TwinRuntime:
    """The running twin (set by the app's lifespan)."""
    runtime: TwinRuntime = request.app.state.runtime
    return runtime


def get_hub(request: Request) -> LiveHub:
    """The live-update hub (set by the app's lifespan)."""
    hub: LiveHub = request.app.state.hub
    return hub


RuntimeDep = Annotated[TwinRuntime, Depends(get_runtime)]
HubDep = Annotated[LiveHub, Depends(get_hub)]
Caller = Annotated[Principal, Depends(current_principal)]
