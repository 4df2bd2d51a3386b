"""One trial's configuration: every hyperparameter of every estimator and update rule, flat and typed.

Flat on purpose: each field is a CLI flag (``--mc-samples``), a Tune config key, and a column of the
analysis frame.  Fields prefixed ``gae_``/``mc_``/``iql_``/``awr_``/``recap_``/``ppo_`` belong to that part.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional

MC_POLICIES = ("expert", "current")


def require_at_least(cfg, names, low: int) -> None:
    """Each named field of a config dataclass must be >= ``low``; one ValueError line naming the first that is not."""
    for name in names:
        if getattr(cfg, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(cfg, name)}")


@dataclass
class FinetuneConfig:
    # what to finetune
    estimator: str = field(default="gae", metadata={"help": "advantage estimator: gae | mc | iql | sarsa"})
    update: str = field(default="ppo", metadata={"help": "policy update rule: ppo | awr | recap"})
    env_id: str = "PickCube-v1"
    control_mode: str = "pd_joint_delta_pos"
    start_checkpoint: str = field(default="experiments/checkpoints/pickcube/start.pt", metadata={"help": "policy to finetune"})
    expert_checkpoint: str = field(default="experiments/checkpoints/pickcube/expert.pt", metadata={"help": "pi* for MC re-rollouts (mc_policy=expert)"})
    seed: int = 1
    backend: str = "auto"
    device: str = "auto"  # torch device for the networks: auto = cuda if available

    # budget and protocol
    num_envs: int = 8
    num_steps: int = 50
    num_iterations: int = 10
    gamma: float = 0.8
    reward_scale: float = 1.0
    eval_every: int = 1
    num_eval_episodes: int = 128
    eval_seed: int = 10_000
    eval_stochastic: bool = True

    # shared optimisation (SPEC.md)
    learning_rate: float = 3e-4
    adam_eps: float = 1e-5
    max_grad_norm: float = 0.5
    minibatch_size: int = 32
    update_epochs: int = 4
    ent_coef: float = 0.0

    # PPO
    ppo_clip: float = 0.2
    ppo_norm_adv: bool = True
    target_kl: Optional[float] = 100.0

    # AWR / RECAP
    awr_beta: float = 1.0
    awr_max_weight: float = 20.0
    recap_alpha: float = 1.0
    recap_nll_clip: float = 5.0  # guard: the push-away term only acts while -log pi(a|s) < this bound
    recap_min_logstd: float = -5.0  # guard: actor log-std never pushed below this

    # GAE
    gae_lambda: float = 0.9
    gae_critic_checkpoint: Optional[str] = field(default=None, metadata={"help": "value checkpoint (pretrain-critic) to initialise the critic"})
    gae_critic_lr: float = 3e-4
    gae_critic_epochs: int = 4
    gae_value_coef: float = 0.5

    # Monte-Carlo re-rollouts
    mc_samples: int = 5
    mc_policy: str = "expert"
    mc_deterministic: bool = False
    mc_horizon: Optional[int] = None  # cut re-rollouts after this many steps (None: run to episode end)
    mc_tolerance: Optional[float] = None  # or: cut where gamma^H < tolerance
    mc_workers: int = 8  # re-rollout env slots (cpu: packed into at most one worker process per trial CPU)

    # IQL / SARSA
    iql_checkpoint: Optional[str] = field(default=None, metadata={"help": "Q/V checkpoint from pretrain-iql (sarsa: expectile 0.5)"})
    iql_expectile: float = 0.7
    iql_online_updates: int = 0  # gradient steps on Q/V per iteration with the new data (0: frozen)

    # estimator quality (optional, costly): compare against MC with many expert samples
    quality_every: int = 0
    quality_samples: int = 16

    def __post_init__(self):
        from algorithms.estimators import ESTIMATORS
        from algorithms.updates import UPDATES

        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.update not in UPDATES:
            raise ValueError(f"unknown update rule {self.update!r}; choose one of {', '.join(UPDATES)}")
        if self.mc_policy not in MC_POLICIES:
            raise ValueError(f"unknown mc_policy {self.mc_policy!r}; choose one of {', '.join(MC_POLICIES)}")
        require_at_least(self, ("num_envs", "num_steps", "num_iterations", "eval_every", "num_eval_episodes", "minibatch_size",
                                "update_epochs", "mc_samples", "mc_workers", "quality_samples"), 1)
        require_at_least(self, ("gae_critic_epochs", "iql_online_updates", "quality_every"), 0)
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.awr_beta <= 0:
            raise ValueError(f"awr_beta must be > 0, got {self.awr_beta}")
        if self.mc_horizon is not None and self.mc_horizon < 1:
            raise ValueError(f"mc_horizon must be >= 1, got {self.mc_horizon}")
        if self.mc_tolerance is not None and not 0 < self.mc_tolerance < 1:
            raise ValueError(f"mc_tolerance must be in (0, 1), got {self.mc_tolerance}")
        if not 0 < self.iql_expectile < 1:
            raise ValueError(f"iql_expectile must be in (0, 1), got {self.iql_expectile}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps
