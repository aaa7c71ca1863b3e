"""Plots that people look at (matplotlib, Agg backend: no display needed).

Plotting lives here, at the command-line edge, never in ``models`` (which does no I/O).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.calibration import CalibrationResult

__all__ = ["parity_plot"]

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
