"""The results frame -> per-run and per-cell tables: what the report, the figures and the CSVs show.

Cells: a trial's ``config/cell`` when it is set (a label such as ``mc16-expert+awr``); otherwise the trial is
grouped by ``config/estimator`` and ``config/update`` plus every other config field that varies within such a
pair (a swept ``mc_samples`` or ``awr_beta`` makes its own cells; a per-method value such as AWR's
``update_epochs`` does not).  Never a cell field: ``seed`` (the runs of a cell), ``env_id`` (the task: the
stratum of the stratified bootstrap, as in rliable), and where or how a trial computed (``device``,
``backend``, ``mc_workers``).  Checkpoint paths are compared by file name, so the same grid run on two
machines pools.

Intervals: ``stats.interval_estimate(method="auto")``: the stratified percentile bootstrap with at least
``stats.MIN_BOOTSTRAP_RUNS`` runs per task, a Student-t interval below that (clipped to [0, 1] for success
rates); the method is recorded per number (``<metric>_method``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from orchestrator import stats
from orchestrator.rundir import CONFIG_PREFIX, FAILED, FINISHED

SUCCESS = "eval/success_rate"
ENV_STEPS = "charts/env_steps"
SIM_STEPS = "charts/sim_steps"
WALL = "time/total"
PHASES = ("time/rollout", "time/estimate", "time/update")
QUALITY_PREFIX = "quality/"
SEED = CONFIG_PREFIX + "seed"
TASK = CONFIG_PREFIX + "env_id"
EXPLICIT_CELL = CONFIG_PREFIX + "cell"
RUN = CONFIG_PREFIX + "run"  # the run directory's name, a cell field only when runs are compared side by side
CELL_PRIMARY = (CONFIG_PREFIX + "estimator", CONFIG_PREFIX + "update")
NOT_CELL = tuple(CONFIG_PREFIX + f for f in ("seed", "env_id", "cell", "device", "backend", "mc_workers"))
RATE_METRICS = ("start", "final", "peak", "auc")  # success rates: intervals clipped to [0, 1]


@dataclass
class Summary:
    """Everything ``summarize`` derives; each frame is written as-is by ``analyze``."""

    cell_columns: list[str]  # config columns that define a cell
    runs: pd.DataFrame  # one row per trial: its start / final / peak success, AUC, costs
    table: pd.DataFrame  # one row per cell: IQM and 95% CIs, counts, costs (summary.csv)
    improvement: pd.DataFrame  # focused pairs of cells: P(X > Y) on final success, with CI, and the comparison group
    curves: pd.DataFrame  # one row per cell x env-steps point: IQM success and CI across runs
    quality: pd.DataFrame  # one row per estimator: mean of each quality/* metric, rho with CI
    target: float  # success threshold for "env steps to reach target"
    reps: int
    # one row per estimator x measured iteration: mean rho over runs (a fresh critic at iteration 1 is not a trained one)
    quality_by_iteration: Optional[pd.DataFrame] = None


def cell_columns(frame: pd.DataFrame) -> list[str]:
    """estimator, update, then every other config column that varies *within* an (estimator, update) pair.

    Within, not across: a per-method setting (``update_epochs`` 200 for AWR, 4 for PPO) is a property of
    the pair and must not split it, while a sweep axis (``mc_samples`` 1/5/16) does.  Seed and task never do.
    """
    cols = [c for c in CELL_PRIMARY if c in frame.columns]
    per_trial = frame.drop_duplicates("trial_id")
    pairs = per_trial.groupby([per_trial[c].map(value_text) for c in cols]) if cols else [(None, per_trial)]
    for c in frame.columns:
        if c.startswith(CONFIG_PREFIX) and c not in cols and c not in NOT_CELL:
            if any(g[c].map(value_text).nunique() > 1 for _, g in pairs):
                cols.append(c)
    return cols


def value_text(v) -> str:
    """A config value as text for grouping: None/NaN as "None", a checkpoint path by its file name."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "None"
    s = str(v)
    return Path(s).name if s.endswith(".pt") else s


def _sort_key(v) -> tuple:
    """Numbers in numeric order (mc_samples 5 before 16), before text; None last."""
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and not math.isnan(v):
        return (0, float(v), "")
    return (1, 0.0, value_text(v)) if value_text(v) != "None" else (2, 0.0, "")


def cell_label(values: dict, explicit: object = "") -> str:
    """``explicit`` (a trial's ``cell`` field) when set, else ``gae+ppo`` then swept fields: ``mc+awr mc_samples=16``."""
    if isinstance(explicit, str) and explicit:
        return explicit
    prim = [value_text(values[c]) for c in CELL_PRIMARY if c in values]
    rest = [f"{c[len(CONFIG_PREFIX):]}={value_text(v)}" for c, v in values.items() if c not in CELL_PRIMARY]
    return " ".join(filter(None, ["+".join(prim), *rest])) or "all"


