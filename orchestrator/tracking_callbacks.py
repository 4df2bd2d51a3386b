"""The Tune side of a grid's ``tracking:`` block (``orchestrator.tracking``): Tune's W&B and MLflow logger
callbacks, configured from the spec, stepping MLflow's metrics by finetuning env steps."""
from __future__ import annotations

from typing import Optional

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from orchestrator.tracking import TrackingSpec

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
                                          artifact_location=self.artifact_location)
        super().setup(*args, **kwargs)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        step = result.get(ENV_STEPS, result[TRAINING_ITERATION])
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=result, step=int(step))


class OfflineWandbCallback(WandbLoggerCallback):
    """Offline mode needs no API key, but Tune's callback asks for one unless $WANDB_MODE says offline."""

    def setup(self, *args, **kwargs) -> None:
        if self.kwargs.get("mode") == "offline":
            return  # project and group come from the spec; the base class would only look for an API key
        super().setup(*args, **kwargs)


def tracking_callbacks(tracking: Optional[TrackingSpec], grid_name: str, run_dir: str) -> list:
    """The logger callbacks for ``tune.RunConfig(callbacks=...)``; empty without a tracking block.  W&B keeps
    its local files (offline runs) in ``run_dir``/wandb: Tune's trial directory on the driver is a staging copy."""
    if tracking is None:
        return []
    out = []
    if tracking.wandb is not None:
        w = tracking.wandb
        extra = {"entity": w.entity} if w.entity else {}
        out.append(OfflineWandbCallback(project=w.project, group=w.group or grid_name, log_config=True,
                                        upload_checkpoints=w.upload_checkpoints, mode=w.mode, dir=run_dir, **extra))
    if tracking.mlflow is not None:
        m = tracking.mlflow
        out.append(EnvStepMLflowCallback(tracking_uri=m.tracking_uri, artifact_location=m.artifact_location,
                                         experiment_name=m.experiment_name or grid_name,
                                         save_artifact=m.save_artifact, tags={"grid": grid_name}))
    return out
