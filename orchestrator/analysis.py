"""A Ray Tune experiment directory -> a tidy frame -> per-cell statistics -> CSVs, figures and ``report.md``.

Loading reads the files Tune writes, without Ray: the newest ``experiment_state-*.json`` (every trial's
status and config, written by the driver) and, in each trial directory, ``result.json`` (one JSON line per
``tune.report``; ``progress.csv`` as a fallback), ``params.json`` and ``error.txt``.  This needs no cluster,
works on a directory copied off another machine, and works while an experiment is still running or after
it was interrupted (a half-written last line is skipped; trials the driver never recorded are picked up
from their directories and counted as unfinished).

Frame layout (``load_results``): one row per trial x reported iteration, columns ``trial_id``, ``status``
(TERMINATED / ERROR / RUNNING / PENDING / PAUSED as Tune records it), ``error`` (the exception line of a
failed trial, else empty), ``trial_dir``, the trial config as ``config/<field>`` (Tune's own convention in
``ResultGrid.get_dataframe``, and it keeps config fields from clashing with metric names), then
``iteration`` and every reported metric under its own key (``eval/success_rate``, ``charts/env_steps``, ...).
Ray's bookkeeping that repeats other columns (hostname, pid, the nested config, ...) is dropped.

Cells: runs are grouped by ``config/estimator`` and ``config/update`` plus every other config field that
varies within such a pair (a swept ``mc_samples`` or ``awr_beta`` makes its own cells; a per-method value
such as AWR's ``update_epochs`` does not), except ``seed`` (the runs of a cell) and ``env_id`` (the task:
the stratum of the stratified bootstrap, as in rliable).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from orchestrator import stats

CONFIG_PREFIX = "config/"
SUCCESS = "eval/success_rate"
ENV_STEPS = "charts/env_steps"
SIM_STEPS = "charts/sim_steps"
WALL = "time/total"
PHASES = ("time/rollout", "time/estimate", "time/update")
QUALITY_PREFIX = "quality/"
SEED = CONFIG_PREFIX + "seed"
TASK = CONFIG_PREFIX + "env_id"
CELL_PRIMARY = (CONFIG_PREFIX + "estimator", CONFIG_PREFIX + "update")
NOT_CELL = (SEED, TASK)
FINISHED, FAILED = "TERMINATED", "ERROR"

# Ray's per-row bookkeeping: duplicates of trial columns, or host details that say nothing about the method.
RAY_BOOKKEEPING = frozenset({
    "config", "trial_id", "done", "pid", "hostname", "node_ip", "date", "checkpoint_dir_name",
    "experiment_tag", "time_since_restore", "iterations_since_restore", "should_checkpoint",
})
_TRIAL_ID_IN_DIRNAME = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotAnExperimentError(ValueError):
    """RUN_DIR is missing or holds no Tune experiment (a ValueError so the CLI prints it as one line)."""


@dataclass
class Experiment:
    """A loaded Tune experiment: ``trials`` has one row per trial (also those that never reported), ``results`` one per trial x iteration."""

    run_dir: Path
    trials: pd.DataFrame
    results: pd.DataFrame


@dataclass
class Summary:
    """Everything ``summarize`` derives; each frame is written as-is by ``analyze``."""

    cell_columns: list[str]  # config columns that define a cell
    runs: pd.DataFrame  # one row per trial: its start / final / peak success, AUC, costs
    table: pd.DataFrame  # one row per cell: IQM and 95% CIs, counts, costs (summary.csv)
    improvement: pd.DataFrame  # one row per ordered pair of cells: P(X > Y) on final success, with CI
    curves: pd.DataFrame  # one row per cell x env-steps point: IQM success and CI across runs
    quality: pd.DataFrame  # one row per estimator: mean of each quality/* metric
    target: float  # success threshold for "env steps to reach target"
    reps: int


# ---------------------------------------------------------------------------------------------- loading


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts -> ``a/b`` keys (Tune's own flattening); lists become JSON strings so cells stay hashable."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def _state_trials(run_dir: Path) -> dict[str, dict]:
    """trial dir name -> {trial_id, status, config} from the newest experiment_state file (timestamped names sort in time)."""
    states = sorted(run_dir.glob("experiment_state-*.json"))
    data = _read_json(states[-1]) if states else None
    out = {}
    for entry in (data or {}).get("trial_data", []):
        trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        logdir = trial.get("relative_logdir") or trial.get("trial_id")
        out[str(logdir)] = {"trial_id": trial.get("trial_id"), "status": trial.get("status"), "config": trial.get("config") or {}}
    return out


def read_json_lines(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file in order ([] if it does not exist); a torn line (a writer interrupted
    mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_rows(trial_dir: Path) -> list[dict]:
    """Reported rows of one trial: result.json lines (a torn last line is skipped), else progress.csv."""
    rows = read_json_lines(trial_dir / "result.json")
    if not rows and (trial_dir / "progress.csv").is_file():
        try:
            rows = pd.read_csv(trial_dir / "progress.csv").to_dict("records")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            rows = []
    return rows


def _latest_attempt(rows: list[dict]) -> list[dict]:
    """Drop rows that a restart superseded.

    A trial restarted after a failure reports again from its checkpoint (or from iteration 0), appending to
    the same result.json.  When an iteration does not increase, the earlier rows from that iteration on
    belong to the abandoned attempt.
    """
    kept: list[dict] = []
    for row in rows:
        it = row["iteration"]
        if kept and it <= kept[-1]["iteration"]:
            kept = [r for r in kept if r["iteration"] < it]
        kept.append(row)
    return kept


def _error_line(trial_dir: Path) -> str:
    """The exception line of the last failure in error.txt (Tune appends one block per failure)."""
    path = trial_dir / "error.txt"
    if not path.is_file():
        return ""
    text = _ANSI.sub("", path.read_text(errors="replace"))
    last_block = re.split(r"^Failure # \d+.*$", text, flags=re.M)[-1]
    lines = [ln.strip() for ln in last_block.splitlines() if ln.strip() and not set(ln.strip()) <= set("^~ ")]
    return lines[-1] if lines else "failed (empty error.txt)"


def _trial_id(dirname: str, rows: list[dict]) -> str:
    if rows and rows[-1].get("trial_id"):
        return str(rows[-1]["trial_id"])
    m = _TRIAL_ID_IN_DIRNAME.search(dirname)
    return m.group(1) if m else dirname


def _not_an_experiment(run_dir: Path) -> NotAnExperimentError:
    hint = ""
    if run_dir.is_dir():
        inner = sorted(p.parent.name for p in run_dir.glob("*/experiment_state-*.json"))
        if inner:
            hint = f" (it holds experiment{'s' if len(inner) > 1 else ''} {', '.join(inner)}: pass {run_dir / inner[0]})"
    return NotAnExperimentError(f"RUN_DIR is not a Tune experiment directory: {run_dir}{hint}")


def load_experiment(run_dir) -> Experiment:
    """Read a finished, running or interrupted Tune experiment directory (see the module docstring)."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise _not_an_experiment(run_dir)
    state = _state_trials(run_dir)
    trial_dirs = {p.name for p in run_dir.iterdir() if p.is_dir() and ((p / "params.json").is_file() or (p / "result.json").is_file())}
    if not state and not trial_dirs and not list(run_dir.glob("experiment_state-*.json")):
        raise _not_an_experiment(run_dir)

    from orchestrator import placement
    from orchestrator.tune_runner import TRIAL_OUT

    trials, frames = [], []
    for name in sorted(set(state) | trial_dirs):
        tdir = run_dir / name
        rows = _read_rows(tdir) if name in trial_dirs else []
        rec = state.get(name, {})
        config = rec.get("config") or _read_json(tdir / "params.json") or {}
        error = _error_line(tdir)
        # Not in the driver's last state save: ERROR if it left an error file, otherwise not known to be done.
        status = rec.get("status") or ("ERROR" if error else "RUNNING")
        if status != FAILED:
            error = ""  # an error.txt of a trial that was retried and then finished is history, not a failure
        elif not error:
            error = "failed (no error.txt in the trial directory)"
        tid = rec.get("trial_id") or _trial_id(name, rows)
        for r in rows:
            if "iteration" not in r and "training_iteration" in r:
                r["iteration"] = r["training_iteration"] - 1  # Tune counts reports from 1; ours count from 0
        rows = _latest_attempt([r for r in rows if "iteration" in r])
        info = {"trial_id": tid, "status": status, "error": error, "trial_dir": name}
        cfg = {CONFIG_PREFIX + k: v for k, v in _flatten(config).items()}
        iters = [r["iteration"] for r in rows]
        where = placement.read(tdir, TRIAL_OUT)
        trials.append({**info, "reported": len(rows), "last_iteration": max(iters) if iters else np.nan, **cfg, **where})
        if rows:
            metrics = pd.DataFrame([_flatten({k: v for k, v in r.items() if k not in RAY_BOOKKEEPING}) for r in rows])
            frames.append(pd.concat([pd.DataFrame([{**info, **cfg}] * len(rows)), metrics], axis=1))

    base = ["trial_id", "status", "error", "trial_dir"]
    trial_frame = pd.DataFrame(trials, columns=None if trials else [*base, "reported", "last_iteration"])
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*base, "iteration"])
    results = results.sort_values(["trial_id", "iteration"], kind="stable").reset_index(drop=True)
    return Experiment(run_dir, trial_frame.sort_values("trial_id", kind="stable").reset_index(drop=True), results)


