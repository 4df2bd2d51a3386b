"""Figures of an analysed experiment: learning curves (IQM with 95% CI band across seeds) and compute cost.

Built on ``matplotlib.figure.Figure`` with the Agg canvas rather than pyplot: no global figure state, no
display needed, and safe to call from several threads or a headless node.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullFormatter

if TYPE_CHECKING:
    from orchestrator.analysis import Summary

PALETTE = [  # matplotlib's tab10, fixed here so a label keeps its colour across figures
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]
PANEL_W, PANEL_H = 4.6, 3.4


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110, layout="constrained")  # constrained: titles and legends never overlap
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight")
    return path


def _curve_panels(summary: "Summary", panel_by: str, line_by: str, path: Path, title: str) -> Path | None:
    """One panel per value of ``panel_by`` (e.g. update rule); one line per cell, coloured by ``line_by``."""
    table, curves = summary.table, summary.curves
    if not len(curves) or panel_by not in table or line_by not in table:
        return None
    plotted = table[table["cell"].isin(set(curves["cell"]))]  # cells with no evaluation yet get no panel or line
    panels = list(dict.fromkeys(plotted[panel_by]))
    colour_keys = list(dict.fromkeys(table[line_by]))
    colours = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(colour_keys)}
    fig = _new_figure(PANEL_W * len(panels), PANEL_H)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    for ax, panel in zip(axes, panels):
        cells = plotted[plotted[panel_by] == panel]
        styles = {}
        for _, cell in cells.iterrows():
            c = curves[curves["cell"] == cell["cell"]].sort_values("env_steps")
            if not len(c):
                continue
            key = cell[line_by]
            # Cells sharing a colour (a swept hyperparameter) differ in line style.
            styles[key] = styles.get(key, -1) + 1
            style = ["-", "--", ":", "-."][styles[key] % 4]
            x, colour = c["env_steps"].to_numpy(float), colours[key]
            ax.plot(x, c["iqm"] * 100, style, color=colour, marker="o", ms=3, label=f"{cell['cell']} (n={cell['n']})")
            ax.fill_between(x, c["low"] * 100, c["high"] * 100, color=colour, alpha=0.18, linewidth=0)
        ax.set_title(f"{panel_by} = {panel}")
        ax.set_xlabel("finetuning env steps")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("success (%), IQM and 95% CI")
    axes[0].set_ylim(-2, 102)
    fig.suptitle(title)
    return _save(fig, path)


def _time_unit(max_seconds: float) -> tuple[str, float]:
    """Seconds for smoke runs, minutes for a usual grid, hours for the paper-scale one."""
    if max_seconds < 120:
        return "seconds", 1.0
    return ("minutes", 60.0) if max_seconds < 3 * 3600 else ("hours", 3600.0)


def _cost_figure(summary: "Summary", path: Path) -> Path | None:
    """Simulator steps (finetuning data vs extra re-rollout steps), wall time by phase, success vs sim steps."""
    t = summary.table
    if not len(t) or "sim_steps" not in t:
        return None
    labels = t["cell"].tolist()
    y = np.arange(len(labels))
    fig = _new_figure(15, 0.45 * len(labels) + 2.2)
    ax_sim, ax_time, ax_eff = fig.subplots(1, 3)

    env = t["env_steps"].fillna(0).to_numpy(float)
    extra = (t["sim_steps"].fillna(0) - t["env_steps"].fillna(0)).clip(lower=0).to_numpy(float)
    ax_sim.barh(y, env, color=PALETTE[0], label="finetuning env steps")
    ax_sim.barh(y, extra, left=env, color=PALETTE[1], label="extra simulator steps (re-rollouts)")
    ax_sim.set_yticks(y, labels, fontsize=8)
    ax_sim.invert_yaxis()
    ax_sim.set_xlabel("simulator steps per run (mean over seeds)")
    ax_sim.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax_sim.legend(fontsize=7)

    wall = t["wall_s"].fillna(0).to_numpy(float)
    unit, div = _time_unit(float(wall.max()) if wall.size else 0.0)
    left = np.zeros(len(t))
    phases = [("rollout_s", "rollout"), ("estimate_s", "estimate"), ("update_s", "update")]
    for i, (col, name) in enumerate(phases):
        v = t[col].fillna(0).to_numpy(float) / div
        ax_time.barh(y, v, left=left, color=PALETTE[i + 2], label=name)
        left += v
    other = np.clip(wall / div - left, 0, None)
    ax_time.barh(y, other, left=left, color=PALETTE[7], label="eval and other")
    ax_time.set_yticks(y, [""] * len(y))
    ax_time.invert_yaxis()
    ax_time.set_xlabel(f"wall {unit} per run (mean over seeds)")
    ax_time.legend(fontsize=7)

    for i, (_, r) in enumerate(t.iterrows()):
        if np.isfinite(r["final_iqm"]) and np.isfinite(r["sim_steps"]):
            err = np.array([[r["final_iqm"] - r["final_low"]], [r["final_high"] - r["final_iqm"]]]) * 100
            ax_eff.errorbar(r["sim_steps"], r["final_iqm"] * 100, yerr=None if np.isnan(err).any() else err,
                            fmt="o", color=PALETTE[i % len(PALETTE)], capsize=3, label=r["cell"])
    sims = t["sim_steps"][t["sim_steps"] > 0]
    log = len(sims) > 0 and sims.max() / sims.min() > 20  # MC re-rollouts can cost 10-100x: a log axis then
    if log:
        ax_eff.set_xscale("log")
        ax_eff.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overprint each other
    ax_eff.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax_eff.set_xlabel("simulator steps per run" + (" (log)" if log else ""))
    ax_eff.set_ylabel("final success (%), IQM and 95% CI")
    ax_eff.grid(alpha=0.3)
    if ax_eff.has_data():
        ax_eff.legend(fontsize=7)
    fig.suptitle("Compute cost")
    return _save(fig, path)


def write_figures(summary: "Summary", out_dir: Path) -> list[Path]:
    """Write every figure the data allows; returns their paths (a figure with nothing to show is skipped)."""
    out_dir = Path(out_dir)
    made = [
        _curve_panels(summary, "update", "estimator", out_dir / "curves_by_update.png", "Success vs finetuning env steps, by update rule"),
        _curve_panels(summary, "estimator", "update", out_dir / "curves_by_estimator.png", "Success vs finetuning env steps, by estimator"),
        _cost_figure(summary, out_dir / "compute_cost.png"),
    ]
    return [p for p in made if p is not None]
