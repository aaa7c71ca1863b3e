"""``sxtwin demo``: a real computation from the shipped data, printed for a first look."""

from __future__ import annotations

from typing import Annotated

import typer

from models.batch import AqueousPhase, OrganicPhase, batch_equilibrium
from models.parameters import load_system
from sxtwin._output import emit, handle_errors


def demo(as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False) -> None:
    with handle_errors(as_json):
        system = load_system("P507-T21")
        feed = AqueousPhase({"Tb": 0.05, "Dy": 0.05}, acidity_mol_per_l=0.1)
        res = batch_equilibrium(system, feed, OrganicPhase(1.0), o_to_a=1.0)
        beta = res.distribution["Dy"] / res.distribution["Tb"]
        payload = {
            "what": "single contact of 0.05 M Tb + 0.05 M Dy (0.1 M HCl) with 1 M P507 at O/A 1",
            "system": system.key,
            "aqueous_mol_per_l": res.aqueous.to_dict(),
            "organic_mol_per_l": res.organic.to_dict(),
            "distribution": res.distribution.to_dict(),
            "separation_factor_dy_tb": beta,
            "ph": res.ph,
            "loading_fraction": res.loading_fraction,
            "rests_on": [r.to_dict() for r in res.rests_on],
        }

        def human() -> None:
            typer.echo(f"{payload['what']} ({system.key}):")
            for s in res.aqueous.names:
                typer.echo(
                    f"  {s}: aq {res.aqueous[s]:.4g} M, org {res.organic[s]:.4g} M, D = {res.distribution[s]:.3g}"
                )
            typer.echo(
                f"  equilibrium pH {res.ph:.2f}, extractant loading {res.loading_fraction:.1%}, "
                f"beta(Dy/Tb) = {beta:.2f}"
            )
            typer.echo("  rests on: " + ", ".join(f"{r.parameter} ({r.cls.value})" for r in res.rests_on))

        emit(payload, as_json, human)
