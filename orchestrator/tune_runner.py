"""A grid spec run as one Ray Tune experiment: launch, resume, failures, GPU shares, live progress.

Layout of a run directory ``<storage>/<name>`` (Tune's experiment directory)::

    spec.yaml                the spec as given (the validated, normalised spec when launched from a GridSpec)
    spec.resolved.json       {"spec": normalised spec, "trials": [every trial's FinetuneConfig]}
    launches.jsonl           one line per grid/resume call and one when it returns (orchestrator.launches)
    tuner.pkl, experiment_state-*.json, basic-variant-state-*.json     Tune's state (resume)
    <estimator>+<update>_s<seed>[_<swept>]_<trial id>/
        result.json, progress.csv, params.json, error.txt              Tune's per-trial records
        checkpoint_00000k/   the last few trial states Tune keeps (resume / retry points)
        trial/               run_trial's out_dir: config.json, metrics.jsonl, tb/, checkpoint/ (latest state + policy.pt),
                             placement.json (host, device, CUDA_VISIBLE_DEVICES, GPU memory cap and peak)
    analysis/                written by the ``grid`` / ``resume`` commands (``orchestrator.analysis.analyze``)

Each trial is the function trainable :func:`grid_trial`, which wraps the Ray-free
:func:`algorithms.finetune.run_trial`: every iteration it reports the metrics with a Tune Checkpoint of the
trial's checkpoint directory; a restarted trial (retry after an exception, or a resumed experiment) gets the
latest one from ``ray.tune.get_checkpoint()`` and continues from it.  Trials reserve
``PlacementGroupFactory([{CPU: c, GPU: g}] + [{CPU: 1}] * mc_worker_cpus)`` (the extra bundles for mc
trials only).  Finished trials are never rerun on resume; errored ones are resumed from their last checkpoint.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import re
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import yaml

from algorithms.config import FinetuneConfig
from orchestrator import launches
from orchestrator.rundir import SPEC_JSON, SPEC_YAML, TRIAL_OUT, quiet_missing_results
from orchestrator.search import cell_key, num_trials
from orchestrator.spec import (
    GridSpec, ResourceSpec, SpecError, cell_overrides, check_resources, check_storage_writable, expand_trials, load_spec,
    local_machine_resources, resolved_record, short_value, spec_from_record, trial_label,
    TRIAL_KEY, split_trial_key, trial_cell, trial_key, trial_seed,
)
from orchestrator.storage import RemoteRun, is_local, local_path, remote_run

KEEP_CHECKPOINTS = 3


# ------------------------------------------------------------------------------------------ the trainable

def grid_trial(config: dict, gpu_fraction: float = 0.0) -> None:
    """Tune function trainable: one finetuning trial.  ``config`` holds every FinetuneConfig field."""
    import torch
    from ray import tune

    from algorithms.finetune import resolve_device, run_trial
    from orchestrator import placement

    import logging

    # Ray logs every persisted checkpoint at INFO: one line per trial iteration drowns the grid's status line
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    # tiny networks: extra intra-op threads only spin against the trial's env worker processes
    torch.set_num_threads(1)
    cfg = FinetuneConfig(**{k: config[k] for k in FinetuneConfig.field_names()})
    out_dir = Path(tune.get_context().get_trial_dir()) / TRIAL_OUT
    uses_gpu = gpu_fraction > 0 and torch.cuda.is_available()
    if uses_gpu and gpu_fraction < 1:
        # Ray's fractional GPUs are bookkeeping only: cap this process's share so co-located trials fit
        torch.cuda.set_per_process_memory_fraction(gpu_fraction, 0)

    def report(metrics: dict, checkpoint_dir: Path) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    device = resolve_device(cfg.device)
    where = out_dir / placement.PLACEMENT_FILE
    cpus = trial_cpus()
    record = placement.record_start(where, device, gpu_fraction, cpus)
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            run_trial(cfg, out_dir, report=report, cpus=cpus)
        else:
            with checkpoint.as_directory() as resume_from:
                run_trial(cfg, out_dir, report=report, resume_from=resume_from, cpus=cpus)
        placement.record_end(where, record, device)
    finally:
        if uses_gpu:
            # memory of a finished trial is not always released before the next one starts on the GPU
            gc.collect()
            torch.cuda.empty_cache()


def trial_cpus() -> Optional[int]:
    """CPUs of the running trial's placement group (all its bundles; at least 1), None outside one.  Ray does not
    pin trials to cores, so this, not the process's affinity, is what the trial's env worker processes share."""
    from ray.util import get_current_placement_group

    pg = get_current_placement_group()
    if pg is None:
        return None
    return max(1, int(sum(b.get("CPU", 0) for b in pg.bundle_specs)))


def trial_resources(config: dict, resources: ResourceSpec, estimators: dict):
    """``estimators``: cell label -> estimator (read from the grid axis: derived values may not be resolved yet)."""
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory(resources.bundles(estimators[trial_cell(config)]))


def build_trainable(spec: GridSpec):
    """The trainable with this spec's GPU share and per-trial placement groups (the same on launch and resume)."""
    from ray import tune

    fn = tune.with_parameters(grid_trial, gpu_fraction=spec.resources.gpus_per_trial)
    estimators = {label: cell.estimator for label, cell in spec.cell_table().items()}
    return tune.with_resources(fn, functools.partial(trial_resources, resources=spec.resources, estimators=estimators))