def load_results(run_dir) -> pd.DataFrame:
    """The tidy frame: one row per trial x reported iteration (layout in the module docstring)."""
    return load_experiment(run_dir).results


# ---------------------------------------------------------------------------------------------- summarising


def cell_columns(frame: pd.DataFrame) -> list[str]:
    """estimator, update, then every other config column that varies *within* an (estimator, update) pair.

    Within, not across: a per-method setting (``update_epochs`` 200 for AWR, 4 for PPO) is a property of
    the pair and must not split it, while a sweep axis (``mc_samples`` 1/5/16) does.  Seed and task never do.
    """
    cols = [c for c in CELL_PRIMARY if c in frame.columns]
    per_trial = frame.drop_duplicates("trial_id")
    pairs = per_trial.groupby([per_trial[c].map(_value) for c in cols]) if cols else [(None, per_trial)]
    for c in frame.columns:
        if c.startswith(CONFIG_PREFIX) and c not in cols and c not in NOT_CELL:
            if any(g[c].map(_value).nunique() > 1 for _, g in pairs):
                cols.append(c)
    return cols


def _value(v) -> str:
    return "None" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _sort_key(v) -> tuple:
    """Numbers in numeric order (mc_samples 5 before 16), before text; None last."""
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and not math.isnan(v):
        return (0, float(v), "")
    return (1, 0.0, _value(v)) if _value(v) != "None" else (2, 0.0, "")


