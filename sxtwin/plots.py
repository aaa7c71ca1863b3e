"""Plots that people look at (matplotlib, Agg backend: no display needed).

Plotting lives here, at the command-line edge, never in ``models`` (which does no I/O).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.calibration import CalibrationResult
    from models.dynamics import DynamicResult
    from models.steady import SteadyResult

__all__ = ["parity_plot", "profile_plot", "trends_plot"]

BAND_LOG10 = 0.25
"""Half-width of the shaded band around the 1:1 line, log10 units (the calibration target)."""


def parity_plot(result: CalibrationResult, path: Path) -> Path:
    """Measured vs predicted log10 D, coloured by element, for the literature set, the
    calibrated set in-sample (with and, if fitted, without study offsets) and cross-validated;
    1:1 line and a +-0.25 band.

    Writes a PNG to ``path`` and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = result.measured_log10_d
    panels = [
        (f"literature set {result.base.key}", result.baseline_log10_d, result.baseline.overall),
        (
            "calibrated, in-sample"
            + (" (with study offsets)" if result.options.source_offsets else ""),
            result.predicted_log10_d,
            result.rmse.overall,
        ),
        ("calibrated, cross-validated", result.cv_predicted_log10_d, result.cv_rmse.overall),
    ]
    if result.options.source_offsets:
        panels.insert(
            2,
            (
                "calibrated set as saved (no study offsets)",
                result.system_log10_d,
                result.system_rmse.overall,
            ),
        )
    elements = list(result.rmse.by_element)
    colours = plt.get_cmap("tab10")
    all_values = np.concatenate([measured, *[p[1] for p in panels]])
    lo, hi = float(np.min(all_values)) - 0.2, float(np.max(all_values)) + 0.2
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 5.0), sharex=True, sharey=True
    )
    for ax, (title, predicted, rmse) in zip(axes, panels, strict=True):
        line = np.array([lo, hi])
        ax.fill_between(line, line - BAND_LOG10, line + BAND_LOG10, color="0.9", label="±0.25")
        ax.plot(line, line, color="0.3", lw=1.0, label="1:1")
        for i, symbol in enumerate(elements):
            mask = np.array([p.element == symbol for p in result.points])
            ax.scatter(predicted[mask], measured[mask], s=14, color=colours(i % 10), label=symbol)
        ax.set_title(f"{title}\nRMSE {rmse:.3f} log10 units, N = {result.n_points}", fontsize=10)
        ax.set_xlabel("predicted log10 D")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.grid(True, lw=0.3)
    axes[0].set_ylabel("measured log10 D")
    axes[-1].legend(loc="lower right", fontsize=8, ncols=2)
    fig.suptitle(f"{result.data.name}: parity of log10 D", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def profile_plot(result: SteadyResult, path: Path) -> Path:
    """Stage profiles per circuit: log10 concentration of every element along the cascade
    (aqueous solid, organic dashed), section boundaries marked, pH on a second axis.

    Writes a PNG to ``path`` and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    circuits = result.circuits
    fig, axes = plt.subplots(len(circuits), 1, figsize=(11, 4.2 * len(circuits)), squeeze=False)
    for ax, c in zip(axes[:, 0], circuits, strict=True):
        stages = np.arange(1, len(c.stages) + 1)
        colors = plt.get_cmap("tab20")
        for i, s in enumerate(c.elements):
            col = colors(i % 20)
            ax.semilogy(stages, np.maximum(c.aqueous_mol_per_l[i], 1e-30), "-", color=col, label=f"{s} aq")
            ax.semilogy(stages, np.maximum(c.organic_mol_per_l[i], 1e-30), "--", color=col, label=f"{s} org")
        bounds = [k + 0.5 for k in range(1, len(c.sections)) if c.sections[k] != c.sections[k - 1]]
        for b in bounds:
            ax.axvline(b, color="0.4", lw=0.8)
        lo = max(1e-16, float(np.nanmin(np.concatenate([c.aqueous_mol_per_l.ravel(), c.organic_mol_per_l.ravel()]))))
        ax.set_ylim(lo, 5.0)
        ax.set_xlabel("stage along the organic path (extraction | scrub | strip)")
        ax.set_ylabel("concentration, mol/L")
        ax.set_title(f"{c.name}: stage profiles")
        ax2 = ax.twinx()
        ax2.plot(stages, c.ph, color="k", lw=1.2, alpha=0.6)
        ax2.set_ylabel("pH (black)")
        ax.legend(ncol=6, fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trends_plot(result: DynamicResult, path: Path) -> Path:
    """Product purity and recovery against plant time. Writes a PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, values in result.product_purity.items():
        ax1.plot(result.times_h, values, label=name)
    for name, values in result.product_recovery.items():
        ax2.plot(result.times_h, values, label=name)
    ax1.set_ylabel("purity (REO basis)")
    ax2.set_ylabel("recovery")
    ax2.set_xlabel("plant time, h")
    ax1.legend()
    ax1.set_title("product trends")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
