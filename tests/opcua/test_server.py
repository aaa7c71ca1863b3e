"""The simulated plant over OPC UA (TCP on 127.0.0.1) with asyncua clients: browse, subscribe,
roles, writes and their refusals, certificates, scenarios and events, plant response, true state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from models.errors import AuthorisationError
from models.spec import load_spec
from opcua.address_space import NAMESPACE_URI
from opcua.client import CLIENT_APPLICATION_URI, ClientOptions, PlantClient
from opcua.security import ensure_certificate
from opcua.status import SetpointRangeError, SetpointRateError
from opcua.tags import UNITS, TagRole, plant_tags
from twin.plant_io import PlantConnection, Quality, TagValue
from twin.security import Role

from .conftest import TB_DY, Credentials, Plant, start_plant

pytestmark = pytest.mark.integration
TAGS = plant_tags(load_spec(TB_DY))


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))  # type: ignore[arg-type]


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not await predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def until_hours(c: PlantClient, hours: float, timeout: float = 60.0) -> None:
    async def reached() -> bool:
        return await c.plant_time_h() >= hours

    await wait_for(reached, timeout, f"plant time {hours} h")


async def raw_client(plant: Plant, role: Role) -> Client:
    """A bare asyncua client (secure, as ``role``)."""
    name, password = plant.credentials.of(role)
    client = Client(plant.url, timeout=10)
    client.application_uri = CLIENT_APPLICATION_URI
    client.set_user(name)
    client.set_password(password)
    cert, key = ensure_certificate(plant.client_pki / "own", CLIENT_APPLICATION_URI, client=True)
    mode = ua.MessageSecurityMode.SignAndEncrypt
    await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), mode=mode)
    await client.connect()
    return client


def test_browse_finds_every_instrument_with_units_and_range(plant: Plant) -> None:
    async def main() -> None:
        async with PlantClient(plant.options(Role.VIEWER)) as c:
            assert isinstance(c, PlantConnection)
            objects = c.client.nodes.objects
            plant_node = await objects.get_child([f"{c.ns}:Plant"])
            found: dict[str, Any] = {}

            async def walk(node: Any, depth: int) -> None:
                for child in await node.get_children():
                    nid = child.nodeid
                    if nid.NamespaceIndex == c.ns and isinstance(nid.Identifier, str):
                        found[nid.Identifier] = child
                    if depth < 5:
                        await walk(child, depth + 1)

            await walk(plant_node, 0)
            for t in TAGS:
                assert t.tag in found, f"{t.tag} not found by browsing"
                if t.role is TagRole.MODE:
                    continue
                d = await c.describe(t.tag)
                assert d.unit_code == UNITS[t.unit].code
                assert d.eu_range == t.eu_range
                assert d.writable is t.writable
                typedef = await found[t.tag].read_type_definition()
                assert typedef == ua.NodeId(ua.ObjectIds.AnalogItemType)
            # circuit / section / instrument layout
            path = await plant_node.get_child([f"{c.ns}:TbDy", f"{c.ns}:scrub", f"{c.ns}:FIC-103", f"{c.ns}:SP"])
            assert path.nodeid.Identifier == "FIC-103.SP"
            feed = await plant_node.get_child([f"{c.ns}:Streams", f"{c.ns}:feed", f"{c.ns}:FIC-101", f"{c.ns}:PV"])
            assert feed.nodeid.Identifier == "FIC-101.PV"
            assert await c.client.get_namespace_index(NAMESPACE_URI) == c.ns
            values = await c.read([t.tag for t in TAGS])
            good = [v for v in values.values() if v.quality is Quality.GOOD]
            assert len(good) >= len(TAGS) - 6  # some analyser traces may sit below their detection limit
            speed = await c.read(["Plant/Speed", "Plant/PlantTime"])
            assert speed["Plant/Speed"].value == pytest.approx(36000.0)

    run(main())


def test_subscription_receives_changes(plant: Plant) -> None:
    async def main() -> None:
        got: list[TagValue] = []
        async with PlantClient(plant.options(Role.VIEWER)) as c:
            await c.subscribe(["FIC-102.PV", "AI-121.Dy"], got.append, sampling_ms=100, publishing_ms=100)

            async def enough() -> bool:
                return len({v.source_time for v in got if v.tag == "FIC-102.PV"}) >= 3 and any(
                    v.tag == "AI-121.Dy" for v in got
                )

            await wait_for(enough, 20, "data changes")
        flows = [v for v in got if v.tag == "FIC-102.PV"]
        assert all(500 < float(v.value) < 1500 for v in flows)
        assert all(v.plant_time_h is not None for v in flows)
        # source timestamps are plant time: consecutive values are plant steps apart (5 h at speed 36000)
        times = sorted({v.source_time for v in flows})
        assert (times[-1] - times[0]).total_seconds() >= 3600.0

    run(main())


def test_refused_sessions(plant: Plant, tmp_path: Path) -> None:
    async def main() -> None:
        opts = plant.options(Role.OPERATOR)
        wrong = PlantClient(ClientOptions(opts.url, opts.username, "not-the-password", opts.pki_dir))
        with pytest.raises(AuthorisationError):  # wrong password
            await wrong.connect()
        with pytest.raises(AuthorisationError):  # a client certificate the server does not trust
            await PlantClient(plant.options(Role.OPERATOR, pki=tmp_path / "stranger")).connect()
        rejected = list((plant.data_dir / "pki" / "rejected").iterdir())
        assert rejected, "an untrusted certificate is copied to pki/rejected"

    run(main())


def test_anonymous_is_a_viewer_on_the_development_endpoint(plant: Plant) -> None:
    async def main() -> None:
        async with PlantClient(plant.options(None, secure=False)) as c:
            values = await c.read(["FIC-102.PV"])
            assert values["FIC-102.PV"].quality is Quality.GOOD
            result = await c.write("FIC-102.SP", 1010.0)
            assert not result.accepted
            assert result.status == "BadUserAccessDenied"
            with pytest.raises(AuthorisationError):
                await c.true_state()

    run(main())


def test_anonymous_and_unsecured_access_are_off_by_default(
    tmp_path: Path, opcua_cache: Path, credentials: Credentials
) -> None:
    thread, _, client_pki = start_plant(tmp_path, opcua_cache, credentials, speed=60.0)

    async def main() -> None:
        endpoints = await Client(thread.server.endpoint_url).connect_and_get_server_endpoints()
        assert {(e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode) for e in endpoints} == {
            ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)
        }
        tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
        assert tokens == {ua.UserTokenType.UserName}
        anonymous = PlantClient(ClientOptions(thread.server.endpoint_url, None, None, client_pki))
        with pytest.raises(Exception):  # noqa: PT011 - the server has no anonymous token policy
            await anonymous.connect()
        await anonymous.disconnect()

    with thread:
        run(main())


def test_operator_writes_setpoints_with_audit_and_refusals(plant: Plant) -> None:
    async def main() -> None:
        async with PlantClient(plant.options(Role.TRAINER)) as t:
            await t.call("Reset")
            # paused, so that the rate window (one plant hour = 0.1 s of wall time here) stands still
            await t.call("Pause", ua.Variant(True, ua.VariantType.Boolean))
        try:
            await writes()
        finally:
            async with PlantClient(plant.options(Role.TRAINER)) as t:
                await t.call("Pause", ua.Variant(False, ua.VariantType.Boolean))

    async def writes() -> None:
        async with PlantClient(plant.options(Role.OPERATOR)) as c:
            assert (await c.read(["FIC-104.SP"]))["FIC-104.SP"].value == pytest.approx(150.0)
            await c.write_setpoint("FIC-104.SP", 170.0)
            with pytest.raises(SetpointRangeError):  # above the manipulated maximum 250 L/h
                await c.write_setpoint("FIC-104.SP", 260.0)
            with pytest.raises(SetpointRateError):  # 20 + 20 L/h within an hour > 30 L/h/h
                await c.write_setpoint("FIC-104.SP", 190.0)
            assert (await c.read(["FIC-104.SP"]))["FIC-104.SP"].value == pytest.approx(170.0)
            result = await c.write("FIC-104.SP", 400.0)
            assert (result.accepted, result.status) == (False, "BadOutOfRange")
            assert (await c.write("FIC-104.MODE", "MAN")).accepted
            assert (await c.write("FIC-104.MODE", "HAND")).status == "BadOutOfRange"
            assert (await c.write("FIC-104.MODE", "AUTO")).accepted
        client = await raw_client(plant, Role.OPERATOR)
        try:
            ns = await client.get_namespace_index(NAMESPACE_URI)

            def item(tag: str, variant: ua.Variant) -> ua.WriteValue:
                wv = ua.WriteValue()
                wv.NodeId = ua.NodeId(tag, ns)
                wv.AttributeId = ua.AttributeIds.Value
                wv.Value = ua.DataValue(variant)
                return wv

            params = ua.WriteParameters()
            params.NodesToWrite = [
                item("FIC-103.SP", ua.Variant(210, ua.VariantType.Int32)),  # an integer from a SCADA client
                item("FIC-102.SP", ua.Variant(1020.0, ua.VariantType.Float)),  # a Float
                item("FIC-101.SP", ua.Variant(500.0, ua.VariantType.Double)),  # out of range: refused alone
                item("FIC-102.PV", ua.Variant(1.0, ua.VariantType.Double)),  # a measurement
                item("FIC-105.SP", ua.Variant(True, ua.VariantType.Boolean)),  # wrong type
                item("FIC-105.SP", ua.Variant("0.4", ua.VariantType.String)),
            ]
            codes = [r.name for r in await client.uaclient.write(params)]
            assert codes == ["Good", "Good", "BadOutOfRange", "BadNotWritable", "BadTypeMismatch", "BadTypeMismatch"]
        finally:
            await client.disconnect()
        async with PlantClient(plant.options(Role.VIEWER)) as c:
            sp = await c.read(["FIC-103.SP", "FIC-102.SP", "FIC-101.SP"])
            assert [sp[t].value for t in ("FIC-103.SP", "FIC-102.SP", "FIC-101.SP")] == pytest.approx([210, 1020, 100])
            assert (await c.write("FIC-103.SP", 200.0)).status == "BadUserAccessDenied"
        async with PlantClient(plant.options(Role.TRAINER)) as c:
            assert (await c.write("FIC-103.SP", 200.0)).status == "BadUserAccessDenied"
        audit = plant.server.historian.audit_log(limit=50).items
        writes = {(a.user, a.target, a.details["value"]) for a in audit if a.action == "plant.write_setpoint"}
        assert {("operator", "FIC-104.SP", 170.0), ("operator", "FIC-103.SP", 210.0)} <= writes
        assert all(a.time is not None for a in audit)
        assert not any(a.details.get("value") in (260.0, 190.0, 400.0, 500.0) for a in audit)

    run(main())


class _Collect:
    def __init__(self, into: list[Any]) -> None:
        self.into = into

    def datachange_notification(self, *args: Any) -> None:
        self.into.append(args)


def _stream(state: dict[str, Any], stream: str, element: str) -> float:
    s = state["streams"][stream]
    return float(s["composition_mol_per_l"][element] * s["flow_l_per_h"])


def test_plant_responds_in_the_physically_right_direction(plant: Plant) -> None:
    """More scrub acid: less Tb in the Dy strip product and more Dy lost to the Tb raffinate;
    more organic: less Dy lost to the raffinate. Against a baseline run with the same drifts."""

    async def run_case(trainer: PlantClient, operator: PlantClient, write: tuple[str, float] | None, hours: float):
        await trainer.call("Reset")
        await until_hours(trainer, 0.0)
        if write is not None:
            await operator.write_setpoint(*write)
        await until_hours(trainer, hours)
        return await trainer.true_state()

    async def main() -> None:
        async with PlantClient(plant.options(Role.TRAINER)) as tr, PlantClient(plant.options(Role.OPERATOR)) as op:
            base_24 = await run_case(tr, op, None, 24.0)
            base_60 = await run_case(tr, op, None, 60.0)
            acid = await run_case(tr, op, ("AIC-111.SP", 2.4), 60.0)
            organic = await run_case(tr, op, ("FIC-102.SP", 1100.0), 24.0)
        assert acid["parameters"]["TbDy.scrub_acid_mol_per_l"] == pytest.approx(2.4)
        tb_in_dy = _stream(acid, "TbDy.strip_liquor", "Tb") / _stream(acid, "TbDy.strip_liquor", "Dy")
        tb_in_dy_base = _stream(base_60, "TbDy.strip_liquor", "Tb") / _stream(base_60, "TbDy.strip_liquor", "Dy")
        assert tb_in_dy < 0.5 * tb_in_dy_base
        assert _stream(acid, "TbDy.raffinate", "Dy") > 1.5 * _stream(base_60, "TbDy.raffinate", "Dy")
        assert _stream(organic, "TbDy.raffinate", "Dy") < 0.7 * _stream(base_24, "TbDy.raffinate", "Dy")

    run(main())


def test_true_state_for_trainer_only(plant: Plant) -> None:
    async def main() -> None:
        for role in (Role.VIEWER, Role.OPERATOR, Role.ENGINEER):
            async with PlantClient(plant.options(role)) as c:
                with pytest.raises(AuthorisationError):
                    await c.true_state()
                handler_calls: list[Any] = []
                sub = await c.client.create_subscription(100, _Collect(handler_calls))
                res = await sub.subscribe_data_change([c.node("Plant/Trainer/TrueState")], sampling_interval=100)
                assert isinstance(res[0], ua.StatusCode)
                assert res[0].name == "BadUserAccessDenied"
                with pytest.raises(AuthorisationError):  # trainer methods too
                    await c.call("Pause", ua.Variant(True, ua.VariantType.Boolean))
        for role in (Role.TRAINER, Role.ADMIN):
            async with PlantClient(plant.options(role)) as c:
                state = await c.true_state()
                lay = state["circuits"]["TbDy"]
                assert len(lay["stages"]) == 80
                assert set(lay["aqueous_mol_per_l"]) >= {"Gd", "Tb", "Dy", "Ho"}
                assert len(lay["organic_mol_per_l"]["Dy"]) == 80
                assert state["mismatch"]["name"] == "tb_dy_standard"

    run(main())


def test_analyser_outage_shows_bad_and_recovers_with_an_event(plant: Plant) -> None:
    scenario = """