# ------------------------------------------------------------------------------------------ search space

def _key_part(config: dict, part: int):
    return split_trial_key(config[TRIAL_KEY])[part]


def _cell_value(config: dict, table: dict, field: str):
    """A field whose value depends on the cell: Tune resolves it from the trial's config after the grid axes."""
    return table[_key_part(config, 0)]


def param_space(spec: GridSpec) -> dict:
    """Flat FinetuneConfig space: one ``grid_search`` over (cell, seed) pairs and one per sweep axis; cell and seed,
    and every per-cell value (per_method and named-cell overrides), resolved from the pair; everything else a
    constant.  Trials = ``expand_trials``."""
    from ray import tune

    defaults = FinetuneConfig().to_dict()
    labels = list(spec.cell_table())
    cells = {label: cell_overrides(spec, label) for label in labels}
    space: dict = {
        TRIAL_KEY: tune.grid_search([trial_key(label, seed) for label in labels for seed in spec.cell_seeds(label)]),
        "seed": tune.sample_from(functools.partial(_key_part, part=1)),
    }
    for k, values in spec.sweep.items():
        space[k] = tune.grid_search(list(values))
    for k in FinetuneConfig.field_names():
        if k in space:
            continue
        table = {label: d.get(k, defaults[k]) for label, d in cells.items()}
        distinct = {json.dumps(v) for v in table.values()}
        if len(distinct) == 1:
            space[k] = next(iter(table.values()))
        else:
            space[k] = tune.sample_from(functools.partial(_cell_value, table=table, field=k))
    return space


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]+")


def trial_dirname(trial, sweep_keys: tuple = ()) -> str:
    """``mc+awr_s2_mc_samples=5_<trial id>``: readable, unique, and ends with Tune's trial id."""
    c = trial.config
    parts = [_UNSAFE.sub("-", trial_cell(c)), f"s{trial_seed(c)}"]
    parts += [_UNSAFE.sub("-", f"{k}={short_value(c[k])}") for k in sweep_keys]
    return "_".join(parts)[:150] + "_" + trial.trial_id


def trial_name(trial, sweep_keys: tuple = ()) -> str:
    return f"{trial_label(trial.config, sweep_keys)} s{trial_seed(trial.config)}"


# ------------------------------------------------------------------------------------------ launch / resume

@dataclass
class GridOutcome:
    run_dir: Union[Path, str]  # a str: the URI of a remote run
    results: object  # ray.tune.ResultGrid
    num_trials: int
    num_finished: int
    num_failed: int
    report: Optional[Path] = None

    @property
    def ok(self) -> bool:
        return self.num_failed == 0 and self.num_finished == self.num_trials


def _canonical(obj):
    return json.loads(json.dumps(obj))


def _first_difference(saved: list[dict], new: list[dict]) -> str:
    if len(saved) != len(new):
        return f"{len(saved)} trials then, {len(new)} now"
    for i, (a, b) in enumerate(zip(saved, new)):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return f"trial {i} ({b.get('estimator')}+{b.get('update')} seed {b.get('seed')}): {k} was {a.get(k)!r}, now {b.get(k)!r}"
    return "?"


def _read_record(run_dir: Path) -> dict:
    p = run_dir / SPEC_JSON
    if not p.is_file():
        raise SpecError(f"{run_dir} is not a grid run directory (no {SPEC_JSON})")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SpecError(f"{p} is corrupt ({e})") from None