def _steps_to(x: np.ndarray, y: np.ndarray, target: float) -> float:
    hit = np.flatnonzero(y >= target)
    return float(x[hit[0]]) if hit.size else math.inf


def _normalised_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Mean success over the finetuning budget: trapezoid area under success(env steps) / span of env steps."""
    if x.size < 2 or x[-1] <= x[0]:
        return math.nan
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


_TEXT_RUN_COLUMNS = ("trial_id", "cell", "task", "status", "error")
RUN_COLUMNS = ["trial_id", "cell", "task", "seed", "status", "error", "last_iteration", "start", "final", "peak", "auc",
               "steps_to_target", "env_steps", "sim_steps", "wall_s", "rollout_s", "estimate_s", "update_s"]


def run_table(frame: pd.DataFrame, target: float = 0.9, cells: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One row per trial: cell, task, status, start / final / peak success, AUC, steps to target, costs.

    final = success at the last evaluated iteration; peak = best evaluation after iteration 0 (the
    reference numbers are peaks, which a single seed makes optimistic; we report both).
    """
    cells = list(cell_columns(frame) if cells is None else cells)
    out = []
    for tid, g in frame.groupby("trial_id", sort=True):
        g = g.sort_values("iteration")
        first = g.iloc[0]
        cfg = {c: first.get(c) for c in cells}  # .get: a field only some trials have (cells may come from the trial list)
        row = {"trial_id": tid, "cell": cell_label(cfg, first.get(EXPLICIT_CELL, "")), **cfg,
               "task": value_text(first[TASK]) if TASK in g else "", "seed": first.get(SEED, np.nan),
               "status": first["status"], "error": first["error"], "last_iteration": g["iteration"].max()}
        ev = g[g[SUCCESS].notna()] if SUCCESS in g else g.iloc[:0]
        start = ev.loc[ev["iteration"] == 0, SUCCESS]
        after = ev.loc[ev["iteration"] > 0, SUCCESS]
        row["start"] = float(start.iloc[0]) if len(start) else math.nan
        row["final"] = float(after.iloc[-1]) if len(after) else math.nan
        row["peak"] = float(after.max()) if len(after) else math.nan
        if ENV_STEPS in ev and len(ev):
            pts = ev[ev[ENV_STEPS].notna()].sort_values(ENV_STEPS)
            x, y = pts[ENV_STEPS].to_numpy(float), pts[SUCCESS].to_numpy(float)
            row["auc"], row["steps_to_target"] = _normalised_auc(x, y), (_steps_to(x, y, target) if x.size else math.nan)
        else:
            row["auc"] = row["steps_to_target"] = math.nan
        for col, key in ((ENV_STEPS, "env_steps"), (SIM_STEPS, "sim_steps"), (WALL, "wall_s")):
            row[key] = float(g[col].max()) if col in g and g[col].notna().any() else math.nan  # cumulative counters
        for col in PHASES:
            row[col.split("/")[1] + "_s"] = float(g[col].sum()) if col in g else math.nan
        out.append(row)
    if not out:  # typed, so a grid in which no trial reported still summarises (to empty numbers)
        return pd.DataFrame({c: pd.Series(dtype=object if c in _TEXT_RUN_COLUMNS else float) for c in RUN_COLUMNS})
    return pd.DataFrame(out)


def _strata(runs: pd.DataFrame, col: str) -> list[np.ndarray]:
    """Per-task arrays of a run metric, runs without a value dropped (the bootstrap's strata)."""
    ok = runs[runs[col].notna()]
    return [g[col].to_numpy(float) for _, g in ok.groupby("task", sort=True)]


def _clipped(iv: stats.Interval) -> stats.Interval:
    """A success rate's interval inside [0, 1] (a t-interval around a rate near 0 or 1 can cross it)."""
    return stats.Interval(iv.point, max(iv.low, 0.0), min(iv.high, 1.0), iv.n, iv.method) if iv.method == "t" else iv


def _interval(runs: pd.DataFrame, col: str, reps: int, rng: np.random.Generator) -> stats.Interval:
    groups = _strata(runs, col)
    if not groups:
        return stats.Interval(math.nan, math.nan, math.nan, 0, "none")
    iv = stats.interval_estimate(groups, stats.iqm, reps=reps, rng=rng, method="auto")
    return _clipped(iv) if col in RATE_METRICS else iv


def _mean(s: pd.Series) -> float:
    return float(s.mean()) if s.notna().any() else math.nan


