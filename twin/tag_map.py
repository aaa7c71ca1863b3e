"""Tag maps: a real plant's NodeIds, units and scaling mapped onto the spec's instruments.

The twin names values by the spec's tags (``FIC-102.PV``, ``AI-121.Dy``; docs/tags.md). A real
plant's server has its own NodeIds and units; a tag-map file (TOML) says, per spec tag, which
node carries it and how to convert::

    clock = "wall"                 # "plant" (the server publishes Plant/PlantHours) or "wall"

    [tags."FIC-102.PV"]
    node = "ns=2;s=Line1.FIC102.PV"
    scale = 1000.0                 # spec value = scale * plant value + offset (here m3/h -> L/h)
    offset = 0.0

    [tags."FIC-102.SP"]
    node = "ns=2;s=Line1.FIC102.SP"
    scale = 1000.0

Tags not listed keep their sxtwin names (the simulated plant's namespace). With
``clock = "wall"`` plant time is wall time in hours since the twin started, and every value's
plant time comes from its source timestamp, so staleness is judged the same way as on the
simulated plant. :class:`MappedConnection` applies a map to any :class:`PlantConnection` whose
tags are NodeId strings for mapped tags (the OPC UA client accepts ``ns=...;s=...`` NodeIds).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from models.errors import InputError
from twin.plant_io import OnChange, PlantConnection, TagValue, WriteResult

__all__ = ["MappedConnection", "TagMap", "TagMapping", "load_tag_map"]


@dataclass(frozen=True)
class TagMapping:
    """One spec tag on a real plant: node, and ``spec = scale * plant + offset``."""

    node: str
    scale: float = 1.0
    offset: float = 0.0

    def to_spec(self, value: float) -> float:
        """Plant units to the spec's units."""
        return self.scale * value + self.offset

    def to_plant(self, value: float) -> float:
        """Spec units to the plant's units."""
        return (value - self.offset) / self.scale


@dataclass(frozen=True)
class TagMap:
    """A whole map: per-tag mappings and the clock."""

    tags: Mapping[str, TagMapping]
    clock: Literal["plant", "wall"] = "plant"

    def node(self, tag: str) -> str:
        """The node (or sxtwin tag) that carries ``tag``."""
        m = self.tags.get(tag)
        return m.node if m is not None else tag


def load_tag_map(path: Path, known_tags: Sequence[str] | None = None) -> TagMap:
    """Read and validate a tag-map file; errors name the entry and the field."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"tag map {path}: cannot read: {exc.strerror}", field="tag_map") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"tag map {path}: malformed TOML: {exc}", field="tag_map") from None
    clock = raw.get("clock", "plant")
    if clock not in ("plant", "wall"):
        raise InputError(f"tag map clock: {clock!r} is not allowed; use 'plant' or 'wall'", field="clock")
    out: dict[str, TagMapping] = {}
    for tag, entry in dict(raw.get("tags", {})).items():
        where = f"tags.{tag}"
        if known_tags is not None and tag not in known_tags:
            raise InputError(f"{where}: {tag!r} is not a tag of the spec (see docs/tags.md)", field=where)
        if not isinstance(entry, dict) or not isinstance(entry.get("node"), str) or not entry["node"].strip():
            raise InputError(f"{where}.node: a NodeId string such as 'ns=2;s=Line1.FIC102.PV' is required", field=where)
        scale = entry.get("scale", 1.0)
        offset = entry.get("offset", 0.0)
        for name, v in (("scale", scale), ("offset", offset)):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"{where}.{name}: {v!r} must be a finite number", field=f"{where}.{name}")
        if scale == 0:
            raise InputError(f"{where}.scale: must not be 0", field=f"{where}.scale")
        extra = set(entry) - {"node", "scale", "offset"}
        if extra:
            raise InputError(f"{where}: unknown field(s) {sorted(extra)}; allowed: node, scale, offset", field=where)
        out[tag] = TagMapping(entry["node"].strip(), float(scale), float(offset))
    return TagMap(out, clock)


class MappedConnection:
    """A :class:`PlantConnection` in spec tags and units over one in plant nodes and units."""

    def __init__(self, inner: PlantConnection, tag_map: TagMap, *, epoch: datetime | None = None) -> None:
        self.inner = inner
        self.map = tag_map
        self.epoch = epoch or datetime.now(UTC)

    def _plant_h(self, when: datetime) -> float:
        return (when - self.epoch).total_seconds() / 3600.0

    def _to_spec(self, tag: str, tv: TagValue) -> TagValue:
        m = self.map.tags.get(tag)
        value: Any = tv.value
        if m is not None and isinstance(value, (int, float)):
            value = m.to_spec(float(value))
        plant_h = tv.plant_time_h if self.map.clock == "plant" else self._plant_h(tv.source_time)
        return replace(tv, tag=tag, value=value, plant_time_h=plant_h)

    async def read(self, tags: Sequence[str]) -> dict[str, TagValue]:
        nodes = {self.map.node(t): t for t in tags}
        raw = await self.inner.read(list(nodes))
        return {nodes[n]: self._to_spec(nodes[n], tv) for n, tv in raw.items()}

    async def subscribe(
        self, tags: Sequence[str], on_change: OnChange, *, sampling_ms: int = 1000, publishing_ms: int = 1000
    ) -> None:
        nodes = {self.map.node(t): t for t in tags}

        def relay(tv: TagValue) -> Any:
            return on_change(self._to_spec(nodes.get(tv.tag, tv.tag), tv))

        await self.inner.subscribe(list(nodes), relay, sampling_ms=sampling_ms, publishing_ms=publishing_ms)

    async def write(self, tag: str, value: float) -> WriteResult:
        m = self.map.tags.get(tag)
        result = await self.inner.write(self.map.node(tag), m.to_plant(value) if m else value)
        return replace(result, tag=tag, value=value)

    async def plant_time_h(self) -> float:
        if self.map.clock == "wall":
            return self._plant_h(datetime.now(UTC))
        return await self.inner.plant_time_h()

    async def close(self) -> None:
        await self.inner.close()
