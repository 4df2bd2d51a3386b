"""A run directory's layout and its readers: what a grid leaves on disk, read back into two frames.

Layout of a run directory ``<storage>/<name>`` (Tune's experiment directory)::

    spec.yaml, spec.resolved.json     the spec as given; {"spec": normalised spec, "trials": [FinetuneConfig]}
    launches.jsonl                    one line per grid/resume call (orchestrator.launches)
    tuner.pkl, experiment_state-*.json                                  Tune's state
    <trial dir>/result.json, progress.csv, params.json, error.txt       Tune's per-trial records
    <trial dir>/trial/placement.json  where the trial ran (orchestrator.placement)

Reading goes through Tune's public ``ray.tune.ExperimentAnalysis`` (trial status, config, per-trial
metrics).  The raw per-trial files are read only where Tune cannot: a directory without a readable
experiment state, a trial directory the driver never recorded, or a ``result.json`` whose last line a
crash cut (Tune then drops the whole file; the intact lines are kept and the rest recovered from
``progress.csv``, with a warning naming the file).

A folder of standalone trials (what ``orchestrator finetune --out-dir D`` leaves: ``D/config.json``, ``D/metrics.jsonl``,
``D/tb/``), or one such trial directory, reads as an experiment of those trials: config from ``config.json``, rows from
``metrics.jsonl`` (or, for a trial written before that file existed, rebuilt from its TensorBoard scalars), status
TERMINATED when the last row is the config's last iteration and INCOMPLETE otherwise (nothing records a crash).

An *exported* folder (what ``analyze`` writes: ``results.csv`` with one row per trial x iteration, plus
``trials.csv`` and ``spec.resolved.json`` when present) reads back into the same frames, so a committed
results folder can be re-analysed without the Tune directory.

Frames: ``results`` has one row per trial x reported iteration: ``trial_id``, ``status`` (Tune's), ``error``
(the exception line of a failed trial), ``trial_dir``, the config as ``config/<field>`` (Tune's convention),
``iteration`` and every reported metric under its own key; ``trials`` one row per trial, also those that
never reported, with ``reported`` and ``last_iteration``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from algorithms.trial_files import CONFIG_JSON, METRICS_JSONL, TB_DIR
from orchestrator import placement

SPEC_YAML = "spec.yaml"
SPEC_JSON = "spec.resolved.json"
TRIAL_OUT = "trial"  # run_trial's out_dir inside a Tune trial directory
RESULT_JSON, PROGRESS_CSV, PARAMS_JSON, ERROR_TXT = "result.json", "progress.csv", "params.json", "error.txt"
EXPORT_RESULTS, EXPORT_TRIALS = "results.csv", "trials.csv"
CONFIG_PREFIX = "config/"
INCOMPLETE = "INCOMPLETE"  # a standalone trial whose rows stop before its last iteration: interrupted, or still running
# the trial statuses Tune records for a trial that ended by itself and for one that raised (its Trial.TERMINATED / .ERROR)
FINISHED, FAILED = "TERMINATED", "ERROR"
BASE_COLUMNS = ["trial_id", "status", "error", "trial_dir"]

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
    """One run directory (or exported folder), loaded.  ``warnings``: damaged files, one line each."""

    run_dir: Path
    trials: pd.DataFrame
    results: pd.DataFrame
    resolved: Optional[dict] = None  # spec.resolved.json, when the directory has one
    source: str = "tune"  # "tune" (ExperimentAnalysis), "files" (raw trial files), "export" (results.csv) or "trials" (finetune out-dirs)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run_dir.name


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_json_lines(path: Path) -> tuple[list[dict], int]:
    """(the JSON objects of a JSON-lines file in order, how many lines could not be parsed); ([], 0) if absent.

    A line that does not parse is what a writer interrupted mid-write leaves; the caller decides whether
    that is worth a warning.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    rows, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, bad


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts -> ``a/b`` keys (Tune's own flattening); lists become JSON strings so cells stay hashable."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def _progress_rows(trial_dir: Path) -> list[dict]:
    try:
        return pd.read_csv(trial_dir / PROGRESS_CSV).to_dict("records")
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return []


def read_trial_rows(trial_dir: Path) -> tuple[list[dict], Optional[str]]:
    """Reported rows of one trial from its raw files, and a warning when ``result.json`` was damaged.

    Intact ``result.json`` lines are kept; iterations past them that ``progress.csv`` holds (Tune writes both
    per report) are recovered from it.
    """
    trial_dir = Path(trial_dir)
    rows, bad = read_json_lines(trial_dir / RESULT_JSON)
    if not bad:
        return (rows or _progress_rows(trial_dir)), None
    seen = {r.get("training_iteration") for r in rows}
    extra = [r for r in _progress_rows(trial_dir) if r.get("training_iteration") not in seen]
    path = trial_dir / RESULT_JSON
    how = f"recovered {len(extra)} row(s) from {PROGRESS_CSV}" if extra else f"no later row in {PROGRESS_CSV} to recover"
    return rows + extra, f"{path}: {bad} damaged line(s) (a write cut short); kept {len(rows)} intact row(s), {how}"


def error_line(trial_dir: Path) -> str:
    """The exception line of the last failure in error.txt (Tune appends one block per failure)."""
    path = Path(trial_dir) / ERROR_TXT
    if not path.is_file():
        return ""
    text = _ANSI.sub("", path.read_text(errors="replace"))
    last_block = re.split(r"^Failure # \d+.*$", text, flags=re.M)[-1]
    lines = [ln.strip() for ln in last_block.splitlines() if ln.strip() and not set(ln.strip()) <= set("^~ ")]
    return lines[-1] if lines else "failed (empty error.txt)"


def _latest_attempt(rows: list[dict]) -> list[dict]:
    """Drop rows a restart superseded: a retried trial reports again from its checkpoint (or iteration 0),
    appending to the same file, so when an iteration does not increase the earlier rows from it on are the
    abandoned attempt's."""
    kept: list[dict] = []
    for row in rows:
        it = row["iteration"]
        if kept and it <= kept[-1]["iteration"]:
            kept = [r for r in kept if r["iteration"] < it]
        kept.append(row)
    return kept


def _clean_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k not in RAY_BOOKKEEPING and not str(k).startswith(CONFIG_PREFIX)}
        if "iteration" not in r and "training_iteration" in r:
            r["iteration"] = r["training_iteration"] - 1  # Tune counts reports from 1; ours count from 0
        if "iteration" in r and not pd.isna(r["iteration"]):
            out.append(flatten(r))
    return _latest_attempt(out)


