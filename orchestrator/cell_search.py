"""The Tune side of a grid's ``search:`` and ``scheduler:`` blocks (``orchestrator.search``): a searcher and a
scheduler that keep one Optuna study and one ASHA per cell (a named cell's label, or
``estimator+update``) inside one Tune experiment."""
from __future__ import annotations

import pickle
from typing import Optional

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from orchestrator.search import SchedulerSpec, SearchSpec, cell_key, num_trials


def tune_space(search: SearchSpec) -> dict:
    """The search space as Tune domains (what OptunaSearch converts into Optuna distributions)."""
    make = {"uniform": tune.uniform, "loguniform": tune.loguniform, "quniform": tune.quniform,
            "randint": tune.randint, "choice": tune.choice}
    out = {}
    for name, dist in search.space.items():
        kind, args = next(iter(dist.items()))
        out[name] = make[kind](args) if kind == "choice" else make[kind](*args)
    return out


class CellSearcher(Searcher):
    """One OptunaSearch per cell; ``suggest`` serves the cell with the most samples left (round robin).

    ``cells`` maps a cell label to that cell's full trial config (every FinetuneConfig field); a
    suggestion is that config with the sampled values on top."""

    def __init__(self, cells: dict[str, dict], search: SearchSpec):
        super().__init__(metric=search.metric, mode=search.mode)
        self._cells = cells
        self._left = {c: search.num_samples for c in cells}
        space = tune_space(search)
        self._studies = {
            c: OptunaSearch(space=dict(space), metric=search.metric, mode=search.mode,
                            seed=None if search.seed is None else search.seed + i)
            for i, c in enumerate(cells)
        }
        self._cell_of: dict[str, str] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # metric, mode and space were fixed per cell at construction; the param space holds no domains
        return True

    def suggest(self, trial_id: str):
        open_cells = [c for c in self._cells if self._left[c] > 0]
        if not open_cells:
            return self.FINISHED
        cell = max(open_cells, key=lambda c: self._left[c])
        sampled = self._studies[cell].suggest(trial_id)
        if sampled is None or sampled == self.FINISHED:
            return sampled
        self._left[cell] -= 1
        self._cell_of[trial_id] = cell
        return {**self._cells[cell], **sampled}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._cell_of:
            self._studies[self._cell_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id in self._cell_of:
            self._studies[self._cell_of[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class CellScheduler(FIFOScheduler):
    """One ASHA per cell: a trial's rung is compared only with trials of its own cell.
    Trials start in FIFO order (the base class); results and endings go to the trial's cell's ASHA."""

    def __init__(self, sched: SchedulerSpec, max_t: int):
        super().__init__()
        self._spec, self._max_t = sched, max_t
        self._by_cell: dict = {}
        self.stopped: set[str] = set()  # trial ids stopped early: done, not unfinished

    def _of(self, trial):
        key = cell_key(trial.config)
        if key not in self._by_cell:
            s = self._spec
            self._by_cell[key] = ASHAScheduler(time_attr="training_iteration", metric=s.metric, mode=s.mode,
                                               max_t=self._max_t, grace_period=s.grace_period,
                                               reduction_factor=s.reduction_factor)
        return self._by_cell[key]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = self._of(trial).on_trial_result(tune_controller, trial, result)
        if decision == self.STOP:
            self.stopped.add(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{c}: {s.debug_string()}" for c, s in self._by_cell.items()) or "per-cell ASHA (no trials yet)"


def tune_options(search: Optional[SearchSpec], scheduler: Optional[SchedulerSpec], cells: dict[str, dict],
                 max_iterations: int) -> dict:
    """Keyword arguments for ``tune.TuneConfig``: ``search_alg``/``num_samples`` with a search, ``scheduler``
    with a scheduler; empty for a plain grid.  Tune counts reports from 1 and a trial reports iteration 0 first,
    so a trial's last report is training_iteration ``max_iterations + 1``."""
    opts: dict = {}
    if search is not None:
        opts["search_alg"] = CellSearcher(cells, search)
        opts["num_samples"] = num_trials(search, len(cells))
    if scheduler is not None:
        opts["scheduler"] = CellScheduler(scheduler, max_iterations + 1)
    return opts
