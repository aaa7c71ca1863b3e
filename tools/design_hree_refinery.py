"""Reproduce the design flows of models/plants/hree_refinery.toml, circuit by circuit.

Each cut is designed alone, upstream first, fed with the upstream design's strip liquor at the
circuit's ``feed_acidity_mol_per_l`` from the spec (the MREC liquor keeps its own 0.1 mol/L):

- scrub flow from a reflux of ``REFLUX`` times the binary minimum-reflux estimate
  ``1 / ((beta - 1) f_B)`` of countercurrent theory (beta of the key pair from the P507-HCl set,
  f_B the feed's mole fraction of the extracted group), as RE scrubbed per RE extracted: 3 for
  NdSm, 1.5 for the other cuts (of 1.5 and 3, the multiple whose worse group purity was higher
  in the design run);
- organic flow bisected (on a log scale, to 1 %) until the strip liquor carries the extracted
  group's share of the feed's rare earths;
- strip flow 1.15 x stoichiometric acid at 6 M, but at least organic/10 (the O/A window);
- saponification 0.35, stage counts, volumes and scrub acid strengths as in the spec.

It prints the flows and the products of each cut; the spec holds them rounded. The whole plant's
steady state then differs from the circuit-by-circuit one only by rounding and by the Na the
strip liquors carry.

Usage: ``.venv/bin/python tools/design_hree_refinery.py`` (about 2 minutes)
"""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.flowsheet import build_flowsheet  # noqa: E402
from models.spec import parse_spec  # noqa: E402
from models.steady import SteadyResult, SteadySolver  # noqa: E402

SPEC = ROOT / "models" / "plants" / "hree_refinery.toml"
HEAVY = {  # the extracted (strip) group of each cut
    "NdSm": ("Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Y", "Er", "Tm", "Yb", "Lu"),
    "GdTb": ("Tb", "Dy", "Ho", "Y", "Er", "Tm", "Yb", "Lu"),
    "TbDy": ("Dy", "Ho", "Y", "Er", "Tm", "Yb", "Lu"),
    "DyHo": ("Ho", "Y", "Er", "Tm", "Yb", "Lu"),
}
BETA = {"NdSm": 7.5, "GdTb": 1.91, "TbDy": 2.1, "DyHo": 1.82}
"""Separation factor of each cut's key pair (Sm/Nd, Tb/Gd, Dy/Tb, Ho/Dy), from the log10 K of the
P507-HCl set (models/data/p507_hcl.csv, DERIVED there: 7.46, 1.91, 2.10, 1.82) rounded as in the
design run."""
SAPONIFICATION = 0.35
STRIP_ACID_MOL_PER_L = 6.0
REFLUX = {"NdSm": 3.0, "GdTb": 1.5, "TbDy": 1.5, "DyHo": 1.5}


def _cut(circuit: dict[str, Any], feed: dict[str, Any]) -> SteadySolver:
    circ = dict(circuit, feed=feed["name"])
    circ.pop("feed_acidity_mol_per_l", None)
    name = circ["name"]
    light = [s for s in ("La", "Ce", "Pr", "Nd", "Sm", "Eu", "Gd", "Tb", "Dy") if s not in HEAVY[name]]
    products = [
        {"name": "raffinate_group", "stream": f"{name}.raffinate", "main_element": light},
        {"name": "strip_group", "stream": f"{name}.strip_liquor", "main_element": list(HEAVY[name])},
    ]
    spec = parse_spec(
        {"plant": {"name": f"cut_{name}"}, "feeds": [feed], "circuits": [circ], "products": products}
    )
    return SteadySolver(build_flowsheet(spec))


def _strip_share(res: SteadyResult, name: str) -> float:
    strip = sum(v for s, v in res.stream(f"{name}.strip_liquor").flux_mol_per_h().items() if s != "Na")
    raff = sum(v for s, v in res.stream(f"{name}.raffinate").flux_mol_per_h().items() if s != "Na")
    return strip / (strip + raff)


def design_cut(circuit: dict[str, Any], feed: dict[str, Any], reflux: float) -> tuple[dict[str, float], SteadyResult]:
    """Flows of one cut and its steady state."""
    name = circuit["name"]
    solver = _cut(circuit, feed)
    fs = solver.fs
    conc = fs.spec.feeds[0].concentrations_mol_per_l()
    flux = {s: c * feed["flow_l_per_h"] for s, c in conc.items() if s != "Na"}
    total = sum(flux.values())
    f_b = sum(v for s, v in flux.items() if s in HEAVY[name]) / total
    beta = BETA[name]
    extracted = f_b * total
    scrub = 3.0 * reflux / ((beta - 1.0) * f_b) * extracted / circuit["scrub_acid_mol_per_l"]
    strip = 1.15 * 3.0 * extracted / STRIP_ACID_MOL_PER_L
    capacity = 3.0 * extracted / (SAPONIFICATION * circuit["chemistry"]["extractant_mol_per_l"])
    lo, hi = 0.2 * capacity, 4.0 * capacity
    z = p0 = None
    best: tuple[dict[str, float], SteadyResult] | None = None
    while hi / lo > 1.01:
        g = math.sqrt(lo * hi)
        flows = {
            "organic_flow_l_per_h": g,
            "scrub_flow_l_per_h": scrub,
            "strip_flow_l_per_h": max(strip, g / 10.0),
            "saponification": SAPONIFICATION,
            "strip_acid_mol_per_l": STRIP_ACID_MOL_PER_L,
        }
        p = fs.parameter_vector({f"{name}.{k}": v for k, v in flows.items()})
        res = solver.solve(p, z, p0=p0) if z is not None else solver.solve(p)
        if not res.success:
            lo = g
            continue
        z, p0 = res.z, p
        if _strip_share(res, name) > f_b:
            hi = g
        else:
            lo = g
        best = (flows, res)
    if best is None:
        raise SystemExit(f"{name}: no organic flow between {lo:.0f} and {hi:.0f} L/h solved")
    return best


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    spec = tomllib.loads(SPEC.read_text())
    feed = dict(spec["feeds"][0])
    for circuit in spec["circuits"]:
        name = circuit["name"]
        # a strip liquor enters at its circuit's adjusted acidity (the MREC liquor at its own)
        feed["acidity_mol_per_l"] = circuit.get("feed_acidity_mol_per_l", feed["acidity_mol_per_l"])
        flows, res = design_cut(circuit, feed, REFLUX[name])
        print(f"[{name}] " + ", ".join(f"{k} = {v:.4g}" for k, v in flows.items()))
        for prod in res.products:
            print(f"    {prod.name}: purity {prod.purity:.5f}, recovery {prod.recovery:.4f}")
        liquor = res.stream(f"{name}.strip_liquor")
        print(f"    strip liquor {liquor.flow_l_per_h:.1f} L/h at {liquor.acidity_mol_per_l:.2f} M HCl")
        feed = {
            "name": "liquor",
            "flow_l_per_h": liquor.flow_l_per_h,
            "acidity_mol_per_l": liquor.acidity_mol_per_l,
            "composition_basis": "mol_per_l",
            "composition": {s: c for s, c in liquor.composition_mol_per_l.items() if c > 1e-9 and s != "Na"},
        }


if __name__ == "__main__":
    main()
