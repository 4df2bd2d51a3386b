"""Figures of an analysed experiment, rliable-style: aggregate IQM with CIs, performance profiles, sample
efficiency curves with bands, estimator quality and compute cost.

Every cell keeps one colour in every figure (``cell_colours``), every figure is written as SVG (for a paper)
and as a 200-dpi PNG (for the report).  Built on ``matplotlib.figure.Figure`` with the Agg canvas rather
than pyplot: no global figure state, no display needed, safe on a headless node.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullFormatter

from orchestrator import stats
from orchestrator.results_frame import Summary
from orchestrator.rundir import FAILED

# 20 distinguishable colours: Paul Tol's muted and light schemes, then tab20's darker half.  A grid has 12 cells
# (4 estimators x 3 update rules); a cell beyond 20 reuses a colour with a dashed line.
PALETTE = [
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499", "#DDDDDD",
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]
PALETTE.remove("#DDDDDD")  # too pale on white
DPI = 200
FORMATS = ("svg", "png")
PANEL_W, PANEL_H = 4.6, 3.4


def cell_colours(cells: Sequence[str]) -> dict[str, tuple[str, str]]:
    """cell -> (colour, line style), fixed by the cell's place in the summary table's order."""
    return {c: (PALETTE[i % len(PALETTE)], "-" if i < len(PALETTE) else "--") for i, c in enumerate(cells)}


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")  # constrained: titles and legends never overlap
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_dir: Path, stem: str) -> Path:
    """Write ``stem.svg`` and ``stem.png``; returns the PNG (what the report embeds)."""
    for fmt in FORMATS:
        meta = {"Date": None} if fmt == "svg" else {}  # no timestamp: the same data gives the same file
        fig.savefig(out_dir / f"{stem}.{fmt}", bbox_inches="tight", dpi=DPI, metadata=meta)
    return out_dir / f"{stem}.png"


def _legend_below(fig: Figure, ax, ncol: int) -> None:
    """One legend under the axes: never over the data, never overlapping a neighbour's."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=max(1, min(ncol, len(labels))), fontsize=7, frameon=False)


def _aggregate_figure(summary: Summary, colours, out_dir: Path) -> Optional[Path]:
    """IQM of final and peak success per cell with their 95% CIs (rliable's aggregate plot)."""
    t = summary.table
    t = t[t["final_iqm"].notna()] if len(t) else t
    if not len(t):
        return None
    fig = _new_figure(9, 0.32 * len(t) + 1.4)
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(t))
    for ax, metric in zip(axes, ("final", "peak")):
        for i, (_, r) in enumerate(t.iterrows()):
            colour = colours[r["cell"]][0]
            lo, hi = r[f"{metric}_low"], r[f"{metric}_high"]
            if np.isfinite(lo) and np.isfinite(hi):
                ax.barh(i, (hi - lo) * 100, left=lo * 100, height=0.6, color=colour, alpha=0.75)
            ax.plot([r[f"{metric}_iqm"] * 100] * 2, [i - 0.3, i + 0.3], color="black", lw=1.5)
        ax.set_title(f"{metric} success (%), IQM and 95% CI")
        ax.set_xlim(-2, 102)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [f"{c} (n={n})" for c, n in zip(t["cell"], t["n"])], fontsize=8)
    axes[0].invert_yaxis()
    return _save(fig, out_dir, "aggregate")


