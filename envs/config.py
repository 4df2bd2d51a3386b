"""Typed environment configuration, validated once."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from envs.backend import BACKENDS

REWARD_MODES = ("sparse", "dense", "normalized_dense", "none")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which container and batch-job CPU limits set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class EnvConfig:
    """What to simulate and how.

    ``env_id`` is the stock ManiSkill id (e.g. ``PickCube-v1``); the headless variant is chosen
    automatically on machines that cannot render.  ``backend`` is resolved once by
    :func:`envs.backend.resolve_backend`.
    """

    env_id: str = field(default="PickCube-v1", metadata={"help": "stock ManiSkill task id (state observations)"})
    num_envs: int = field(default=8, metadata={"help": "envs stepped as one batch"})
    control_mode: str = field(default="pd_joint_delta_pos", metadata={"help": "ManiSkill controller"})
    reward_mode: str = field(default="sparse", metadata={"help": "sparse | dense | normalized_dense | none"})
    max_episode_steps: int = field(default=50, metadata={"help": "time limit: an episode is truncated after this many steps"})
    backend: str = field(default="auto", metadata={"help": "auto | gpu | cpu simulation"})
    autoreset: bool = field(default=True, metadata={"help": "a finished env starts its next episode at once (partial auto-reset)"})
    # False: success does not end the episode (it runs to the time limit).  Dense-reward PPO needs this:
    # with gamma 0.8, hovering near the goal for the shaped reward is worth more than the one success reward,
    # so a policy for which success is terminal learns to avoid succeeding.
    terminate_on_success: bool = field(default=True, metadata={"help": "success ends the episode"})
    num_workers: Optional[int] = field(default=None, metadata={"help": (
        "cpu backend: worker processes hosting the envs (None: the CPUs this process may run on); "
        "results do not depend on it")})
    fork_workers: bool = field(default=True, metadata={"help": (
        "cpu backend: fork the workers from one process that imported torch, SAPIEN and ManiSkill, so they share "
        "those imports' memory (false: each worker starts its own interpreter)")})

    def __post_init__(self):
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.num_workers is not None and self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"unknown reward_mode {self.reward_mode!r}; choose one of {', '.join(REWARD_MODES)}")

    def resolved_workers(self) -> int:
        """Worker processes of the cpu backend: ``num_workers`` or the CPUs granted, at most one per env."""
        return min(self.num_envs, self.num_workers or available_cpus())

    def replace(self, **changes) -> "EnvConfig":
        d = asdict(self)
        d.update(changes)
        return EnvConfig(**d)

    def to_dict(self) -> dict:
        return asdict(self)
