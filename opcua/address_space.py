"""The plant's OPC UA address space, built from its spec (see :mod:`opcua.tags` for the conventions).

::

    Objects
    └── Plant                               (object; PlantTime, PlantHours, Speed, Paused, RunEpoch,
        │                                    LagHours, Scenario)
        ├── <circuit>
        │   └── <section>                   extraction | scrub | strip
        │       └── <instrument>            object, e.g. FIC-102
        │           ├── PV                  AnalogItemType, Double (EURange, EngineeringUnits)
        │           ├── SP                  AnalogItemType, Double, writable (EURange = allowed range,
        │           │                       InstrumentRange = instrument range)
        │           └── MODE                String, AUTO | MAN, writable
        ├── Streams/<feed>/<instrument>     instruments on an external feed
        └── Trainer                         TrueState (String, JSON; trainer/admin only) and the
                                            methods LoadScenario, ClearScenario, Pause, SetSpeed, Reset

Every node lives in the namespace ``urn:sxtwin:plant`` with a string node id: the tag for
variables (``FIC-102.SP``, ``AI-121.Dy``), ``<tag>/EURange`` etc. for their properties, the
browse path for folders (``Plant/TbDy/scrub``). Nodes are created in one AddNodes batch (a big
plant's thousands of tags in about a second). Scenario events are of type ``ScenarioEventType``
(a BaseEventType with ``Kind``, ``Target``, ``PlantHours`` and ``Starting``), emitted by the
Server object.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from asyncua import Server, ua

from models.spec import PlantSpec
from opcua import _ua
from opcua import status as st
from opcua.tags import UNECE_NAMESPACE, TagInfo, TagRole

__all__ = ["CLOCK_VARIABLES", "METHODS", "NAMESPACE_URI", "PlantNodes", "build_address_space"]

NAMESPACE_URI: Final = "urn:sxtwin:plant"
"""Namespace of every plant node."""

CLOCK_VARIABLES: Final[dict[str, ua.VariantType]] = {
    "PlantTime": ua.VariantType.DateTime,
    "PlantHours": ua.VariantType.Double,
    "Speed": ua.VariantType.Double,
    "Paused": ua.VariantType.Boolean,
    "RunEpoch": ua.VariantType.DateTime,
    "LagHours": ua.VariantType.Double,
    "Scenario": ua.VariantType.String,
}
"""Plant-wide variables under ``Plant`` (read-only)."""

METHODS: Final[dict[str, tuple[tuple[str, ua.VariantType, str], ...]]] = {
    "LoadScenario": (("ScenarioToml", ua.VariantType.String, "a scenario as TOML text (docs/opcua.md)"),),
    "ClearScenario": (),
    "Pause": (("Paused", ua.VariantType.Boolean, "true pauses the plant clock, false resumes it"),),
    "SetSpeed": (("Speed", ua.VariantType.Double, "plant seconds per wall second, > 0"),),
    "Reset": (),
}
"""Trainer methods (need ``manage_scenarios``) and their input arguments."""

_DT: Final = {
    ua.VariantType.Double: ua.ObjectIds.Double,
    ua.VariantType.String: ua.ObjectIds.String,
    ua.VariantType.Boolean: ua.ObjectIds.Boolean,
    ua.VariantType.DateTime: ua.ObjectIds.DateTime,
}


@dataclass
class PlantNodes:
    """Node ids of what the server updates and guards."""

    namespace_index: int
    plant: ua.NodeId
    trainer: ua.NodeId
    true_state: ua.NodeId
    event_type: ua.NodeId
    variables: dict[str, ua.NodeId] = field(default_factory=dict)
    clock: dict[str, ua.NodeId] = field(default_factory=dict)
    methods: dict[str, ua.NodeId] = field(default_factory=dict)


class _Batch:
    def __init__(self, ns: int) -> None:
        self.ns = ns
        self.items: list[ua.AddNodesItem] = []

    def nid(self, ident: str) -> ua.NodeId:
        return _ua.node_id(ident, self.ns)

    def _item(
        self, parent: ua.NodeId, nid: ua.NodeId, name: str, cls: ua.NodeClass, ref: int, typedef: int
    ) -> ua.AddNodesItem:
        it = ua.AddNodesItem()
        it.RequestedNewNodeId = nid
        it.BrowseName = ua.QualifiedName(name, self.ns)
        it.NodeClass = cls
        it.ParentNodeId = parent
        it.ReferenceTypeId = _ua.node_id(ref)
        it.TypeDefinition = _ua.node_id(typedef)
        return it

    def obj(
        self, parent: ua.NodeId, ident: str, name: str, description: str = "", *, folder: bool = False
    ) -> ua.NodeId:
        nid = self.nid(ident)
        it = self._item(
            parent,
            nid,
            name,
            ua.NodeClass.Object,
            ua.ObjectIds.Organizes if folder else ua.ObjectIds.HasComponent,
            ua.ObjectIds.FolderType if folder else ua.ObjectIds.BaseObjectType,
        )
        attrs = ua.ObjectAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(description or name)
        attrs.EventNotifier = 0
        it.NodeAttributes = attrs
        self.items.append(it)
        return nid

    def var(
        self,
        parent: ua.NodeId,
        ident: str,
        name: str,
        value: ua.Variant,
        datatype: int,
        *,
        description: str = "",
        writable: bool = False,
        prop: bool = False,
        analog: bool = False,
        history: bool = False,
    ) -> ua.NodeId:
        nid = self.nid(ident)
        if prop:
            ref, typedef = ua.ObjectIds.HasProperty, ua.ObjectIds.PropertyType
        else:
            ref = ua.ObjectIds.HasComponent
            typedef = ua.ObjectIds.AnalogItemType if analog else ua.ObjectIds.BaseDataVariableType
        it = self._item(parent, nid, name, ua.NodeClass.Variable, ref, typedef)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(description or name)
        attrs.DataType = _ua.node_id(datatype)
        attrs.Value = value
        attrs.ValueRank = ua.ValueRank.Scalar
        access = ua.AccessLevel.CurrentRead.mask
        if writable:
            access |= ua.AccessLevel.CurrentWrite.mask
        if history:
            access |= ua.AccessLevel.HistoryRead.mask
        attrs.AccessLevel = access
        attrs.UserAccessLevel = access
        attrs.WriteMask = 0
        attrs.UserWriteMask = 0
        attrs.Historizing = history
        attrs.MinimumSamplingInterval = 0.0
        it.NodeAttributes = attrs
        self.items.append(it)
        return nid


def _eu_information(tag: TagInfo) -> ua.EUInformation:
    eu = tag.engineering_unit
    assert eu is not None
    return ua.EUInformation(
        NamespaceUri=UNECE_NAMESPACE,
        UnitId=eu.unit_id,
        DisplayName=ua.LocalizedText(eu.display),
        Description=ua.LocalizedText(eu.description),
    )


async def build_address_space(
    server: Server,
    spec: PlantSpec,
    tags: tuple[TagInfo, ...],
    method_handler: Callable[[str], Callable[..., Awaitable[Any]]],
) -> PlantNodes:
    """Create the plant's nodes in ``server`` (before it starts).

    ``method_handler(name)`` returns the coroutine function serving method ``name`` (called by
    asyncua with the parent node id and the input arguments).
    """
    ns = await server.register_namespace(NAMESPACE_URI)
    b = _Batch(ns)
    objects = _ua.node_id(ua.ObjectIds.ObjectsFolder)
    plant = b.obj(objects, "Plant", "Plant", f"{spec.plant.name}: {spec.plant.description}")
    nodes = PlantNodes(
        namespace_index=ns,
        plant=plant,
        trainer=b.nid("Plant/Trainer"),
        true_state=b.nid("Plant/Trainer/TrueState"),
        event_type=ua.NodeId(),
    )
    defaults: dict[ua.VariantType, Any] = {
        ua.VariantType.Double: 0.0,
        ua.VariantType.String: "",
        ua.VariantType.Boolean: False,
        ua.VariantType.DateTime: datetime(2000, 1, 1, tzinfo=UTC),
    }
    for name, vt in CLOCK_VARIABLES.items():
        nodes.clock[name] = b.var(plant, f"Plant/{name}", name, ua.Variant(defaults[vt], vt), _DT[vt])
    folders: dict[tuple[str, ...], ua.NodeId] = {(): plant}
    instruments: dict[str, ua.NodeId] = {}
    descriptions = {i.tag: i.description for i in spec.instruments}
    for t in tags:
        parent = plant
        for depth in range(1, len(t.folder) + 1):
            key = t.folder[:depth]
            if key not in folders:
                folders[key] = b.obj(folders[key[:-1]], "Plant/" + "/".join(key), key[-1], folder=True)
            parent = folders[key]
        if t.instrument not in instruments:
            instruments[t.instrument] = b.obj(parent, t.instrument, t.instrument, descriptions.get(t.instrument, ""))
        inst = instruments[t.instrument]
        name = t.tag.rsplit(".", 1)[1]
        if t.role is TagRole.MODE:
            nodes.variables[t.tag] = b.var(
                inst,
                t.tag,
                name,
                ua.Variant("AUTO", ua.VariantType.String),
                ua.ObjectIds.String,
                description=f"{t.instrument} mode: AUTO (actuator follows SP) or MAN (actuator holds)",
                writable=True,
            )
            continue
        what = {TagRole.PV: "measured value", TagRole.SP: "setpoint", TagRole.ELEMENT: f"{t.element} concentration"}
        nid = b.var(
            inst,
            t.tag,
            name,
            ua.Variant(math.nan, ua.VariantType.Double),
            ua.ObjectIds.Double,
            description=f"{t.instrument} {what[t.role]}: {t.description}",
            writable=t.writable,
            analog=True,
        )
        nodes.variables[t.tag] = nid
        lo, hi = t.eu_range
        b.var(
            nid,
            f"{t.tag}/EURange",
            "EURange",
            ua.Variant(ua.Range(Low=lo, High=hi), ua.VariantType.ExtensionObject),
            ua.ObjectIds.Range,
            prop=True,
        )
        b.var(
            nid,
            f"{t.tag}/EngineeringUnits",
            "EngineeringUnits",
            ua.Variant(_eu_information(t), ua.VariantType.ExtensionObject),
            ua.ObjectIds.EUInformation,
            prop=True,
        )
        if t.role is TagRole.SP:
            ilo, ihi = t.instrument_range
            b.var(
                nid,
                f"{t.tag}/InstrumentRange",
                "InstrumentRange",
                ua.Variant(ua.Range(Low=ilo, High=ihi), ua.VariantType.ExtensionObject),
                ua.ObjectIds.Range,
                prop=True,
            )
    trainer = b.obj(plant, "Plant/Trainer", "Trainer", "Simulated plant control and true state (trainer, admin)")
    b.var(
        trainer,
        "Plant/Trainer/TrueState",
        "TrueState",
        ua.Variant("", ua.VariantType.String),
        ua.ObjectIds.String,
        description="The plant's full true state as JSON (every stage, both phases): trainer and admin only",
    )
    results = await server.iserver.isession.add_nodes(b.items)
    for item, res in zip(b.items, results, strict=True):
        if not res.StatusCode.is_good():
            raise RuntimeError(f"AddNodes failed for {item.RequestedNewNodeId.to_string()}: {res.StatusCode.name}")
    waiting = _ua.data_value(ua.Variant(math.nan, ua.VariantType.Double), StatusCode=st.WAITING)
    for t in tags:
        if t.role is not TagRole.MODE:
            await server.write_attribute_value(nodes.variables[t.tag], waiting)
    trainer_node = server.get_node(trainer)
    for name, args in METHODS.items():
        inputs = []
        for arg_name, vt, text in args:
            arg = ua.Argument()
            arg.Name = arg_name
            arg.DataType = _ua.node_id(_DT[vt])
            arg.ValueRank = -1
            arg.Description = ua.LocalizedText(text)
            inputs.append(arg)
        node = await trainer_node.add_method(
            _ua.node_id(f"Plant/Trainer/{name}", ns), name, method_handler(name), inputs, []
        )
        nodes.methods[name] = node.nodeid
    etype = await server.create_custom_event_type(
        ns,
        "ScenarioEventType",
        ua.ObjectIds.BaseEventType,
        [
            ("Kind", ua.VariantType.String),
            ("Target", ua.VariantType.String),
            ("PlantHours", ua.VariantType.Double),
            ("Starting", ua.VariantType.Boolean),
        ],
    )
    nodes.event_type = etype.nodeid
    return nodes