[scenario]
name = "xrf-down"
[[events]]
kind = "analyser_outage"
tag = "AI-121"
at_h = 0.0
duration_h = 3.0
message = "XRF E10 in maintenance"
"""

    async def main() -> None:
        events: list[Any] = []
        statuses: list[str] = []

        class Handler:
            def event_notification(self, event: Any) -> None:
                events.append(event)

            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                statuses.append(data.monitored_item.Value.StatusCode.name)

        async with PlantClient(plant.options(Role.TRAINER)) as c:
            await c.call("Reset")
            await c.call("SetSpeed", ua.Variant(3600.0, ua.VariantType.Double))  # 1 plant hour per second
            etype = await c.client.nodes.root.get_child(
                ["0:Types", "0:EventTypes", "0:BaseEventType", f"{c.ns}:ScenarioEventType"]
            )
            sub = await c.client.create_subscription(100, Handler())
            await sub.subscribe_events(c.client.nodes.server, etype)
            await sub.subscribe_data_change([c.node("AI-121.Dy")], sampling_interval=0)
            await c.call("LoadScenario", ua.Variant(scenario, ua.VariantType.String))

            async def bad() -> bool:
                return (await c.read(["AI-121.Dy"]))["AI-121.Dy"].quality is Quality.BAD

            await wait_for(bad, 20, "AI-121.Dy Bad")
            assert (await c.read(["Plant/Scenario"]))["Plant/Scenario"].value == "xrf-down"
            assert (await c.read(["AI-121.Tb"]))["AI-121.Tb"].quality is Quality.BAD

            async def good() -> bool:
                return (await c.read(["AI-121.Dy"]))["AI-121.Dy"].quality is Quality.GOOD

            await wait_for(good, 30, "AI-121.Dy Good again")
            await asyncio.sleep(0.5)
            await sub.delete()
            await c.call("SetSpeed", ua.Variant(36000.0, ua.VariantType.Double))
        assert "BadOutOfService" in statuses
        kinds = [(e.Kind, e.Target, e.Starting) for e in events]
        assert ("analyser_outage", "AI-121", True) in kinds
        assert ("analyser_outage", "AI-121", False) in kinds
        recorded = plant.server.historian.events(limit=20).items
        assert any(e.source == "AI-121" and "XRF E10" in e.message for e in recorded)

    run(main())


def test_history_of_key_tags_is_recorded(plant: Plant) -> None:
    samples = plant.server.historian.samples("FIC-102.PV", start=plant.server.epoch.replace(year=2000),
                                              end=plant.server.epoch.replace(year=2100), limit=5)
    assert samples.items, "PV samples are recorded in the historian"
    assert all(s.plant_time_h is not None for s in samples.items)


def test_trainer_pauses_and_changes_speed(plant: Plant) -> None:
    async def main() -> None:
        async with PlantClient(plant.options(Role.TRAINER)) as c:
            await c.call("Pause", ua.Variant(True, ua.VariantType.Boolean))
            await asyncio.sleep(1.0)  # a step already running when the pause came may still land
            t0 = await c.plant_time_h()
            await asyncio.sleep(1.5)
            values = await c.read(["Plant/Paused", "Plant/PlantHours"])
            assert values["Plant/Paused"].value is True
            assert values["Plant/PlantHours"].value == pytest.approx(t0)
            await c.call("SetSpeed", ua.Variant(72000.0, ua.VariantType.Double))
            await c.call("Pause", ua.Variant(False, ua.VariantType.Boolean))
            await until_hours(c, t0 + 20.0, timeout=20)
            assert (await c.read(["Plant/Speed"]))["Plant/Speed"].value == pytest.approx(72000.0)
            with pytest.raises(Exception):  # noqa: PT011 - a speed of 0 is refused (BadInvalidArgument)
                await c.call("SetSpeed", ua.Variant(0.0, ua.VariantType.Double))
            await c.call("SetSpeed", ua.Variant(36000.0, ua.VariantType.Double))
        actions = {a.action for a in plant.server.historian.audit_log(limit=50).items}
        assert {"plant.Pause", "plant.SetSpeed"} <= actions

    run(main())
