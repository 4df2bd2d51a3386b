"""The report of an analysed experiment, as ``report.md`` and a self-contained ``report.html`` built from the
same blocks, plus ``summary.tex`` (the summary as a LaTeX table).

A report is a list of blocks (heading, paragraph, table, figure); ``markdown`` and ``html`` render the same
list.  Links are relative (figures and CSVs by file name), so the folder can be moved or committed as a whole.
Numbers are formatted for reading; the CSVs next to the report keep full precision.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from orchestrator import launches, placement, stats
from orchestrator.results_frame import SEED, Summary, cell_label
from orchestrator.rundir import CONFIG_PREFIX, FAILED, FINISHED, Experiment
from orchestrator.search import best_table, search_of


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str  # markdown inline syntax allowed: `code`, *emphasis*, **strong**, [link](file)


@dataclass
class Table:
    header: list
    rows: list


@dataclass
class Image:
    file: str
    alt: str


Block = Union[Heading, Text, Table, Image]


# ------------------------------------------------------------------------------------------ rendering


def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")  # a '|' would end the cell, a newline the row


def markdown_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Text):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append(markdown_table(b.header, b.rows))
        else:
            out.append(f"![{b.alt}]({b.file})")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?!\w)", r"<em>\1</em>", s)
    return s.replace("  \n", "<br>\n")


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6}")


def html_page(blocks: Sequence[Block], title: str) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(str(v))}</td>" for v in r) + "</tr>" for r in b.rows)
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            out.append(f"<p><img src='{html.escape(b.file)}' alt='{html.escape(b.alt)}'></p>")
    return "\n".join(out) + "\n</body></html>\n"


# ------------------------------------------------------------------------------------------ formatting


def _iv(row, metric: str, digits: int = 1, scale: float = 100) -> str:
    return stats.Interval(row[f"{metric}_iqm"], row[f"{metric}_low"], row[f"{metric}_high"], 0).format(scale=scale, digits=digits)


def _num(v, fmt: str = ",.0f") -> str:
    try:
        return "-" if v is None or not np.isfinite(v) else format(v, fmt)
    except TypeError:
        return "-"


def _steps(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return "not reached" if math.isinf(v) else f"{v:,.0f}"


def _pct(v) -> str:
    return _num(v * 100 if v is not None else None, ".1f")


METHOD_WORDS = {"percentile": "percentile stratified bootstrap", "t": "Student-t", "none": "none (one run)"}


def statistics_text(summary: Summary) -> str:
    """The statistics paragraph: n per cell, what IQM means at that n, and which interval method was used."""
    t = summary.table
    ns = sorted({int(n) for n in t["n"]}) if len(t) else []
    methods = sorted({m for m in t.get("final_method", pd.Series(dtype=str)) if isinstance(m, str)})
    n_text = (f"n = {ns[0]} runs per cell" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]} runs per cell (see column n)") if ns else "no runs"
    parts = [f"**Statistics.** {n_text}. Each cell aggregates its seeds by the interquartile mean (IQM: "
             "`scipy.stats.trim_mean(x, 0.25)`, the mean of the middle 50% of runs, as in rliable)."]
    if ns and ns[0] < stats.MIN_BOOTSTRAP_RUNS:
        parts.append(f"**Below {stats.MIN_BOOTSTRAP_RUNS} seeds the IQM is the trimmed mean of too few runs**: with 3 or fewer "
                     "it trims nothing and equals the plain mean, with 4 it is the mean of the middle two; read it as a mean.")
    parts.append(f"Intervals are 95%: the percentile stratified bootstrap ({summary.reps:,} resamples of the runs within each "
                 f"task) for cells with at least {stats.MIN_BOOTSTRAP_RUNS} runs; below that the percentile bootstrap "
                 "degenerates (3 runs give 10 distinct resamples; two zeros out of three give [0.0, 0.0]), so those cells use a "
                 "Student-t interval, IQM +- t(0.975, n-1) s/sqrt(n), clipped to [0, 100]%. A zero-width interval means the "
                 "runs agreed exactly, not certainty; one run gives no interval. "
                 f"Methods used here: {', '.join(METHOD_WORDS.get(m, m) for m in methods) or '-'} (column *CI* per cell).")
    parts.append("Success is the deterministic evaluation `eval/success_rate`, in %. *start*: iteration 0; *final*: the last "
                 "evaluation; *peak*: the best evaluation after iteration 0 (optimistic, as the published single-seed numbers "
                 "are). *AUC*: mean success over the finetuning budget (area under success vs env steps / steps spanned). "
                 f"*env steps to {summary.target * 100:g}%*: median over runs of the first evaluation at or above it, "
                 "never-reached runs counting as infinite. Failed trials are left out of the statistics (listed under "
                 "Failures); unfinished ones enter with their latest evaluation. Cost columns are means over runs.")
    return " ".join(parts)


def summary_rows(summary: Summary, published: dict) -> Table:
    """The per-cell table: success IQM [95% CI] in %, the CI method, counts, sample efficiency, published numbers."""
    t = summary.table
    target = f"{summary.target * 100:g}%"
    header = ["cell", "runs (ok/failed/unfinished)", "n", "CI", "start", "final", "peak", "AUC", f"reached {target}",
              f"env steps to {target} (median)"]
    if published:
        header += ["published final", "published peak"]
    rows = []
    for _, r in t.iterrows():
        row = [r["cell"], f"{r['runs']} ({r['finished']}/{r['failed']}/{r['unfinished']})", r["n"],
               METHOD_WORDS.get(r.get("final_method"), "-") if r["n"] else "-",
               _iv(r, "start"), _iv(r, "final"), _iv(r, "peak"), _iv(r, "auc"), f"{r['reached']}/{r['n']}", _steps(r["steps_to_target"])]
        if published:
            p = published.get(r["cell"], {})
            row += [_pct(p.get("final")), _pct(p.get("peak"))]
        rows.append(row)
    return Table(header, rows)


def per_seed_table(summary: Summary) -> Table:
    """One row per cell, one column per seed: final (peak) success in %; * marks a failed or unfinished run."""
    runs = summary.runs
    seeds = sorted({s for s in runs["seed"].dropna()}) if len(runs) else []
    rows = []
    for cell in summary.table["cell"]:
        g = runs[runs["cell"] == cell]
        row = [cell]
        for s in seeds:
            r = g[g["seed"] == s]
            if not len(r):
                row.append("")
                continue
            r = r.iloc[0]
            mark = "" if r["status"] == FINISHED else "*"
            row.append("; ".join(f"{_pct(x['final'])} ({_pct(x['peak'])}){mark}" for _, x in g[g["seed"] == s].iterrows()))
        rows.append(row)
    return Table(["cell"] + [f"seed {int(s) if float(s).is_integer() else s}" for s in seeds], rows)


def _config_text(v) -> str:
    """A config value for the report: an absolute path by its file name (the machine's layout is not the method)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "None"
    s = str(v)
    return Path(s).name if s.startswith("/") else s


def _natural(text: str) -> tuple:
    """Numbers in numeric order (4 before 200), then text."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def relativise(blocks: Sequence[Block], roots: Sequence[Path]) -> list[Block]:
    """Strip ``root/`` prefixes from every text and table cell (error lines and warnings name files by path)."""
    prefixes = sorted({str(Path(r)) + "/" for r in roots}, key=len, reverse=True)

    def rel(v):
        if not isinstance(v, str):
            return v
        for p in prefixes:
            v = v.replace(p, "")
        return v

    out: list[Block] = []
    for b in blocks:
        if isinstance(b, Text):
            b = Text(rel(b.text))
        elif isinstance(b, Table):
            b = Table([rel(h) for h in b.header], [[rel(v) for v in r] for r in b.rows])
        out.append(b)
    return out


def hyperparameter_tables(configs: pd.DataFrame, summary: Summary, help_texts: dict) -> tuple[Table, Table]:
    """(swept or per-method fields with their values per cell, fixed fields with their one value).

    ``configs``: one row per trial, one column per config field (from spec.resolved.json, else the trials).
    """
    swept, fixed = [], []
    for col in configs.columns:
        values = configs[col].map(_config_text)
        if col in ("seed", "cell"):
            continue
        if values.nunique() == 1:
            fixed.append([col, values.iloc[0], help_texts.get(col, "")])
        else:
            swept.append([col, ", ".join(sorted(values.unique(), key=_natural)), help_texts.get(col, "")])
    return Table(["field", "values", "meaning"], swept), Table(["field", "value", "meaning"], fixed)


def improvement_blocks(summary: Summary) -> list[Block]:
    imp = summary.improvement
    if not len(imp):
        return [Text("_Needs at least two cells with a final evaluation._")]
    blocks: list[Block] = []
    for group, g in imp.groupby("group", sort=False):
        order = list(dict.fromkeys([*g["x"], *g["y"]]))
        lookup = {(r["x"], r["y"]): stats.Interval(r["p"], r["low"], r["high"], 0).format(digits=2) for _, r in g.iterrows()}
        rows = [[x] + ["—" if x == y else lookup.get((x, y), "-") for y in order] for x in order]
        blocks += [Text(f"*{group}*"), Table(["P(row > column)"] + order, rows)]
    return blocks


def quality_blocks(summary: Summary, published_rho: dict, figures: dict) -> list[Block]:
    q = summary.quality
    if not len(q):
        blocks: list[Block] = [Text("_No quality/* metrics were reported: set `quality_every` > 0 in the trial config (or run `quality`)._")]
        if published_rho:
            blocks += [Text("Published Spearman rho of each estimator's advantages vs the MC oracle, for comparison once measured:"),
                       Table(["estimator", "published rho"], [[e, _num(v, ".2f")] for e, v in published_rho.items()])]
        return blocks
    header = ["estimator", "measurements", "runs", "rho (Spearman) [95% CI]", "bias", "error variance", "RMSE", "sign agreement", "published rho"]
    rows = []
    for _, r in q.iterrows():
        rho = stats.Interval(r.get("rho", np.nan), r.get("rho_low", np.nan), r.get("rho_high", np.nan), 0).format(digits=3)
        rows.append([r["estimator"], r["measurements"], r["runs"], rho, _num(r.get("quality/bias"), ".3f"),
                     _num(r.get("error_variance"), ".4f"), _num(r.get("quality/rmse"), ".3f"),
                     _num(r.get("quality/sign_agreement"), ".3f"), _num(published_rho.get(r["estimator"]), ".2f")])
    if "quality/top1" in q:  # quality_mode=actions
        how = ("Each measured iteration runs the reference's action-ranking analysis (`algorithms/action_ranking.py`): at states "
               "of the batch, actions sampled from the rollout policy, each scored by the estimator on Monte-Carlo re-rollouts "
               "that start with it and by the oracle as their mean return. *rho*: Spearman over one state's actions, mean over "
               "states, averaged per run then IQM over runs; *bias*, *RMSE*, *sign agreement*: of advantages centred per state.")
    else:
        how = ("Each measured iteration compares the estimator's advantages with Monte-Carlo re-rollouts (the trial's "
               "`quality_policy`) on the same batch (`algorithms/quality.py`). *rho*: Spearman rank correlation, averaged per "
               "run then IQM over runs; *bias*: mean(estimate - oracle).")
    blocks: list[Block] = [
        Text(how + " *error variance*: RMSE^2 - bias^2. Full metrics: [quality.csv](quality.csv)."),
        Table(header, rows)]
    by_it = summary.quality_by_iteration
    if by_it is not None and by_it["iteration"].nunique() > 1:
        blocks += [Text("rho per measured iteration (mean over runs [min, max]): a critic (GAE, TD) is fresh at iteration 1 "
                        "and has trained on every earlier batch by the later ones."),
                   Table(["estimator", "iteration", "runs", "rho mean [min, max]"],
                         [[r["estimator"], r["iteration"], r["runs"], f"{r['rho_mean']:.3f} [{r['rho_min']:.3f}, {r['rho_max']:.3f}]"]
                          for _, r in by_it.iterrows()])]
    if "estimator_quality.png" in figures:
        blocks.append(Image("estimator_quality.png", "estimator quality"))
    return blocks


def cost_table(summary: Summary) -> Table:
    t = summary.table
    header = ["cell", "env steps", "sim steps", "sim / env step", "wall min", "rollout s", "estimate s", "update s"]
    return Table(header, [[r["cell"], _num(r["env_steps"]), _num(r["sim_steps"]), _num(r["sim_per_env_step"], ".1f"), _num(r["wall_s"] / 60, ".1f"),
                           _num(r["rollout_s"], ".1f"), _num(r["estimate_s"], ".1f"), _num(r["update_s"], ".1f")] for _, r in t.iterrows()])


def _trial_rows(trials: pd.DataFrame, summary: Summary, failed: bool) -> list[list]:
    status = trials["status"]
    sel = trials[status == FAILED] if failed else trials[(status != FINISHED) & (status != FAILED)]
    rows = []
    for _, r in sel.iterrows():
        cell = cell_label({c: r.get(c) for c in summary.cell_columns}, r.get(CONFIG_PREFIX + "cell", ""))
        last = "-" if pd.isna(r.get("last_iteration")) else int(r["last_iteration"])
        rows.append([r.get("run", ""), r["trial_id"], cell, r.get(SEED, "-"), r["status"], last, r["error"] or "-"])
    return rows


def search_blocks(experiments: Sequence[Experiment]) -> list[Block]:
    """The best sampled config of each cell, for every run that is a search (``search:`` in its spec)."""
    blocks: list[Block] = []
    for e in experiments:
        search = search_of(e.resolved)
        if search is None:
            continue
        text, header, rows = best_table(search, e.results)
        blocks += [Heading("Best config per cell" + (f": {e.name}" if len(experiments) > 1 else "")), Text(text),
                   Table(header, rows) if rows else Text("_No trial has reported the metric yet._")]
    return blocks


def latex_table(summary: Summary) -> str:
    """The summary as a booktabs LaTeX table: IQM [95% CI] of final and peak success (%), n."""
    def esc(s: str) -> str:
        return str(s).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&").replace("#", "\\#")

    lines = ["% generated by `python -m orchestrator analyze`; needs \\usepackage{booktabs}", "\\begin{tabular}{lrll}", "\\toprule",
             "cell & $n$ & final success (\\%) & peak success (\\%) \\\\", "\\midrule"]
    for _, r in summary.table.iterrows():
        lines.append(f"{esc(r['cell'])} & {r['n']} & {esc(_iv(r, 'final'))} & {esc(_iv(r, 'peak'))} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def build(experiments: Sequence[Experiment], trials: pd.DataFrame, summary: Summary, figures: Optional[Sequence[Path]],
          configs: pd.DataFrame, published: dict, help_texts: dict, files: dict, warnings: Sequence[str]) -> list[Block]:
    """Every block of the report.  ``trials``: the trials the statistics use, one row each (copies a merge of
    runs left out are not among them), with the ``run`` that recorded each and its ``trial_id`` there.
    ``figures``: those drawn, None where none were asked for.  ``files``: optional outputs that exist (e.g.
    {"results.parquet": True})."""
    fig = {p.name for p in figures or ()}

    def no_figure(why: str) -> Text:  # a figure absent because there was nothing to draw, or because none were drawn
        return Text(why if figures is not None else "_Not drawn (`analyze --no-figures`)._")
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    status_line = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no trials"
    names = ", ".join(f"`{e.name}`" + (" (exported results table)" if e.source == "export" else "") for e in experiments)
    success = published.get("success", {})
    blocks: list[Block] = [Heading("Analysis of " + names, 1),
                           Text(f"{len(experiments)} run director{'y' if len(experiments) == 1 else 'ies'}: {names}. "
                                f"{len(trials)} trials: {status_line}.")]
    if len(summary.runs) == 0:
        blocks.append(Text("**No trial reported a result row** (every trial failed, or the grid was interrupted before its "
                           "first report): there is nothing to aggregate yet; the trials and their errors are listed below."))
    if warnings:
        blocks += [Heading("Warnings"), Text("Damaged files read with repairs (the numbers below use what could be recovered), "
                                             "and merged runs to check."),
                   Table(["warning"], [[w] for w in warnings])]
    blocks += [Text(statistics_text(summary)), Heading("Summary")]
    blocks.append(summary_rows(summary, success) if len(summary.table) else Text("_No results._"))
    if success:
        src = published.get("source", "")
        matched = sorted(set(success) & set(summary.table["cell"])) if len(summary.table) else []
        blocks.append(Text(f"*published*: {src} ({published.get('file', '')}); cells matched by label: "
                           f"{', '.join(matched) or 'none'} (published labels: {', '.join(success)})."))
    parquet = " / [results.parquet](results.parquet)" if files.get("results.parquet") else ""
    blocks.append(Text("Full precision: [summary.csv](summary.csv), per run: [runs.csv](runs.csv), per trial: [trials.csv](trials.csv), "
                       f"every reported row: [results.csv](results.csv){parquet}; LaTeX: [summary.tex](summary.tex)."))
    if "aggregate.png" in fig:
        blocks.append(Image("aggregate.png", "IQM of final and peak success with 95% CIs"))
    blocks += [Heading("Per seed"), Text("Final (peak) success in % of every run; * marks a failed or unfinished run.")]
    blocks.append(per_seed_table(summary) if len(summary.runs) else Text("_No runs._"))
    swept, fixed = hyperparameter_tables(configs, summary, help_texts)
    src = "`spec.resolved.json`" if files.get("spec.resolved.json") else "the trials' configs"
    blocks += [Heading("Hyperparameters"), Text(f"From {src}: fields that differ between trials (swept, per-method or "
                                                "per-run), then the fields every trial shares; *meaning* is the field's help text in "
                                                "`algorithms/config.py`.")]
    blocks += [swept if swept.rows else Text("_No field differs between trials._"), fixed]
    blocks.append(Heading("Sample efficiency"))
    curves = [n for n in ("curves_by_update.png", "curves_by_estimator.png") if n in fig]
    blocks += [Image(n, "success vs env steps") for n in curves] or [no_figure("_No evaluations with env steps to plot._")]
    blocks += [Heading("Performance profiles"),
               Text("Fraction of runs whose final success exceeds each threshold, with 95% bootstrap bands (rliable).")]
    blocks.append(Image("performance_profile.png", "performance profiles") if "performance_profile.png" in fig else no_figure("_No final evaluations._"))
    blocks += [Heading("Probability of improvement (final success)"),
               Text("P(X > Y): the probability that a random run of the row cell ends with a higher final success than a random "
                    "run of the column cell (ties count half), with its 95% percentile-bootstrap CI. Above 0.5 favours the row; "
                    "a CI excluding 0.5 is a difference the seeds support. Up to 6 cells: one matrix; beyond, each update rule "
                    "across estimators and each estimator across update rules. With fewer than 5 runs per cell a run's resample takes few "
                    "values, so these intervals are coarse (0.00 [0.00, 0.00] only says no resample reversed the order). "
                    "Tidy form: [improvement.csv](improvement.csv).")]
    blocks += improvement_blocks(summary)
    blocks += [Heading("Estimator quality")] + quality_blocks(summary, {k: v.get("spearman") for k, v in published.get("quality", {}).items()}, fig)
    blocks += [Heading("Compute cost"),
               Text("Simulator steps include Monte-Carlo re-rollouts (`charts/sim_steps`); env steps are finetuning data only.")]
    blocks.append(cost_table(summary) if len(summary.table) else Text("_No results._"))
    if "compute_cost.png" in fig:
        blocks.append(Image("compute_cost.png", "compute cost"))
    blocks += search_blocks(experiments)
    for e in experiments:  # an export keeps both records: placement columns in trials.csv, a copy of launches.jsonl
        header, rows = placement.summary_rows(e.trials)
        blocks += [Heading(f"Placement: {e.name}"),
                   Text(f"What each trial's process saw (`trial/placement.json`). At most {placement.max_concurrent(e.results)} trials "
                        "computed at the same moment. Fractional GPU shares are enforced by each trial's memory cap."),
                   Table(header, rows) if rows else Text("_No placement records._")]
        header, rows = launches.table(launches.read(e.run_dir))
        blocks += [Heading(f"Launches: {e.name}"),
                   Table(header, rows) if rows else Text("_No launch records (`launches.jsonl`)._")]
    header = ["run", "trial", "cell", "seed", "status", "last iteration", "error"]
    failures = _trial_rows(trials, summary, failed=True) if len(trials) else []
    blocks += [Heading("Failures"), Table(header, failures) if failures else Text("_None._")]
    unfinished = _trial_rows(trials, summary, failed=False) if len(trials) else []
    if unfinished:
        blocks += [Heading("Unfinished trials"), Text("Running, pending, or cut off by an interrupted experiment: their numbers are provisional."),
                   Table(header, unfinished)]
    return blocks


def write(blocks: Sequence[Block], summary: Summary, out_dir: Path, title: str) -> Path:
    """Write report.md, report.html and summary.tex; returns report.md."""
    out_dir = Path(out_dir)
    (out_dir / "report.html").write_text(html_page(blocks, title))
    (out_dir / "summary.tex").write_text(latex_table(summary))
    path = out_dir / "report.md"
    path.write_text(markdown(blocks))
    return path
