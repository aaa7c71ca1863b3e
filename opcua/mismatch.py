"""The simulated plant's own "true" parameters: a mismatch file against the model, and slow drifts.

A twin must live with a plant that is not its model. The simulated plant therefore runs the
flowsheet with parameters of its own, read from a TOML **mismatch file**::

    [mismatch]
    name = "tb_dy_standard"
    plant = "tb_dy"                      # the spec's plant name it is meant for (checked)
    description = "..."

    [distribution_factor.TbDy]           # the plant's D = factor x the model's D, per element
    Dy = 0.90                            #   (sets parameter TbDy.ln_d_offset.Dy = ln 0.90)

    [extractant_factor]                  # the plant's extractant = factor x the model's
    TbDy = 0.95

    [feed_composition.feed]              # the plant's feed basket, % of TREO (oxide basis),
    Tb = 23.0                            #   replacing the spec's; total REO unchanged
    Dy = 76.8

    [parameters]                         # any flowsheet parameter, absolute (internal units)
    "TbDy.temperature_k" = 299.15

    [drift.extractant_loss_per_day]      # extractant lost per day (fraction): c(t) = c0 (1-k)^(t/24 h)
    TbDy = 0.002

    [drift.feed_composition_per_day.feed]  # relative change per day of an element's feed
    Tb = 0.01                              #   concentration, total REO kept constant

Every name is checked against the flowsheet when the file is loaded (:func:`load_mismatch`);
errors name the field and what is allowed. Drift time counts from the start (or reset) of the
run. The numbers of ``models/plants/tb_dy_mismatch.toml`` are CONSTRUCTED test perturbations.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import SpecError
from models.flowsheet import Flowsheet
from models.units import HOURS_PER_DAY

__all__ = ["Mismatch", "load_mismatch", "parse_mismatch"]

Array = npt.NDArray[np.float64]

_SECTIONS = ("mismatch", "distribution_factor", "extractant_factor", "feed_composition", "parameters", "drift")


@dataclass(frozen=True)
class Mismatch:
    """True parameters of the simulated plant relative to the model, and their drifts.

    Attributes
    ----------
    name, description
        From the file (``"none"`` for the plant that is its model).
    overrides
        Flowsheet parameter name to the plant's value at the start of the run (internal units).
    extractant_loss_per_day
        Circuit to the fraction of extractant lost per day.
    feed_drift_per_day
        Parameter ``<feed>.conc_mol_per_l.<El>`` to its relative change per day.
    """

    name: str = "none"
    description: str = "the plant runs the model's own parameters"
    overrides: Mapping[str, float] = field(default_factory=dict)
    extractant_loss_per_day: Mapping[str, float] = field(default_factory=dict)
    feed_drift_per_day: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("overrides", "extractant_loss_per_day", "feed_drift_per_day"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def initial_parameters(self, fs: Flowsheet) -> Array:
        """The plant's parameter vector at the start of a run."""
        return fs.parameter_vector(self.overrides)

    @property
    def drifts(self) -> bool:
        """Whether anything drifts."""
        return bool(self.extractant_loss_per_day or self.feed_drift_per_day)

    def at(self, fs: Flowsheet, p0: Array, t_h: float) -> Array:
        """The plant's parameters ``t_h`` hours into the run: ``p0`` with the drifts applied
        (manipulated variables are the caller's business)."""
        p = np.array(p0, dtype=float)
        days = max(t_h, 0.0) / HOURS_PER_DAY
        for circuit, loss in self.extractant_loss_per_day.items():
            i = fs.parameters.index(f"{circuit}.extractant_mol_per_l")
            p[i] = p0[i] * (1.0 - loss) ** days
        if self.feed_drift_per_day:
            feeds: dict[str, list[int]] = {}
            for name in fs.parameters.names:
                head, _, rest = name.partition(".conc_mol_per_l.")
                if rest:
                    feeds.setdefault(head, []).append(fs.parameters.index(name))
            for idx in feeds.values():
                total0 = float(sum(p0[i] for i in idx))
                for i in idx:
                    rate = self.feed_drift_per_day.get(fs.parameters.names[i], 0.0)
                    p[i] = max(p0[i] * (1.0 + rate * days), 0.0)
                total = float(sum(p[i] for i in idx))
                if total > 0.0:
                    for i in idx:
                        p[i] *= total0 / total
        return p

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "description": self.description,
            "overrides": dict(self.overrides),
            "extractant_loss_per_day": dict(self.extractant_loss_per_day),
            "feed_drift_per_day": dict(self.feed_drift_per_day),
        }


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: {key} must be a table", field=key)
    return value