def _profile_figure(summary: Summary, colours, out_dir: Path) -> Optional[Path]:
    """Performance profiles: fraction of runs whose final success exceeds tau, with bootstrap bands."""
    runs = summary.runs[summary.runs["final"].notna()] if len(summary.runs) else summary.runs
    runs = runs[runs["status"] != FAILED] if len(runs) else runs
    if not len(runs):
        return None
    taus = np.linspace(0, 1, 101)
    fig = _new_figure(6.4, 4.4)
    ax = fig.subplots()
    for cell in summary.table["cell"]:
        g = runs[runs["cell"] == cell]
        if not len(g):
            continue
        strata = [s["final"].to_numpy(float) for _, s in g.groupby("task")]
        point, low, high = stats.performance_profile(strata, taus, reps=500, rng=0)
        colour, style = colours[cell]
        ax.plot(taus * 100, point, style, color=colour, label=f"{cell} (n={len(g)})", lw=1.4)
        if np.isfinite(low).all():
            ax.fill_between(taus * 100, low, high, color=colour, alpha=0.12, linewidth=0)
    ax.set_xlabel("final success threshold tau (%)")
    ax.set_ylabel("fraction of runs with final success > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend_below(fig, ax, 3)
    return _save(fig, out_dir, "performance_profile")


def _curve_figure(summary: Summary, colours, panel_by: str, out_dir: Path, stem: str, title: str) -> Optional[Path]:
    """Sample efficiency: IQM success vs finetuning env steps with its 95% band, one panel per ``panel_by``."""
    table, curves = summary.table, summary.curves
    if not len(curves) or panel_by not in table:
        return None
    plotted = table[table["cell"].isin(set(curves["cell"]))]
    panels = list(dict.fromkeys(plotted[panel_by].map(str)))
    fig = _new_figure(PANEL_W * len(panels), PANEL_H + 0.9)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    for ax, panel in zip(axes, panels):
        for _, cell in plotted[plotted[panel_by].map(str) == panel].iterrows():
            c = curves[curves["cell"] == cell["cell"]].sort_values("env_steps")
            colour, style = colours[cell["cell"]]
            x = c["env_steps"].to_numpy(float)
            ax.plot(x, c["iqm"] * 100, style, color=colour, marker="o", ms=3, label=f"{cell['cell']} (n={cell['n']})")
            ax.fill_between(x, c["low"] * 100, c["high"] * 100, color=colour, alpha=0.15, linewidth=0)
        ax.set_title(f"{panel_by} = {panel}", fontsize=9)
        ax.set_xlabel("finetuning env steps")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    axes[0].set_ylabel("success (%), IQM and 95% CI")
    axes[0].set_ylim(-2, 102)
    fig.suptitle(title)
    return _save(fig, out_dir, stem)


def _quality_figure(summary: Summary, published: dict, out_dir: Path) -> Optional[Path]:
    """Spearman rho of each estimator's advantages vs the MC oracle, with CI over runs, and published rho."""
    q = summary.quality
    if not len(q) or "rho" not in q:
        return None
    fig = _new_figure(6, 3.4)
    ax = fig.subplots()
    names = list(q["estimator"]) + [e for e in published if e not in set(q["estimator"])]
    x = {e: i for i, e in enumerate(names)}
    for _, r in q.iterrows():
        err = np.array([[r["rho"] - r["rho_low"]], [r["rho_high"] - r["rho"]]])
        ax.bar(x[r["estimator"]], r["rho"], color="#88CCEE", width=0.6,
               yerr=None if np.isnan(err).any() else err, capsize=4, label="measured (IQM over runs, 95% CI)" if x[r["estimator"]] == 0 else None)
    pub = [(x[e], v) for e, v in published.items() if v is not None]
    if pub:
        ax.scatter(*zip(*pub), marker="D", color="#CC6677", zorder=3, label="published")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("Spearman rho vs MC oracle")
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, "estimator_quality")


def _time_unit(max_seconds: float) -> tuple[str, float]:
    """Seconds for smoke runs, minutes for a usual grid, hours for the paper-scale one."""
    if max_seconds < 120:
        return "seconds", 1.0
    return ("minutes", 60.0) if max_seconds < 3 * 3600 else ("hours", 3600.0)


