"""Load chemistry systems from the cited data files in ``models/data``.

``systems.toml`` lists the systems: key, description, family, medium, extractant and the CSV
holding its values. Each system CSV is in long form, one value per row::

    parameter,element,value,unit,class,source,locus,note

``element`` is empty for shared parameters. Every row needs a source key (from
``sources.toml``), a locus and a class; :func:`load_system` refuses a file with a gap. The
stoichiometric defaults (protons released and dimers held per ion = the ion's charge) come
from the element table and need no row.

Shared parameter names: ``extractant_molar_mass_g_per_mol``,
``extractant_density_kg_per_l`` (both required), ``c_ref_dimer_mol_per_l``, ``alstad_a``, ``log10_beta_cl``,
``activity_a``, ``activity_b``, ``activity_c1`` .. ``activity_c4``,
``activity_valid_i_mol_per_l``, ``cation_activity_a``, ``cation_activity_b``,
``cation_activity_epsilon_kg_per_mol``,
``y_cap_fraction``, ``log10_k_h``, ``valid_ph_low``, ``valid_ph_high``.
Per-element names: the fields of :class:`models.chemistry.ElementParameters`.
"""

from __future__ import annotations

import csv
import io
import math
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from models.chemistry import (
    ActivityModel,
    CationActivity,
    ChemistrySystem,
    ElementParameters,
    Extractant,
    Family,
    Medium,
)
from models.elements import element
from models.errors import DataFileError, ParameterError
from models.provenance import Provenance

__all__ = [
    "ELEMENT_PARAMETERS",
    "SHARED_PARAMETERS",
    "available_systems",
    "load_system",
    "parse_system_csv",
    "shared_value",
    "system_csv_text",
]

SHARED_PARAMETERS = (
    "extractant_molar_mass_g_per_mol",
    "extractant_density_kg_per_l",
    "c_ref_dimer_mol_per_l",
    "alstad_a",
    "log10_beta_cl",
    "activity_a",
    "activity_b",
    "activity_c1",
    "activity_c2",
    "activity_c3",
    "activity_c4",
    "activity_valid_i_mol_per_l",
    "cation_activity_a",
    "cation_activity_b",
    "cation_activity_epsilon_kg_per_mol",
    "y_cap_fraction",
    "log10_k_h",
    "valid_ph_low",
    "valid_ph_high",
)
ELEMENT_PARAMETERS = tuple(f.name for f in fields(ElementParameters))
CSV_COLUMNS = ("parameter", "element", "value", "unit", "class", "source", "locus", "note")


def _data_text(name: str) -> str:
    return resources.files("models").joinpath(f"data/{name}").read_text(encoding="utf-8")