def cell_label(values: dict) -> str:
    """``gae+ppo``, then swept fields: ``mc+awr mc_samples=16``."""
    prim = [_value(values[c]) for c in CELL_PRIMARY if c in values]
    rest = [f"{c[len(CONFIG_PREFIX):]}={_value(v)}" for c, v in values.items() if c not in CELL_PRIMARY]
    return " ".join(filter(None, ["+".join(prim), *rest])) or "all"


def _steps_to(x: np.ndarray, y: np.ndarray, target: float) -> float:
    hit = np.flatnonzero(y >= target)
    return float(x[hit[0]]) if hit.size else math.inf


def _normalised_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Mean success over the finetuning budget: trapezoid area under success(env steps) / span of env steps."""
    if x.size < 2 or x[-1] <= x[0]:
        return math.nan
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


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
        row = {"trial_id": tid, "cell": cell_label(cfg), **cfg,
               "task": _value(first[TASK]) if TASK in g else "", "seed": first.get(SEED, np.nan),
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
    return pd.DataFrame(out, columns=None if out else RUN_COLUMNS)


def _strata(runs: pd.DataFrame, col: str) -> list[np.ndarray]:
    """Per-task arrays of a run metric, runs without a value dropped (the bootstrap's strata)."""
    ok = runs[runs[col].notna()]
    return [g[col].to_numpy(float) for _, g in ok.groupby("task", sort=True)]


def _interval(runs: pd.DataFrame, col: str, reps: int, rng: np.random.Generator) -> stats.Interval:
    groups = _strata(runs, col)
    if not groups:
        return stats.Interval(math.nan, math.nan, math.nan, 0)
    return stats.interval_estimate(groups, stats.iqm, reps=reps, rng=rng)


def _mean(s: pd.Series) -> float:
    return float(s.mean()) if s.notna().any() else math.nan


def _cell_row(cell: str, members: pd.DataFrame, cells: list[str], used: pd.DataFrame, reps: int, rng) -> dict:
    """``members``: the cell's trials (one row each, also those that never reported); ``used``: its runs in the statistics."""
    row = {"cell": cell, **{c[len(CONFIG_PREFIX):]: members.iloc[0][c] for c in cells}}
    status = members["status"]
    row.update(runs=len(members), finished=int((status == FINISHED).sum()), failed=int((status == FAILED).sum()))
    row["unfinished"] = row["runs"] - row["finished"] - row["failed"]
    row["n"] = int(used["final"].notna().sum())
    row["last_iteration"] = members["last_iteration"].max() if "last_iteration" in members else math.nan
    for metric in ("start", "final", "peak", "auc"):
        iv = _interval(used, metric, reps, rng)
        row.update({f"{metric}_iqm": iv.point, f"{metric}_low": iv.low, f"{metric}_high": iv.high})
    steps = used["steps_to_target"].dropna()
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
        iv = stats.interval_estimate([t[SUCCESS].to_numpy(float) for _, t in g.groupby("task")], stats.iqm, reps=reps, rng=rng)
        out.append({"cell": cell, "env_steps": x, "iqm": iv.point, "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame(out, columns=["cell", "env_steps", "iqm", "low", "high", "n"])


def _improvement(used: pd.DataFrame, order: list[str], reps: int, rng) -> pd.DataFrame:
    ok = used[used["final"].notna()]
    finals = {c: {t: g["final"].to_numpy(float) for t, g in ok[ok["cell"] == c].groupby("task")} for c in order}
    rows = []
    for x in order:
        for y in order:
            tasks = sorted(set(finals[x]) & set(finals[y]))  # compare on the tasks both cells have
            if x == y or not tasks:
                continue
            iv = stats.probability_of_improvement_interval([finals[x][t] for t in tasks], [finals[y][t] for t in tasks], reps=reps, rng=rng)
            n_x, n_y = (sum(len(finals[c][t]) for t in tasks) for c in (x, y))
            rows.append({"x": x, "y": y, "p": iv.point, "low": iv.low, "high": iv.high, "n_x": n_x, "n_y": n_y})
    return pd.DataFrame(rows, columns=["x", "y", "p", "low", "high", "n_x", "n_y"])


def quality_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean of each quality/* metric per estimator over every iteration that measured it (all runs, also failed ones)."""
    qcols = [c for c in frame.columns if c.startswith(QUALITY_PREFIX)]
    est = CELL_PRIMARY[0]
    if not qcols or est not in frame:
        return pd.DataFrame(columns=["estimator", "measurements"])
    measured = frame[frame[qcols].notna().any(axis=1)]
    out = []
    for name, g in measured.groupby(est, sort=True):
        out.append({"estimator": name, "measurements": len(g), "runs": g["trial_id"].nunique(), **{c: _mean(g[c]) for c in qcols}})
    return pd.DataFrame(out)


def summarize(frame: pd.DataFrame, target: float = 0.9, reps: int = stats.DEFAULT_REPS, seed: int = 0,
              include_failed: bool = False, trials: Optional[pd.DataFrame] = None) -> Summary:
    """Per-cell IQM and 95% stratified-bootstrap CIs over seeds, P(improvement) on final success, curves, costs, quality.

    Failed (ERROR) trials are left out of the statistics unless ``include_failed``: their last evaluation is
    where they crashed, not where the method got; they are counted per cell and listed in the report.
    Unfinished trials (a running or interrupted experiment) enter with their latest evaluation.
    ``trials`` (``Experiment.trials``) adds the trials that never reported, so a cell whose every trial
    crashed at start-up, or is still pending, still gets its row and its counts.
    """
    rng = np.random.default_rng(seed)  # fixed: the same directory always gives the same report
    members = trials if trials is not None else frame.drop_duplicates("trial_id")
    cells = cell_columns(members) if len(members) else []
    runs = run_table(frame, target, cells) if len(frame) else pd.DataFrame(columns=RUN_COLUMNS)
    used = runs if include_failed else runs[runs["status"] != FAILED]
    members = members.assign(cell=[cell_label({c: r[c] for c in cells}) for _, r in members.iterrows()])
    firsts = members.drop_duplicates("cell")
    order = [r["cell"] for _, r in sorted(firsts.iterrows(), key=lambda kv: tuple(_sort_key(kv[1][c]) for c in cells))]
    if "last_iteration" not in members:
        members = members.merge(runs[["trial_id", "last_iteration"]], on="trial_id", how="left")
    table = pd.DataFrame([_cell_row(c, members[members["cell"] == c], cells, used[used["cell"] == c], reps, rng) for c in order])
    curves = _curves(used, frame, min(reps, 2_000), rng)  # many points per cell; the band is for the eye
    return Summary(cells, runs, table, _improvement(used, order, reps, rng), curves, quality_table(frame), target, reps)


# ---------------------------------------------------------------------------------------------- the command


@dataclass
class AnalysisOutputs:
    """Where ``analyze`` wrote what."""

    out_dir: Path
    report: Path
    summary_csv: Path
    results_csv: Path
    results_parquet: Optional[Path]
    figures: list[Path] = field(default_factory=list)
    summary: Optional[Summary] = None
    experiment: Optional[Experiment] = None


def _write_parquet(frame: pd.DataFrame, path: Path) -> Optional[Path]:
    """Parquet when pyarrow is there; config columns mixing types (None, str, float) are stored as text."""
    try:
        frame.to_parquet(path, index=False)
    except ImportError:
        return None
    except (TypeError, ValueError, NotImplementedError):
        mixed = {c: frame[c].map(lambda v: None if v is None else str(v)) for c in frame.columns if frame[c].dtype == object}
        try:
            frame.assign(**mixed).to_parquet(path, index=False)
        except (TypeError, ValueError, NotImplementedError):
            return None
    return path


def analyze(run_dir, out_dir=None, target: float = 0.9, reps: int = stats.DEFAULT_REPS, seed: int = 0) -> AnalysisOutputs:
    """Load RUN_DIR, summarise it and write results.csv/.parquet, summary.csv, improvement.csv, figures and report.md.

    ``out_dir`` defaults to ``RUN_DIR/analysis`` (Tune ignores foreign folders in an experiment directory).
    """
    from orchestrator import plots, report

    if not 0 < target <= 1:
        raise ValueError(f"target success must be in (0, 1], got {target}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    exp = load_experiment(run_dir)
    out = Path(out_dir) if out_dir is not None else exp.run_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(exp.results, target=target, reps=reps, seed=seed, trials=exp.trials)

    results_csv, summary_csv = out / "results.csv", out / "summary.csv"
    exp.results.to_csv(results_csv, index=False)
    summary.table.to_csv(summary_csv, index=False)
    summary.runs.to_csv(out / "runs.csv", index=False)
    summary.improvement.to_csv(out / "improvement.csv", index=False)
    if len(summary.quality):
        summary.quality.to_csv(out / "quality.csv", index=False)
    parquet = _write_parquet(exp.results, out / "results.parquet")
    figures = plots.write_figures(summary, out)
    report_path = report.write_report(exp, summary, figures, out / "report.md", parquet is not None)
    return AnalysisOutputs(out, report_path, summary_csv, results_csv, parquet, figures, summary, exp)