def _cost_figure(summary: Summary, colours, out_dir: Path) -> Optional[Path]:
    """Simulator steps (finetuning data vs extra re-rollout steps), wall time by phase, success vs sim steps."""
    t = summary.table
    if not len(t) or not t["sim_steps"].notna().any():
        return None
    labels = t["cell"].tolist()
    y = np.arange(len(labels))
    fig = _new_figure(15, 0.4 * len(labels) + 2.4)
    ax_sim, ax_time, ax_eff = fig.subplots(1, 3)
    grey = ("#555555", "#BBBBBB")
    env = t["env_steps"].fillna(0).to_numpy(float)
    extra = (t["sim_steps"].fillna(0) - t["env_steps"].fillna(0)).clip(lower=0).to_numpy(float)
    ax_sim.barh(y, env, color=grey[0], label="finetuning env steps")
    ax_sim.barh(y, extra, left=env, color=grey[1], label="extra simulator steps (re-rollouts)")
    ax_sim.set_yticks(y, labels, fontsize=8)
    for tick, cell in zip(ax_sim.get_yticklabels(), labels):
        tick.set_color(colours[cell][0])
    ax_sim.invert_yaxis()
    ax_sim.set_xlabel("simulator steps per run (mean over seeds)")
    ax_sim.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax_sim.legend(fontsize=7)

    wall = t["wall_s"].fillna(0).to_numpy(float)
    unit, div = _time_unit(float(wall.max()) if wall.size else 0.0)
    left = np.zeros(len(t))
    shades = ["#332288", "#44AA99", "#DDCC77", "#BBBBBB"]  # phases, not cells: no cell colour is reused
    for shade, (col, name) in zip(shades, [("rollout_s", "rollout"), ("estimate_s", "estimate"), ("update_s", "update")]):
        v = t[col].fillna(0).to_numpy(float) / div
        ax_time.barh(y, v, left=left, color=shade, label=name)
        left += v
    ax_time.barh(y, np.clip(wall / div - left, 0, None), left=left, color=shades[3], label="eval and other")
    ax_time.set_yticks(y, [""] * len(y))
    ax_time.invert_yaxis()
    ax_time.set_xlabel(f"wall {unit} per run (mean over seeds)")
    ax_time.legend(fontsize=7)

    for _, r in t.iterrows():
        if np.isfinite(r["final_iqm"]) and np.isfinite(r["sim_steps"]):
            err = np.array([[r["final_iqm"] - r["final_low"]], [r["final_high"] - r["final_iqm"]]]) * 100
            ax_eff.errorbar(r["sim_steps"], r["final_iqm"] * 100, yerr=None if np.isnan(err).any() else err,
                            fmt="o", color=colours[r["cell"]][0], capsize=3, label=r["cell"])
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
        ax_eff.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    fig.suptitle("Compute cost")
    return _save(fig, out_dir, "compute_cost")


def write_figures(summary: Summary, out_dir: Path, published_rho: Optional[dict] = None) -> list[Path]:
    """Write every figure the data allows (SVG and PNG); returns the PNGs (a figure with nothing to show is skipped)."""
    out_dir = Path(out_dir)
    colours = cell_colours(summary.table["cell"].tolist() if len(summary.table) else [])
    made = [
        _aggregate_figure(summary, colours, out_dir),
        _profile_figure(summary, colours, out_dir),
        _curve_figure(summary, colours, "update", out_dir, "curves_by_update", "Sample efficiency: success vs finetuning env steps, by update rule"),
        _curve_figure(summary, colours, "estimator", out_dir, "curves_by_estimator", "Sample efficiency: success vs finetuning env steps, by estimator"),
        _quality_figure(summary, published_rho or {}, out_dir),
        _cost_figure(summary, colours, out_dir),
    ]
    return [p for p in made if p is not None]


def colour_table(summary: Summary) -> pd.DataFrame:
    """cell -> colour, for the report's legend of colours."""
    colours = cell_colours(summary.table["cell"].tolist() if len(summary.table) else [])
    return pd.DataFrame([{"cell": c, "colour": v[0], "line": v[1]} for c, v in colours.items()])
