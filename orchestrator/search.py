"""Hyperparameter search inside a grid: one Optuna study and one ASHA scheduler per cell
(a named cell's label, or ``estimator+update``).

A grid spec may add::

    search:
      algorithm: optuna              # ray.tune.search.optuna.OptunaSearch (TPE sampler)
      num_samples: 6                 # sampled configs per cell
      metric: eval/success_rate      # what each cell's study optimises (the trial's last report)
      mode: max
      seed: 0                        # sampler seed; cell i uses seed + i
      space:                         # any FinetuneConfig field that no other section sets
        learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
        awr_beta: {uniform: [0.1, 2.0]}
        update_epochs: {randint: [1, 5]}     # Tune's randint: high is exclusive
        mc_samples: {choice: [1, 2, 4]}
    scheduler:
      type: asha                     # ray.tune.schedulers.ASHAScheduler, over training iterations
      grace_period: 1
      reduction_factor: 2

Cells are tuned on their own (``orchestrator.cell_search``): ``CellSearcher`` keeps one OptunaSearch per cell and hands out
``num_samples`` suggestions to each in turn (a suggestion is the cell's full config with the sampled values
on top), and ``CellScheduler`` keeps one ASHA per cell, so a trial is only ever compared with trials of
its own cell.  The whole search is still one Tune experiment: one run directory, resume and analysis as for
a grid, every sampled trial kept.  :func:`best_per_cell` picks each cell's best sampled config for the report.

This module knows nothing of the grid spec's other sections: ``orchestrator.spec`` calls :func:`parse_search`
and :func:`parse_scheduler` with a field checker and wraps their ``ValueError`` into its ``SpecError``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Optional

if TYPE_CHECKING:  # imported where a frame is built: the spec, and so every --help, imports this module
    import pandas as pd

SUCCESS = "eval/success_rate"
ALGORITHMS = ("optuna",)
SCHEDULERS = ("asha",)
MODES = ("max", "min")
# distribution name -> number of arguments (None: a non-empty list of values)
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "quniform": 3, "randint": 2, "choice": None}
SEARCH_KEYS = ("algorithm", "num_samples", "metric", "mode", "seed", "space")
SCHEDULER_KEYS = ("type", "metric", "mode", "grace_period", "reduction_factor")

FieldCheck = Callable[[str, Any, str], Any]  # (FinetuneConfig field, value, key path) -> checked value


@dataclass(frozen=True)
class SearchSpec:
    """A ``search:`` block, validated; ``space`` keeps the YAML form so the spec round-trips through JSON."""

    space: dict = field(metadata={"help": "FinetuneConfig field -> {distribution: [args]} (uniform, loguniform, quniform, randint, choice)"})
    algorithm: str = field(default="optuna", metadata={"help": "Tune search algorithm: optuna"})
    num_samples: int = field(default=1, metadata={"help": "sampled configs per cell"})
    metric: str = field(default=SUCCESS, metadata={"help": "reported metric each cell's study optimises"})
    mode: str = field(default="max", metadata={"help": "max or min of the metric"})
    seed: Optional[int] = field(default=0, metadata={"help": "sampler seed (cell i uses seed + i); null: unseeded"})


@dataclass(frozen=True)
class SchedulerSpec:
    """A ``scheduler:`` block, validated: early stopping of a cell's weaker trials."""

    type: str = field(default="asha", metadata={"help": "Tune trial scheduler: asha"})
    metric: str = field(default=SUCCESS, metadata={"help": "reported metric the scheduler compares"})
    mode: str = field(default="max", metadata={"help": "max or min of the metric"})
    grace_period: int = field(default=1, metadata={"help": "iterations every trial runs before it can be stopped"})
    reduction_factor: int = field(default=2, metadata={"help": "ASHA keeps 1/reduction_factor of the trials at each rung"})


# ---------------------------------------------------------------------------------------------- parsing

