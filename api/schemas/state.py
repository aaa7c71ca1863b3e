"""Schemas of the live state: stage profiles with uncertainty, tags, predicted KPIs."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["CircuitProfile", "KpiOut", "ParameterOut", "StateOut", "TagOut"]


class CircuitProfile(BaseModel):
    """Stage profiles of one circuit from the estimator (mol/L), with 95 % bounds.

    Arrays are indexed ``[element][stage]`` in the order of ``elements`` and ``stages``.
    The organic bounds carry the same relative (log) uncertainty as the aqueous ones at each
    stage (the estimator reports the aqueous interval; the organic follows through D).
    """

    name: str
    stages: list[str]
    sections: list[str]
    elements: list[str]
    aqueous_mol_per_l: dict[str, list[float | None]]
    aqueous_low_mol_per_l: dict[str, list[float | None]]
    aqueous_high_mol_per_l: dict[str, list[float | None]]
    organic_mol_per_l: dict[str, list[float | None]]
    organic_low_mol_per_l: dict[str, list[float | None]]
    organic_high_mol_per_l: dict[str, list[float | None]]
    ph: list[float | None]


class ParameterOut(BaseModel):
    """One estimated parameter (log multiplier or ln D offset) and its standard deviation."""

    value: float
    std: float


class KpiOut(BaseModel):
    """Predicted purity and recovery (0-1) of one product against its specification."""

    purity: float
    recovery: float
    purity_min: float
    recovery_min: float
    on_spec: bool


class StateOut(BaseModel):
    """The twin's current picture of the plant."""

    plant_time_h: float
    updates: int
    healthy: bool
    last_update_plant_h: float | None
    estimator_wall_s: float | None
    band_inflation: float = Field(
        1.0,
        description="Factor (>= 1) on the bands' log variances: the filter's recent normalised innovation squared "
        "per reading when above 1 (it is surprised by more than it expects, as in a transient)",
    )
    mode: str
    circuits: list[CircuitProfile]
    parameters: dict[str, ParameterOut]
    kpis: dict[str, KpiOut]


class TagOut(BaseModel):
    """The latest value of one tag, with quality and whether the twin used it."""

    tag: str
    value: float | str | None
    quality: str = Field(description="good, uncertain or bad")
    source_time: str
    plant_time_h: float | None
    used: bool
    flag: str | None = Field(description="Why the value was not used, if it was not.")
    unit: str
    description: str
    range_min: float | None
    range_max: float | None
    role: str