@cache
def _catalogue() -> Mapping[str, Mapping[str, Any]]:
    try:
        raw = tomllib.loads(_data_text("systems.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"systems.toml: {exc}") from None
    return raw


def available_systems() -> tuple[str, ...]:
    """Keys of every shipped chemistry system."""
    return tuple(_catalogue())


def system_csv_text(key: str) -> str:
    """The raw CSV text of a shipped system (for ``sxtwin data``)."""
    meta = _catalogue().get(key)
    if meta is None:
        raise ParameterError(
            f"system: unknown chemistry system {key!r}; available: {', '.join(available_systems())}",
            field="system",
        )
    return _data_text(str(meta["file"]))


def shared_value(system: ChemistrySystem, name: str) -> float:
    """The value of shared parameter ``name`` (one of :data:`SHARED_PARAMETERS`) in ``system``."""
    act = system.activity
    if name == "extractant_molar_mass_g_per_mol":
        return system.extractant.molar_mass_g_per_mol
    if name == "extractant_density_kg_per_l":
        return system.extractant.density_kg_per_l
    if name == "activity_a":
        return act.a
    if name == "activity_b":
        return act.b
    if name.startswith("activity_c"):
        k = int(name[-1])
        return act.poly[k - 1] if len(act.poly) >= k else 0.0
    if name == "activity_valid_i_mol_per_l":
        return act.valid_ionic_strength_mol_per_l
    if name.startswith("cation_activity_"):
        cat = system.cation_activity
        return {"a": cat.a, "b": cat.b, "epsilon_kg_per_mol": cat.epsilon_kg_per_mol}[name[len("cation_activity_") :]]
    if name == "valid_ph_low":
        return system.valid_ph[0]
    if name == "valid_ph_high":
        return system.valid_ph[1]
    return float(getattr(system, name))


def parse_system_csv(
    text: str, *, where: str
) -> tuple[dict[str, tuple[float | str, Provenance]], dict[str, dict[str, tuple[float | str, Provenance]]]]:
    """Parse a long-form system CSV into shared and per-element values with provenance."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or tuple(reader.fieldnames[: len(CSV_COLUMNS)]) != CSV_COLUMNS:
        raise DataFileError(
            f"{where}: header must start with {','.join(CSV_COLUMNS)}; got {reader.fieldnames}",
            field=where,
        )
    shared: dict[str, tuple[float | str, Provenance]] = {}
    per_element: dict[str, dict[str, tuple[float | str, Provenance]]] = {}
    for lineno, row in enumerate(reader, start=2):
        loc = f"{where}:{lineno}"
        name = (row.get("parameter") or "").strip()
        sym = (row.get("element") or "").strip()
        raw = (row.get("value") or "").strip()
        prov = Provenance.parse(
            row.get("source") or "",
            row.get("locus") or "",
            row.get("class") or "",
            row.get("note") or "",
            where=loc,
        )
        value: float | str
        if name == "constant":
            value = raw.lower()
            if value not in ("true", "false"):
                raise DataFileError(f"{loc}: constant must be true or false, got {raw!r}", field=loc)
        else:
            try:
                value = float(raw)
            except ValueError:
                raise DataFileError(f"{loc}: {name} value {raw!r} is not a number", field=loc) from None
            if math.isnan(value):
                raise DataFileError(f"{loc}: {name} is NaN", field=loc)
        if sym:
            element(sym, field=loc)
            if name not in ELEMENT_PARAMETERS:
                raise DataFileError(
                    f"{loc}: unknown element parameter {name!r}; allowed: {', '.join(ELEMENT_PARAMETERS)}",
                    field=loc,
                )
            per_element.setdefault(sym, {})[name] = (value, prov)
        else:
            if name not in SHARED_PARAMETERS:
                raise DataFileError(
                    f"{loc}: unknown shared parameter {name!r}; allowed: {', '.join(SHARED_PARAMETERS)}",
                    field=loc,
                )
            shared[name] = (value, prov)
    return shared, per_element


def build_system(meta: Mapping[str, Any], text: str, *, key: str, where: str) -> ChemistrySystem:
    """Build a :class:`ChemistrySystem` from catalogue metadata and CSV text."""
    try:
        family = Family(meta["family"])
        medium = Medium(meta["medium"])
        extractant_name = str(meta["extractant"])
    except (KeyError, ValueError) as exc:
        raise DataFileError(f"systems.toml [{key}]: {exc}", field=key) from None
    shared, per_element = parse_system_csv(text, where=where)
    for required in ("extractant_molar_mass_g_per_mol", "extractant_density_kg_per_l"):
        if required not in shared:
            raise DataFileError(f"{where}: missing shared parameter {required}", field=where)
    extractant = Extractant(
        name=extractant_name,
        molar_mass_g_per_mol=float(shared["extractant_molar_mass_g_per_mol"][0]),
        density_kg_per_l=float(shared["extractant_density_kg_per_l"][0]),
    )
    provenance: dict[str, Provenance] = {}
    elements: dict[str, ElementParameters] = {}
    for sym, vals in per_element.items():
        if "log10_k" not in vals:
            raise DataFileError(f"{where}: element {sym} has no log10_k", field=where)
        charge = float(element(sym).charge)
        kwargs: dict[str, Any] = {"ph_slope": charge, "dimers_per_ion": charge, "protons_released": charge}
        for name, (value, prov) in vals.items():
            kwargs[name] = value == "true" if name == "constant" else value
            provenance[f"{name}.{sym}"] = prov
        elements[sym] = ElementParameters(**kwargs)
    sv = {name: value for name, (value, _) in shared.items()}
    for name, (_, prov) in shared.items():
        provenance[name] = prov
    activity = ActivityModel(
        a=float(sv.get("activity_a", 0.0)),
        b=float(sv.get("activity_b", 0.0)),
        poly=tuple(float(sv.get(f"activity_c{k}", 0.0)) for k in range(1, 5)),
        valid_ionic_strength_mol_per_l=float(sv.get("activity_valid_i_mol_per_l", math.inf)),
    )
    cation_activity = CationActivity(
        a=float(sv.get("cation_activity_a", 0.0)),
        b=float(sv.get("cation_activity_b", 1.5)),
        epsilon_kg_per_mol=float(sv.get("cation_activity_epsilon_kg_per_mol", 0.0)),
    )
    return ChemistrySystem(
        key=key,
        description=str(meta.get("description", "")),
        family=family,
        medium=medium,
        extractant=extractant,
        elements=elements,
        c_ref_dimer_mol_per_l=float(sv.get("c_ref_dimer_mol_per_l", 0.5)),
        alstad_a=float(sv.get("alstad_a", 0.0)),
        log10_beta_cl=float(sv.get("log10_beta_cl", -math.inf)),
        activity=activity,
        cation_activity=cation_activity,
        y_cap_fraction=float(sv.get("y_cap_fraction", 0.9)),
        log10_k_h=float(sv.get("log10_k_h", -math.inf)),
        valid_ph=(float(sv.get("valid_ph_low", -math.inf)), float(sv.get("valid_ph_high", math.inf))),
        provenance=provenance,
    )


@cache
def load_system(key: str) -> ChemistrySystem:
    """A shipped chemistry system by key (``P507-HCl``, ``D2EHPA-H2SO4``, ...)."""
    meta = _catalogue().get(key)
    if meta is None:
        raise ParameterError(
            f"system: unknown chemistry system {key!r}; available: {', '.join(available_systems())}",
            field="system",
        )
    return build_system(meta, _data_text(str(meta["file"])), key=key, where=str(meta["file"]))


def load_system_file(toml_path: Path) -> ChemistrySystem:
    """A chemistry system saved outside the package (for example by ``sxtwin calibrate --save``).

    The TOML file holds the catalogue entry (``key``, ``family``, ...) and a ``csv`` field naming
    the values file next to it.
    """
    try:
        meta = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataFileError(f"{toml_path}: {exc}", field=str(toml_path)) from None
    csv_path = toml_path.parent / str(meta.get("file", ""))
    try:
        text = csv_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"{csv_path}: {exc}", field="file") from None
    return build_system(meta, text, key=str(meta.get("key", toml_path.stem)), where=str(csv_path))
