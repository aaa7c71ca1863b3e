"""Client side: how the twin (or a test, a tool) talks to a plant over OPC UA.

:class:`PlantClient` implements :class:`twin.plant_io.PlantConnection` (read, subscribe, write,
plant clock, close) with asyncua, against any server that follows docs/opcua.md (the simulated
plant here, or a real plant's server with the same tag names)::

    options = ClientOptions(url="opc.tcp://127.0.0.1:4840/sxtwin/plant", username="operator",
                            password=..., pki_dir=settings.opcua_pki_dir / "client")
    async with PlantClient(options) as plant:
        now = await plant.read(["FIC-102.PV", "AI-124.Dy"])       # dict of TagValue
        result = await plant.write("FIC-102.SP", 1050.0)         # WriteResult, never raises
        await plant.subscribe(["AI-124.Dy"], on_change, sampling_ms=500, publishing_ms=500)

Every value comes as a :class:`twin.plant_io.TagValue` (value + quality + source timestamp +
plant hours). :meth:`PlantClient.write_setpoint` is the raising variant: a refusal raises the
sxtwin error of its status code (:func:`opcua.status.error_for`: ``AuthorisationError``,
``SetpointRangeError``, ``SetpointRateError``...). The client keeps its own application
certificate in ``<pki_dir>/own`` (created on first use); the server must trust it (copy
``cert.der`` into the server's ``pki/trusted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, cast

from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from models.errors import TwinError
from opcua import _ua
from opcua.address_space import NAMESPACE_URI
from opcua.security import ensure_certificate
from opcua.status import error_for
from twin.plant_io import OnChange, Quality, TagValue, WriteResult

__all__ = ["CLIENT_APPLICATION_URI", "ClientOptions", "PlantClient", "TagDescription"]

log = logging.getLogger(__name__)

CLIENT_APPLICATION_URI = "urn:sxtwin:twin:client"


@dataclass(frozen=True)
class TagDescription:
    """What a client learns of a tag by browsing: unit (UNECE code, display) and EURange."""

    tag: str
    unit_code: str
    unit: str
    eu_range: tuple[float, float]
    writable: bool


@dataclass(frozen=True)
class ClientOptions:
    """How to connect.

    Attributes
    ----------
    url
        Endpoint URL.
    username, password
        A user of the plant (``None``: anonymous, only where the server allows it).
    pki_dir
        Where the client keeps its certificate (``own/cert.der``, ``own/key.pem``); required for
        the secure endpoint.
    secure
        Basic256Sha256 SignAndEncrypt (default) or no security (development servers only).
    application_uri
        The client's application URI (in its certificate).
    timeout_s
        Request timeout; also the interval and timeout of the connection probe (a server that
        does not answer a probe within it is treated as lost).
    """

    url: str
    username: str | None = None
    password: str | None = None
    pki_dir: Path | None = None
    secure: bool = True
    application_uri: str = CLIENT_APPLICATION_URI
    timeout_s: float = 10.0

    def __repr__(self) -> str:
        return f"ClientOptions(url={self.url!r}, username={self.username!r}, secure={self.secure})"


def _tag_id(tag: str, ns: int) -> ua.NodeId:
    return _ua.node_id(tag, ns)


class PlantClient:
    """An asyncua client of the plant (implements :class:`twin.plant_io.PlantConnection`)."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        # asyncua probes the server every watchdog interval with that interval as the timeout and
        # drops the connection for good on one late answer: a busy plant (a long integration step)
        # or a loaded machine would cut the link every few minutes. Probe at the request timeout.
        self.client = Client(options.url, timeout=options.timeout_s, watchdog_intervall=options.timeout_s)
        self.client.application_uri = options.application_uri
        self.client.name = "sxtwin twin client"
        self.ns = 0
        self._run_epoch: datetime | None = None
        self._subscriptions: list[Any] = []
        self._pending: set[asyncio.Future[Any]] = set()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and activate the session (raises :class:`~models.errors.AuthorisationError`
        when the user, password or certificate is refused)."""
        o = self.options
        if o.username is not None:
            self.client.set_user(o.username)
            self.client.set_password(o.password or "")
        if o.secure:
            if o.pki_dir is None:
                raise TwinError(
                    "pki_dir: a secure connection needs a directory for the client certificate", field="pki_dir"
                )
            cert, key = ensure_certificate(
                o.pki_dir / "own", o.application_uri, common_name="sxtwin twin client", client=True
            )
            await self.client.set_security(
                SecurityPolicyBasic256Sha256, str(cert), str(key), mode=ua.MessageSecurityMode.SignAndEncrypt
            )
        try:
            await self.client.connect()
        except ua.UaStatusCodeError as exc:
            raise error_for(exc.code, what=f"connect to {o.url}") from None
        self.ns = await self.client.get_namespace_index(NAMESPACE_URI)

    async def disconnect(self) -> None:
        """Close the session (quietly if the server is gone)."""
        with contextlib.suppress(Exception):
            await self.client.disconnect()

    def node(self, tag: str) -> Node:
        """The node of a tag: an sxtwin tag in the plant namespace, or a full NodeId string
        (``ns=2;s=...``, ``nsu=...;s=...``, ``i=...``) as a tag map gives for a real plant."""
        if tag.startswith(("ns=", "nsu=", "i=", "s=", "g=", "b=")):
            return self.client.get_node(tag)
        return self.client.get_node(_tag_id(tag, self.ns))

    async def _epoch(self) -> datetime | None:
        dv = await self.node("Plant/RunEpoch").read_data_value(raise_on_bad_status=False)
        value = dv.Value.Value if dv.Value is not None else None
        if isinstance(value, datetime):
            self._run_epoch = value if value.tzinfo else value.replace(tzinfo=UTC)
        return self._run_epoch

    def _tag_value(self, tag: str, dv: ua.DataValue) -> TagValue:
        code = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
        value = dv.Value.Value if dv.Value is not None else None
        source = dv.SourceTimestamp or dv.ServerTimestamp or datetime.now(UTC)
        if source.tzinfo is None:
            source = source.replace(tzinfo=UTC)
        plant_h = None
        if self._run_epoch is not None:
            plant_h = (source - self._run_epoch).total_seconds() / 3600.0
        if value is None:
            value = float("nan")
        return TagValue(tag, value, Quality.from_status(code.value), source, plant_h)

    async def read(self, tags: Sequence[str]) -> dict[str, TagValue]:
        """Current values (one Read request)."""
        await self._epoch()
        nodes = [self.node(t) for t in tags]
        values = await self.client.read_attributes(nodes, ua.AttributeIds.Value)
        return {t: self._tag_value(t, dv) for t, dv in zip(tags, values, strict=True)}

    async def plant_time_h(self) -> float:
        """The plant's clock (``Plant/PlantHours``)."""
        return float(await self.node("Plant/PlantHours").read_value())

    async def write(self, tag: str, value: float | str) -> WriteResult:
        """Write a setpoint (Double) or a mode (String); a refusal is reported, not raised."""
        try:
            await self.write_setpoint(tag, value)
        except TwinError as exc:
            status = (exc.details or {}).get("status", type(exc).__name__)
            return WriteResult(
                tag, float("nan") if isinstance(value, str) else float(value), False, status, exc.message
            )
        return WriteResult(tag, float("nan") if isinstance(value, str) else float(value), True, "Good")

    async def write_setpoint(self, tag: str, value: float | str) -> None:
        """Write a setpoint (Double) or a mode (String); raises the sxtwin error of a refusal."""
        vt = ua.VariantType.String if isinstance(value, str) else ua.VariantType.Double
        params = ua.WriteParameters()
        wv = ua.WriteValue()
        wv.NodeId = self.node(tag).nodeid
        wv.AttributeId = ua.AttributeIds.Value
        wv.Value = _ua.data_value(ua.Variant(value if isinstance(value, str) else float(value), vt))
        params.NodesToWrite = [wv]
        results = await self.client.uaclient.write(params)
        if not results[0].is_good():
            raise error_for(results[0], what=tag)

    async def subscribe(
        self, tags: Sequence[str], on_change: OnChange, *, sampling_ms: int = 1000, publishing_ms: int = 1000
    ) -> None:
        """Call ``on_change(tag_value)`` for every new value of ``tags`` until :meth:`close`."""
        await self._epoch()
        names = {self.node(t).nodeid: t for t in tags}
        client = self
        epoch_id = _tag_id("Plant/RunEpoch", self.ns)

        class _Handler:
            def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
                dv = data.monitored_item.Value
                if node.nodeid == epoch_id:
                    if isinstance(val, datetime):
                        client._run_epoch = val if val.tzinfo else val.replace(tzinfo=UTC)
                    return
                if node.nodeid not in names:
                    return
                res = on_change(client._tag_value(names[node.nodeid], dv))
                if asyncio.iscoroutine(res):
                    client._pending.add(asyncio.ensure_future(res))
                    client._pending = {t for t in client._pending if not t.done()}

        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=float(publishing_ms),
            RequestedMaxKeepAliveCount=10,
            RequestedLifetimeCount=300,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = await self.client.create_subscription(params, _Handler())
        self._subscriptions.append(sub)
        nodes = [self.client.get_node(epoch_id), *(self.node(t) for t in tags)]
        await sub.subscribe_data_change(nodes, sampling_interval=cast(ua.Double, float(sampling_ms)))

    async def close(self) -> None:
        """Delete the subscriptions and disconnect."""
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.delete()
        self._subscriptions.clear()
        await self.disconnect()

    async def describe(self, tag: str) -> TagDescription:
        """Unit and EURange of a tag (browsing its properties)."""
        node = self.node(tag)
        eu = await self.client.get_node(_ua.node_id(f"{tag}/EngineeringUnits", self.ns)).read_value()
        rng = await self.client.get_node(_ua.node_id(f"{tag}/EURange", self.ns)).read_value()
        access = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
        code = "".join(chr((eu.UnitId >> s) & 0xFF) for s in (16, 8, 0) if (eu.UnitId >> s) & 0xFF)
        writable = access.Value is not None and bool(access.Value.Value & ua.AccessLevel.CurrentWrite.mask)
        return TagDescription(tag, code, eu.DisplayName.Text, (rng.Low, rng.High), writable)

    async def true_state(self) -> dict[str, Any]:
        """The simulated plant's true state (trainer and admin only; raises otherwise)."""
        dv = await self.node("Plant/Trainer/TrueState").read_data_value(raise_on_bad_status=False)
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            raise error_for(dv.StatusCode, what="Plant/Trainer/TrueState")
        if dv.Value is None or not isinstance(dv.Value.Value, str):
            raise error_for(ua.StatusCodes.BadDataUnavailable, what="Plant/Trainer/TrueState")
        return dict(json.loads(dv.Value.Value))

    async def call(self, method: str, *args: ua.Variant) -> None:
        """Call a trainer method (``LoadScenario``, ``Pause``, ``SetSpeed``, ``Reset``...)."""
        trainer = self.node("Plant/Trainer")
        try:
            await trainer.call_method(_tag_id(f"Plant/Trainer/{method}", self.ns), *args)
        except ua.UaStatusCodeError as exc:
            raise error_for(exc.code, what=method) from None
