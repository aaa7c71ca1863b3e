"""Helpers shared by the plant commands: spec loading, parameter overrides, move parsing."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from models.dynamics import Move
from models.errors import InputError
from models.flowsheet import Flowsheet, build_flowsheet
from models.spec import load_spec

__all__ = ["load_flowsheet", "parameter_name", "parse_moves", "parse_sets"]


def load_flowsheet(spec_path: Path) -> Flowsheet:
    """Read, validate and build a plant spec."""
    return build_flowsheet(load_spec(spec_path))


def parameter_name(fs: Flowsheet, tag: str, *, field: str) -> str:
    """Resolve a manipulated-variable name, an instrument tag or a parameter name to a parameter."""
    if tag in fs.parameters:
        return tag
    for mv in fs.spec.manipulated:
        if mv.name == tag:
            return mv.variable
    for ins in fs.spec.instruments:
        if ins.tag == tag and ins.variable is not None:
            return ins.variable
    mvs = ", ".join(m.name for m in fs.spec.manipulated)
    raise InputError(
        f"{field}: {tag!r} is not a manipulated variable ({mvs}), a controller tag or a parameter name",
        field=field,
    )


def _number(text: str, field: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{field}: {text!r} is not a number", field=field) from None
    if not math.isfinite(v):
        raise InputError(f"{field}: {text!r} must be finite", field=field)
    return v


def parse_sets(fs: Flowsheet, items: Sequence[str]) -> dict[str, float]:
    """``NAME=VALUE`` overrides of parameters."""
    out: dict[str, float] = {}
    for i, item in enumerate(items):
        field = f"set[{i}]"
        if "=" not in item:
            raise InputError(f"{field}: {item!r} must look like NAME=VALUE", field=field)
        name, value = item.split("=", 1)
        out[parameter_name(fs, name.strip(), field=field)] = _number(value.strip(), field)
    return out


_MOVE = re.compile(r"^(?P<tag>[^=]+)=(?P<value>[^@]+)@(?P<at>[^/]+)(/(?P<ramp>.+))?$")


def parse_moves(fs: Flowsheet, items: Sequence[str], *, option: str = "step") -> list[Move]:
    """``TAG=VALUE@HOURS`` (a step) or ``TAG=VALUE@HOURS/RAMP_HOURS`` (a ramp)."""
    moves = []
    for i, item in enumerate(items):
        field = f"{option}[{i}]"
        m = _MOVE.match(item.strip())
        if not m:
            raise InputError(f"{field}: {item!r} must look like TAG=VALUE@HOURS[/RAMP_HOURS]", field=field)
        at = _number(m["at"], field)
        if at < 0:
            raise InputError(f"{field}: time {at} h must be >= 0", field=field)
        ramp = _number(m["ramp"], field) if m["ramp"] else 0.0
        if ramp < 0:
            raise InputError(f"{field}: ramp {ramp} h must be >= 0", field=field)
        moves.append(Move(parameter_name(fs, m["tag"].strip(), field=field), at, _number(m["value"], field), ramp))
    return moves
