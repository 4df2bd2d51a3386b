"""Offline transition datasets: collected with a policy on the sparse-reward task, stored as a checkpoint
of ``kind="dataset"`` (so they are hash-checked like every other artefact), loaded as a torch Dataset.

Tensors of a dataset file (M transitions, in time-major order of collection: row t * num_envs + n):
obs [M, obs_dim], actions [M, act_dim], logprobs [M] (behaviour log pi(a|s)), rewards [M],
next_obs [M, obs_dim] (true successor, before auto-reset), terminated [M], truncated [M] (bool),
and with ``save_states`` also ``states.sim`` [M, state_dim], ``states.elapsed`` [M] (state before the action).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from algorithms.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from algorithms.pipeline_config import CollectConfig
from algorithms.rollout import Rollout

DATASET_KEYS = ("obs", "actions", "logprobs", "rewards", "next_obs", "terminated", "truncated")
STATE_KEYS = ("states.sim", "states.elapsed")


def rollout_transitions(rollout: Rollout, limit: Optional[int] = None) -> dict:
    """A rollout's [T, N] tensors flattened time-major into the dataset layout, first ``limit`` rows."""
    out = {k: rollout.flat(getattr(rollout, k)).cpu() for k in DATASET_KEYS}
    if rollout.states is not None:
        out["states.sim"] = rollout.flat(rollout.states.sim).cpu()
        out["states.elapsed"] = rollout.flat(rollout.states.elapsed).cpu()
    if limit is not None:
        out = {k: v[:limit] for k, v in out.items()}
    return out


def save_dataset(path, transitions: dict, *, env_id: str, control_mode: str, config: Optional[dict] = None,
                 metrics: Optional[dict] = None) -> str:
    """Validate the layout and write; returns the dataset's sha256."""
    _check_layout(transitions, str(path))
    obs_dim, act_dim = transitions["obs"].shape[1], transitions["actions"].shape[1]
    return save_checkpoint(path, transitions, kind="dataset", obs_dim=obs_dim, act_dim=act_dim, env_id=env_id,
                           control_mode=control_mode, config=config, metrics=metrics)


def _check_layout(t: dict, where: str) -> None:
    missing = [k for k in DATASET_KEYS if k not in t]
    if missing:
        raise CheckpointError(f"dataset {where} lacks the tensors {', '.join(missing)}")
    if ("states.sim" in t) != ("states.elapsed" in t):
        raise CheckpointError(f"dataset {where} has only one of {', '.join(STATE_KEYS)}")
    m = t["obs"].shape[0]
    bad = [f"{k}: {t[k].shape[0]}" for k in t if t[k].shape[0] != m]
    if bad:
        raise CheckpointError(f"dataset {where} has {m} observations but other row counts ({', '.join(bad)})")
    if t["obs"].ndim != 2 or t["next_obs"].shape != t["obs"].shape or t["actions"].ndim != 2:
        raise CheckpointError(f"dataset {where} has obs {tuple(t['obs'].shape)}, next_obs {tuple(t['next_obs'].shape)}, actions {tuple(t['actions'].shape)}: expected [M, obs_dim], [M, obs_dim], [M, act_dim]")
    for k in ("terminated", "truncated"):
        if t[k].dtype != torch.bool:
            raise CheckpointError(f"dataset {where}: {k} must be bool, got {t[k].dtype}")


class TransitionDataset(torch.utils.data.Dataset):
    """A dataset file, validated (kind, hash, layout, and the expected dims/env where given).

    ``tensors``: the name -> tensor dict above; ``item i``: the same names -> row i.
    ``sha256``: the content hash (recorded by whatever is trained on it)."""

    def __init__(self, path, *, obs_dim: Optional[int] = None, act_dim: Optional[int] = None,
                 env_id: Optional[str] = None, control_mode: Optional[str] = None):
        ckpt = load_checkpoint(path, kind="dataset", obs_dim=obs_dim, act_dim=act_dim, env_id=env_id, control_mode=control_mode)
        _check_layout(ckpt["model"], str(path))
        if ckpt["model"]["obs"].shape[1] != ckpt["obs_dim"] or ckpt["model"]["actions"].shape[1] != ckpt["act_dim"]:
            raise CheckpointError(f"dataset {path} records obs_dim={ckpt['obs_dim']}, act_dim={ckpt['act_dim']} but holds obs {tuple(ckpt['model']['obs'].shape)}, actions {tuple(ckpt['model']['actions'].shape)}")
        self.path = Path(path)
        self.tensors: dict = ckpt["model"]
        self.sha256: str = ckpt["sha256"]
        self.obs_dim, self.act_dim = ckpt["obs_dim"], ckpt["act_dim"]
        self.env_id, self.control_mode = ckpt["env_id"], ckpt["control_mode"]
        self.config, self.metrics = ckpt["config"], ckpt["metrics"]

    @property
    def has_states(self) -> bool:
        return "states.sim" in self.tensors

    def __len__(self) -> int:
        return self.tensors["obs"].shape[0]

    def __getitem__(self, i) -> dict:
        return {k: v[i] for k, v in self.tensors.items()}


def collect_dataset(cfg: CollectConfig, progress: bool = False) -> str:
    """Run the policy ``cfg.policy`` on the sparse-reward task for ``cfg.num_transitions`` transitions
    (``num_envs`` envs, auto-reset, seeds ``seed * 1_000_003 + i``) and write ``cfg.out``; returns its sha256."""
    from tqdm import tqdm

    from algorithms.checkpoint import check_policy_fits, load_policy, policy_task
    from algorithms.rollout import collect_rollout
    from envs.config import EnvConfig
    from envs.vector import make_vector_env

    # checked before any simulator starts
    agent, pck = load_policy(cfg.policy)
    label = f"policy {cfg.policy}"
    env_id, control_mode = policy_task(pck, label, "save it with save_policy first")
    agent.eval()
    env_cfg = EnvConfig(env_id, cfg.num_envs, control_mode, "sparse", max_episode_steps=cfg.max_episode_steps, backend=cfg.backend)
    steps = math.ceil(cfg.num_transitions / cfg.num_envs)
    chunk = 25  # rollout pieces, so the progress bar moves; the env keeps running between pieces
    gen = torch.Generator().manual_seed(cfg.seed)
    parts = []
    with make_vector_env(env_cfg) as venv, tqdm(total=steps * cfg.num_envs, desc="collect", unit="tr", disable=not progress) as bar:
        check_policy_fits(pck, label, env_id, venv)
        obs = venv.reset(seed=cfg.seed * 1_000_003)
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            ro = collect_rollout(agent, venv, obs, n, torch.device("cpu"), save_states=cfg.save_states,
                                 deterministic=cfg.deterministic, generator=gen)
            parts.append(rollout_transitions(ro))
            obs = ro.last_obs
            done += n
            bar.update(n * cfg.num_envs)
        backend = venv.backend
    t = {k: torch.cat([p[k] for p in parts])[: cfg.num_transitions] for k in parts[0]}
    ends = t["terminated"] | t["truncated"]
    metrics = {
        "num_transitions": int(t["obs"].shape[0]),
        "episodes_ended": int(ends.sum()),
        "successes": int(t["terminated"].sum()),
        "success_per_episode": float(t["terminated"].sum() / ends.sum().clamp(min=1)),
        "mean_reward": float(t["rewards"].mean()),
    }
    config = dict(asdict(cfg), backend=backend, reward_mode="sparse", policy_sha256=pck["sha256"])
    return save_dataset(cfg.out, t, env_id=env_id, control_mode=control_mode, config=config, metrics=metrics)