@dataclass
class _Trial:
    dirname: str
    trial_id: str
    status: str
    config: dict
    rows: list[dict]


def _not_an_experiment(run_dir: Path) -> NotAnExperimentError:
    hint = ""
    if run_dir.is_dir():
        inner = sorted(p.parent.name for p in run_dir.glob("*/experiment_state-*.json"))
        if inner:
            hint = f" (it holds experiment{'s' if len(inner) > 1 else ''} {', '.join(inner)}: pass {run_dir / inner[0]})"
    return NotAnExperimentError(f"RUN_DIR is not a Tune experiment directory, an exported results folder nor a folder of finetune trials: {run_dir}{hint}")


def _trial_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and ((p / PARAMS_JSON).is_file() or (p / RESULT_JSON).is_file()))


@contextlib.contextmanager
def quiet_missing_results():
    """Within the block, Tune's ``ExperimentAnalysis`` (which ``Tuner.restore`` and ``ResultGrid`` build too) does
    not warn about trials without a result file: trials that never started (a grid stopped early) have none by
    design, and a trial that reported but lost its file is warned about by :func:`_tune_trials` itself."""
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def open_experiment(run_dir: Path):
    """Tune's ``ExperimentAnalysis`` of ``run_dir`` (see :func:`quiet_missing_results`)."""
    from ray.tune import ExperimentAnalysis

    with quiet_missing_results():
        return ExperimentAnalysis(str(run_dir))


