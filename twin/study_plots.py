"""Plots of study results (matplotlib, Agg backend, PNG): sweeps, scenarios, Pareto fronts,
capacity, stage-design searches and robustness histograms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin.study_spec import StudySpec

__all__ = ["study_plots"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _products(table: pd.DataFrame) -> list[str]:
    return sorted({c[: -len(".purity")] for c in table.columns if c.endswith(".purity")})


def study_plots(spec: StudySpec, table: pd.DataFrame, findings: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Write the plots that suit the study's kind; returns ``{name: path}``."""
    plt = _plt()
    kind = spec.study.kind
    files: dict[str, str] = {}
    ok = table[table["status"] == "ok"] if len(table) else table
    products = _products(table)
    if kind == "sweep" and len(ok):
        labels = [c for c in table.columns if c.startswith("label.")]
        x = labels[0]
        group = labels[1] if len(labels) > 1 else None
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for key, sub in ok.groupby(group) if group else [(None, ok)]:
            sub = sub.sort_values(x)
            tag = f" ({group[6:]}={key!s})" if group else ""
            for prod in products:
                axes[0].plot(sub[x], 1.0 - sub[f"{prod}.purity"], marker="o", label=f"{prod}{tag}")
                axes[1].plot(sub[x], sub[f"{prod}.recovery"], marker="o", label=f"{prod}{tag}")
            y = "objective_value" if "objective_value" in sub else "margin_usd_per_h"
            if y in sub:
                axes[2].plot(sub[x], sub[y], marker="o", label=f"{y}{tag}")
        axes[0].set_yscale("log")
        axes[0].set_ylabel("impurity (1 - purity)")
        axes[1].set_ylabel("recovery")
        axes[2].set_ylabel("objective or margin")
        for ax in axes:
            ax.set_xlabel(x[6:])
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{spec.study.name}: sweep")
        files["plot_sweep"] = _save(fig, plt, out_dir / "sweep.png")
    elif kind == "scenarios" and len(ok):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        scen = [str(v) for v in ok["label.scenario"]]
        y = "objective_value" if "objective_value" in ok else "margin_usd_per_h"
        axes[0].bar(scen, ok[y])
        axes[0].set_ylabel(y)
        width = 0.8 / max(1, len(products))
        for i, prod in enumerate(products):
            axes[1].bar(np.arange(len(ok)) + i * width, 1.0 - ok[f"{prod}.purity"], width, label=prod)
        axes[1].set_xticks(np.arange(len(ok)) + 0.4 - width / 2, scen)
        axes[1].set_yscale("log")
        axes[1].set_ylabel("impurity (1 - purity)")
        axes[1].legend()
        for ax in axes:
            ax.tick_params(axis="x", rotation=30)
        fig.suptitle(f"{spec.study.name}: scenarios")
        files["plot_scenarios"] = _save(fig, plt, out_dir / "scenarios.png")
    elif kind == "pareto" and spec.pareto is not None:
        pa = spec.pareto
        fig, ax = plt.subplots(figsize=(7, 5))
        col = "reagent_cost_usd_per_h" if pa.objective.value == "reagent" else "margin_usd_per_h"
        for rec, sub in ok.groupby(ok["label.recovery_min"].fillna(-1.0)):
            sub = sub.sort_values(f"{pa.product}.purity")
            lab = "no recovery spec" if rec < 0 else f"recovery >= {rec:g}"
            ax.plot(1.0 - sub[f"{pa.product}.purity"], sub[col], marker="o", label=lab)
        bad = table[table["status"] == "infeasible"]
        for _, r in bad.iterrows():
            ax.axvline(1.0 - r["label.purity_min"], color="grey", alpha=0.3, lw=0.8)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel(f"{pa.product} impurity (1 - purity), purer to the right")
        ax.set_ylabel(col.replace("_", " "))
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_title(f"{spec.study.name}: Pareto front ({pa.objective.value}); grey = infeasible purity")
        files["plot_pareto"] = _save(fig, plt, out_dir / "pareto.png")
    elif kind == "capacity":
        cap = findings.get("capacity", {})
        names = [n for n, c in cap.items() if "feed_reo_kg_per_h" in c]
        if names:
            fig, ax = plt.subplots(figsize=(7, 4))
            ax.bar(names, [cap[n]["feed_reo_kg_per_h"] for n in names], label="at spec (max)")
            ax.scatter(names, [cap[n]["current_feed_reo_kg_per_h"] for n in names], color="k", zorder=3, label="now")
            ax.set_ylabel("feed, kg REO/h")
            ax.legend()
            ax.set_title(f"{spec.study.name}: capacity")
            files["plot_capacity"] = _save(fig, plt, out_dir / "capacity.png")
    elif kind == "stage_design" and findings.get("design") and len(table):
        secs = findings["sections"]
        fig, ax = plt.subplots(figsize=(6, 5))
        a, b = ([*secs, "strip"])[:2] if len(secs) == 1 else secs[:2]
        for flag, colour, lab in ((True, "tab:green", "meets specs"), (False, "tab:red", "does not")):
            sub = table[(table["on_spec"] == flag) & (table["status"] == "ok")]
            ax.scatter(sub[f"label.{a}"], sub[f"label.{b}"], color=colour, label=lab)
        st, de = findings["start"], findings["design"]
        ax.scatter([st.get(a)], [st.get(b, np.nan)], marker="x", s=90, color="k", label="theory start")
        ax.scatter([de.get(a)], [de.get(b, np.nan)], marker="*", s=200, color="gold", edgecolor="k", label="design")
        if "reference" in findings:
            ref = findings["reference"]
            ax.scatter(
                [ref.get(a)], [ref.get(b, np.nan)], marker="s", s=80, facecolor="none", edgecolor="b", label="reference"
            )
        ax.set_xlabel(f"{a} stages")
        ax.set_ylabel(f"{b} stages")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{spec.study.name}: layouts evaluated")
        files["plot_stage_design"] = _save(fig, plt, out_dir / "stage_design.png")
    elif kind == "robustness" and len(ok):
        fig, axes = plt.subplots(1, max(1, len(products)), figsize=(5 * max(1, len(products)), 4), squeeze=False)
        for ax, prod in zip(axes[0], products, strict=False):
            imp = np.clip(1.0 - ok[f"{prod}.purity"].to_numpy(dtype=float), 1e-12, 1.0)
            ax.hist(np.log10(imp), bins=30)
            pmin = ok[f"{prod}.purity"].notna()
            ax.set_xlabel(f"log10 impurity of {prod}")
            ax.set_ylabel("samples")
            spec_col = table.get(f"{prod}.on_spec")
            frac = float(np.mean(spec_col == True)) if spec_col is not None else np.nan  # noqa: E712
            ax.set_title(f"{prod}: on spec in {frac:.1%} (n = {int(pmin.sum())})")
        fig.suptitle(f"{spec.study.name}: P(on spec) = {findings.get('probability_on_spec', np.nan):.3f}")
        files["plot_robustness"] = _save(fig, plt, out_dir / "robustness.png")
    return files


def _save(fig: Any, plt: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
