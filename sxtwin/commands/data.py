"""``sxtwin data``: list chemistry systems and explain where each number comes from."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from models.parameters import available_systems, load_system
from models.provenance import source
from sxtwin._output import emit, handle_errors

app = typer.Typer(no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


@app.command("systems", help="List the shipped chemistry systems.")
def systems(as_json: JsonOpt = False) -> None:
    with handle_errors(as_json):
        rows = []
        for key in available_systems():
            s = load_system(key)
            rows.append({"key": key, "family": s.family.value, "medium": s.medium.value,
                         "extractant": s.extractant.name, "elements": list(s.elements),
                         "description": s.description})

        def human() -> None:
            for r in rows:
                typer.echo(f"{r['key']:<16} {r['family']:<18} {r['medium']:<9} {r['description']}")

        emit({"systems": rows}, as_json, human)


@app.command("explain", help="Print every value of SYSTEM (optionally for one ELEMENT) with its source, locus and class.")
def explain(
    system: Annotated[str, typer.Argument(help="Chemistry system key, e.g. P507-HCl.")],
    element: Annotated[str | None, typer.Argument(help="Element symbol, e.g. Dy.")] = None,
    as_json: JsonOpt = False,
) -> None:
    with handle_errors(as_json):
        s = load_system(system)
        if element is not None:
            s.parameters_for(element, field="element")
        entries: list[dict[str, Any]] = []
        for name, prov in s.provenance.items():
            param, _, el = name.partition(".")
            if element is not None and el not in ("", element):
                continue
            value = getattr(s.elements[el], param) if el else _shared_value(s, param)
            entries.append({
                "parameter": param, "element": el or None, "value": value,
                **prov.to_dict(), "citation": " | ".join(source(k).citation for k in prov.source.split("+")),
            })

        def human() -> None:
            typer.echo(f"{s.key}: {s.description}")
            for e in entries:
                where = f"{e['parameter']}[{e['element']}]" if e["element"] else e["parameter"]
                typer.echo(f"\n{where} = {e['value']}  ({e['class']})")
                typer.echo(f"  locus:  {e['locus']}")
                if e["note"]:
                    typer.echo(f"  note:   {e['note']}")
                typer.echo(f"  source: {e['citation']}")

        emit({"system": s.key, "element": element, "values": entries}, as_json, human)


def _shared_value(s: Any, param: str) -> Any:
    if param.startswith("activity_"):
        act = s.activity
        return {"activity_a": act.a, "activity_b": act.b}.get(param, None) if param in ("activity_a", "activity_b") \
            else (act.poly[int(param[-1]) - 1] if param[-1].isdigit() and len(act.poly) >= int(param[-1]) else act.valid_ionic_strength_mol_per_l)
    if param in ("valid_ph_low", "valid_ph_high"):
        return s.valid_ph[0 if param.endswith("low") else 1]
    if param.startswith("extractant_"):
        return s.extractant.molar_mass_g_per_mol if "molar" in param else s.extractant.density_kg_per_l
    return getattr(s, param, None)
