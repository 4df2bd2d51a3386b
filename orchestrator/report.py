"""``report.md`` of an analysed experiment: summary, P(improvement), compute cost, estimator quality, placement,
launches, failures.

Plain markdown tables written here (no tabulate dependency); numbers are formatted for reading, the CSVs
next to the report keep full precision.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from orchestrator.search import report_section as search_report
from orchestrator.stats import Interval

if TYPE_CHECKING:
    from orchestrator.analysis import Experiment, Summary


def _cell_text(v) -> str:
    # A '|' would end the markdown cell; a newline would end the row.
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(_cell_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell_text(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(row: pd.Series, metric: str) -> str:
    return Interval(row[f"{metric}_iqm"], row[f"{metric}_low"], row[f"{metric}_high"], 0).format(scale=100)


def _steps(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "not reached" if math.isinf(v) else f"{v:,.0f}"


def _num(v: float, fmt: str = ",.0f") -> str:
    return "-" if v is None or not np.isfinite(v) else format(v, fmt)


def summary_markdown(summary: "Summary") -> str:
    """The per-cell table: success IQM [95% CI] in %, counts, sample efficiency and cost."""
    t = summary.table
    if not len(t):
        return "_No trial has reported a result yet._"
    target = f"{summary.target * 100:g}%"
    header = ["cell", "runs (ok/failed/unfinished)", "n", "start", "final", "peak", "AUC", f"reached {target}",
              f"env steps to {target} (median)", "sim steps", "wall min"]
    rows = []
    for _, r in t.iterrows():
        rows.append([
            r["cell"], f"{r['runs']} ({r['finished']}/{r['failed']}/{r['unfinished']})", r["n"],
            _pct(r, "start"), _pct(r, "final"), _pct(r, "peak"), _pct(r, "auc"),
            f"{r['reached']}/{r['n']}", _steps(r["steps_to_target"]), _num(r["sim_steps"]), _num(r["wall_s"] / 60, ".1f"),
        ])
    return markdown_table(header, rows)


def improvement_markdown(summary: "Summary") -> str:
    """Matrix: row X, column Y holds P(X > Y) [95% CI] on final success."""
    imp = summary.improvement
    if not len(imp):
        return "_Needs at least two cells with a final evaluation._"
    order = [c for c in summary.table["cell"] if c in set(imp["x"]) | set(imp["y"])]
    lookup = {(r["x"], r["y"]): Interval(r["p"], r["low"], r["high"], 0).format(digits=2) for _, r in imp.iterrows()}
    rows = [[x] + ["—" if x == y else lookup.get((x, y), "-") for y in order] for x in order]
    return markdown_table(["P(row > column)"] + order, rows)


def cost_markdown(summary: "Summary") -> str:
    t = summary.table
    header = ["cell", "env steps", "sim steps", "sim / env step", "wall min", "rollout s", "estimate s", "update s"]
    rows = [[r["cell"], _num(r["env_steps"]), _num(r["sim_steps"]), _num(r["sim_per_env_step"], ".1f"), _num(r["wall_s"] / 60, ".1f"),
             _num(r["rollout_s"], ".1f"), _num(r["estimate_s"], ".1f"), _num(r["update_s"], ".1f")] for _, r in t.iterrows()]
    return markdown_table(header, rows)


def quality_markdown(summary: "Summary") -> str:
    q = summary.quality
    if not len(q):
        return "_No quality/* metrics were reported (set quality_every > 0 in the trial config)._"
    metrics = [c for c in q.columns if c.startswith("quality/")]
    rows = [[r["estimator"], r["measurements"], r["runs"]] + [_num(r[c], ".3f") for c in metrics] for _, r in q.iterrows()]
    return markdown_table(["estimator", "measurements", "runs"] + metrics, rows)


def placement_markdown(exp: "Experiment") -> str:
    """Where the trials ran (their own ``placement.json`` records) and how many computed at once."""
    from orchestrator import placement

    header, rows = placement.summary_rows(exp.trials)
    missing = placement.unplaced(exp.trials)
    text = (f"What each trial's process saw (`trial/placement.json`). At most {placement.max_concurrent(exp.results)} "
            "trials were computing at the same moment (from the reported iterations' time spans). Fractional GPU "
            "shares are enforced by each trial's memory cap (`torch.cuda.set_per_process_memory_fraction`).")
    table = markdown_table(header, rows) if rows else "_No placement records._"
    note = f"{missing} trial(s) have no record (never started)." if missing and rows else ""
    return "\n\n".join(p for p in (text, table, note) if p)


def launches_markdown(exp: "Experiment") -> str:
    """The grid/resume calls that produced the run directory (``launches.jsonl``), with the driver's machine."""
    from orchestrator import launches

    header, rows = launches.table(launches.read(exp.run_dir))
    if not rows:
        return "_No launch records (`launches.jsonl`)._"
    return ("Each `grid` / `resume` call, as its driver recorded it (`launches.jsonl`); a call killed outright has no "
            "end time. Trials may run on other hosts of a cluster (see Placement).\n\n" + markdown_table(header, rows))