def _number(value: Any, fld: str, where: str, *, positive: bool = False, fraction: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise SpecError(f"{where}: {fld}: {value!r} is not allowed; expected a finite number", field=fld)
    v = float(value)
    if positive and v <= 0.0:
        raise SpecError(f"{where}: {fld}: {v!r} is not allowed; expected a number > 0", field=fld)
    if fraction and not 0.0 <= v < 1.0:
        raise SpecError(f"{where}: {fld}: {v!r} is not allowed; expected a fraction in [0, 1)", field=fld)
    return v


def parse_mismatch(data: Mapping[str, Any], fs: Flowsheet, *, where: str = "mismatch") -> Mismatch:
    """Validate a mismatch mapping (a parsed TOML file) against a flowsheet."""
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise SpecError(f"{where}: unknown section(s) {unknown}; allowed: {', '.join(_SECTIONS)}", field=unknown[0])
    head = _table(data, "mismatch", where)
    plant = head.get("plant")
    if plant is not None and plant != fs.spec.plant.name:
        raise SpecError(
            f"{where}: mismatch.plant: {plant!r} is not this plant; expected {fs.spec.plant.name!r}",
            field="mismatch.plant",
        )
    names = set(fs.parameters.names)
    circuits = {c.name: c for c in fs.circuits}
    overrides: dict[str, float] = {}
    for circuit, factors in _table(data, "distribution_factor", where).items():
        if circuit not in circuits:
            raise SpecError(
                f"{where}: distribution_factor.{circuit}: unknown circuit; circuits: {', '.join(circuits)}",
                field=f"distribution_factor.{circuit}",
            )
        if not isinstance(factors, Mapping):
            raise SpecError(f"{where}: distribution_factor.{circuit} must be a table", field=circuit)
        for el, factor in factors.items():
            fld = f"distribution_factor.{circuit}.{el}"
            if el not in circuits[circuit].elements:
                raise SpecError(
                    f"{where}: {fld}: {el!r} is not tracked in {circuit}; allowed: "
                    f"{', '.join(circuits[circuit].elements)}",
                    field=fld,
                )
            overrides[f"{circuit}.ln_d_offset.{el}"] = math.log(_number(factor, fld, where, positive=True))
    for circuit, factor in _table(data, "extractant_factor", where).items():
        fld = f"extractant_factor.{circuit}"
        if circuit not in circuits:
            raise SpecError(f"{where}: {fld}: unknown circuit; circuits: {', '.join(circuits)}", field=fld)
        name = f"{circuit}.extractant_mol_per_l"
        overrides[name] = fs.parameters[name] * _number(factor, fld, where, positive=True)
    feeds = {f.name: f for f in fs.spec.feeds}
    for feed, comp in _table(data, "feed_composition", where).items():
        fld = f"feed_composition.{feed}"
        if feed not in feeds:
            raise SpecError(f"{where}: {fld}: unknown feed; feeds: {', '.join(feeds)}", field=fld)
        spec = feeds[feed]
        if spec.composition_basis != "oxide_pct_treo" or not isinstance(comp, Mapping):
            raise SpecError(
                f"{where}: {fld}: expected a table of % TREO per element for a feed given in % TREO", field=fld
            )
        pct = {str(el): _number(v, f"{fld}.{el}", where) for el, v in comp.items()}
        tracked = {n.rsplit(".", 1)[1] for n in names if n.startswith(f"{feed}.conc_mol_per_l.")}
        extra = sorted(set(pct) - tracked)
        if extra:
            raise SpecError(
                f"{where}: {fld}: {extra} are not in the model's feed; allowed: {', '.join(sorted(tracked))}",
                field=fld,
            )
        if sum(pct.values()) <= 0.0 or min(pct.values()) < 0.0:
            raise SpecError(f"{where}: {fld}: shares must be >= 0 with a positive sum", field=fld)
        shifted = spec.model_copy(update={"composition": pct, "basket": None})
        conc = shifted.concentrations_mol_per_l()
        for el in tracked:
            overrides[f"{feed}.conc_mol_per_l.{el}"] = conc.get(el, 0.0)
    for name, value in _table(data, "parameters", where).items():
        fld = f"parameters.{name}"
        if name not in names:
            raise SpecError(f"{where}: {fld}: unknown parameter; see Flowsheet.parameters.names", field=fld)
        overrides[name] = _number(value, fld, where)
    drift = _table(data, "drift", where)
    bad = sorted(set(drift) - {"extractant_loss_per_day", "feed_composition_per_day"})
    if bad:
        raise SpecError(
            f"{where}: drift.{bad[0]}: unknown drift; allowed: extractant_loss_per_day, feed_composition_per_day",
            field=f"drift.{bad[0]}",
        )
    loss: dict[str, float] = {}
    for circuit, value in _table(drift, "extractant_loss_per_day", where).items():
        fld = f"drift.extractant_loss_per_day.{circuit}"
        if circuit not in circuits:
            raise SpecError(f"{where}: {fld}: unknown circuit; circuits: {', '.join(circuits)}", field=fld)
        loss[circuit] = _number(value, fld, where, fraction=True)
    feed_drift: dict[str, float] = {}
    for feed, rates in _table(drift, "feed_composition_per_day", where).items():
        fld = f"drift.feed_composition_per_day.{feed}"
        if feed not in feeds or not isinstance(rates, Mapping):
            raise SpecError(f"{where}: {fld}: expected a table for one of the feeds {', '.join(feeds)}", field=fld)
        for el, rate in rates.items():
            name = f"{feed}.conc_mol_per_l.{el}"
            if name not in names:
                raise SpecError(f"{where}: {fld}.{el}: {el!r} is not in the model's feed {feed!r}", field=fld)
            feed_drift[name] = _number(rate, f"{fld}.{el}", where)
    return Mismatch(
        name=str(head.get("name", Path(where).stem)),
        description=str(head.get("description", "")),
        overrides=overrides,
        extractant_loss_per_day=loss,
        feed_drift_per_day=feed_drift,
    )


def load_mismatch(path: str | Path, fs: Flowsheet) -> Mismatch:
    """Read and validate a mismatch TOML file (raises :class:`~models.errors.SpecError`)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{p}: cannot read mismatch file: {exc.strerror}", field="mismatch") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{p}: malformed TOML: {exc}", field="mismatch") from None
    return parse_mismatch(data, fs, where=str(p))