def _has_trials(run_dir: Path) -> bool:
    return any(p.is_dir() and (p / "params.json").exists() for p in run_dir.iterdir())


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable cluster for minutes; fail at once, with one line, instead."""
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(f"--address {address}: expected HOST:PORT (e.g. 10.0.0.1:6379) or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise SpecError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def _connect(address: Optional[str]) -> bool:
    """Start (or join) Ray; returns whether this call initialised it (and so must shut it down)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # SAPIEN's missing-libvulkan notice (state-only simulation needs no renderer) would repeat for every trial
        ray.init(include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore:Failed to find system libvulkan"}})
        return True
    target = address or os.environ["RAY_ADDRESS"]
    _check_reachable(target)
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        lines = [l for l in str(e).splitlines() if l.strip()]
        raise SpecError(f"cannot join the Ray cluster at {target}: {lines[0] if lines else type(e).__name__}") from None
    return True


def _check_cluster(spec: GridSpec) -> None:
    import ray

    total = ray.cluster_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    check_resources(spec, total.get("CPU", 0.0), total.get("GPU", 0.0), "the Ray cluster")
    biggest_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    if spec.resources.cpus_per_trial > biggest_cpu:
        raise SpecError(f"resources.cpus_per_trial: {spec.resources.cpus_per_trial:g} CPUs must fit on one node; the largest Ray node has {biggest_cpu:g}")


def _local_run(address: Optional[str]) -> bool:
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return False
    # Ray not imported yet: certainly not initialised (and validation need not pay the import)
    ray = sys.modules.get("ray")
    return ray is None or not ray.is_initialized()


def _run_config(spec: GridSpec, run_dir: Path):
    from ray import tune

    from orchestrator.tracking_callbacks import tracking_callbacks

    return tune.RunConfig(
        name=run_dir.name,
        storage_path=spec.storage,  # a local directory or a remote URI (orchestrator.storage)
        failure_config=tune.FailureConfig(max_failures=spec.max_failures, fail_fast=False),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        callbacks=[_progress(spec, run_dir.name), *tracking_callbacks(spec.tracking, run_dir.name, str(run_dir))],
        verbose=0,  # GridProgress prints the status instead of Tune's full table
    )


def _progress(spec: GridSpec, name: str):
    from orchestrator.grid_progress import GridProgress

    return GridProgress(name, tuple(spec.sweep))


def _finish(run_dir: Path, results, remote: Optional[RemoteRun] = None, stopped_early: frozenset = frozenset()) -> GridOutcome:
    from orchestrator.grid_progress import is_complete

    # Tune reports the trials of an interrupted run as TERMINATED too: finished = reported the last iteration
    # (or stopped early by the spec's scheduler)
    failed = sum(r.error is not None for r in results)
    finished = sum(r.error is None and (is_complete(r.metrics, r.config or {}) or (r.metrics or {}).get("trial_id") in stopped_early)
                   for r in results)
    launches.record_end(run_dir, len(results), finished, failed)
    if remote is not None:
        remote.push()
    return GridOutcome(run_dir if remote is None else remote.uri, results, len(results), finished, failed)


def launch(
    spec: Union[GridSpec, str, os.PathLike],
    storage: Optional[str] = None,
    name: Optional[str] = None,
    address: Optional[str] = None,
    resume: bool = False,
    cells: Iterable[str] = (),
    seeds: Iterable[int] = (),
    resources: Optional[dict] = None,
) -> GridOutcome:
    """Run (or with ``resume`` continue) the grid of ``spec`` (a GridSpec or a YAML path) on Ray Tune.

    Everything is validated first (spec, every trial config, checkpoint files, resources, the run directory):
    bad input raises SpecError before Ray starts and before anything is written.  ``storage``/``name``
    override the spec's; ``address`` joins a running cluster (else a local Ray starts, or RAY_ADDRESS is used).
    ``resume``: continue ``<storage>/<name>`` if it exists (the spec must be the one it was started with),
    start it otherwise.  ``cells``/``seeds``: run only those cell labels and seeds of the spec (GridSpec.select),
    e.g. to complete a grid in another run directory.  ``resources``: ResourceSpec fields that override the spec's.
    """
    spec_text = None
    if not isinstance(spec, GridSpec):
        path, spec = spec, load_spec(spec)  # validates the file (a binary one included) before it is read as text
        spec_text = Path(path).read_text()
    cells, seeds = tuple(cells), tuple(seeds)
    if cells or seeds:
        spec, spec_text = spec.select(cells, seeds), None  # the file as given is no longer what runs
    changes = {k: v for k, v in (("storage", storage), ("name", name)) if v is not None}
    if resources:  # validated with the rest of the spec (parse_spec names an unknown or bad field)
        changes["resources"] = {**spec.to_dict()["resources"], **resources}
        spec_text = None
    if changes:
        spec = spec.replace(**changes)
    configs = expand_trials(spec)
    check_storage_writable(spec.storage)
    if _local_run(address):
        check_local_backends(configs)
    record = _canonical(resolved_record(spec, configs))
    remote = remote_run(spec.storage, spec.name)
    # a remote run is checked and started from a local staging copy of its own files
    run_dir = spec.run_dir if remote is None else remote.pull_own_files()

    restore = False
    if run_dir.exists() and any(run_dir.iterdir()):
        if not resume:
            raise SpecError(f"run directory {remote.uri if remote else run_dir} already exists; pass --resume to continue it, or choose another --name")
        saved = _read_record(run_dir)
        if saved.get("trials") != record["trials"]:
            raise SpecError(f"--resume: the spec differs from the one {run_dir} was started with ({_first_difference(saved.get('trials', []), record['trials'])}); use another --name for a new grid")
        from ray.tune import Tuner

        restore = Tuner.can_restore(remote.uri if remote else str(run_dir))
        if not restore and _has_trials(run_dir):
            raise SpecError(f"{run_dir} holds trials but no Tune state (tuner.pkl) to restore them from")
    elif run_dir.exists() and not run_dir.is_dir():
        raise SpecError(f"run directory {run_dir} exists and is not a directory")

    with _on_cluster(spec, address):
        if restore:
            _note_resources(run_dir, saved, record, spec_text)
            return _restore(run_dir, spec, remote)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_record(run_dir, record, spec_text)
        return _fit(spec, run_dir, configs, remote)


def _note_resources(run_dir: Path, saved: dict, record: dict, spec_text: Optional[str] = None) -> None:
    """A resume under other resources than the run directory's record (a changed spec's ``resources:``, or
    ``resume --cpus-per-trial ...``): save the new spec beside the results, so that a later plain ``resume`` keeps
    them, and say so."""
    old, new = saved.get("spec", {}).get("resources"), record["spec"].get("resources")
    if old == new:
        return
    # Tune re-derives each restored trial's placement group from the trainable (built from this spec), so the
    # unfinished trials take the new resources by themselves
    print(f"resources: {old} -> {new}; the unfinished trials take the new ones", flush=True)
    _write_record(run_dir, {**saved, "spec": record["spec"]}, spec_text)


def _write_record(run_dir: Path, record: dict, spec_text: Optional[str] = None) -> None:
    """The spec beside the results: ``spec.yaml`` (the file as given, else the validated spec) and ``spec.resolved.json``."""
    (run_dir / SPEC_YAML).write_text(spec_text if spec_text is not None else yaml.safe_dump(record["spec"], sort_keys=False))
    (run_dir / SPEC_JSON).write_text(json.dumps(record, indent=1))


def check_local_backends(configs: list) -> None:
    """SpecError unless every trial's simulation backend runs on this machine (a local grid's trials run here)."""
    from envs.backend import BackendUnavailable, resolve_backend

    for backend in sorted({c.backend for c in configs}):
        try:
            resolve_backend(backend)
        except BackendUnavailable as e:
            raise SpecError(f"backend: {e}") from None


@contextlib.contextmanager
def _on_cluster(spec: GridSpec, address: Optional[str]):
    """Check the spec's resources against the machine (local) or the cluster (joined), with Ray started for the
    block and shut down after it if this call started it."""
    local = _local_run(address)
    if local:
        check_resources(spec, *local_machine_resources(), "this machine")
    started = _connect(address)
    try:
        if not local:
            _check_cluster(spec)
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def _fit(spec: GridSpec, run_dir: Path, configs: list, remote: Optional[RemoteRun] = None) -> GridOutcome:
    from ray import tune

    from orchestrator.cell_search import tune_options

    launches.record_launch(run_dir, "start")
    if remote is not None:
        remote.push()
    sweep_keys = tuple(spec.sweep)
    # a search samples each cell's trials itself (from one config per cell); a grid enumerates the param space
    cells = {cell_key(c.to_dict()): c.to_dict() for c in configs}
    search = tune_options(spec.search, spec.scheduler, cells, max(c.num_iterations for c in configs))
    expected = num_trials(spec.search, len(cells)) if spec.search else len(configs)
    tuner = tune.Tuner(
        build_trainable(spec),
        param_space={} if spec.search else param_space(spec),
        tune_config=tune.TuneConfig(
            **{"num_samples": 1, **search},
            # a fresh process per trial: in a reused actor, tune.get_context().get_trial_dir() is not the trial's
            # storage folder (README, "Test"; tried again in session 27: the smoke grid's 12 trials left 3
            # placement records), so a trial's files would land elsewhere
            reuse_actors=False,
            trial_name_creator=functools.partial(trial_name, sweep_keys=sweep_keys),
            trial_dirname_creator=functools.partial(trial_dirname, sweep_keys=sweep_keys),
        ),
        run_config=_run_config(spec, run_dir),
    )
    with _sigterm_stops_tune(), quiet_missing_results():
        results = tuner.fit()
    if len(results) != expected:
        raise RuntimeError(f"Tune generated {len(results)} trials, the spec expands to {expected}")
    stopped = frozenset(getattr(search.get("scheduler"), "stopped", ()))
    return _finish(run_dir, results, remote, stopped)


def _restore(run_dir: Path, spec: GridSpec, remote: Optional[RemoteRun] = None) -> GridOutcome:
    from ray.tune import Tuner

    with quiet_missing_results():
        tuner = Tuner.restore(remote.uri if remote else str(run_dir), trainable=build_trainable(spec), resume_errored=True)
    launches.record_launch(run_dir, "resume")
    if remote is not None:
        remote.push()
    with _sigterm_stops_tune(), quiet_missing_results():
        results = tuner.fit()
    return _finish(run_dir, results, remote)


@contextlib.contextmanager
def _sigterm_stops_tune():
    """Batch systems end a job with SIGTERM (SLURM: scancel, requeue, time limit).  Tune stops gracefully on
    SIGUSR1 as on Ctrl-C, saving the experiment state (a trial that just finished is recorded as finished), so
    SIGTERM is passed on as SIGUSR1 while the experiment runs.  Signal handlers exist in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGUSR1))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume(run_dir: Union[str, os.PathLike], address: Optional[str] = None, resources: Optional[dict] = None) -> GridOutcome:
    """Continue the grid in ``run_dir`` (which may have been moved since): finished trials are kept, unfinished
    and errored ones continue from their last checkpoint.  ``resources``: ResourceSpec fields to change for the
    trials that have not finished (e.g. ``{"cpus_per_trial": 8}`` on a bigger machine); validated like the spec's."""
    remote = None if is_local(str(run_dir)) else RemoteRun.at(str(run_dir))
    if remote is not None and not remote.exists():
        raise SpecError(f"run directory {remote.uri} does not exist")
    run_dir = Path(local_path(str(run_dir))).resolve() if remote is None else remote.pull_own_files()
    if not run_dir.is_dir():
        raise SpecError(f"run directory {run_dir} does not exist")
    saved = _read_record(run_dir)
    record = saved
    if resources:  # validated with the rest of the spec (parse_spec names an unknown or bad field)
        record = {**saved, "spec": {**saved["spec"], "resources": {**saved["spec"].get("resources", {}), **resources}}}
    spec = spec_from_record(record)
    record = {**record, "spec": spec.to_dict()}
    if remote is None:
        check_storage_writable(str(run_dir))
    if remote is None and not (run_dir / "tuner.pkl").is_file():  # what Tuner.can_restore looks for, without importing Ray Tune (seconds)
        raise SpecError(f"{run_dir} has no Tune state to restore (tuner.pkl is missing): the grid never started; launch it with `grid SPEC --resume`")
    from ray.tune import Tuner

    if not Tuner.can_restore(remote.uri if remote else str(run_dir)):
        raise SpecError(f"{run_dir} has no Tune state to restore (tuner.pkl is missing): the grid never started; launch it with `grid SPEC --resume`")
    with _on_cluster(spec, address):
        _note_resources(run_dir, saved, record)
        return _restore(run_dir, spec, remote)


def describe(outcome: GridOutcome) -> str:
    """A few lines for the terminal: counts, the failed trials, where the report is."""
    lines = [f"grid {outcome.run_dir}: {outcome.num_finished}/{outcome.num_trials} trials finished, {outcome.num_failed} failed"]
    for r in outcome.results:
        if r.error is not None:
            msg = [m for m in str(r.error).strip().splitlines() if m.strip()]
            lines.append(f"  failed: {Path(r.path).name}: {msg[-1] if msg else type(r.error).__name__}")
    unfinished = outcome.num_trials - outcome.num_finished - outcome.num_failed
    if unfinished:
        lines.append(f"{unfinished} trials unfinished: continue with `python -m orchestrator resume {outcome.run_dir}`")
    if outcome.report is not None:
        lines.append(f"report: {outcome.report}")
    return "\n".join(lines)