def _mapping(value, path: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a mapping, got {value!r}")
    return value


def _unknown(d: dict, allowed: tuple, path: str) -> None:
    for k in d:
        if k not in allowed:
            raise ValueError(f"{path}.{k}: unknown key; allowed keys: {', '.join(allowed)}")


def _block(data, path: str, keys: tuple, kind_key: str, kinds: tuple) -> tuple[dict, str]:
    """A block's mapping, its keys checked, and its kind (``kind_key``, default the first of ``kinds``)."""
    d = _mapping(data, path)
    _unknown(d, keys, path)
    kind = d.get(kind_key, kinds[0])
    if kind not in kinds:
        raise ValueError(f"{path}.{kind_key}: unknown {path} {kind_key} {kind!r}; choose from {', '.join(kinds)}")
    return d, kind


def _int(value, path: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{path}: expected an integer >= {minimum}, got {value!r}")
    return value


def _metric_mode(d: dict, path: str, default_metric: str, default_mode: str) -> tuple[str, str]:
    metric, mode = d.get("metric", default_metric), d.get("mode", default_mode)
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"{path}.metric: expected a reported metric name such as {SUCCESS}, got {metric!r}")
    if mode not in MODES:
        raise ValueError(f"{path}.mode: expected max or min, got {mode!r}")
    return metric, mode


def _dimension(name: str, dist, path: str, check: FieldCheck) -> dict:
    d = _mapping(dist, path)
    if len(d) != 1 or next(iter(d)) not in DISTRIBUTIONS:
        raise ValueError(f"{path}: expected one of {{{', '.join(f'{k}: [...]' for k in DISTRIBUTIONS)}}}, got {dist!r}")
    kind, args = next(iter(d.items()))
    arity = DISTRIBUTIONS[kind]
    if not isinstance(args, list) or not args or (arity is not None and len(args) != arity):
        want = "a non-empty list of values" if arity is None else f"a list of {arity} numbers"
        raise ValueError(f"{path}.{kind}: expected {want}, got {args!r}")
    if kind == "choice":
        values = [check(name, v, f"{path}.choice[{i}]") for i, v in enumerate(args)]
        if len({json.dumps(v) for v in values}) != len(values):
            raise ValueError(f"{path}.choice: lists a value twice: {args}")
        return {kind: values}
    low, high = args[0], args[1]
    for i, v in enumerate(args):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{path}.{kind}[{i}]: expected a finite number, got {v!r}")
    if not low < high:
        raise ValueError(f"{path}.{kind}: low must be below high, got {args}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{path}.loguniform: bounds must be > 0, got {args}")
    if kind == "randint":
        # the values a trial can get are low .. high-1: both ends must be valid for the field
        check(name, int(low), f"{path}.randint[0]")
        check(name, int(high) - 1, f"{path}.randint[1] - 1")
        return {kind: [int(low), int(high)]}
    check(name, low, f"{path}.{kind}[0]")
    check(name, high, f"{path}.{kind}[1]")
    return {kind: [float(a) for a in args]}


def parse_search(data, check: FieldCheck, known: Collection[str], taken: dict[str, str]) -> Optional[SearchSpec]:
    """Validate a ``search:`` mapping.  ``check`` validates one value of a field in ``known`` (FinetuneConfig's);
    ``taken`` maps the fields other sections set (or that no search may touch) to the section owning them.
    Raises ValueError naming the key path."""
    if data is None:
        return None
    d, algorithm = _block(data, "search", SEARCH_KEYS, "algorithm", ALGORITHMS)
    metric, mode = _metric_mode(d, "search", SUCCESS, "max")
    seed = d.get("seed", 0)
    if seed is not None:
        seed = _int(seed, "search.seed", 0)
    space_d = _mapping(d.get("space"), "search.space") if "space" in d else {}
    if not space_d:
        raise ValueError("search.space: required, a mapping of FinetuneConfig field -> {distribution: [args]}")
    space = {}
    for name, dist in space_d.items():
        path = f"search.space.{name}"
        if name not in known:
            raise ValueError(f"{path}: unknown FinetuneConfig field (see algorithms/config.py)")
        if name in taken:
            raise ValueError(f"{path}: {name} is set by {taken[name]}; a field is either searched or set")
        space[name] = _dimension(name, dist, path, check)
    return SearchSpec(space=space, algorithm=algorithm, num_samples=_int(d.get("num_samples", 1), "search.num_samples", 1),
                      metric=metric, mode=mode, seed=seed)


def parse_scheduler(data, search: Optional[SearchSpec]) -> Optional[SchedulerSpec]:
    """Validate a ``scheduler:`` mapping; metric and mode default to the search's."""
    if data is None:
        return None
    d, kind = _block(data, "scheduler", SCHEDULER_KEYS, "type", SCHEDULERS)
    metric, mode = _metric_mode(d, "scheduler", search.metric if search else SUCCESS, search.mode if search else "max")
    return SchedulerSpec(kind, metric, mode, _int(d.get("grace_period", 1), "scheduler.grace_period", 1),
                         _int(d.get("reduction_factor", 2), "scheduler.reduction_factor", 2))


# ---------------------------------------------------------------------------------------------- analysis

def cell_key(config: dict) -> str:
    """The cell a trial config belongs to: its ``cell`` label (a named cell, or ``estimator+update``)."""
    return config.get("cell") or f"{config['estimator']}+{config['update']}"


def num_trials(search: SearchSpec, num_cells: int) -> int:
    return search.num_samples * num_cells


def best_per_cell(results: pd.DataFrame, search: SearchSpec, config_prefix: str = "config/") -> pd.DataFrame:
    """Each cell's best sampled trial: one row per cell label (``config/cell``, else ``estimator+update``) with
    the trial, its final ``metric`` (last report carrying it), the number of sampled trials and the searched
    values.  ``results`` is the analysis frame (one row per trial x reported iteration, config columns under
    ``config_prefix``)."""
    import pandas as pd

    cols = ["cell", "trial_id", search.metric, "trials", *search.space]
    if results.empty or search.metric not in results.columns:
        return pd.DataFrame(columns=cols)
    pair = results[config_prefix + "estimator"].astype(str) + "+" + results[config_prefix + "update"].astype(str)
    named = results.get(config_prefix + "cell")
    label = pair if named is None else named.where(named.notna() & (named.astype(str) != ""), pair)
    results = results.assign(_cell=label)
    scored = results[results[search.metric].notna()].sort_values(["trial_id", "iteration"], kind="stable")
    last = scored.groupby("trial_id", sort=False).tail(1)
    rows = []
    for cell, g in last.groupby("_cell", sort=True):
        best = g.loc[g[search.metric].idxmax() if search.mode == "max" else g[search.metric].idxmin()]
        n = results.loc[results["_cell"] == cell, "trial_id"].nunique()
        rows.append({"cell": cell, "trial_id": best["trial_id"], search.metric: float(best[search.metric]),
                     "trials": n, **{k: best.get(config_prefix + k) for k in search.space}})
    return pd.DataFrame(rows, columns=cols)


def search_of(resolved: Optional[dict]) -> Optional[SearchSpec]:
    """The search block a run was started with (its ``spec.resolved.json`` record), or None for a plain grid."""
    d = ((resolved or {}).get("spec") or {}).get("search")
    return SearchSpec(**d) if d else None


def best_table(search: SearchSpec, results: pd.DataFrame) -> tuple[str, list, list]:
    """(explanation, header, rows) of the report's best-config-per-cell table."""
    best = best_per_cell(results, search)
    header = ["cell", "best trial", f"final {search.metric}", "sampled trials", *search.space]
    rows = [[r["cell"], r["trial_id"], f"{r[search.metric]:.3f}", int(r["trials"]),
             *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in (r[k] for k in search.space))]
            for _, r in best.iterrows()]
    text = (f"{search.algorithm} search, {search.num_samples} samples per cell (one study per cell), {search.mode} of "
            f"`{search.metric}` (each trial scored by its last report carrying it); every sampled trial is in the tables "
            "above and in results.csv.")
    return text, header, rows