def _tune_trials(run_dir: Path, warnings: list[str]) -> Optional[list[_Trial]]:
    """Every trial Tune's ExperimentAnalysis knows, or None when Tune cannot open the directory."""
    if not list(run_dir.glob("experiment_state-*.json")):
        return None
    try:
        ea = open_experiment(run_dir)
    except Exception as e:  # a torn or foreign state file: the raw files still hold the results
        warnings.append(f"{run_dir}: Tune could not read its experiment state ({type(e).__name__}: {e}); read the trial files directly")
        return None
    frames = ea.trial_dataframes
    out = []
    for t in ea.trials:
        tdir = Path(t.path)
        df = frames.get(t.trial_id)
        rows = [] if df is None else df.to_dict("records")
        if not rows and t.last_result and tdir.is_dir():  # Tune saw reports but could not parse the file
            rows, warning = read_trial_rows(tdir)
            if warning:
                warnings.append(warning)
        out.append(_Trial(tdir.name, str(t.trial_id), str(t.status), dict(t.config or {}), _clean_rows(rows)))
    return out


def _file_trial(tdir: Path, warnings: list[str]) -> _Trial:
    rows, warning = read_trial_rows(tdir)
    if warning:
        warnings.append(warning)
    m = _TRIAL_ID_IN_DIRNAME.search(tdir.name)
    tid = str(rows[-1]["trial_id"]) if rows and rows[-1].get("trial_id") else (m.group(1) if m else tdir.name)
    # Not in the driver's state: ERROR if it left an error file, otherwise not known to be done.
    status = FAILED if error_line(tdir) else "RUNNING"
    return _Trial(tdir.name, tid, status, read_json(tdir / PARAMS_JSON) or {}, _clean_rows(rows))


def _is_standalone_trial(d: Path) -> bool:
    return (d / CONFIG_JSON).is_file() and ((d / METRICS_JSONL).is_file() or (d / TB_DIR).is_dir())


def _standalone_trial_dirs(run_dir: Path) -> list[Path]:
    if _is_standalone_trial(run_dir):
        return [run_dir]
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and _is_standalone_trial(p))


