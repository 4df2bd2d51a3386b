"""The Tune side of a grid's ``tracking:`` block (``orchestrator.tracking``): logger callbacks that send every
trial to Weights & Biases and MLflow, with metrics over finetuning env steps and the trial's final checkpoint."""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Optional

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import LoggerCallback
from ray.tune.result import TRAINING_ITERATION

from orchestrator.tracking import TrackingSpec, WandbSpec

ENV_STEPS = "charts/env_steps"


class EnvStepMLflowCallback(MLflowLoggerCallback):
    """MLflow's step is the trial's finetuning env steps (Tune's default is its report count); a new experiment
    keeps its artifacts at ``artifact_location``."""

    def __init__(self, artifact_location: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.artifact_location = artifact_location

    def setup(self, *args, **kwargs) -> None:
        if self.artifact_location is not None:
            # the base class creates a missing experiment without an artifact location (the cwd's ./mlruns)
            self.mlflow_util.setup_mlflow(tracking_uri=self.tracking_uri, experiment_name=self.experiment_name,
                                          artifact_location=f"{self.artifact_location}/{self.experiment_name}")
        super().setup(*args, **kwargs)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        step = result.get(ENV_STEPS, result[TRAINING_ITERATION])
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=result, step=int(step))


class WandbCallback(LoggerCallback):
    """One W&B run per trial, in the driver process: config = the trial's config, every numeric metric logged
    against ``charts/env_steps``, the trial's last checkpoint logged as a ``model`` artifact when it ends.

    Written here rather than Ray's WandbLoggerCallback: that one runs a logging actor per trial, and with
    wandb 0.31 a finishing trial's cleanup could collect another trial's actor (KeyError, trial marked failed)."""

    def __init__(self, spec: WandbSpec, group: str, local_dir: str):
        self.spec, self.group, self.local_dir = spec, group, local_dir
        self._runs: dict = {}

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment; open W&B runs belong to this process only
        return {**self.__dict__, "_runs": {}}

    def _run(self, trial):
        import wandb

        if trial.trial_id not in self._runs:
            s = self.spec
            Path(self.local_dir).mkdir(parents=True, exist_ok=True)
            run = wandb.init(project=s.project, entity=s.entity, group=s.group or self.group, mode=s.mode,
                             dir=self.local_dir, id=trial.trial_id, name=str(trial), config=dict(trial.config),
                             resume="allow", reinit="create_new")
            run.define_metric("*", step_metric=ENV_STEPS)
            self._runs[trial.trial_id] = run
        return self._runs[trial.trial_id]

    def log_trial_start(self, trial) -> None:
        self._run(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        metrics = {k: v for k, v in result.items()
                   if k != "config" and isinstance(v, numbers.Number) and not isinstance(v, bool)}
        self._run(trial).log(metrics)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        import wandb

        run = self._runs.pop(trial.trial_id, None)
        if run is None:
            return
        ckpt = trial.checkpoint
        if self.spec.upload_checkpoints and ckpt is not None and Path(ckpt.path).is_dir():
            artifact = wandb.Artifact(f"checkpoint-{trial.trial_id}", type="model", metadata={"tune_path": ckpt.path})
            artifact.add_dir(ckpt.path)
            run.log_artifact(artifact)
        run.finish(exit_code=1 if failed else 0)

    def on_experiment_end(self, trials, **info) -> None:
        for run in self._runs.values():
            run.finish()
        self._runs = {}


def tracking_callbacks(tracking: Optional[TrackingSpec], grid_name: str, run_dir: str) -> list:
    """The logger callbacks for ``tune.RunConfig(callbacks=...)``; empty without a tracking block.  W&B keeps
    its local files (offline runs) in ``run_dir``/wandb."""
    if tracking is None:
        return []
    out: list = []
    if tracking.wandb is not None:
        out.append(WandbCallback(tracking.wandb, grid_name, run_dir))
    if tracking.mlflow is not None:
        m = tracking.mlflow
        out.append(EnvStepMLflowCallback(tracking_uri=m.tracking_uri, artifact_location=m.artifact_location,
                                         experiment_name=m.experiment_name or grid_name,
                                         save_artifact=m.save_artifact, tags={"grid": grid_name}))
    return out