def _cell_row(cell: str, members: pd.DataFrame, cells: list[str], used: pd.DataFrame, reps: int, rng) -> dict:
    """``members``: the cell's trials (one row each, also those that never reported); ``used``: its runs in the statistics."""
    row = {"cell": cell, **{c[len(CONFIG_PREFIX):]: members.iloc[0].get(c) for c in cells}}
    status = members["status"]
    row.update(runs=len(members), finished=int((status == FINISHED).sum()), failed=int((status == FAILED).sum()))
    row["unfinished"] = row["runs"] - row["finished"] - row["failed"]
    row["n"] = int(used["final"].notna().sum())
    row["last_iteration"] = members["last_iteration"].max() if "last_iteration" in members else math.nan
    for metric in ("start", "final", "peak", "auc"):
        iv = _interval(used, metric, reps, rng)
        row.update({f"{metric}_iqm": iv.point, f"{metric}_low": iv.low, f"{metric}_high": iv.high, f"{metric}_method": iv.method})
    steps = used["steps_to_target"].dropna().astype(float)
    row["reached"] = int(np.isfinite(steps).sum())
    row["reach_frac"] = float(np.isfinite(steps).mean()) if len(steps) else math.nan
    # Median with never-reached runs as +inf: finite iff more than half of the runs got there.
    row["steps_to_target"] = float(np.median(steps)) if len(steps) else math.nan
    for key in ("env_steps", "sim_steps", "wall_s", "rollout_s", "estimate_s", "update_s"):
        row[key] = _mean(used[key])  # cost is a budget, so the plain mean over runs
    row["sim_per_env_step"] = row["sim_steps"] / row["env_steps"] if row["env_steps"] else math.nan
    return row


