"""The plant: spec, circuits with stage labels, products, manipulated variables, instruments."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from api.auth import Principal, require
from api.deps import RuntimeDep
from api.schemas.common import ProblemResponses
from api.schemas.plant import PlantOut
from twin.security import Permission

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["plant"], responses=ProblemResponses)


@router.get("/plant", response_model=PlantOut, summary="The plant spec and the twin's view of it")
async def plant(runtime: RuntimeDep, _: Annotated[Principal, Depends(require(Permission.READ_STATE))]) -> PlantOut:
    spec, fs = runtime.spec, runtime.flowsheet
    circuits: list[dict[str, Any]] = []
    for c in spec.circuits:
        lay = fs.circuit(c.name)
        circuits.append(
            {
                "name": c.name,
                "stages": list(lay.stage_labels()),
                "sections": [lay.section(j) for j in range(lay.n_stages)],
                "elements": list(lay.elements),
            }
        )
    return PlantOut(
        name=spec.plant.name,
        description=spec.plant.description,
        plant_kind=runtime.plant_kind,
        plant_endpoint=runtime.plant_endpoint,
        speed=runtime.speed,
        circuits=circuits,
        products=[p.model_dump(mode="json") for p in spec.products],
        manipulated=[m.model_dump(mode="json") for m in spec.manipulated],
        instruments=[i.model_dump(mode="json") for i in spec.instruments],
        spec=spec.model_dump(mode="json"),
    )
