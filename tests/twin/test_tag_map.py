"""Tag maps: a real plant's nodes and units onto the spec's tags (over the in-process plant)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from models.errors import InputError
from models.flowsheet import build_flowsheet
from models.spec import load_spec
from models.steady import SteadySolver
from opcua.plant_runtime import PlantRuntime, RuntimeOptions
from twin.ingestion import plan_tags
from twin.plant_io import InProcessPlant, TagValue
from twin.tag_map import MappedConnection, load_tag_map

PLANTS = Path(__file__).resolve().parents[2] / "models" / "plants"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "map.toml"
    p.write_text(text)
    return p


def test_tag_map_validation_names_the_entry(tmp_path: Path) -> None:
    known = ["FIC-102.PV", "FIC-102.SP"]
    with pytest.raises(InputError, match=r"tags\.XX-1\.PV"):
        load_tag_map(write(tmp_path, '[tags."XX-1.PV"]\nnode = "ns=2;s=a"\n'), known)
    with pytest.raises(InputError, match="node"):
        load_tag_map(write(tmp_path, '[tags."FIC-102.PV"]\nscale = 2.0\n'), known)
    with pytest.raises(InputError, match="scale"):
        load_tag_map(write(tmp_path, '[tags."FIC-102.PV"]\nnode = "ns=2;s=a"\nscale = 0\n'), known)
    with pytest.raises(InputError, match="clock"):
        load_tag_map(write(tmp_path, 'clock = "sun"\n'), known)
    ok = load_tag_map(write(tmp_path, 'clock = "wall"\n[tags."FIC-102.PV"]\nnode = "ns=2;s=a"\nscale = 1000\n'), known)
    assert ok.clock == "wall"
    assert ok.node("FIC-102.PV") == "ns=2;s=a"
    assert ok.node("FIC-102.SP") == "FIC-102.SP"


def test_mapped_connection_scales_both_ways(tmp_path: Path) -> None:
    """The plant publishes the organic flow in m3/h (scale 1000 to L/h); the twin sees L/h and its
    setpoint writes arrive in m3/h."""
    fs = build_flowsheet(load_spec(PLANTS / "tb_dy.toml"))
    z = SteadySolver(fs).solve().z
    known = [t.tag for t in plan_tags(fs)]
    tag_map = load_tag_map(
        write(
            tmp_path,
            '[tags."FIC-102.PV"]\nnode = "FIC-102.PV"\nscale = 1000.0\n'
            '[tags."FIC-102.SP"]\nnode = "FIC-102.SP"\nscale = 1000.0\n',
        ),
        known,
    )

    class MetricPlant(InProcessPlant):
        """The same simulated plant, but speaking m3/h on the organic flow controller."""

        async def read(self, tags):
            raw = await super().read(tags)
            return {
                t: TagValue(t, v.value / 1000.0, v.quality, v.source_time, v.plant_time_h)
                if t.startswith("FIC-102")
                else v
                for t, v in raw.items()
            }

        async def write(self, tag, value):
            return await super().write(tag, value * 1000.0 if tag.startswith("FIC-102") else value)

    async def scenario():
        runtime = PlantRuntime(fs, z, options=RuntimeOptions(seed=2))
        async with MetricPlant(runtime, speed=600.0) as plant:
            mapped = MappedConnection(plant, tag_map)
            now = await mapped.read(["FIC-102.PV", "FIC-101.PV"])
            assert now["FIC-102.PV"].value == pytest.approx(1000.0, rel=0.05)
            assert now["FIC-101.PV"].value == pytest.approx(100.0, rel=0.05)
            result = await mapped.write("FIC-102.SP", 1020.0)
            assert result.accepted
            assert result.value == 1020.0
            assert runtime.setpoint("FIC-102") == pytest.approx(1020.0)

    asyncio.run(scenario())
