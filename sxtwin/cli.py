"""The ``sxtwin`` command line. Conventions (JSON output, exit codes): docs/cli.md."""

from __future__ import annotations

import logging
import sys

import typer

from sxtwin.commands import api as api_cmd
from sxtwin.commands import calibrate as calibrate_cmd
from sxtwin.commands import data as data_cmd
from sxtwin.commands import demo as demo_cmd
from sxtwin.commands import optimize as optimize_cmd
from sxtwin.commands import plant as plant_cmd
from sxtwin.commands import simulate as simulate_cmd
from sxtwin.commands import steady as steady_cmd
from sxtwin.commands import study as study_cmd
from sxtwin.commands import twin as twin_cmd
from sxtwin.commands import up as up_cmd

__all__ = ["app", "main"]

app = typer.Typer(
    name="sxtwin",
    help="Process-control digital twin for rare-earth solvent-extraction plants.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="demo", help="Compute something real and print it (what `make run` shows).")(demo_cmd.demo)
app.add_typer(data_cmd.app, name="data", help="Inspect shipped chemistry data and where each number comes from.")
app.command(name="calibrate", help="Fit chemistry to batch data.")(calibrate_cmd.calibrate_cmd)
app.command(name="steady", help="Steady state of a plant spec: products, purities, recoveries.")(steady_cmd.steady)
app.command(name="simulate", help="Dynamics of a plant spec (SUNDIALS IDAS) with setpoint steps.")(
    simulate_cmd.simulate
)
app.command(name="plant", help="Serve a plant spec as a simulated plant over OPC UA (docs/opcua.md).")(plant_cmd.plant)
app.command(name="api", help="Serve the control-room API and dashboard over a live twin.")(api_cmd.api)
app.command(name="twin", help="The live twin of a plant over OPC UA (with its API); credentials from the environment.")(
    twin_cmd.twin
)
app.command(name="up", help="The whole stack: simulated plant (OPC UA), twin, API and dashboard.")(up_cmd.up)

app.command(name="optimize", help="Optimal steady-state setpoints (IPOPT): margin, reagent cost or throughput.")(
    optimize_cmd.optimize
)
app.command(name="study", help="Offline setpoint study on Dask: sweeps, Pareto, capacity, stage design, robustness.")(
    study_cmd.study
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Console-script entry point."""
    app()
