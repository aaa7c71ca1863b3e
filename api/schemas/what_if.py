"""Schemas of what-if simulations."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.schemas.common import StrictModel

__all__ = ["MoveIn", "WhatIfIn", "WhatIfOut"]


class MoveIn(StrictModel):
    """A move of one manipulated variable (name, parameter or controller tag), in its unit."""

    variable: str = Field(
        min_length=1, max_length=100, description="organic_flow, TbDy.organic_flow_l_per_h or FIC-102"
    )
    value: float = Field(allow_inf_nan=False)
    at_h: float = Field(default=0.0, ge=0, le=168, allow_inf_nan=False, description="Hours from now.")
    ramp_h: float = Field(default=0.0, ge=0, le=168, allow_inf_nan=False, description="0: a step.")


class WhatIfIn(StrictModel):
    """Simulate from the current estimated state with proposed moves (nothing is written)."""

    moves: list[MoveIn] = Field(default_factory=list, max_length=20)
    hours: float = Field(default=24.0, gt=0, le=168, allow_inf_nan=False, description="Horizon, h.")


class WhatIfOut(BaseModel):
    """Predicted trajectories: product purity/recovery and manipulated variables over time,
    and the aqueous stage profiles at the end of the horizon."""

    success: bool
    message: str
    wall_time_s: float
    start_plant_time_h: float
    times_h: list[float]
    products: dict[str, dict[str, list[float]]]
    setpoints: dict[str, list[float]]
    final_aqueous_mol_per_l: dict[str, dict[str, list[float]]]
