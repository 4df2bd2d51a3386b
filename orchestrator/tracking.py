"""Experiment trackers a grid reports to besides TensorBoard: Weights & Biases and MLflow, through Tune's logger
callbacks (``orchestrator.tracking_callbacks``), enabled by the grid spec::

    tracking:
      wandb: {project: o2o, mode: offline}                  # pip install -e '.[wandb]'
      mlflow: {tracking_uri: runs/mlflow}                   # pip install -e '.[mlflow]'; a path = local store

Each trial becomes one W&B run / MLflow run (grouped by the grid's name) with its full FinetuneConfig as
config/params, every reported metric stepped by ``charts/env_steps`` (finetuning env steps) and its final
checkpoint (W&B: the last Tune checkpoint as a ``model`` artifact; MLflow: the trial directory, with
``trial/checkpoint/policy.pt``, as artifacts at the trial's end).  W&B offline runs are kept in the run
directory's ``wandb/`` (``wandb sync`` uploads them later).

Parsing only here (no Ray, no tracker import): ``orchestrator.spec`` calls :func:`parse_tracking` and turns its
``ValueError`` into a ``SpecError``; a missing package is reported then, before any work starts.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Optional

WANDB_MODES = ("online", "offline")


@dataclass(frozen=True)
class WandbSpec:
    project: str = field(metadata={"help": "W&B project"})
    entity: Optional[str] = field(default=None, metadata={"help": "W&B entity (user or team); null: the default"})
    group: Optional[str] = field(default=None, metadata={"help": "W&B group of the runs; null: the grid's name"})
    mode: str = field(default="online", metadata={"help": "online, or offline (runs kept in each trial directory's wandb/, `wandb sync` later)"})
    upload_checkpoints: bool = field(default=True, metadata={"help": "log each trial's final checkpoint as a W&B artifact"})


@dataclass(frozen=True)
class MlflowSpec:
    tracking_uri: str = field(metadata={"help": "MLflow tracking URI (http://..., sqlite:///..., databricks) or a directory for a local store"})
    artifact_location: Optional[str] = field(default=None, metadata={"help": "where a new experiment keeps artifacts; null: DIR/artifacts for a local store, else the server's default"})
    experiment_name: Optional[str] = field(default=None, metadata={"help": "MLflow experiment; null: the grid's name"})
    save_artifact: bool = field(default=True, metadata={"help": "log the trial directory (checkpoint included) as artifacts at the trial's end"})


@dataclass(frozen=True)
class TrackingSpec:
    wandb: Optional[WandbSpec] = field(default=None, metadata={"help": "Weights & Biases, via ray.air.integrations.wandb"})
    mlflow: Optional[MlflowSpec] = field(default=None, metadata={"help": "MLflow, via ray.air.integrations.mlflow"})


def _block(cls, data, path: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {data!r}")
    names = [f.name for f in fields(cls)]
    for k in data:
        if k not in names:
            raise ValueError(f"{path}.{k}: unknown key; allowed keys: {', '.join(names)}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
    if required:
        raise ValueError(f"{path}.{required[0]}: required")
    return data


def _string(value, path: str, optional: bool = False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path}: expected a non-empty string, got {value!r}")
    return value


def _flag(value, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{path}: expected true/false, got {value!r}")
    return value


def _need(module: str, extra: str, path: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{path}: needs the {module} package, which is not installed: pip install -e '.[{extra}]'")


def local_store(uri: str, base_dir: Path) -> tuple[str, Optional[str]]:
    """(tracking URI, artifact location) for ``tracking_uri``.  A plain directory (relative to ``base_dir``) is a
    local store: ``sqlite:///DIR/mlflow.db`` with artifacts in ``DIR/artifacts`` (MLflow 3 refuses its old
    ``file://`` store unless $MLFLOW_ALLOW_FILE_STORE is set; a ``file://`` URI is passed on as given).
    Other URIs pass unchanged, artifacts going where their server says."""
    if "://" in uri or uri.startswith("databricks"):
        return uri, None
    d = (base_dir / os.path.expanduser(uri)).resolve()
    return f"sqlite:///{d / 'mlflow.db'}", (d / "artifacts").as_uri()


def parse_tracking(data, base_dir: Path) -> Optional[TrackingSpec]:
    """Validate a ``tracking:`` mapping (raises ValueError naming the key path)."""
    if data is None:
        return None
    d = _block(TrackingSpec, data, "tracking")
    wandb = mlflow = None
    if d.get("wandb") is not None:
        w = _block(WandbSpec, d["wandb"], "tracking.wandb")
        mode = w.get("mode", "online")
        if mode not in WANDB_MODES:
            raise ValueError(f"tracking.wandb.mode: expected online or offline, got {mode!r}")
        _need("wandb", "wandb", "tracking.wandb")
        wandb = WandbSpec(project=_string(w["project"], "tracking.wandb.project"),
                          entity=_string(w.get("entity"), "tracking.wandb.entity", optional=True),
                          group=_string(w.get("group"), "tracking.wandb.group", optional=True), mode=mode,
                          upload_checkpoints=_flag(w.get("upload_checkpoints", True), "tracking.wandb.upload_checkpoints"))
    if d.get("mlflow") is not None:
        m = _block(MlflowSpec, d["mlflow"], "tracking.mlflow")
        _need("mlflow", "mlflow", "tracking.mlflow")
        uri, artifacts = local_store(_string(m["tracking_uri"], "tracking.mlflow.tracking_uri"), base_dir)
        mlflow = MlflowSpec(tracking_uri=uri, artifact_location=m.get("artifact_location", artifacts),
                            experiment_name=_string(m.get("experiment_name"), "tracking.mlflow.experiment_name", optional=True),
                            save_artifact=_flag(m.get("save_artifact", True), "tracking.mlflow.save_artifact"))
    if wandb is None and mlflow is None:
        return None
    return TrackingSpec(wandb=wandb, mlflow=mlflow)
