"""``sxtwin data``: shipped chemistry systems, feeds and prices, and where each number is from."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from models.feeds import aggregate_pct, available_feeds, in_situ_pct, load_aggregates, load_feed
from models.parameters import SHARED_PARAMETERS, available_systems, load_system, shared_value
from models.prices import available_scenarios, load_quotes, load_scenario
from models.provenance import source
from sxtwin._output import emit, handle_errors

app = typer.Typer(no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


def _citation(source_keys: str) -> str:
    return " | ".join(source(k).citation for k in source_keys.split("+"))


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


@app.command(
    "explain",
    help="Print every value of SYSTEM (optionally for one ELEMENT) with source, locus and class.",
)
def explain(
    system: Annotated[str, typer.Argument(help="Chemistry system key, e.g. P507-T21.")],
    element: Annotated[str | None, typer.Argument(help="Element symbol, e.g. Dy.")] = None,
    as_json: JsonOpt = False,
) -> None:
    with handle_errors(as_json):
        s = load_system(system)
        if element is not None:
            s.parameters_for(element, field="element")
        shared = {name: shared_value(s, name) for name in SHARED_PARAMETERS}
        entries: list[dict[str, Any]] = []
        for name, prov in s.provenance.items():
            param, _, el = name.partition(".")
            if element is not None and el not in ("", element):
                continue
            value = getattr(s.elements[el], param) if el else shared[param]
            entries.append({
                "parameter": param, "element": el or None, "value": value,
                **prov.to_dict(), "citation": _citation(prov.source),
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


@app.command("feeds", help="List the shipped feed baskets, or show one NAME with provenance.")
def feeds(
    name: Annotated[str | None, typer.Argument(help="Feed name, e.g. makuutu_like.")] = None,
    as_json: JsonOpt = False,
) -> None:
    with handle_errors(as_json):
        if name is None:
            rows = [{"feed": f.name, "basis": f.basis.value, "complete": f.complete,
                     "elements": list(f.values), "description": f.description}
                    for f in (load_feed(n) for n in available_feeds())]

            def human_list() -> None:
                for r in rows:
                    flag = "complete  " if r["complete"] else "incomplete"
                    typer.echo(f"{r['feed']:<18} {flag} {r['description']}")

            emit({"feeds": rows}, as_json, human_list)
            return
        feed = load_feed(name)
        payload = feed.to_dict()
        aggregates = []
        pct = feed.oxide_pct_treo() if feed.complete else None
        ce_ore = next((a.value_pct for a in load_aggregates(feed.name) if a.name == "ceo2_in_situ"),
                      None)
        for agg in load_aggregates(feed.name):
            entry = agg.to_dict()
            entry["basket_fraction"] = None
            if pct is not None and agg.members and agg.basis != "shape":
                base = pct
                if agg.basis == "in_situ":
                    base = in_situ_pct(pct, ce_ore) if ce_ore is not None else {}
                if base:
                    entry["basket_fraction"] = aggregate_pct(base, agg.members) / 100.0
            aggregates.append(entry)
        payload["aggregates"] = aggregates

        def human() -> None:
            typer.echo(f"{feed.name}: {feed.description}")
            oxide = feed.oxide_pct_treo() if feed.complete else {}
            for s, v in feed.values.items():
                conv = f"{oxide[s]:7.3f} % TREO" if s in oxide else " " * 12
                typer.echo(f"  {s:<3} {v.value:>9g} ({v.basis.value}) {conv}  "
                           f"{v.provenance.cls.value:<12} {v.provenance.source}")
            if not feed.complete:
                typer.echo("  incomplete: not usable as a plant feed")
            for a in aggregates:
                got = ("" if a["basket_fraction"] is None
                       else f" -> basket {100 * a['basket_fraction']:.2f} %")
                claim = "claimed" if a["claimed"] else "not claimed"
                typer.echo(f"  aggregate {a['aggregate']}: {100 * a['fraction']:g} % "
                           f"({a['basis']}, {claim}){got}  [{a['source']}]")

        emit(payload, as_json, human)


@app.command("prices", help="List price scenarios and quotes, or the prices of one --scenario.")
def prices(
    scenario: Annotated[
        str | None, typer.Option("--scenario", help="Scenario name, e.g. china_domestic.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    with handle_errors(as_json):
        if scenario is None:
            scen = [{"scenario": n, "description": load_scenario(n).description}
                    for n in available_scenarios()]
            quotes = [q.to_dict() for q in load_quotes().values()]

            def human_list() -> None:
                for s in scen:
                    typer.echo(f"{s['scenario']:<16} {s['description']}")
                typer.echo(f"\n{len(quotes)} quotes (USD/kg: sxtwin data prices --scenario NAME):")
                for q in quotes:
                    rng = q["low"] if q["high"] in (None, q["low"]) else f"{q['low']}-{q['high']}"
                    typer.echo(f"  {q['id']:<32} {q['item']:<12} {rng} {q['unit']:<8} "
                               f"{q['date']:<10} {q['class']:<10} {q['source']}")

            emit({"scenarios": scen, "quotes": quotes}, as_json, human_list)
            return
        ps = load_scenario(scenario)

        def human() -> None:
            typer.echo(f"{ps.name}: {ps.description}")
            typer.echo(f"  CNY per USD {ps.fx_cny_per_usd}, VAT {ps.vat_fraction:.0%}")
            for p in ps.prices.values():
                val = "NOT_FOUND" if p.usd_per_kg is None else f"{p.usd_per_kg:10.3f}"
                if p.usd_per_kg is not None and p.status.value == "NOT_FOUND":
                    val = f"{p.usd_per_kg:10.3f} (NOT_FOUND)"
                typer.echo(f"  {p.product:<14} {val:>22} USD/kg  {p.provenance.cls.value:<10} "
                           f"{p.provenance.locus}")

        emit(ps.to_dict(), as_json, human)
