"""What the API serves: a running twin with its plant connection and historian.

The API does not build plants or twins itself. :func:`api.app.create_app` takes a
``twin_factory``: a callable that, given the deployment :class:`~twin.settings.Settings`, returns
an async context manager yielding a :class:`TwinRuntime`. The command line builds one over the
in-process simulated plant or over an OPC UA client (:mod:`sxtwin.commands._stack`); tests build
them the same way. Entering the factory starts the plant connection and the twin; leaving it
stops them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.flowsheet import Flowsheet
from models.spec import PlantSpec
from twin.historian import Historian
from twin.plant_io import PlantConnection
from twin.service import TwinService
from twin.settings import Settings

__all__ = ["StudyRunner", "TwinFactory", "TwinRuntime"]


class StudyRunner(Protocol):
    """The offline study runner as the API uses it (``twin.studies``).

    Ids are strings; statuses and results are JSON-ready mappings. Every method raises
    :class:`~models.errors.NotFoundError` for an unknown id and
    :class:`~models.errors.InputError` for a bad study.
    """

    def submit(self, study: Mapping[str, Any], *, user: str) -> Mapping[str, Any]:
        """Validate and start a study; its status (with ``id``)."""
        ...

    def status(self, study_id: str) -> Mapping[str, Any]:
        """Status and progress (0-1) of a study."""
        ...

    def list(self) -> list[Mapping[str, Any]]:
        """Every known study's status, newest first."""
        ...

    def result(self, study_id: str) -> Mapping[str, Any]:
        """The result of a finished study (``ConflictError`` while it runs)."""
        ...

    def plot(self, study_id: str, name: str) -> tuple[bytes, str]:
        """A plot of a finished study: ``(content, media_type)``."""
        ...

    def cancel(self, study_id: str, *, user: str) -> Mapping[str, Any]:
        """Cancel a study; its status."""
        ...


@dataclass
class TwinRuntime:
    """A running twin and what comes with it.

    Attributes
    ----------
    spec, flowsheet
        The plant spec and its flowsheet.
    twin
        The live twin (entered).
    historian
        The twin's historian.
    plant
        The plant connection the twin uses.
    plant_kind
        ``in-process`` or ``opcua``.
    plant_endpoint
        Where the plant is (an OPC UA URL), if anywhere.
    speed
        Plant seconds per wall second, if known.
    true_state
        The simulated plant's true state (trainer, admin), if the plant can give it.
    studies
        The study runner, when available.
    """

    spec: PlantSpec
    flowsheet: Flowsheet
    twin: TwinService
    historian: Historian
    plant: PlantConnection
    plant_kind: str = "in-process"
    plant_endpoint: str | None = None
    speed: float | None = None
    true_state: Callable[[], Mapping[str, Any]] | None = None
    studies: StudyRunner | None = None
    extra: dict[str, Any] = field(default_factory=dict)


TwinFactory = Callable[[Settings], AbstractAsyncContextManager[TwinRuntime]]