def _trial_rows(exp: "Experiment", summary: "Summary", statuses: set[str], negate: bool = False) -> list[list]:
    from orchestrator.analysis import SEED, cell_label

    t = exp.trials
    sel = t[~t["status"].isin(statuses)] if negate else t[t["status"].isin(statuses)]
    rows = []
    for _, r in sel.iterrows():
        cell = cell_label({c: r[c] for c in summary.cell_columns if c in r})
        last = "-" if pd.isna(r["last_iteration"]) else int(r["last_iteration"])
        rows.append([r["trial_id"], cell, r.get(SEED, "-"), r["status"], last, r["error"] or "-"])
    return rows


def write_report(exp: "Experiment", summary: "Summary", figures: Sequence[Path], path: Path, parquet: bool) -> Path:
    """Write report.md (figures linked by file name, so the folder can be moved as a whole)."""
    path = Path(path)
    counts = exp.trials["status"].value_counts().to_dict()
    status_line = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no trials"
    fig = {p.name: p for p in figures}
    header = ["trial", "cell", "seed", "status", "last iteration", "error"]
    failures = _trial_rows(exp, summary, {"ERROR"})
    unfinished = _trial_rows(exp, summary, {"ERROR", "TERMINATED"}, negate=True)

    parts = [
        f"# Analysis of `{exp.run_dir.name}`",
        f"Experiment directory: `{exp.run_dir}`  \n{len(exp.trials)} trials: {status_line}.",
        "**Statistics.** Each cell (estimator x update rule, plus any other swept config field) aggregates its "
        "seeds by the interquartile mean (IQM, `scipy.stats.trim_mean(x, 0.25)`) with a 95% percentile "
        f"stratified-bootstrap confidence interval ({summary.reps:,} resamples of the runs within each task), as "
        "defined by rliable. Success is the deterministic evaluation `eval/success_rate`, in %. *start*: iteration 0 "
        "(the start policy); *final*: the last evaluation; *peak*: the best evaluation after iteration 0 (optimistic "
        "for a single seed). *AUC*: area under success vs finetuning env steps divided by the steps spanned (mean "
        f"success over the budget). *env steps to {summary.target * 100:g}%*: median over runs of the first "
        "evaluation at or above the target, never-reached runs counting as infinite. Failed trials are left out of "
        "the statistics (listed under Failures); unfinished ones enter with their latest evaluation. "
        "Cost columns are means over runs.",
        "## Summary",
        summary_markdown(summary),
        "Full precision: [summary.csv](summary.csv), per run: [runs.csv](runs.csv), every reported row: "
        "[results.csv](results.csv)" + (" / [results.parquet](results.parquet)" if parquet else "") + ".",
        "## Learning curves",
    ]
    curves = [n for n in ("curves_by_update.png", "curves_by_estimator.png") if n in fig]
    parts += [f"![success vs env steps]({n})" for n in curves] or ["_No evaluations with env steps to plot._"]
    parts += [
        "## Probability of improvement (final success)",
        "P(X > Y): the probability that a random run of the row cell ends with a higher final success than a random "
        "run of the column cell (ties count half), with its 95% bootstrap CI. Above 0.5 favours the row; a CI "
        "excluding 0.5 is a difference the seeds support. Tidy form: [improvement.csv](improvement.csv).",
        improvement_markdown(summary),
        "## Compute cost",
        "Simulator steps include Monte-Carlo re-rollouts (`charts/sim_steps`); env steps are finetuning data only.",
        cost_markdown(summary) if len(summary.table) else "_No results._",
    ]
    if "compute_cost.png" in fig:
        parts.append("![compute cost](compute_cost.png)")
    parts += ["## Estimator quality", "Mean of each `quality/*` metric over every measured iteration and run.", quality_markdown(summary)]
    parts += search_report(exp.run_dir, exp.results)
    parts += ["## Placement", placement_markdown(exp)]
    parts += ["## Launches", launches_markdown(exp)]
    parts += ["## Failures", markdown_table(header, failures) if failures else "_None._"]
    if unfinished:
        parts += ["## Unfinished trials", "Running, pending, or cut off by an interrupted experiment: their numbers are provisional.",
                  markdown_table(header, unfinished)]
    path.write_text("\n\n".join(parts) + "\n")
    return path
