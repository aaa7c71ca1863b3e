"""Assembling a running twin for the API: plant connection, historian, twin (``sxtwin api``/``up``).

Two plant connections, the same twin:

- :func:`in_process_twin`: the simulated plant's runtime in this process
  (:class:`twin.plant_io.InProcessPlant`), no network;
- :func:`opcua_twin`: an OPC UA client (:class:`opcua.client.PlantClient`, a
  :class:`twin.plant_io.PlantConnection`) of the simulated plant server or of a real plant's server.

Either is a :data:`api.runtime.TwinFactory` and starts the offline study runner
(``twin.studies.api_runner``: one study at a time, outputs in ``<data_dir>/studies``) once the twin
runs; leaving it stops the runner (its queue, its running study and that study's Dask processes)
before the historian closes. Start-up is quick: the design steady state (a cold
solve of several seconds) is cached in ``<data_dir>/steady_cache``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from api.runtime import StudyRunner, TwinFactory, TwinRuntime
from models.errors import TwinError
from models.flowsheet import Flowsheet
from models.spec import load_spec
from twin.historian import Historian
from twin.service import SetpointAdvisor, TwinOptions, TwinService
from twin.settings import Settings

__all__ = ["AdvisorChoice", "OpcUaOptions", "StackOptions", "chain", "in_process_twin", "opcua_twin"]

log = logging.getLogger(__name__)

#: ``"optimiser"``: the setpoint optimiser (``twin.advisor``); ``"none"``: no proposals; or a
#: callable building any :class:`~twin.service.SetpointAdvisor` for the flowsheet.
AdvisorChoice = str | Callable[[Flowsheet], SetpointAdvisor | None]


@dataclass(frozen=True)
class StackOptions:
    """How to run the twin.

    Attributes
    ----------
    spec
        Plant spec (TOML).
    speed
        In-process plant: plant seconds per wall second.
    mismatch
        In-process plant: the plant's true parameters (TOML), default none (plant = model).
    estimator_interval_s, cycle_interval_h, record_every, allow_closed_loop
        :class:`twin.service.TwinOptions`.
    advisor
        See :data:`AdvisorChoice`.
    """

    spec: Path
    speed: float = 60.0
    mismatch: Path | None = None
    estimator_interval_s: float = 2.0
    cycle_interval_h: float = 4.0
    record_every: int = 5
    allow_closed_loop: bool = False
    advisor: AdvisorChoice = "optimiser"


def _advisor(choice: AdvisorChoice, fs: Flowsheet) -> SetpointAdvisor | None:
    if callable(choice):
        return choice(fs)
    if choice == "none":
        return None
    try:
        from twin.advisor import OptimiserAdvisor
    except ImportError:  # the optimiser adapter is not installed: advisory proposals are off
        log.warning("no setpoint advisor (twin.advisor is missing): the twin will make no proposals")
        return None
    return OptimiserAdvisor(fs)


def _studies(settings: Settings, fs: Flowsheet) -> StudyRunner | None:
    try:
        from twin import studies
    except ImportError:
        return None
    factory = getattr(studies, "api_runner", None)
    if factory is None:
        log.warning("twin.studies has no api_runner(settings, flowsheet): studies are off in the API")
        return None
    try:
        runner: StudyRunner = factory(settings, fs)
    except (TwinError, OSError) as exc:  # the twin runs without studies rather than not at all
        log.error("studies are off in the API: %s", getattr(exc, "message", exc))
        return None
    return runner


def _close_studies(runner: StudyRunner | None) -> None:
    """Stop the study runner (its queue, its running study and that study's Dask processes)."""
    close = getattr(runner, "close", None)
    if callable(close):
        close()


def _versions(fs: Flowsheet) -> tuple[str, str]:
    digest = hashlib.sha256(fs.spec.model_dump_json().encode()).hexdigest()[:12]
    return f"{fs.spec.plant.name}:{digest}", "shipped"


def _twin_options(o: StackOptions, fs: Flowsheet) -> TwinOptions:
    spec_version, parameter_version = _versions(fs)
    return TwinOptions(
        estimator_interval_s=o.estimator_interval_s,
        cycle_interval_h=o.cycle_interval_h,
        record_every=o.record_every,
        allow_closed_loop=o.allow_closed_loop,
        spec_version=spec_version,
        parameter_set_version=parameter_version,
    )


def in_process_twin(options: StackOptions) -> TwinFactory:
    """A factory of twins on the in-process simulated plant."""

    @asynccontextmanager
    async def factory(settings: Settings) -> AsyncIterator[TwinRuntime]:
        from models.flowsheet import build_flowsheet
        from opcua.mismatch import Mismatch, load_mismatch
        from opcua.plant_runtime import PlantRuntime, steady_initial_state
        from twin.compute import run_model
        from twin.plant_io import InProcessPlant

        settings.ensure_data_dir()
        cache = settings.data_dir / "steady_cache"
        fs = await asyncio.to_thread(build_flowsheet, load_spec(options.spec))
        mismatch = await asyncio.to_thread(load_mismatch, options.mismatch, fs) if options.mismatch else Mismatch()
        p_model = fs.parameter_vector()
        p_plant = mismatch.initial_parameters(fs)
        z_model = await run_model(steady_initial_state, fs, p_model, cache)
        same = np.array_equal(p_model, p_plant)
        z_plant = z_model if same else await run_model(steady_initial_state, fs, p_plant, cache)
        runtime = await asyncio.to_thread(PlantRuntime, fs, z_plant, mismatch)
        advisor = await asyncio.to_thread(_advisor, options.advisor, fs)
        historian = await asyncio.to_thread(Historian.from_settings, settings)
        studies: StudyRunner | None = None
        try:
            async with InProcessPlant(runtime, speed=options.speed) as plant:
                twin = TwinService(
                    fs, plant, historian, z0=z_model, advisor=advisor, options=_twin_options(options, fs)
                )
                async with twin:

                    def true_state() -> Mapping[str, Any]:
                        from twin.compute import MODEL_LOCK

                        with MODEL_LOCK:  # the runtime's CasADi functions are shared with the plant's steps
                            return runtime.true_state()

                    studies = await asyncio.to_thread(_studies, settings, fs)
                    yield TwinRuntime(
                        spec=fs.spec,
                        flowsheet=fs,
                        twin=twin,
                        historian=historian,
                        plant=plant,
                        plant_kind="in-process",
                        speed=options.speed,
                        true_state=true_state,
                        studies=studies,
                    )
        finally:
            try:
                await asyncio.to_thread(_close_studies, studies)
            finally:
                await asyncio.to_thread(historian.close)

    return factory


# ------------------------------------------------------------------------------------------ OPC UA


@dataclass(frozen=True)
class OpcUaOptions:
    """Where the plant is and who the twin is there.

    Attributes
    ----------
    url
        Endpoint (``opc.tcp://host:port/...``).
    username, password
        The twin's user on the plant server (needs ``write_setpoint`` to apply approved setpoints).
    secure
        Basic256Sha256 SignAndEncrypt (default); the client certificate is kept in
        ``<data_dir>/pki/client`` and must be trusted by the server.
    """

    url: str
    username: str | None = None
    password: str | None = None
    secure: bool = True
    tag_map: Path | None = None
    reconnect: bool = True


def opcua_twin(options: StackOptions, connection: OpcUaOptions, *, speed: float | None = None) -> TwinFactory:
    """A factory of twins connected to a plant over OPC UA."""

    @asynccontextmanager
    async def factory(settings: Settings) -> AsyncIterator[TwinRuntime]:
        from models.flowsheet import build_flowsheet
        from opcua.client import ClientOptions, PlantClient
        from opcua.plant_runtime import steady_initial_state
        from twin.compute import run_model

        settings.ensure_data_dir()
        fs = await asyncio.to_thread(build_flowsheet, load_spec(options.spec))
        z_model = await run_model(steady_initial_state, fs, fs.parameter_vector(), settings.data_dir / "steady_cache")
        advisor = await asyncio.to_thread(_advisor, options.advisor, fs)
        historian = await asyncio.to_thread(Historian.from_settings, settings)
        from twin.connection import ReconnectingPlant
        from twin.ingestion import plan_tags
        from twin.plant_io import PlantConnection
        from twin.tag_map import MappedConnection, load_tag_map

        client_options = ClientOptions(
            url=connection.url,
            username=connection.username,
            password=connection.password,
            pki_dir=settings.opcua_pki_dir / "client",
            secure=connection.secure,
        )
        tag_map = (
            load_tag_map(connection.tag_map, [t.tag for t in plan_tags(fs)]) if connection.tag_map else None
        )
        holder: dict[str, TwinService] = {}
        studies: StudyRunner | None = None

        async def on_gap(gap: Any) -> None:
            if "twin" in holder:
                await holder["twin"].connection_gap(gap)

        client: Any = (
            ReconnectingPlant(lambda: PlantClient(client_options), on_gap=on_gap)
            if connection.reconnect
            else PlantClient(client_options)
        )
        try:
            async with client:  # a twin.plant_io.PlantConnection (reconnecting OPC UA client)
                plant: PlantConnection = MappedConnection(client, tag_map) if tag_map else client
                twin = TwinService(
                    fs, plant, historian, z0=z_model, advisor=advisor, options=_twin_options(options, fs)
                )
                holder["twin"] = twin
                async with twin:
                    studies = await asyncio.to_thread(_studies, settings, fs)
                    yield TwinRuntime(
                        spec=fs.spec,
                        flowsheet=fs,
                        twin=twin,
                        historian=historian,
                        plant=plant,
                        plant_kind="opcua",
                        plant_endpoint=connection.url,
                        speed=speed,
                        studies=studies,
                    )
        finally:
            try:
                await asyncio.to_thread(_close_studies, studies)
            finally:
                await asyncio.to_thread(historian.close)

    return factory


def chain(first: AbstractAsyncContextManager[Any], factory: TwinFactory) -> TwinFactory:
    """A factory that enters ``first`` (for example the plant server) before ``factory``."""

    @asynccontextmanager
    async def combined(settings: Settings) -> AsyncIterator[TwinRuntime]:
        async with first, factory(settings) as runtime:
            yield runtime

    return combined