def _tensorboard_rows(tb_dir: Path) -> tuple[list[dict], Optional[str]]:
    """Rows rebuilt from a trial's TensorBoard scalars, and a warning when they cannot be.

    run_trial logs every metric of an iteration at that iteration's ``charts/env_steps``, so each distinct step is
    one iteration, in order.  The offline regime repeats a step (no new env steps after the first iteration): such a
    trial needs its ``metrics.jsonl``.  Values come back as TensorBoard stores them (float32).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})  # 0: keep every event, not a sample
    ea.Reload()
    tags = ea.Tags().get("scalars", [])
    if "charts/env_steps" not in tags:
        return [], f"{tb_dir}: no charts/env_steps scalar, so its iterations cannot be rebuilt; the trial is left out"
    steps = [e.step for e in ea.Scalars("charts/env_steps")]
    if len(set(steps)) != len(steps):
        return [], f"{tb_dir}: iterations share an env-step count (offline regime?) and there is no {METRICS_JSONL}; the trial is left out"
    rows = {step: {"iteration": i} for i, step in enumerate(steps)}
    for tag in tags:
        for e in ea.Scalars(tag):
            if e.step in rows:
                rows[e.step][tag] = e.value
    return [rows[s] for s in steps], None


def _standalone_trial(tdir: Path, warnings: list[str]) -> Optional[_Trial]:
    """The trial in ``tdir``, or None (with a warning) when its config cannot be read: rows without their cell and
    seed would be pooled into no cell."""
    config = read_json(tdir / CONFIG_JSON)
    if not isinstance(config, dict):
        warnings.append(f"{tdir / CONFIG_JSON}: not a readable trial config; the trial is left out")
        return None
    if (tdir / METRICS_JSONL).is_file():
        rows, bad = read_json_lines(tdir / METRICS_JSONL)
        if bad:
            warnings.append(f"{tdir / METRICS_JSONL}: {bad} damaged line(s); kept {len(rows)} intact row(s)")
    else:
        rows, warning = _tensorboard_rows(tdir / TB_DIR)
        if warning:
            warnings.append(warning)
    rows = _clean_rows(rows)
    last = rows[-1]["iteration"] if rows else None
    status = FINISHED if last is not None and last == config.get("num_iterations") else INCOMPLETE
    return _Trial(tdir.name, tdir.name, status, config, rows)


def _frames(run_dir: Path, trials: list[_Trial]) -> tuple[pd.DataFrame, pd.DataFrame]:
    records, frames = [], []
    for t in trials:
        tdir = run_dir / t.dirname
        error = error_line(tdir)
        if t.status != FAILED:
            error = ""  # an error.txt of a trial that was retried and then finished is history, not a failure
        elif not error:
            error = "failed (no error.txt in the trial directory)"
        info = {"trial_id": t.trial_id, "status": t.status, "error": error, "trial_dir": t.dirname}
        cfg = {CONFIG_PREFIX + k: v for k, v in flatten(t.config).items()}
        iters = [r["iteration"] for r in t.rows]
        records.append({**info, "reported": len(t.rows), "last_iteration": max(iters) if iters else np.nan, **cfg,
                        **placement.read(tdir, TRIAL_OUT)})
        if t.rows:
            frames.append(pd.concat([pd.DataFrame([{**info, **cfg}] * len(t.rows)), pd.DataFrame(t.rows)], axis=1))
    trial_frame = pd.DataFrame(records, columns=None if records else [*BASE_COLUMNS, "reported", "last_iteration"])
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*BASE_COLUMNS, "iteration"])
    results = results.sort_values(["trial_id", "iteration"], kind="stable").reset_index(drop=True)
    return trial_frame.sort_values("trial_id", kind="stable").reset_index(drop=True), results


def _load_export(folder: Path) -> Experiment:
    results = pd.read_csv(folder / EXPORT_RESULTS, dtype={"trial_id": str}, keep_default_na=True)
    for c in ("error", "trial_dir"):
        if c in results:
            results[c] = results[c].fillna("")
    if (folder / EXPORT_TRIALS).is_file():
        trials = pd.read_csv(folder / EXPORT_TRIALS, dtype={"trial_id": str})
        trials["error"] = trials["error"].fillna("")
    else:  # older exports: only trials that reported are known
        per = results.groupby("trial_id", sort=True)
        trials = per.first().reset_index()[[c for c in results.columns if c in BASE_COLUMNS or c.startswith(CONFIG_PREFIX)]]
        trials["reported"] = per.size().to_numpy()
        trials["last_iteration"] = per["iteration"].max().to_numpy()
    return Experiment(folder, trials, results, read_json(folder / SPEC_JSON), "export")


def load_experiment(run_dir) -> Experiment:
    """Read a finished, running or interrupted Tune experiment directory, an exported results folder, or a folder of
    standalone ``finetune`` trials (or one of them)."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise _not_an_experiment(run_dir)
    has_state = bool(list(run_dir.glob("experiment_state-*.json")))
    dirs = _trial_dirs(run_dir)
    warnings: list[str] = []
    if not has_state and not dirs:
        if (run_dir / EXPORT_RESULTS).is_file():
            return _load_export(run_dir)
        standalone = _standalone_trial_dirs(run_dir)
        if not standalone:
            raise _not_an_experiment(run_dir)
        trials = [t for t in (_standalone_trial(d, warnings) for d in standalone) if t is not None]
        # one trial directory given itself: its files are in run_dir, not in a subfolder of it
        base = run_dir.parent if standalone == [run_dir] else run_dir
        trial_frame, results = _frames(base, trials)
        return Experiment(run_dir, trial_frame, results, None, "trials", warnings)
    trials = _tune_trials(run_dir, warnings)
    source = "tune"
    if trials is None:
        trials, source = [], "files"
    known = {t.dirname for t in trials}
    trials += [_file_trial(d, warnings) for d in dirs if d.name not in known]  # trials the driver never recorded
    trial_frame, results = _frames(run_dir, trials)
    return Experiment(run_dir, trial_frame, results, read_json(run_dir / SPEC_JSON), source, warnings)
