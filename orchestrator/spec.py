"""A comparison grid, as written in YAML, parsed into a typed :class:`GridSpec` and checked before Ray starts.

A spec names the task, the checkpoints, the cells (estimators x updates), the seeds, per-trial settings and
the resources of each trial::

    name: local                          # run directory: <storage>/<name>
    env: {env_id: PickCube-v1, control_mode: pd_joint_delta_pos}
    checkpoints:                         # paths relative to the working directory
      start: experiments/checkpoints/pickcube/start.pt
      expert: experiments/checkpoints/pickcube/expert.pt   # mc trials with mc_policy=expert
      iql: runs/values/iql_tau0.7_gamma0.8.pt              # iql trials (pretrain-iql)
      sarsa: runs/values/iql_tau0.5_gamma0.8.pt            # sarsa trials (pretrain-iql --expectile 0.5)
      critic: runs/values/critic.pt                        # optional: initialises the GAE critic
    estimators: [gae, mc, iql, sarsa]
    updates: [ppo, awr, recap]
    seeds: 2                             # a count (seeds 1..n) or a list of ints
    cells:                               # instead of estimators x updates: named cells, each with its own
      mc16-expert+awr: {estimator: mc, update: awr, seeds: 1, mc_samples: 16}   # fields (they win over
      td20+awr: {estimator: td, update: awr, td_n: 20}                           # per_method) and seeds
    shared: {gamma: 0.8}                 # FinetuneConfig fields for every trial
    per_method:                          # FinetuneConfig fields for some trials; later keys win:
      awr: {update_epochs: 200}          #   estimator name < update name < "estimator+update"
      mc+awr: {awr_beta: 0.5}
    sweep: {mc_samples: [1, 5]}          # each axis a Tune grid_search: multiplies the trials
    budget: {num_envs: 4, num_steps: 50, num_iterations: 10}
    eval: {num_eval_episodes: 32, eval_every: 1, eval_stochastic: true}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0, mc_worker_cpus: 2}
    max_failures: 1                      # retries of a trial that raises
    storage: runs/grid

Every error is a :class:`SpecError` whose message starts with the key path (``per_method.mc+awr.awr_beta:``).
``load_spec`` checks structure, names, types, value ranges and checkpoint files; ``expand_trials`` turns a
spec into one validated :class:`FinetuneConfig` per trial; ``check_resources`` compares a trial's demand with
what a machine or cluster offers.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from algorithms.config import FinetuneConfig
from orchestrator.search import SchedulerSpec, SearchSpec, parse_scheduler, parse_search
from orchestrator.storage import check_uri, is_local, local_path
from orchestrator.tracking import TrackingSpec, parse_tracking


class SpecError(ValueError):
    """A grid spec (or a grid command's arguments) is wrong; the message is one line naming the key path."""


# FinetuneConfig fields that the spec sets through its own sections, and the section that owns each.
AXIS_FIELDS = {"estimator": "estimators", "update": "updates", "seed": "seeds"}
ENV_FIELDS = {"env_id": "env.env_id", "control_mode": "env.control_mode"}
CHECKPOINT_FIELDS = {"start": "start_checkpoint", "expert": "expert_checkpoint", "iql": "iql_checkpoint",
                     "sarsa": "iql_checkpoint", "critic": "gae_critic_checkpoint"}
PATH_FIELDS = ("start_checkpoint", "expert_checkpoint", "iql_checkpoint", "gae_critic_checkpoint")
BUDGET_FIELDS = ("num_envs", "num_steps", "num_iterations")
EVAL_FIELDS = ("num_eval_episodes", "eval_every", "eval_stochastic")
SECTION_OF = {
    **{f: f"budget.{f}" for f in BUDGET_FIELDS},
    **{f: f"eval.{f}" for f in EVAL_FIELDS},
    "start_checkpoint": "checkpoints.start", "expert_checkpoint": "checkpoints.expert",
    "iql_checkpoint": "checkpoints.iql / checkpoints.sarsa", "gae_critic_checkpoint": "checkpoints.critic",
}
TOP_KEYS = ("name", "env", "checkpoints", "estimators", "updates", "cells", "seeds", "shared", "per_method", "sweep",
            "budget", "eval", "resources", "max_failures", "storage", "published", "search", "scheduler", "tracking")
REQUIRED_KEYS = ("name", "checkpoints")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CELL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
CELL_AXES = ("estimator", "update", "seeds")


@dataclass(frozen=True)
class EnvSpec:
    env_id: str = "PickCube-v1"
    control_mode: str = "pd_joint_delta_pos"


@dataclass(frozen=True)
class CheckpointSpec:
    """Absolute paths (relative ones are resolved against the working directory when the spec is loaded)."""

    start: str
    expert: Optional[str] = None
    iql: Optional[str] = None
    sarsa: Optional[str] = None
    critic: Optional[str] = None


@dataclass(frozen=True)
class ResourceSpec:
    """Per trial: one bundle ``{CPU: cpus_per_trial, GPU: gpus_per_trial}`` plus, for mc trials only,
    ``mc_worker_cpus`` bundles of one CPU for the re-rollout workers."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    mc_worker_cpus: int = 0

    def bundles(self, estimator: str) -> list[dict]:
        head = {"CPU": self.cpus_per_trial}
        if self.gpus_per_trial:
            head["GPU"] = self.gpus_per_trial
        return [head] + [{"CPU": 1.0}] * (self.mc_worker_cpus if estimator == "mc" else 0)


@dataclass(frozen=True)
class CellSpec:
    """One cell of a grid: its estimator and update rule, its own seeds (None: the spec's) and field overrides."""

    estimator: str
    update: str
    seeds: Optional[tuple] = None
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GridSpec:
    name: str
    checkpoints: CheckpointSpec
    estimators: tuple[str, ...]  # with named cells: the distinct estimators they use
    updates: tuple[str, ...]
    seeds: tuple[int, ...] = (1,)
    cells: dict = field(default_factory=dict)  # label -> CellSpec; empty: the cells are estimators x updates
    env: EnvSpec = field(default_factory=EnvSpec)
    shared: dict = field(default_factory=dict)
    per_method: dict = field(default_factory=dict)  # key (estimator | update | "est+upd") -> {field: value}
    sweep: dict = field(default_factory=dict)  # field -> list of values
    budget: dict = field(default_factory=dict)  # subset of BUDGET_FIELDS -> value
    eval: dict = field(default_factory=dict)  # subset of EVAL_FIELDS -> value
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    max_failures: int = 1
    storage: str = "runs/grid"  # absolute after loading; or a remote URI (orchestrator.storage)
    published: str = ""  # YAML of published reference numbers the report compares with (absolute after loading)
    search: Optional[SearchSpec] = None  # per-cell hyperparameter search (orchestrator.search)
    scheduler: Optional[SchedulerSpec] = None  # per-cell early stopping (orchestrator.search)
    tracking: Optional[TrackingSpec] = None  # W&B / MLflow logging (orchestrator.tracking)

    @property
    def run_dir(self) -> Path:
        return Path(self.storage) / self.name

    def cell_table(self) -> dict:
        """label -> CellSpec for every cell, in order (``est+upd`` labels for an estimators x updates grid)."""
        if self.cells:
            return dict(self.cells)
        return {f"{e}+{u}": CellSpec(e, u) for e, u in itertools.product(self.estimators, self.updates)}

    def cell_seeds(self, label: str) -> tuple:
        return self.cell_table()[label].seeds or self.seeds

    def to_dict(self) -> dict:
        d = asdict(self)
        d["estimators"], d["updates"], d["seeds"] = list(self.estimators), list(self.updates), list(self.seeds)
        if self.cells:
            del d["estimators"], d["updates"]
            d["cells"] = {label: {"estimator": c.estimator, "update": c.update,
                                  **({"seeds": list(c.seeds)} if c.seeds else {}), **c.overrides}
                          for label, c in self.cells.items()}
        else:
            del d["cells"]
        return d

    def replace(self, **changes) -> "GridSpec":
        """A copy with top-level fields changed (``name``, ``storage``), re-validated."""
        d = self.to_dict()
        d.update(changes)
        return parse_spec(d)

    def select(self, cells: Iterable[str] = (), seeds: Iterable[int] = ()) -> "GridSpec":
        """The part of this grid with only the cells ``cells`` and the seeds ``seeds`` (empty: all), as named cells.
        A cell is its label, or ``label:seed`` for one of its seeds (``mc1-expert+awr:3``).  Each kept trial's config
        is the one it has in the whole grid, so a grid can be run in pieces (whose run directories are analysed
        together).  SpecError names a label or seed the grid lacks."""
        table = self.cell_table()
        chosen: dict[str, set] = {}  # label -> its seeds to run (empty: all)
        for item in cells:
            label, _, seed = item.partition(":")
            if label not in table:
                raise SpecError(f"--cells: {label!r} is not a cell of grid {self.name!r} (its cells: {', '.join(table)})")
            if seed and (not seed.isdigit() or int(seed) not in self.cell_seeds(label)):
                raise SpecError(f"--cells: {item!r}: cell {label!r} runs seeds {list(self.cell_seeds(label))}, not {seed!r}")
            if chosen.get(label, True) is not None:  # a bare label (all seeds) wins over label:seed
                chosen[label] = chosen.get(label, set()) | {int(seed)} if seed else None
        seeds = list(seeds)
        if not chosen and not seeds:
            return self
        kept = {}
        for label, cell in table.items():
            if chosen and label not in chosen:
                continue
            run = [s for s in self.cell_seeds(label) if (not seeds or s in seeds) and (not chosen.get(label) or s in chosen[label])]
            if run:
                kept[label] = {"estimator": cell.estimator, "update": cell.update, "seeds": run, **cell.overrides}
        missing = [s for s in seeds if not any(s in c["seeds"] for c in kept.values())]
        if missing or not kept:
            raise SpecError(f"--seeds: no chosen cell of grid {self.name!r} runs seed {(missing or seeds)[0]}")
        d = self.to_dict()
        d.pop("estimators", None), d.pop("updates", None)
        d["cells"] = kept
        return parse_spec(d)


# ---------------------------------------------------------------------------------------------------- YAML

class _SpecLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; a spec means a float.  Duplicate keys are errors."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _SpecLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise SpecError(f"{key}: duplicate key (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {p} does not exist")
    try:
        data = yaml.load(p.read_text(), Loader=_SpecLoader)
    except UnicodeDecodeError:
        raise SpecError(f"spec file {p} is not a text file; a spec is YAML (see experiments/smoke.yaml)") from None
    except yaml.reader.ReaderError as e:  # control characters: a binary file that happens to decode
        raise SpecError(f"spec file {p} is not a text file (character {e.character!r} at position {e.position}); a spec is YAML (see experiments/smoke.yaml)") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise SpecError(f"spec file {p} is not valid YAML{line}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec file {p} must hold a mapping of keys (name, checkpoints, estimators, ...), got {type(data).__name__}")
    return data


def load_spec(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> GridSpec:
    """Parse and validate a YAML spec file.  Relative paths in it resolve against ``base_dir`` (default: cwd)."""
    return parse_spec(read_yaml(path), base_dir=base_dir)


# ---------------------------------------------------------------------------------------------- validation

_HINTS = typing.get_type_hints(FinetuneConfig)
_FIELDS = set(FinetuneConfig.field_names())


def _type_name(tp) -> str:
    if typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(tp, value, path: str):
    """``value`` as type ``tp`` (int->float widening only), else SpecError naming the expected type."""
    if typing.get_origin(tp) is typing.Union:
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        try:
            return _coerce(inner, value, path)
        except SpecError:
            raise SpecError(f"{path}: expected {_type_name(tp)}, got {value!r}") from None
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if not ok:
        raise SpecError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(f"{path}: expected a finite number, got {value!r}")
    return value


def _mapping(value, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{path}: expected a mapping, got {value!r}")
    return value


def _unknown(d: dict, allowed: Iterable[str], path: str) -> None:
    allowed = list(allowed)
    for k in d:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            raise SpecError(f"{where}: unknown key; allowed keys: {', '.join(allowed)}")


def _names(value, path: str, known: Iterable[str], what: str) -> tuple[str, ...]:
    known = list(known)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(f"{path}: expected a non-empty list of {what} names ({', '.join(known)}), got {value!r}")
    for i, v in enumerate(value):
        if v not in known:
            raise SpecError(f"{path}[{i}]: unknown {what} {v!r}; choose from {', '.join(known)}")
    if len(set(value)) != len(value):
        raise SpecError(f"{path}: lists a name twice: {value}")
    return tuple(value)


def _field_value(name: str, value, path: str, base_dir: Path):
    """Check one FinetuneConfig field value: type, then its range (FinetuneConfig's own rules), then files."""
    value = _coerce(_HINTS[name], value, path)
    if name in PATH_FIELDS and value is not None:
        value = _checkpoint_path(value, path, base_dir)
    try:
        FinetuneConfig(**{name: value})
    except ValueError as e:
        raise SpecError(f"{path}: {e}") from None
    if name == "backend":
        from envs.backend import BACKENDS

        if value not in BACKENDS:
            raise SpecError(f"{path}: unknown backend {value!r}; choose one of {', '.join(BACKENDS)}")
    if name == "device" and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise SpecError(f"{path}: device must be auto, cpu or cuda[:N], got {value!r}")
    return value


def _checkpoint_path(value: str, path: str, base_dir: Path) -> str:
    p = Path(os.path.expanduser(value))
    p = p if p.is_absolute() else base_dir / p
    if not p.is_file():
        raise SpecError(f"{path}: checkpoint file {value} does not exist" + ("" if Path(value).is_absolute() else f" (looked in {base_dir})"))
    return str(p.resolve())


def _overrides(d, path: str, base_dir: Path, forbidden: dict) -> dict:
    """A mapping of FinetuneConfig fields -> checked values; ``forbidden`` maps field -> where it belongs."""
    d = _mapping(d, path)
    out = {}
    for k, v in d.items():
        if k not in _FIELDS:
            raise SpecError(f"{path}.{k}: unknown FinetuneConfig field (see algorithms/config.py)")
        if k in forbidden:
            raise SpecError(f"{path}.{k}: set it with {forbidden[k]}, not here")
        out[k] = _field_value(k, v, f"{path}.{k}", base_dir)
    return out


def _count(value, path: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{path}: expected an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{path}: must be >= {minimum}, got {value}")
    return value


def _seeds(value, path: str = "seeds") -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return tuple(range(1, _count(value, path, 1) + 1))
    if not isinstance(value, list) or not value:
        raise SpecError(f"{path}: expected a seed count (int >= 1) or a non-empty list of ints, got {value!r}")
    for i, s in enumerate(value):
        _count(s, f"{path}[{i}]", 0)
    if len(set(value)) != len(value):
        raise SpecError(f"{path}: lists a seed twice: {value}")
    return tuple(value)


def _resources(d) -> ResourceSpec:
    d = _mapping(d, "resources")
    _unknown(d, [f.name for f in fields(ResourceSpec)], "resources")
    r = ResourceSpec()
    cpus = d.get("cpus_per_trial", r.cpus_per_trial)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus > 0:
        raise SpecError(f"resources.cpus_per_trial: expected a number > 0, got {cpus!r}")
    gpus = d.get("gpus_per_trial", r.gpus_per_trial)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
        raise SpecError(f"resources.gpus_per_trial: expected a number >= 0, got {gpus!r}")
    if gpus > 1 and gpus != int(gpus):
        raise SpecError(f"resources.gpus_per_trial: above 1 it must be a whole number of GPUs (Ray shares only a fraction of one GPU), got {gpus}")
    mc = _count(d.get("mc_worker_cpus", r.mc_worker_cpus), "resources.mc_worker_cpus", 0)
    return ResourceSpec(float(cpus), float(gpus), mc)


def parse_spec(data: dict, base_dir: str | os.PathLike | None = None) -> GridSpec:
    """Validate a spec mapping (as read from YAML) into a GridSpec; raises SpecError naming the key path."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping of keys, got {type(data).__name__}")
    _unknown(data, TOP_KEYS, "")
    for k in REQUIRED_KEYS:
        if k not in data:
            raise SpecError(f"{k}: required key is missing")

    name = data["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(f"name: expected a directory name of letters, digits, '_', '.', '-', got {name!r}")

    from algorithms.estimators import ESTIMATORS
    from algorithms.updates import UPDATES

    seeds = _seeds(data.get("seeds", 1))
    named = data.get("cells")
    if named is not None and ("estimators" in data or "updates" in data):
        raise SpecError("cells: give either named cells or estimators and updates, not both")
    if named is None:
        for k in ("estimators", "updates"):
            if k not in data:
                raise SpecError(f"{k}: required key is missing (or name the cells with 'cells:')")
        estimators = _names(data["estimators"], "estimators", ESTIMATORS, "estimator")
        updates = _names(data["updates"], "updates", UPDATES, "update")

    env_d = _mapping(data.get("env"), "env")
    _unknown(env_d, [f.name for f in fields(EnvSpec)], "env")
    env = EnvSpec(**{k: _coerce(str, v, f"env.{k}") for k, v in env_d.items()})

    ck_d = _mapping(data["checkpoints"], "checkpoints")
    _unknown(ck_d, CHECKPOINT_FIELDS, "checkpoints")
    if ck_d.get("start") is None:
        raise SpecError("checkpoints.start: required (the policy every trial finetunes)")
    ck = {k: (_checkpoint_path(_coerce(str, v, f"checkpoints.{k}"), f"checkpoints.{k}", base) if v is not None else None)
          for k, v in ck_d.items()}
    checkpoints = CheckpointSpec(**ck)

    budget_d = _mapping(data.get("budget"), "budget")
    _unknown(budget_d, BUDGET_FIELDS, "budget")
    budget = {k: _field_value(k, v, f"budget.{k}", base) for k, v in budget_d.items()}
    eval_d = _mapping(data.get("eval"), "eval")
    _unknown(eval_d, EVAL_FIELDS, "eval")
    eval_ = {k: _field_value(k, v, f"eval.{k}", base) for k, v in eval_d.items()}

    never = {**AXIS_FIELDS, **ENV_FIELDS, "cell": "the cell's label under cells"}
    shared = _overrides(data.get("shared"), "shared", base, {**never, **SECTION_OF})

    cells = {}
    if named is not None:
        if not isinstance(named, dict) or not named:
            raise SpecError(f"cells: expected a mapping of cell labels to their settings, got {named!r}")
        for label, d in named.items():
            path = f"cells.{label}"
            if not isinstance(label, str) or not CELL_RE.match(label):
                raise SpecError(f"{path}: a cell label is letters, digits, '_', '.', '+', '-', got {label!r}")
            d = dict(_mapping(d, path))
            for k in ("estimator", "update"):
                if k not in d:
                    raise SpecError(f"{path}.{k}: required")
            est = _names(d.pop("estimator"), f"{path}.estimator", ESTIMATORS, "estimator")
            upd = _names(d.pop("update"), f"{path}.update", UPDATES, "update")
            if len(est) != 1 or len(upd) != 1:
                raise SpecError(f"{path}: a cell has one estimator and one update rule")
            cell_seeds = _seeds(d.pop("seeds"), f"{path}.seeds") if "seeds" in d else None
            cells[label] = CellSpec(est[0], upd[0], cell_seeds, _overrides(d, path, base, never))
        estimators = tuple(dict.fromkeys(c.estimator for c in cells.values()))
        updates = tuple(dict.fromkeys(c.update for c in cells.values()))

    per_method = {}
    for key, d in _mapping(data.get("per_method"), "per_method").items():
        path = f"per_method.{key}"
        parts = str(key).split("+")
        ok = (len(parts) == 1 and (key in ESTIMATORS or key in UPDATES)) or (
            len(parts) == 2 and parts[0] in ESTIMATORS and parts[1] in UPDATES)
        if not ok:
            raise SpecError(f"{path}: unknown method; use an estimator ({', '.join(ESTIMATORS)}), an update ({', '.join(UPDATES)}) or 'estimator+update'")
        per_method[str(key)] = _overrides(d, path, base, never)

    # the fields the spec fixes somewhere: neither swept nor searched
    fixed = {"shared": shared, "budget": budget, "eval": eval_, **{f"per_method.{m}": d for m, d in per_method.items()},
             **{f"cells.{label}": c.overrides for label, c in cells.items()}}
    sweep = {}
    for k, values in _mapping(data.get("sweep"), "sweep").items():
        path = f"sweep.{k}"
        if k not in _FIELDS:
            raise SpecError(f"{path}: unknown FinetuneConfig field (see algorithms/config.py)")
        if k in never:
            raise SpecError(f"{path}: set it with {never[k]}, not as a sweep axis")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: expected a non-empty list of values, got {values!r}")
        sweep[k] = [_field_value(k, v, f"{path}[{i}]", base) for i, v in enumerate(values)]
        if len({json.dumps(v) for v in sweep[k]}) != len(sweep[k]):
            raise SpecError(f"{path}: lists a value twice: {values}")
        clash = [where for where, d in fixed.items() if k in d]
        if clash:
            raise SpecError(f"{path}: {k} is also set in {clash[0]}; a field is either swept or fixed")

    max_failures = _count(data.get("max_failures", 1), "max_failures", 0)
    storage = data.get("storage", "runs/grid")
    if not isinstance(storage, str) or not storage:
        raise SpecError(f"storage: expected a directory path, got {storage!r}")
    if is_local(storage):
        storage = str((base / os.path.expanduser(local_path(storage))).resolve())
    else:
        try:
            storage = check_uri(storage)
        except ValueError as e:
            raise SpecError(str(e)) from None
    published = data.get("published") or ""
    if published:
        published = str((base / os.path.expanduser(_coerce(str, published, "published"))).resolve())
        if not Path(published).is_file():
            raise SpecError(f"published: no such file {published}")

    spec = GridSpec(
        name=name, checkpoints=checkpoints, estimators=estimators, updates=updates, seeds=seeds, cells=cells, env=env,
        shared=shared, per_method=per_method, sweep=sweep, budget=budget, eval=eval_,
        resources=_resources(data.get("resources")), max_failures=max_failures, storage=storage,
        published=published, **_search_blocks(data, base, fixed, cells, seeds, sweep),
    )
    _check_needed_checkpoints(spec)
    return spec


def _search_blocks(data: dict, base: Path, fixed: dict[str, dict], cells: dict, seeds: tuple, sweep: dict) -> dict:
    """``search``/``scheduler``/``tracking`` of GridSpec from the spec's blocks (orchestrator.search, .tracking).
    A search samples one config per trial and runs it with one seed; each cell (estimator x update, or a named
    cell) gets its own study, so a cell's seeds (``cells.<label>.seeds``) must be one seed too."""
    taken = {**AXIS_FIELDS, **ENV_FIELDS, **{f: SECTION_OF[f] for f in PATH_FIELDS}, "cell": "the cell's label under cells"}
    for where, d in fixed.items():
        for k in d:
            taken.setdefault(k, where)
    try:
        search = parse_search(data.get("search"), lambda n, v, p: _field_value(n, v, p, base), _FIELDS, taken)
        scheduler = parse_scheduler(data.get("scheduler"), search)
        tracking = parse_tracking(data.get("tracking"), base)
    except SpecError:
        raise
    except ValueError as e:
        raise SpecError(str(e)) from None
    many = [label for label, c in cells.items() if c.seeds and len(c.seeds) > 1]
    if search is not None and many:
        raise SpecError(f"search: each sampled config runs with one seed, but cells.{many[0]}.seeds lists {len(cells[many[0]].seeds)}; give each cell one seed")
    if search is not None and len(seeds) > 1 and (not cells or any(not c.seeds for c in cells.values())):
        raise SpecError(f"search: each sampled config runs with one seed, but seeds lists {len(seeds)}; set seeds to one seed")
    if search is not None and sweep:
        raise SpecError(f"search: a spec either sweeps or searches; move sweep.{next(iter(sweep))} into search.space as {{choice: [...]}}")
    return {"search": search, "scheduler": scheduler, "tracking": tracking}


def check_storage_writable(storage: str) -> None:
    """SpecError unless the run directories can be created under ``storage``: no file in the way, not read-only.
    A URI (``s3://...``) is left to its filesystem and not checked here."""
    if "://" in storage:
        return
    from algorithms.checkpoint import check_writable_dir  # here, not at the top: it loads torch, which --help does not need

    try:
        check_writable_dir(storage, "storage")
    except ValueError as e:
        raise SpecError(str(e)) from None


def _check_needed_checkpoints(spec: GridSpec) -> None:
    for est in ("iql", "sarsa"):
        if est in spec.estimators and getattr(spec.checkpoints, est) is None:
            expectile = "0.5" if est == "sarsa" else "<iql_expectile>"
            raise SpecError(f"checkpoints.{est}: required by the {est} trials (make one with `python -m orchestrator pretrain-iql --expectile {expectile}`)")


# ------------------------------------------------------------------------------------------------ expansion

def cell_overrides(spec: GridSpec, label: str) -> dict:
    """Every FinetuneConfig field a trial of this cell sets, before sweep axes and seed (later sources win):
    env, checkpoints, budget, eval, shared, per_method[estimator], per_method[update], per_method[est+upd],
    the named cell's own fields."""
    cell = spec.cell_table()[label]
    estimator, update = cell.estimator, cell.update
    ck = spec.checkpoints
    cfg: dict[str, Any] = {"estimator": estimator, "update": update, "cell": label, **asdict(spec.env), "start_checkpoint": ck.start}
    if ck.expert is not None:
        cfg["expert_checkpoint"] = ck.expert
    if estimator in ("iql", "sarsa"):
        cfg["iql_checkpoint"] = getattr(ck, estimator)
    if estimator in ("gae", "td") and ck.critic is not None:
        cfg["gae_critic_checkpoint"] = ck.critic
    cfg.update(spec.budget)
    cfg.update(spec.eval)
    cfg.update(spec.shared)
    explicit = set(spec.shared)
    for key in (estimator, update, f"{estimator}+{update}"):
        cfg.update(spec.per_method.get(key, {}))
        explicit |= set(spec.per_method.get(key, {}))
    cfg.update(cell.overrides)
    explicit |= set(cell.overrides)
    # the reserved re-rollout bundles are the MC worker slots, unless a spec says otherwise
    if estimator == "mc" and spec.resources.mc_worker_cpus and "mc_workers" not in explicit | set(spec.sweep):
        cfg["mc_workers"] = spec.resources.mc_worker_cpus
    return cfg


def sweep_points(spec: GridSpec) -> list[dict]:
    """One dict per point of the sweep grid (``[{}]`` without a sweep)."""
    keys = list(spec.sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(spec.sweep[k] for k in keys))]


def trial_label(cfg: dict, sweep_keys: Iterable[str] = ()) -> str:
    """``mc+awr`` (or the named cell's label) plus swept values, e.g. ``mc+awr mc_samples=5``; the cell a trial
    belongs to (seed excluded)."""
    parts = [trial_cell(cfg)] + [f"{k}={short_value(cfg[k])}" for k in sweep_keys]
    return " ".join(parts)


TRIAL_KEY = "cell_seed"  # a grid trial's axis value "<cell label>|<seed>" (cells may have their own seeds)


def trial_key(label: str, seed: int) -> str:
    return f"{label}|{seed}"


def split_trial_key(key: str) -> tuple[str, int]:
    label, seed = key.rsplit("|", 1)
    return label, int(seed)


def trial_cell(cfg: dict) -> str:
    """The cell of a trial config: from the grid axis where present (Tune names trials before it resolves the
    values that derive from it), else the ``cell`` field, else ``estimator+update``."""
    if isinstance(cfg.get(TRIAL_KEY), str):
        return split_trial_key(cfg[TRIAL_KEY])[0]
    return cfg.get("cell") or f"{cfg['estimator']}+{cfg['update']}"


def trial_seed(cfg: dict) -> int:
    if isinstance(cfg.get(TRIAL_KEY), str):
        return split_trial_key(cfg[TRIAL_KEY])[1]
    return cfg["seed"]


def short_value(v) -> str:
    """A swept value for labels and directory names: a file path by its stem, anything else as text."""
    if isinstance(v, str) and os.sep in v:
        return Path(v).stem
    return str(v)


def expand_trials(spec: GridSpec) -> list[FinetuneConfig]:
    """cell x sweep point x seed -> one FinetuneConfig each, every one validated (files included).

    Raises SpecError naming the trial (``trial mc+awr seed 2: ...``)."""
    from algorithms.checkpoint import CheckpointError
    from algorithms.finetune import validate_trial_inputs

    configs, checked = [], set()
    for label, cell in spec.cell_table().items():
        est = cell.estimator
        base = cell_overrides(spec, label)
        for point in sweep_points(spec):
            for seed in spec.cell_seeds(label):
                d = {**base, **point, "seed": seed}
                where = f"trial {trial_label(d, spec.sweep)} seed {seed}"
                try:
                    cfg = FinetuneConfig(**d)
                except ValueError as e:
                    raise SpecError(f"{where}: {e}") from None
                if (cfg.device.startswith("cuda") or cfg.backend == "gpu") and spec.resources.gpus_per_trial == 0:
                    raise SpecError(f"{where}: device={cfg.device}, backend={cfg.backend} needs a GPU, but resources.gpus_per_trial is 0 (Ray hides GPUs from trials that reserve none)")
                files = tuple((k, d.get(k)) for k in PATH_FIELDS) + (
                    est, cfg.mc_policy, cfg.quality_every > 0, cfg.iql_expectile, cfg.gamma, cfg.env_id, cfg.control_mode)
                if files not in checked:
                    try:
                        validate_trial_inputs(cfg)
                    except (CheckpointError, ValueError) as e:
                        raise SpecError(f"{where}: {e}") from None
                    checked.add(files)
                configs.append(cfg)
    return configs


# ------------------------------------------------------------------------------------------------ resources

def check_resources(spec: GridSpec, cpus: float, gpus: float, where: str) -> None:
    """SpecError if one trial asks for more than ``where`` (``this machine``, ``the cluster``) offers."""
    r = spec.resources
    mc = r.mc_worker_cpus if "mc" in spec.estimators else 0
    need = r.cpus_per_trial + mc
    if need > cpus:
        parts = f"{r.cpus_per_trial:g} (cpus_per_trial)" + (f" + {mc} (mc_worker_cpus)" if mc else "")
        raise SpecError(f"resources: a trial needs {parts} = {need:g} CPUs, but {where} has {cpus:g}")
    if r.gpus_per_trial > 0 and gpus <= 0:
        raise SpecError(f"resources.gpus_per_trial: {r.gpus_per_trial:g} GPUs per trial requested, but {where} has no GPU; set it to 0")
    if r.gpus_per_trial > gpus:
        raise SpecError(f"resources.gpus_per_trial: {r.gpus_per_trial:g} GPUs per trial requested, but {where} has {gpus:g}")


def local_machine_resources() -> tuple[float, float]:
    """(CPUs, GPUs) of this machine, as a local Ray cluster would count them (CUDA_VISIBLE_DEVICES respected)."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return float(cpus), float(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def resolved_record(spec: GridSpec, configs: list[FinetuneConfig]) -> dict:
    """What is saved beside the results as ``spec.resolved.json``: the validated spec and every trial's config."""
    return {"spec": spec.to_dict(), "trials": [c.to_dict() for c in configs]}


def spec_from_record(record: dict) -> GridSpec:
    """The GridSpec of a saved ``spec.resolved.json`` (re-validated: its checkpoint files must still exist)."""
    return parse_spec(record["spec"])
