"""Typed configurations of the offline pipeline's commands: ``pretrain`` (the PPO checkpoint ladder) -> ``select``
(start and expert policies) -> ``collect`` (a transition dataset) -> ``pretrain-iql`` / ``pretrain-critic`` (value
networks).  Each field is a CLI flag with its help text.

Kept apart from the modules that run them, and free of torch and the simulator, so that ``--help`` and the
validation of a command's flags load in a fraction of a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from algorithms.config import require_at_least, require_in_range
from envs.config import REWARD_MODES


@dataclass
class PretrainConfig:
    env_id: str = field(default="PickCube-v1", metadata={"help": "ManiSkill task id (a headless variant is built where the stock one cannot render)"})
    control_mode: str = field(default="pd_joint_delta_pos", metadata={"help": "ManiSkill controller, e.g. pd_joint_delta_pos"})
    reward_mode: str = field(default="normalized_dense", metadata={"help": "reward PPO pretrains on (normalized_dense shapes the ladder; sparse is success only)"})
    terminate_on_success: bool = field(default=False, metadata={"help": "end an episode as soon as the task succeeds"})
    bootstrap_terminal: bool = field(default=True, metadata={
        "help": "GAE adds gamma V(final obs) at a success too, as the reference's (ManiSkill's) PPO does; false: a "
                "success is worth its reward alone, which under terminate_on_success pays less than hovering near it"})
    backend: str = field(default="auto", metadata={"help": "simulation backend: auto (gpu when available), gpu or cpu"})
    num_envs: int = field(default=16, metadata={"help": "parallel envs collecting each rollout"})
    num_steps: int = field(default=64, metadata={"help": "steps per env per rollout (batch = num_envs x num_steps)"})
    total_timesteps: int = field(default=3_000_000, metadata={"help": "env steps of the whole run; iterations = total_timesteps // batch"})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate of actor and critic"})
    anneal_lr: bool = field(default=False, metadata={"help": "decay the learning rate linearly to 0 over the run"})
    gamma: float = field(default=0.8, metadata={"help": "discount factor"})
    gae_lambda: float = field(default=0.9, metadata={"help": "lambda of generalised advantage estimation"})
    update_epochs: int = field(default=4, metadata={"help": "passes over each batch per PPO update"})
    num_minibatches: int = field(default=4, metadata={"help": "minibatches per epoch (must divide the batch)"})
    clip_coef: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon"})
    clip_vloss: bool = field(default=False, metadata={"help": "clip the value loss like the policy ratio"})
    ent_coef: float = field(default=0.0, metadata={"help": "weight of the entropy bonus"})
    vf_coef: float = field(default=0.5, metadata={"help": "weight of the value loss"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "gradient norm clip"})
    target_kl: Optional[float] = field(default=0.1, metadata={"help": "stop an update's epochs once approx-KL exceeds this (None: never)"})
    norm_adv: bool = field(default=True, metadata={"help": "normalise advantages per minibatch"})
    eval_every: int = field(default=25, metadata={"help": "iterations between evaluations; each one saves ckpt_<iter>.pt and a ladder.csv row"})
    eval_episodes: int = field(default=128, metadata={"help": "episodes per evaluation (deterministic and stochastic)"})
    eval_seed: int = field(default=10_000, metadata={"help": "first episode seed of every evaluation (the same episodes each time)"})
    seed: int = field(default=1, metadata={"help": "random seed of networks, sampling and env resets"})
    device: str = field(default="cpu", metadata={"help": "torch device of the networks (cpu, cuda, cuda:1, ...)"})
    init_from: Optional[str] = field(default=None, metadata={"help": "start from this policy checkpoint's weights instead of from scratch"})
    init_logstd: Optional[float] = field(default=None, metadata={"help": "set the actor's log-std to this at the start (after --init-from); None keeps it"})
    eval_logstd: Optional[float] = field(default=None, metadata={"help": "stochastic evaluation with the log-std set to this (None: the policy's own); the ladder then shows the noise a start policy will be used at"})
    fix_logstd: bool = field(default=False, metadata={"help": "keep the actor's log-std fixed (no gradient): the policy learns to act well under exactly that noise"})
    out_dir: str = field(default="runs/pretrain", metadata={"help": "folder for ladder.csv, ckpt_<iter>.pt and state.pt (resumed from when present)"})

    def __post_init__(self):
        require_at_least(self, ("num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches", "eval_every", "eval_episodes"), 1)
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError("num_envs * num_steps must be divisible by num_minibatches")

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)


@dataclass
class SelectConfig:
    ladder_dir: str = field(default="runs/pretrain", metadata={"help": "pretraining output with ladder.csv and ckpt_*.pt"})
    out_dir: str = field(default="experiments/checkpoints/pickcube", metadata={"help": "where start.pt, expert.pt and provenance.json go"})
    start_min: float = field(default=0.40, metadata={"help": "lowest deterministic success of the start policy (reference: 43.8%)"})
    start_max: float = field(default=0.50, metadata={"help": "highest deterministic success of the start policy"})
    start_target: float = field(default=0.45, metadata={"help": "candidates are confirmed nearest-first to this ladder success"})
    expert_min: float = field(default=0.95, metadata={"help": "lowest deterministic success of the expert pi*"})
    start_logstds: str = field(default="-1.5,-1.75,-2.0,-2.25,-2.5,-3.0", metadata={
        "help": "actor log-std values tried for the start policy, in order (the reference set -1.5); the first whose "
                "stochastic success is within start_stoch_margin of the deterministic one is kept ('none': keep the ladder's)"})
    start_stoch_margin: float = field(default=0.05, metadata={"help": "stochastic success must be >= deterministic - this"})
    roles: str = field(default="start,expert", metadata={"help": "which policies to select: start,expert | start | expert"})
    confirm_episodes: int = field(default=256, metadata={"help": "episodes of each confirmation (deterministic and stochastic)"})
    eval_seed: int = field(default=20_000, metadata={"help": "first seed of the confirmation episodes"})
    num_envs: int = field(default=16, metadata={"help": "envs evaluating in parallel"})
    backend: str = field(default="auto", metadata={"help": "simulation backend: auto | gpu | cpu"})

    def __post_init__(self):
        if not 0 <= self.start_min < self.start_max <= 1:
            raise ValueError("need 0 <= start_min < start_max <= 1")
        if self.confirm_episodes < 1:
            raise ValueError("confirm_episodes must be >= 1")
        self.logstd_candidates()  # a malformed list fails here, before any simulator starts
        if not self.role_list() or set(self.role_list()) - {"start", "expert"}:
            raise ValueError(f"roles must name start and/or expert, got {self.roles!r}")

    def role_list(self) -> list:
        return [r.strip() for r in self.roles.split(",") if r.strip()]

    def logstd_candidates(self) -> list:
        if self.start_logstds.strip().lower() in ("none", ""):
            return [None]
        try:
            return [float(x) for x in self.start_logstds.split(",")]
        except ValueError:
            raise ValueError(f"start_logstds must be comma-separated numbers or 'none', got {self.start_logstds!r}") from None


@dataclass
class CollectConfig:
    policy: str = field(default="experiments/checkpoints/pickcube/start.pt", metadata={"help": "policy checkpoint that acts (its env id and control mode are used)"})
    out: str = field(default="runs/data/dataset.pt", metadata={"help": "dataset file to write"})
    num_transitions: int = field(default=10_000, metadata={"help": "transitions to collect (rounded up to whole steps of all envs)"})
    num_envs: int = field(default=8, metadata={"help": "parallel envs collecting"})
    seed: int = field(default=1, metadata={"help": "random seed of actions and env resets"})
    save_states: bool = field(default=False, metadata={"help": "also store the simulator state before each action"})
    backend: str = field(default="auto", metadata={"help": "simulation backend: auto (gpu when available), gpu or cpu"})
    deterministic: bool = field(default=False, metadata={"help": "act with the policy mean (no exploration noise)"})
    max_episode_steps: int = field(default=50, metadata={"help": "time limit of an episode (truncation)"})

    def __post_init__(self):
        require_at_least(self, ("num_transitions", "num_envs", "max_episode_steps"), 1)


@dataclass
class IQLPretrainConfig:
    dataset: str = field(default="runs/data/dataset.pt", metadata={"help": "dataset file from `collect`"})
    out: Optional[str] = field(default=None, metadata={"help": "value checkpoint to write (None: runs/values/iql_tau<expectile>_gamma<gamma>.pt)"})
    expectile: float = field(default=0.7, metadata={"help": "tau of V's expectile regression; 0.5 = SARSA"})
    gamma: float = field(default=0.8, metadata={"help": "discount; must equal the finetuning trial's gamma"})
    steps: int = field(default=20_000, metadata={"help": "gradient steps (one minibatch each)"})
    lr: float = field(default=3e-4, metadata={"help": "Adam learning rate"})
    batch_size: int = field(default=256, metadata={"help": "transitions per minibatch"})
    hidden: int = field(default=256, metadata={"help": "width of the Q and V networks' hidden layers"})
    target_update_rate: float = field(default=0.005, metadata={"help": "Polyak rate of the target Q network per step"})
    reward_scale: float = field(default=1.0, metadata={"help": "multiply rewards by this (must match the finetuning trial's reward_scale)"})
    seed: int = field(default=1, metadata={"help": "random seed of network init and minibatch sampling"})
    device: str = field(default="cpu", metadata={"help": "torch device (cpu, cuda, ...)"})

    def __post_init__(self):
        require_in_range(self, "expectile", 0, 1, "()")
        require_in_range(self, "gamma", 0, 1, "(]")
        require_in_range(self, "target_update_rate", 0, 1, "(]")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        require_at_least(self, ("steps", "batch_size", "hidden"), 1)
        if self.out is None:
            self.out = f"runs/values/iql_tau{self.expectile:g}_gamma{self.gamma:g}.pt"


@dataclass
class CriticPretrainConfig:
    policy: str = field(default="experiments/checkpoints/pickcube/expert.pt", metadata={"help": "policy whose discounted returns V is fitted to"})
    out: Optional[str] = field(default=None, metadata={"help": "value checkpoint to write (None: runs/values/critic_gamma<gamma>_<reward_mode>.pt)"})
    gamma: float = field(default=0.8, metadata={"help": "discount of the fitted returns; must equal the finetuning trial's gamma"})
    reward_mode: str = field(default="sparse", metadata={"help": "reward the returns are computed from (sparse, as in finetuning)"})
    num_envs: int = field(default=8, metadata={"help": "parallel envs running the policy"})
    num_steps: int = field(default=200, metadata={"help": "steps per env; steps of episodes still running at the end have no return and are dropped"})
    max_episode_steps: int = field(default=50, metadata={"help": "time limit of an episode (truncation)"})
    deterministic: bool = field(default=False, metadata={"help": "act with the policy mean"})
    steps: int = field(default=5_000, metadata={"help": "gradient steps (one minibatch each)"})
    lr: float = field(default=3e-4, metadata={"help": "Adam learning rate"})
    batch_size: int = field(default=256, metadata={"help": "transitions per minibatch"})
    seed: int = field(default=1, metadata={"help": "random seed of network init and minibatch sampling"})
    backend: str = field(default="auto", metadata={"help": "simulation backend: auto (gpu when available), gpu or cpu"})
    device: str = field(default="cpu", metadata={"help": "torch device (cpu, cuda, ...)"})

    def __post_init__(self):
        require_in_range(self, "gamma", 0, 1, "(]")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"unknown reward_mode {self.reward_mode!r}; choose one of {', '.join(REWARD_MODES)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        require_at_least(self, ("num_envs", "num_steps", "max_episode_steps", "steps", "batch_size"), 1)
        if self.out is None:
            self.out = f"runs/values/critic_gamma{self.gamma:g}_{self.reward_mode}.pt"
