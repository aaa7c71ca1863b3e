"""Write a :class:`~models.chemistry.ChemistrySystem` in the long-form CSV of
``models/parameters.py`` (one value per row with source, locus and class) and its catalogue entry.

Returns text only; the caller (CLI, tools) writes files. Only values that carry provenance are
written, so every row has a source, and the result loads back with
:func:`models.parameters.load_system_file` or as a shipped system.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from models.chemistry import ChemistrySystem, Family
from models.elements import ALL_ELEMENTS
from models.errors import ParameterError
from models.parameters import CSV_COLUMNS, ELEMENT_PARAMETERS, SHARED_PARAMETERS, shared_value

__all__ = ["catalogue_entry_toml", "system_csv_text"]

_UNITS = {
    "extractant_molar_mass_g_per_mol": "g/mol",
    "extractant_density_kg_per_l": "kg/L",
    "c_ref_dimer_mol_per_l": "mol/L dimer",
    "alstad_a": "(L/mol)^0.5",
    "log10_beta_cl": "log10 (L/mol)",
    "activity_a": "(kg/mol)^0.5",
    "activity_b": "(kg/mol)^0.5",
    "activity_c1": "kg/mol",
    "activity_c2": "(kg/mol)^2",
    "activity_c3": "(kg/mol)^3",
    "activity_c4": "(kg/mol)^4",
    "activity_valid_i_mol_per_l": "mol/L",
    "cation_activity_a": "(kg/mol)^0.5",
    "cation_activity_b": "(kg/mol)^0.5",
    "cation_activity_epsilon_kg_per_mol": "kg/mol",
    "y_cap_fraction": "1",
    "log10_k_h": "log10 (mol/L)^-2",
    "valid_ph_low": "pH",
    "valid_ph_high": "pH",
    "ph_slope": "1",
    "extractant_order": "1",
    "dosage_coefficient": "1",
    "temperature_coefficient_k": "K",
    "dimers_per_ion": "1",
    "protons_released": "1",
    "constant": "",
}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return format(float(value), ".10g")


def _log10_k_unit(system: ChemistrySystem) -> str:
    if system.family is Family.MASS_ACTION:
        return f"log10 D at pH 0, {system.c_ref_dimer_mol_per_l:g} M free dimer"
    return "log10"


def system_csv_text(system: ChemistrySystem) -> str:
    """The system's values with provenance, as the long-form CSV of ``models/parameters.py``.

    Raises
    ------
    ParameterError
        A provenance key names a parameter or element the system does not have.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name in SHARED_PARAMETERS:
        prov = system.provenance.get(name)
        if prov is None:
            continue
        writer.writerow(
            [
                name,
                "",
                _format(shared_value(system, name)),
                _UNITS.get(name, ""),
                prov.cls.value,
                prov.source,
                prov.locus,
                prov.note,
            ]
        )
    order = [s for s in ALL_ELEMENTS if s in system.elements]
    for key in system.provenance:
        param, _, symbol = key.partition(".")
        if not symbol:
            if param not in SHARED_PARAMETERS:
                raise ParameterError(f"provenance key {key!r} is not a shared parameter", field=key)
            continue
        if symbol not in system.elements or param not in ELEMENT_PARAMETERS:
            raise ParameterError(
                f"provenance key {key!r} names no value of {system.key}", field=key
            )
    for symbol in order:
        for param in ELEMENT_PARAMETERS:
            prov = system.provenance.get(f"{param}.{symbol}")
            if prov is None:
                continue
            unit = _log10_k_unit(system) if param == "log10_k" else _UNITS.get(param, "")
            writer.writerow(
                [
                    param,
                    symbol,
                    _format(getattr(system.elements[symbol], param)),
                    unit,
                    prov.cls.value,
                    prov.source,
                    prov.locus,
                    prov.note,
                ]
            )
    return out.getvalue()


def catalogue_entry_toml(
    system: ChemistrySystem, csv_file: str, *, table: bool, comments: Sequence[str] = ()
) -> str:
    """A catalogue entry for ``system`` whose values are in ``csv_file``.

    ``table=True`` gives a ``["<key>"]`` table for ``models/data/systems.toml``; ``False`` a
    stand-alone file (with ``key``) for :func:`models.parameters.load_system_file`.
    """
    lines = [f"# {c}" for c in comments]
    if table:
        lines.append(f"[{json.dumps(system.key)}]")
    else:
        lines.append(f"key = {json.dumps(system.key)}")
    lines += [
        f"description = {json.dumps(system.description)}",
        f"family = {json.dumps(system.family.value)}",
        f"medium = {json.dumps(system.medium.value)}",
        f"extractant = {json.dumps(system.extractant.name)}",
        f"file = {json.dumps(csv_file)}",
    ]
    return "\n".join(lines) + "\n"
