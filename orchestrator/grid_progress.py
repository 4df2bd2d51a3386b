"""The live one-line status of a running grid, printed by a Ray Tune callback.

Tune's own table (``RunConfig(verbose=...)``) lists every trial on every refresh, which drowns a 60-trial
grid.  This prints one line per event that matters (a trial starts, finishes, fails or is retried) and at
most every ``interval_s`` on results::

    [grid local 00:03:12] 2 running | 5 done | 1 failed | 4 pending | best mc+awr 0.91 (2 runs) | gae+ppo s1 done: 0.62

"best" is the cell (estimator+update plus swept values; seeds pooled) with the highest mean latest
``eval/success_rate`` over its trials that have reported one.
"""
from __future__ import annotations

import time
from typing import Optional

from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator.spec import trial_label

SUCCESS = "eval/success_rate"
STOPPED = "STOPPED"  # not a Tune status: a trial Tune calls TERMINATED that an interrupted run stopped before its end


def is_complete(last_result: Optional[dict], config: dict) -> bool:
    """A trial ran to its end: it reported its last iteration (run_trial reports iterations 0..num_iterations)."""
    # a trial that never started can come back with bookkeeping-only metrics and no config: None == None is no end
    it, last = (last_result or {}).get("iteration"), config.get("num_iterations")
    return it is not None and it == last


class GridProgress(Callback):
    """Picklable (Tune stores it with the run config and restores it on resume): plain data only."""

    def __init__(self, name: str, sweep_keys: tuple[str, ...] = (), interval_s: float = 30.0):
        self.name = name
        self.sweep_keys = tuple(sweep_keys)
        self.interval_s = interval_s
        self._success: dict[str, float] = {}
        self._t0: Optional[float] = None
        self._last_print = 0.0

    def setup(self, **info):
        self._t0 = time.monotonic()
        self._success = {}

    # -- what to show
    def _latest_success(self, trial) -> Optional[float]:
        if trial.trial_id in self._success:
            return self._success[trial.trial_id]
        v = (trial.last_result or {}).get(SUCCESS)
        return float(v) if v is not None else None

    def _label(self, trial) -> str:
        return trial_label(trial.config, self.sweep_keys)

    def _best(self, trials) -> str:
        cells: dict[str, list[float]] = {}
        for t in trials:
            v = self._latest_success(t)
            if v is not None:
                cells.setdefault(self._label(t), []).append(v)
        if not cells:
            return "best -"
        label, vals = max(cells.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
        return f"best {label} {sum(vals) / len(vals):.2f} ({len(vals)} run{'s' if len(vals) > 1 else ''})"

    def status_line(self, trials, event: str = "", now: Optional[tuple] = None) -> str:
        """``now`` = (trial, status) for the trial of the event: Tune calls the hooks before updating its status."""
        counts = dict.fromkeys((Trial.RUNNING, Trial.TERMINATED, Trial.ERROR, Trial.PENDING, Trial.PAUSED, STOPPED), 0)
        for t in trials:
            status = now[1] if now is not None and t is now[0] else t.status
            if status == Trial.TERMINATED and not is_complete(t.last_result, t.config):
                status = STOPPED  # Tune marks trials TERMINATED when an interrupted run stops them
            counts[status] = counts.get(status, 0) + 1
        elapsed = time.monotonic() - (self._t0 or time.monotonic())
        h, rem = divmod(int(elapsed), 3600)
        head = f"[grid {self.name} {h:02d}:{rem // 60:02d}:{rem % 60:02d}] "
        parts = [
            f"{counts[Trial.RUNNING]} running", f"{counts[Trial.TERMINATED]} done", f"{counts[Trial.ERROR]} failed",
            f"{counts[Trial.PENDING] + counts[Trial.PAUSED]} pending", self._best(trials),
        ]
        if counts[STOPPED]:
            parts.insert(4, f"{counts[STOPPED]} stopped")
        return head + " | ".join(parts + ([event] if event else []))

    def _print(self, trials, event: str = "", now: Optional[tuple] = None) -> None:
        self._last_print = time.monotonic()
        print(self.status_line(trials, event, now), flush=True)

    def _who(self, trial) -> str:
        return f"{self._label(trial)} s{trial.config.get('seed')}"

    # -- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self._print(trials, f"{self._who(trial)} started", (trial, Trial.RUNNING))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if SUCCESS in result:
            self._success[trial.trial_id] = float(result[SUCCESS])
        if time.monotonic() - self._last_print >= self.interval_s:
            self._print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        v = self._latest_success(trial)
        self._print(trials, f"{self._who(trial)} done" + (f": {v:.2f}" if v is not None else ""), (trial, Trial.TERMINATED))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._print(trials, f"{self._who(trial)} raised; retrying from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(trials, f"{self._who(trial)} FAILED (see {trial.path}/error.txt)", (trial, Trial.ERROR))

    def on_experiment_end(self, trials, **info):
        complete = all(t.status == Trial.ERROR or is_complete(t.last_result, t.config) for t in trials)
        self._print(trials, "finished" if complete else "stopped: continue with `python -m orchestrator resume RUN_DIR`")