def _curves(runs_frame: pd.DataFrame, frame: pd.DataFrame, reps: int, rng) -> pd.DataFrame:
    """IQM success (and CI across runs) at each env-steps point of each cell."""
    if SUCCESS not in frame or ENV_STEPS not in frame:
        return pd.DataFrame(columns=["cell", "env_steps", "iqm", "low", "high", "n"])
    pts = frame[frame[SUCCESS].notna() & frame[ENV_STEPS].notna()][["trial_id", ENV_STEPS, SUCCESS]]
    pts = pts.merge(runs_frame[["trial_id", "cell", "task"]], on="trial_id")
    out = []
    for (cell, x), g in pts.groupby(["cell", ENV_STEPS], sort=True):
        iv = _clipped(stats.interval_estimate([t[SUCCESS].to_numpy(float) for _, t in g.groupby("task")], stats.iqm, reps=reps, rng=rng, method="auto"))
        out.append({"cell": cell, "env_steps": x, "iqm": iv.point, "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame(out, columns=["cell", "env_steps", "iqm", "low", "high", "n"])


def comparison_groups(table: pd.DataFrame, full_matrix_max: int = 6) -> list[tuple[str, list[str]]]:
    """Which cells to compare pairwise: every cell when there are at most ``full_matrix_max``; else, for each
    update rule, its cells across estimators, and for each estimator, its cells across update rules."""
    cells = table["cell"].tolist()
    if len(cells) <= full_matrix_max or "estimator" not in table or "update" not in table:
        return [("all cells", cells)] if len(cells) > 1 else []
    groups = []
    for by, across in (("update", "estimators"), ("estimator", "update rules")):
        for value, g in table.groupby(table[by].map(value_text), sort=False):
            if len(g) > 1:
                groups.append((f"{by} {value}: {across}", g["cell"].tolist()))
    return groups


def _improvement(used: pd.DataFrame, groups: list[tuple[str, list[str]]], reps: int, rng) -> pd.DataFrame:
    """P(X > Y) on final success for every ordered pair inside each comparison group."""
    columns = ["group", "x", "y", "p", "low", "high", "n_x", "n_y"]
    ok = used[used["final"].notna()]
    finals = {c: {t: g["final"].to_numpy(float) for t, g in cg.groupby("task")} for c, cg in ok.groupby("cell")}
    rows = []
    for group, members in groups:
        for x in members:
            for y in members:
                tasks = sorted(set(finals.get(x, {})) & set(finals.get(y, {})))  # the tasks both cells have
                if x == y or not tasks:
                    continue
                iv = stats.probability_of_improvement_interval([finals[x][t] for t in tasks], [finals[y][t] for t in tasks], reps=reps, rng=rng)
                n_x, n_y = (sum(len(finals[c][t]) for t in tasks) for c in (x, y))
                rows.append({"group": group, "x": x, "y": y, "p": iv.point, "low": iv.low, "high": iv.high, "n_x": n_x, "n_y": n_y})
    return pd.DataFrame(rows, columns=columns)


def quality_table(frame: pd.DataFrame, reps: int = 2_000, rng: stats.RngLike = 0) -> pd.DataFrame:
    """Per estimator: each quality/* metric averaged over every measured iteration (all runs, also failed ones);
    ``rho`` (quality/spearman) per run then IQM over runs with its interval, and the variance of the estimate's
    error ``rmse^2 - bias^2``."""
    qcols = [c for c in frame.columns if c.startswith(QUALITY_PREFIX)]
    est = CELL_PRIMARY[0]
    if not qcols or est not in frame:
        return pd.DataFrame(columns=["estimator", "measurements", "runs"])
    measured = frame[frame[qcols].notna().any(axis=1)]
    gen = np.random.default_rng(rng)
    out = []
    for name, g in measured.groupby(est, sort=True):
        row = {"estimator": name, "measurements": len(g), "runs": g["trial_id"].nunique(), **{c: _mean(g[c]) for c in qcols}}
        if {"quality/bias", "quality/rmse"} <= set(g):
            row["error_variance"] = _mean(g["quality/rmse"] ** 2 - g["quality/bias"] ** 2)
        if "quality/spearman" in g:
            per_run = g.groupby("trial_id")["quality/spearman"].mean().dropna().to_numpy(float)
            iv = stats.interval_estimate(per_run, reps=reps, rng=gen, method="auto") if per_run.size else stats.Interval(math.nan, math.nan, math.nan, 0, "none")
            row.update(rho=iv.point, rho_low=iv.low, rho_high=iv.high, rho_method=iv.method)
        out.append(row)
    return pd.DataFrame(out)


def quality_by_iteration(frame: pd.DataFrame) -> pd.DataFrame:
    """Per estimator and measured iteration: runs, mean Spearman rho over runs, and its min and max."""
    columns = ["estimator", "iteration", "runs", "rho_mean", "rho_min", "rho_max"]
    est = CELL_PRIMARY[0]
    if "quality/spearman" not in frame or est not in frame or "iteration" not in frame:
        return pd.DataFrame(columns=columns)
    measured = frame[frame["quality/spearman"].notna()]
    rows = []
    for (name, it), g in measured.groupby([est, "iteration"], sort=True):
        per_run = g.groupby("trial_id")["quality/spearman"].mean()
        rows.append({"estimator": name, "iteration": int(it), "runs": len(per_run), "rho_mean": float(per_run.mean()),
                     "rho_min": float(per_run.min()), "rho_max": float(per_run.max())})
    return pd.DataFrame(rows, columns=columns)


def summarize(frame: pd.DataFrame, target: float = 0.9, reps: int = stats.DEFAULT_REPS, seed: int = 0,
              include_failed: bool = False, trials: Optional[pd.DataFrame] = None,
              swept: Optional[Sequence[str]] = None) -> Summary:
    """Per-cell IQM and 95% stratified-bootstrap CIs over seeds, P(improvement) on final success, curves, costs, quality.

    Failed (ERROR) trials are left out of the statistics unless ``include_failed``: their last evaluation is
    where they crashed, not where the method got; they are counted per cell and listed in the report.
    Unfinished trials (a running or interrupted experiment) enter with their latest evaluation.
    ``trials`` (``Experiment.trials``) adds the trials that never reported, so a cell whose every trial
    crashed at start-up, or is still pending, still gets its row and its counts.  ``swept``: the config
    fields that define cells beside estimator and update (what the grid spec swept, from
    ``spec.resolved.json``); None infers them (``cell_columns``).
    """
    rng = np.random.default_rng(seed)  # fixed: the same directory always gives the same report
    members = trials if trials is not None else frame.drop_duplicates("trial_id")
    if swept is not None:
        cells = [c for c in (*CELL_PRIMARY, *(CONFIG_PREFIX + k for k in swept), RUN) if c in members]
    else:
        cells = cell_columns(members) if len(members) else []
    runs = run_table(frame, target, cells)
    used = runs if include_failed else runs[runs["status"] != FAILED]
    members = members.assign(cell=[cell_label({c: r.get(c) for c in cells}, r.get(EXPLICIT_CELL, "")) for _, r in members.iterrows()])
    firsts = members.drop_duplicates("cell")
    order = [r["cell"] for _, r in sorted(firsts.iterrows(), key=lambda kv: tuple(_sort_key(kv[1].get(c)) for c in cells))]
    if "last_iteration" not in members:
        members = members.merge(runs[["trial_id", "last_iteration"]], on="trial_id", how="left")
    table = pd.DataFrame([_cell_row(c, members[members["cell"] == c], cells, used[used["cell"] == c], reps, rng) for c in order])
    curves = _curves(used, frame, min(reps, 2_000), rng)  # many points per cell; the band is for the eye
    improvement = _improvement(used, comparison_groups(table) if len(table) else [], reps, rng)
    return Summary(cells, runs, table, improvement, curves, quality_table(frame, min(reps, 2_000), seed), target, reps,
                   quality_by_iteration(frame))


