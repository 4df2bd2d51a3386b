"""``analyze``: one or several run directories -> the results frame -> statistics -> CSVs, figures, report.

Reading is ``orchestrator.rundir`` (Tune's public API, raw files as a fallback, exported folders), the
per-run and per-cell tables are ``orchestrator.results_frame``, statistics ``orchestrator.stats``, figures
``orchestrator.plots`` and the report ``orchestrator.report``.  Called by the ``analyze``, ``grid`` and
``resume`` commands (never by the Tune runner).

Several run directories: by default their trials are pooled, so the same cell from two runs contributes the
seeds of both (a study that grows over weeks); with ``compare`` every run keeps its own cells, side by side
(the run's name becomes a cell field).  The output folder gets an export (``results.csv``, ``trials.csv``,
``spec.resolved.json``) that ``analyze`` can read again without the Tune directory.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Optional, Sequence, Union

import pandas as pd
import yaml

from algorithms.config import FinetuneConfig
from orchestrator import launches, plots, report, stats
from orchestrator.results_frame import NOT_CELL, RUN, SEED, Summary, summarize, value_text
from orchestrator.rundir import CONFIG_PREFIX, FAILED, FINISHED, SPEC_JSON, Experiment, load_experiment

PathLike = Union[str, os.PathLike]


class AnalysisError(ValueError):
    """Bad input to ``analyze`` (a ValueError so the CLI prints it as one line and exits 2)."""


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
    experiments: list[Experiment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_out_dir(out: Path) -> None:
    """Fail before any work when ``out`` cannot be written: a file, or a folder (or its nearest existing
    parent) this process may not write to."""
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"--out {out} exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise AnalysisError(f"--out {out} is not writable ({probe} does not allow writing)")


def load_published(path: Optional[PathLike]) -> dict:
    """The published-numbers YAML (``experiments/published/*.yaml``): {source, success: {cell: {peak, final}},
    quality: {estimator: {spearman}}}; {} without a path."""
    if not path:
        return {}
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise AnalysisError(f"published numbers {p}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("success", {}), dict):
        raise AnalysisError(f"published numbers {p}: expected a mapping with 'success: {{cell: {{peak, final}}}}'")
    return {**data, "file": p.name}


def merge(experiments: Sequence[Experiment], compare: bool) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(trials, results, warnings) of several runs: trial ids prefixed by the run's name when there are
    several; with ``compare`` the run's name is a config column (so it splits cells)."""
    if len(experiments) == 1:
        e = experiments[0]
        return e.trials, e.results, []
    names = [e.name for e in experiments]
    if len(set(names)) < len(names):
        raise AnalysisError(f"run directories must have distinct names to be merged, got {', '.join(names)}")
    trials, results = [], []
    # A config field added after a run was recorded is absent from that run's trials: the run ran with the
    # field's default behaviour (new fields default to the old behaviour), so it is filled in, and the same
    # trial recorded before and after the field was added reads as one config.
    recorded = {c for e in experiments for c in e.trials.columns if c.startswith(CONFIG_PREFIX)}
    defaults = {CONFIG_PREFIX + f.name: f.default for f in fields(FinetuneConfig) if f.default is not MISSING}
    for e in experiments:
        extra = {RUN: e.name} if compare else {}
        absent = {c: [defaults[c]] * len(e.trials) for c in recorded - set(e.trials.columns) if c in defaults}  # a row each, whatever the value's type
        trials.append(e.trials.assign(trial_id=e.name + ":" + e.trials["trial_id"].astype(str), **absent, **extra))
        results.append(e.results.assign(trial_id=e.name + ":" + e.results["trial_id"].astype(str), **extra))
    trials_f, results_f = pd.concat(trials, ignore_index=True), pd.concat(results, ignore_index=True)
    warnings = []
    if not compare and len(trials_f):
        cols = [c for c in trials_f.columns if c.startswith(CONFIG_PREFIX) and (c == SEED or c not in NOT_CELL)]
        key = trials_f[cols].map(value_text).apply(tuple, axis=1)
        # A grid run in pieces (grid --cells): a trial that never reported in one run and ran in another, or that
        # did not finish in one run and finished in another (restarted there), is the same trial, moved; only the
        # copy that got further counts.  Of copies none of which finished nor failed (a restart still under way:
        # pending, paused or running), the one with the latest iteration counts (on a tie, the later run's).
        reported = trials_f["trial_id"].isin(set(results_f["trial_id"]))
        status = trials_f["status"] if "status" in trials_f else pd.Series("", index=trials_f.index)
        finished, failed = status == FINISHED, status == FAILED
        moved = (~reported & key.isin(set(key[reported]))) | (~finished & key.isin(set(key[finished])))
        under_way = reported & ~finished & ~failed & ~key.isin(set(key[finished]))
        superseded, left_out = pd.Series(False, index=trials_f.index), ""
        if under_way.any():
            keys = key.map(repr)
            last = trials_f["trial_id"].map(results_f.groupby("trial_id")["iteration"].max())
            # a stable sort keeps run order among equal iterations, so on a tie the later run's copy counts
            order = pd.DataFrame({"key": keys, "last": last})[under_way].sort_values("last", kind="stable")
            kept = order.drop_duplicates("key", keep="last")
            counting = pd.Series(kept.index, index=kept["key"])  # key -> the copy that counts
            superseded = under_way & ~trials_f.index.isin(kept.index)
            if superseded.any():
                # which copy counts, and how far the left-out one got: a restart's progress stays visible
                ids, its = trials_f["trial_id"], last.astype("Int64")
                pairs = [f"{ids[i]} (iteration {its[i]}) in favour of {ids[j]} (iteration {its[j]})"
                         for i in trials_f.index[superseded] for j in [counting[keys[i]]]]
                n = int(superseded.sum())
                left_out = (f"{n} unfinished {'copy' if n == 1 else 'copies'} of a trial restarted in another run "
                            f"{'is' if n == 1 else 'are'} left out, the copy with the latest iteration counting: " + "; ".join(pairs))
        if moved.any():
            warnings.append(f"{int(moved.sum())} trials that never reported or did not finish in one run ran to a "
                            "further point in another (a grid run in pieces); only those copies count")
        if left_out:
            warnings.append(left_out)
        moved |= superseded
        if moved.any():
            trials_f, key = trials_f[~moved].reset_index(drop=True), key[~moved].reset_index(drop=True)
            results_f = results_f[results_f["trial_id"].isin(set(trials_f["trial_id"]))].reset_index(drop=True)
        # The same config and seed in two runs: a repeat, not another seed; pooled, but said.
        dup = key.duplicated(keep=False)
        if dup.any():
            warnings.append(f"{int(dup.sum())} trials of the merged runs repeat another run's config and seed; they are pooled as separate runs")
    return trials_f, results_f, warnings


def drop_unfinished(trials: pd.DataFrame, results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(trials, results, how many left out) without the trials that neither finished nor failed (failed ones stay:
    the report lists them under Failures)."""
    if "status" not in trials:
        raise AnalysisError("--finished-only: the run directories record no trial status")
    done = trials["status"].isin([FINISHED, FAILED])
    if not done.any():
        raise AnalysisError("--finished-only: no trial has finished or failed yet")
    kept = trials[done].reset_index(drop=True)
    return kept, results[results["trial_id"].isin(set(kept["trial_id"]))].reset_index(drop=True), int((~done).sum())


def listed_trials(experiments: Sequence[Experiment], trials: pd.DataFrame) -> pd.DataFrame:
    """``merge``'s trials as a report lists them: the run that recorded each and the trial id it has there."""
    if len(experiments) == 1 or not len(trials):
        return trials.assign(run=experiments[0].name if len(experiments) == 1 else "")
    run, _, trial_id = (trials["trial_id"].astype(str).str.rpartition(":")[i] for i in range(3))
    return trials.assign(run=run, trial_id=trial_id)


def trial_configs(experiments: Sequence[Experiment], trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial, one column per config field: spec.resolved.json's trials where every run has it
    (what the grid asked for), else the trials' recorded configs."""
    if all(e.resolved and e.resolved.get("trials") for e in experiments):
        return pd.DataFrame([t for e in experiments for t in e.resolved["trials"]])
    cfg = trials[[c for c in trials.columns if c.startswith(CONFIG_PREFIX)]]
    return cfg.rename(columns=lambda c: c[len(CONFIG_PREFIX):])


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


def analyze(run_dirs: Union[PathLike, Sequence[PathLike]], out_dir: Optional[PathLike] = None, target: float = 0.9,
            reps: int = stats.DEFAULT_REPS, seed: int = 0, compare: bool = False,
            published: Optional[PathLike] = None, figures: bool = True, finished_only: bool = False) -> AnalysisOutputs:
    """Load the run directories, summarise them and write the export, CSVs, figures, report.md/.html, summary.tex.

    ``out_dir`` defaults to ``RUN_DIR/analysis`` for one run (Tune ignores foreign folders in an experiment
    directory) and is required for several.  ``published``: a published-numbers YAML (default: the one the
    grid spec names).  ``figures=False``: tables and report only (drawing
    the figures is most of the time an analysis takes).  ``finished_only``: trials neither finished nor failed
    (running, paused, interrupted) are left out, where by default they enter with their latest evaluation as
    their final.  Every argument is checked before anything is read or written.
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [Path(d) for d in run_dirs]
    if not dirs:
        raise AnalysisError("no run directory given")
    if not 0 < target <= 1:
        raise AnalysisError(f"target success must be in (0, 1], got {target}")
    if reps < 1:
        raise AnalysisError(f"reps must be >= 1, got {reps}")
    if out_dir is None and len(dirs) > 1:
        raise AnalysisError("several run directories need --out (where the joint analysis goes)")
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else dirs[0].expanduser().resolve() / "analysis"
    check_out_dir(out)
    if published is not None and not Path(published).is_file():
        raise AnalysisError(f"--published {published}: no such file")

    experiments = [load_experiment(d) for d in dirs]
    if published is None:
        named = [e.resolved["spec"].get("published") for e in experiments if e.resolved and e.resolved.get("spec")]
        published = next((p for p in named if p and Path(p).is_file()), None)
    pub = load_published(published)
    trials, results, merge_warnings = merge(experiments, compare)
    if finished_only:
        trials, results, left = drop_unfinished(trials, results)
        if left:
            merge_warnings.append(f"{left} unfinished trial{'s' if left > 1 else ''} left out (finished_only)")
    warnings = [w for e in experiments for w in e.warnings] + merge_warnings
    specs = [e.resolved.get("spec") if e.resolved else None for e in experiments]
    # What the grids swept, as their specs record it; inferred from the configs where a run has no spec.
    swept = None if any(not s for s in specs) else sorted({k for s in specs for k in (s.get("sweep") or {})})
    summary = summarize(results, target=target, reps=reps, seed=seed, trials=trials, swept=swept)

    out.mkdir(parents=True, exist_ok=True)
    results_csv, summary_csv = out / "results.csv", out / "summary.csv"
    results.to_csv(results_csv, index=False)
    trials.to_csv(out / "trials.csv", index=False)
    summary.table.to_csv(summary_csv, index=False)
    summary.runs.to_csv(out / "runs.csv", index=False)
    summary.improvement.to_csv(out / "improvement.csv", index=False)
    summary.quality.to_csv(out / "quality.csv", index=False)
    if summary.quality_by_iteration is not None:
        summary.quality_by_iteration.to_csv(out / "quality_by_iteration.csv", index=False)
    resolved = [e.resolved for e in experiments if e.resolved]
    if len(experiments) == 1:  # the export keeps the run's records, so it can be analysed again on its own
        if resolved:
            (out / SPEC_JSON).write_text(json.dumps(resolved[0], indent=1))
        src = experiments[0].run_dir / launches.LAUNCHES_FILE
        if src.is_file() and src.resolve() != (out / launches.LAUNCHES_FILE).resolve():
            shutil.copyfile(src, out / launches.LAUNCHES_FILE)
    parquet = _write_parquet(results, out / "results.parquet")
    rho = {k: v.get("spearman") for k, v in pub.get("quality", {}).items()}
    drawn = plots.write_figures(summary, out, rho) if figures else None
    helps = {f.name: f.metadata.get("help", "") for f in fields(FinetuneConfig)}
    files = {"results.parquet": parquet is not None, SPEC_JSON: len(resolved) == len(experiments)}
    blocks = report.build(experiments, listed_trials(experiments, trials), summary, drawn,
                          trial_configs(experiments, trials), pub, helps, files, warnings)
    # Paths in error lines and warnings, relative to the folders holding the runs: the report travels.
    roots = [e.run_dir.parent for e in experiments] + [out, Path.cwd()]
    blocks = report.relativise(blocks, roots)
    report_path = report.write(blocks, summary, out, "Analysis of " + ", ".join(e.name for e in experiments))
    return AnalysisOutputs(out, report_path, summary_csv, results_csv, parquet, drawn or [], summary, experiments, warnings)
