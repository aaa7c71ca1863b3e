"""Turning twin and historian objects into JSON-ready payloads (shared by routers and the stream)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from api.runtime import TwinRuntime
from twin.estimation import EstimateSnapshot
from twin.historian_records import Decision, Event, Proposal, WriteRecord

__all__ = ["clean", "decision_out", "event_out", "kpis_out", "proposal_out", "state_payload", "write_out"]


def clean(value: Any) -> Any:
    """Strict-JSON values: non-finite floats become None, numpy becomes Python."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _rows(elements: tuple[str, ...], arr: np.ndarray) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {}
    for i, s in enumerate(elements):
        row = arr[i]
        ok = np.isfinite(row)
        out[s] = row.tolist() if ok.all() else [float(v) if f else None for v, f in zip(row, ok, strict=True)]
    return out


def kpis_out(kpis: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Predicted KPIs with an ``on_spec`` flag."""
    return {
        name: {
            **{k: clean(v) for k, v in k_.items()},
            "on_spec": bool(k_["purity"] >= k_["purity_min"] and k_["recovery"] >= k_["recovery_min"]),
        }
        for name, k_ in kpis.items()
    }


def state_payload(runtime: TwinRuntime, snap: EstimateSnapshot) -> dict[str, Any]:
    """The ``/api/state`` body for ``snap``."""
    twin = runtime.twin
    circuits = []
    for c in snap.circuits:
        lay = runtime.flowsheet.circuit(c.name)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(c.aqueous_mol_per_l > 0, c.aqueous_high / c.aqueous_mol_per_l, 1.0)
            down = np.where(c.aqueous_mol_per_l > 0, c.aqueous_low / c.aqueous_mol_per_l, 1.0)
        circuits.append(
            {
                "name": c.name,
                "stages": list(c.stages),
                "sections": [lay.section(j) for j in range(len(c.stages))],
                "elements": list(c.elements),
                "aqueous_mol_per_l": _rows(c.elements, c.aqueous_mol_per_l),
                "aqueous_low_mol_per_l": _rows(c.elements, c.aqueous_low),
                "aqueous_high_mol_per_l": _rows(c.elements, c.aqueous_high),
                "organic_mol_per_l": _rows(c.elements, c.organic_mol_per_l),
                "organic_low_mol_per_l": _rows(c.elements, c.organic_mol_per_l * down),
                "organic_high_mol_per_l": _rows(c.elements, c.organic_mol_per_l * up),
                "ph": clean(c.ph.tolist()),
            }
        )
    return {
        "plant_time_h": clean(snap.plant_time_h),
        "updates": snap.updates,
        "healthy": snap.healthy,
        "last_update_plant_h": clean(snap.last_update_plant_h),
        "estimator_wall_s": clean(twin.last_estimator_wall_s),
        "band_inflation": clean(snap.band_inflation),
        "mode": twin.mode.value,
        "circuits": circuits,
        "parameters": {
            k: {"value": clean(v), "std": clean(snap.parameter_std.get(k, math.nan))}
            for k, v in snap.parameters.items()
        },
        "kpis": kpis_out(twin.predicted_kpis()),
    }


def decision_out(d: Decision | None) -> dict[str, Any] | None:
    """A decision as JSON."""
    if d is None:
        return None
    return {"id": d.id, "verdict": d.verdict.value, "decided_by": d.decided_by, "comment": d.comment, "time": d.time}


def write_out(w: WriteRecord) -> dict[str, Any]:
    """A write record as JSON (with its link to a proposal and approver)."""
    return {
        "id": w.id,
        "tag": w.tag,
        "value": w.value,
        "previous_value": w.previous_value,
        "requested_by": w.requested_by,
        "approved_by": w.approved_by,
        "proposal_id": w.proposal_id,
        "mode": w.mode.value,
        "intent_at": w.intent_at,
        "outcome": w.outcome.value,
        "outcome_at": w.outcome_at,
        "message": w.message,
    }


def proposal_out(
    p: Proposal, decision: Decision | None = None, writes: list[WriteRecord] | None = None
) -> dict[str, Any]:
    """A proposal as JSON."""
    return {
        "id": p.id,
        "status": p.status.value,
        "created_by": p.created_by,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "setpoints": dict(p.setpoints),
        "current_setpoints": None if p.current_setpoints is None else dict(p.current_setpoints),
        "predicted_effect": dict(p.predicted_effect),
        "active_constraints": list(p.active_constraints),
        "reason": p.reason,
        "circuit": p.circuit,
        "spec_version": p.spec_version,
        "parameter_set_version": p.parameter_set_version,
        "code_version": p.code_version,
        "decision": decision_out(decision),
        "writes": [write_out(w) for w in writes or []],
    }


def event_out(e: Event) -> dict[str, Any]:
    """An event as JSON."""
    return {
        "id": e.id,
        "kind": e.kind.value,
        "severity": e.severity.value,
        "source": e.source,
        "message": e.message,
        "time": e.time,
        "plant_time_h": e.plant_time_h,
        "acknowledged": e.acknowledged,
        "acknowledged_by": e.acknowledged_by,
        "acknowledged_at": e.acknowledged_at,
        "ack_comment": e.ack_comment,
    }
