"""The control-room API: :func:`create_app` builds the FastAPI application; nothing happens at import.

::

    app = create_app(settings, twin_factory)        # api.runtime.TwinFactory
    uvicorn.run(app, host=settings.host, port=settings.api_port)

On start-up (the lifespan) the app resolves the token key (:meth:`Settings.resolve_secret_key`),
loads the users (:func:`twin.users.load_user_store`), enters ``twin_factory(settings)`` (plant
connection and twin running) and starts the live-update hub; on shutdown it stops them in reverse
order. Routers: one per resource in :mod:`api.routers`; errors: :mod:`api.errors`; auth:
:mod:`api.auth`; the dashboard's static files: ``api/static``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.auth import DEFAULT_TOKEN_TTL_S, TokenSigner, UserDirectory
from api.errors import install_error_handlers
from api.live import LiveHub
from api.metrics import Metrics, MetricsMiddleware
from api.routers import (
    audit,
    auth,
    dashboard,
    events,
    health,
    history,
    lab,
    plant,
    proposals,
    setpoints,
    state,
    stream,
    studies,
    trainer,
    what_if,
)
from api.routers import (
    users as users_router,
)
from api.runtime import TwinFactory
from twin.historian_records import code_version
from twin.settings import Settings
from twin.users import UserStore

__all__ = ["ApiOptions", "create_app"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Control-room API of the sxtwin live twin: live estimated state with uncertainty, tags with
quality, history, setpoint proposals and their approval, closed-loop mode, lab assays, events and
alarms, what-if simulations, offline studies and the audit log.

**Log in** with `POST /auth/token` (OAuth2 password form) and send `Authorization: Bearer <token>`.
Each route needs one permission of the table in docs/security.md. Errors are RFC 9457 problem
details (`application/problem+json`) naming the bad field and what is allowed.
"""


@dataclass(frozen=True)
class ApiOptions:
    """Options of the API.

    Attributes
    ----------
    token_ttl_s
        Lifetime of a bearer token, s (a shift, 8 h).
    sse_keepalive_s
        Seconds between keep-alive comments on an idle live stream.
    serve_dashboard
        Serve the dashboard at ``/``.
    """

    token_ttl_s: float = DEFAULT_TOKEN_TTL_S
    sse_keepalive_s: float = 15.0
    serve_dashboard: bool = True


def create_app(
    settings: Settings,
    twin_factory: TwinFactory,
    *,
    options: ApiOptions | None = None,
    users: UserStore | None = None,
) -> FastAPI:
    """Build the API application (see the module docstring).

    Parameters
    ----------
    settings
        Deployment settings (token key, users file, historian URL, host and port).
    twin_factory
        Starts the plant connection and the twin (:data:`api.runtime.TwinFactory`).
    options
        API options.
    users
        A user store to use instead of the users file and ``SXTWIN_USERS`` (tests, tools).
    """
    opts = options or ApiOptions()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        key = settings.resolve_secret_key().get_secret_value()
        app.state.signer = TokenSigner(key, ttl_s=opts.token_ttl_s)
        users_env = settings.users.get_secret_value() if settings.users is not None else None
        app.state.users = await asyncio.to_thread(UserDirectory, settings.resolved_users_file, users_env, users)
        async with twin_factory(settings) as runtime:
            hub = LiveHub(runtime.twin)
            await hub.start()
            app.state.runtime = runtime
            app.state.hub = hub
            log.info(
                "API ready: plant %s (%s), %d users",
                runtime.spec.plant.name,
                runtime.plant_kind,
                len(app.state.users.store),
            )
            try:
                yield
            finally:
                await hub.stop()

    app = FastAPI(
        title="sxtwin control-room API",
        version=code_version(),
        description=_DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "auth", "description": "Log in; who am I."},
            {"name": "health", "description": "Liveness, readiness, Prometheus metrics."},
            {"name": "plant", "description": "The plant spec."},
            {"name": "state", "description": "Live estimate with uncertainty, tags with quality, KPIs."},
            {"name": "live", "description": "Server-Sent Events."},
            {"name": "history", "description": "Historian queries, paged."},
            {"name": "setpoints", "description": "Setpoints, writes (audited, linked to approvals), mode."},
            {"name": "proposals", "description": "Setpoint proposals; approve or reject."},
            {"name": "lab", "description": "Lab assays."},
            {"name": "events", "description": "Events and alarms; acknowledgement."},
            {"name": "what-if", "description": "Simulations from the current estimate."},
            {"name": "studies", "description": "Offline setpoint studies."},
            {"name": "audit", "description": "The audit log."},
            {"name": "users", "description": "User management (admin)."},
            {"name": "trainer", "description": "The simulated plant's true state."},
        ],
    )
    app.state.settings = settings
    app.state.options = opts
    app.state.metrics = metrics
    app.state.state_cache = {}
    app.state.what_if_lock = asyncio.Lock()
    install_error_handlers(app)
    for module in (
        health,
        auth,
        plant,
        state,
        stream,
        history,
        setpoints,
        proposals,
        lab,
        events,
        what_if,
        studies,
        audit,
        users_router,
        trainer,
    ):
        app.include_router(module.router)
    if opts.serve_dashboard:
        app.include_router(dashboard.router)
        app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
