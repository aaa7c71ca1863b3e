"""Saved plant states (``--save STATE`` / ``--from STATE``): JSON with labelled vectors.

A state file holds the plant name, a layout signature (circuits, elements, stage counts), the
labelled parameter vector and the stage unknowns. Loading checks the signature against the
flowsheet and refuses a state saved for another plant or layout, naming what differs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import InputError
from models.flowsheet import Flowsheet

__all__ = ["load_state", "save_state", "signature"]

FORMAT = "sxtwin-state/1"


def signature(fs: Flowsheet) -> list[dict[str, Any]]:
    """The layout a state vector depends on."""
    return [
        {"circuit": c.name, "elements": list(c.elements), "stages": c.n_stages, "unknowns_per_stage": c.nv}
        for c in fs.circuits
    ]


def save_state(path: Path, fs: Flowsheet, z: np.ndarray, p: np.ndarray, *, plant_hours: float = 0.0) -> Path:
    """Write a state file; returns its path."""
    payload = {
        "format": FORMAT,
        "plant": fs.spec.plant.name,
        "layout": signature(fs),
        "plant_hours": plant_hours,
        "parameters": {n: float(v) for n, v in zip(fs.parameters.names, p, strict=True)},
        "unknowns": [float(v) for v in z],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def load_state(path: Path, fs: Flowsheet) -> tuple[np.ndarray, np.ndarray, float]:
    """Read a state file for ``fs``: returns (unknowns, parameters, plant hours)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"state {path}: cannot read: {exc.strerror}", field="from") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"state {path}: not a state file (invalid JSON: {exc.msg})", field="from") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"state {path}: not an sxtwin state file (format {FORMAT} expected)", field="from")
    if payload.get("plant") != fs.spec.plant.name:
        raise InputError(
            f"state {path}: saved for plant {payload.get('plant')!r}, not {fs.spec.plant.name!r}", field="from"
        )
    if payload.get("layout") != signature(fs):
        raise InputError(
            f"state {path}: circuits, elements or stage counts differ from the spec; re-solve and save again",
            field="from",
        )
    z = np.array(payload["unknowns"], dtype=float)
    if z.shape != (fs.n_unknowns,) or not np.all(np.isfinite(z)):
        raise InputError(f"state {path}: unknowns vector is malformed", field="from")
    saved = payload.get("parameters", {})
    p = fs.parameter_vector()
    for i, name in enumerate(fs.parameters.names):
        v = saved.get(name)
        if isinstance(v, (int, float)) and math.isfinite(v):
            p[i] = float(v)
    return z, p, float(payload.get("plant_hours", 0.0))
