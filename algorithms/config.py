"""One trial's configuration: every hyperparameter of every estimator and update rule, flat and typed.

Flat on purpose: each field is a CLI flag (``--mc-samples``), a Tune config key, and a column of the
analysis frame.  Fields prefixed ``gae_``/``td_``/``mc_``/``iql_``/``awr_``/``recap_``/``ppo_`` belong to that
part.  Where this platform and the reference code (zyc00/OfflineRLPlayGround) differ, the field says so and
its reference value is one setting away (``experiments/seed-v2.yaml`` uses the reference's values).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional

MC_POLICIES = ("expert", "current")
MC_Q_SCHEMES = ("rerollout", "transition")
MC_TIME_LIMITS = ("reset", "restore")
CRITIC_TRAINING = ("joint", "separate")
ROLLOUT_RESETS = ("iteration", "once")
EVAL_PROTOCOLS = ("episodes", "reference")
QUALITY_MODES = ("batch", "actions")


def require_at_least(cfg, names, low: int) -> None:
    """Each named field of a config dataclass must be >= ``low``; one ValueError line naming the first that is not."""
    for name in names:
        if getattr(cfg, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(cfg, name)}")


def require_in_range(cfg, name: str, low: float, high: float, closed: str = "(]") -> None:
    """The named field must lie between ``low`` and ``high``; ``closed`` gives the interval's brackets, "(]" = (low, high]."""
    value = getattr(cfg, name)
    above = value >= low if closed[0] == "[" else value > low
    below = value <= high if closed[1] == "]" else value < high
    if not (above and below):
        raise ValueError(f"{name} must be in {closed[0]}{low:g}, {high:g}{closed[1]}, got {value}")


def require_choice(cfg, name: str, choices) -> None:
    if getattr(cfg, name) not in choices:
        raise ValueError(f"unknown {name} {getattr(cfg, name)!r}; choose one of {', '.join(choices)}")


def h(default, text: str):
    """A field with its one-line ``--help`` text (CleanRL's habit: the declaration documents the flag)."""
    return field(default=default, metadata={"help": text})


@dataclass
class FinetuneConfig:
    # what to finetune
    estimator: str = h("gae", "advantage estimator: gae | td | mc | iql | sarsa | uniform (zero advantages: the self-cloning diagnostic)")
    update: str = h("ppo", "policy update rule: ppo | awr | recap")
    cell: str = h("", "the cell's label in a grid (e.g. mc16-expert+awr); empty: estimator+update")
    env_id: str = h("PickCube-v1", "ManiSkill task id (state observations)")
    control_mode: str = h("pd_joint_delta_pos", "ManiSkill controller the policies act through")
    start_checkpoint: str = h("experiments/checkpoints/pickcube/start.pt", "policy to finetune")
    start_logstd: Optional[float] = h(None, "set the start policy's log-std to this on every action dim before finetuning "
                                      "(the reference: -1.5, its ckpt_76_logstd-1.5); null keeps the checkpoint's")
    expert_checkpoint: str = h("experiments/checkpoints/pickcube/expert.pt", "pi* for MC re-rollouts (mc_policy=expert) and the quality probe")
    expert_logstd: Optional[float] = h(None, "set pi*'s log-std to this on every action dim, for its re-rollouts and the quality probe "
                                       "(an ablation: a noisier, less forgiving pi*); null keeps the checkpoint's, as the reference")
    seed: int = h(1, "seeds the networks' sampling, minibatch order and every env reset of the trial")
    backend: str = h("auto", "simulation backend: auto (gpu if CUDA and SAPIEN's GPU PhysX exist) | gpu | cpu")
    device: str = h("auto", "torch device for the networks: auto = cuda if available, else cpu")

    # budget and protocol
    num_envs: int = h(8, "parallel envs per rollout (reference V2: 100)")
    num_steps: int = h(50, "steps per env per rollout; batch = num_envs * num_steps transitions (reference V2: 50)")
    num_iterations: int = h(10, "rollout -> estimate -> update iterations (reference V2: 10)")
    gamma: float = h(0.8, "discount factor")
    reward_scale: float = h(1.0, "multiplier on the sparse reward before any estimator sees it")
    rollout_reset: str = h("iteration", "iteration: every iteration starts fresh episodes from distinct seeded resets; "
                                        "once: reset at the first iteration only and carry episodes across iterations (reference)")
    offline: bool = h(False, "offline regime: collect one batch with the start policy, estimate it once, and train on it every iteration")
    eval_every: int = h(1, "evaluate every this many iterations (and always after the last)")
    num_eval_episodes: int = h(128, "evaluation episodes per evaluation (reference: 128)")
    eval_seed: int = h(10_000, "first reset seed of the fixed evaluation episodes")
    eval_stochastic: bool = h(True, "also evaluate the stochastic policy (reported as eval/success_rate_stochastic)")
    eval_protocol: str = h("episodes", "episodes: num_eval_episodes whole episodes from fixed seeds; reference: num_eval_episodes envs run "
                                       "max_episode_steps steps with auto-reset, counting the episodes that end (the reference code's count)")

    # shared optimisation (SPEC.md)
    learning_rate: float = h(3e-4, "Adam learning rate of the update rule (and of a joint critic)")
    adam_eps: float = h(1e-5, "Adam epsilon")
    max_grad_norm: float = h(0.5, "gradient-norm clip per optimiser step (over actor and critic together when critic_training=joint)")
    num_minibatches: Optional[int] = h(None, "minibatches per epoch; minibatch = batch // num_minibatches (reference semantics; V2: 5); "
                                             "unset: minibatches of minibatch_size")
    minibatch_size: int = h(32, "transitions per minibatch when num_minibatches is unset")
    update_epochs: int = h(4, "passes over the batch per update (reference V2: PPO 100, AWR 200)")
    ent_coef: float = h(0.0, "entropy bonus coefficient")
    critic_training: str = h("joint", "joint: the update rule adds gae_value_coef * value loss and steps actor and critic with one Adam and one "
                                      "grad-norm clip (reference); separate: the estimator fits its critic after the update with its own Adam")

    # PPO
    ppo_clip: float = h(0.2, "PPO ratio clip")
    ppo_norm_adv: bool = h(True, "normalise advantages per minibatch (reference)")
    target_kl: Optional[float] = h(100.0, "stop the update once a minibatch's approx KL exceeds this (reference V2: 100, i.e. off)")

    # AWR / RECAP
    awr_beta: float = h(1.0, "AWR temperature: w = exp(A_n / beta) (reference V2: 0.5)")
    awr_max_weight: float = h(20.0, "AWR/RECAP weight clamp w_max")
    awr_norm_adv: bool = h(True, "normalise advantages over the whole batch before weighting: A_n = (A - mean) / (std + 1e-8) (reference)")
    advantage_detrend: bool = h(False, "ablation: subtract from the advantages their least-squares line on the estimator's V(s_t) over the batch, so "
                                       "weights compare actions, not states (estimators with V: gae, td, mc, iql, sarsa; reference: false)")
    awr_mb_renorm: bool = h(True, "re-normalise weights to mean 1 within each minibatch (RECAP: within each set) (reference)")
    recap_alpha: float = h(1.0, "weight of RECAP's push-away (negative) loss; 0 = AWR on the positives only")
    recap_nll_clip: Optional[float] = h(5.0, "guard: a negative's push-away term stops acting once -log pi(a|s) exceeds this (null: no guard, as the reference)")
    recap_min_logstd: Optional[float] = h(-5.0, "guard: actor log-std never pushed below this (null: no guard, as the reference)")

    # critic of GAE / TD(N)
    gae_lambda: float = h(0.9, "GAE lambda")
    gae_critic_checkpoint: Optional[str] = h(None, "value checkpoint (pretrain-critic) to initialise the critic")
    gae_reset_critic: bool = h(True, "without gae_critic_checkpoint: start from a fresh critic (reference) instead of the start policy's own "
                                      "critic (fitted to the dense pretraining reward)")
    gae_warmup_iters: int = h(0, "first iterations that train only the critic, no policy update (reference warmup_iters)")
    gae_critic_pretrain_epochs: int = h(0, "critic-only epochs on each batch before the update, advantages recomputed after (reference critic_pretrain_epochs)")
    gae_critic_lr: float = h(3e-4, "critic Adam learning rate when critic_training=separate")
    gae_critic_epochs: int = h(4, "critic epochs after each update when critic_training=separate")
    gae_value_coef: float = h(0.5, "value-loss coefficient: loss += coef * 0.5 * (V - target)^2 (reference vf_coef)")
    td_n: int = h(20, "TD(N) estimator: N-step returns bootstrapped with the critic")
    critic_bootstrap_terminal: bool = h(False, "GAE / TD(N): bootstrap V(final obs) at a termination too, as at a time limit (reference: true, "
                                               "its ppo_finetune adds V(final obs) at every episode end); false: a terminal state is worth 0")

    # Monte-Carlo re-rollouts
    mc_samples: int = h(5, "re-rollouts per estimate (M): Q and V each")
    mc_policy: str = h("expert", "re-rollout policy: expert (pi*, needs expert_checkpoint) | current (the policy being finetuned)")
    mc_q: str = h("rerollout", "rerollout: Q(s_t,a_t) from M re-rollouts that restore s_t and execute a_t (reference); "
                               "transition: Q = r_t + gamma V(s_t+1) from the rollout's own transition (exact only for deterministic dynamics)")
    mc_time_limit: str = h("reset", "reset: each re-rollout gets a whole episode's steps (elapsed counter 0, reference); "
                                    "restore: the rollout's remaining steps (finite-horizon values)")
    mc_deterministic: bool = h(False, "re-rollout policy acts with its mean instead of sampling")
    mc_horizon: Optional[int] = h(None, "cut re-rollouts after this many steps (null: run to the episode's end)")
    mc_tolerance: Optional[float] = h(None, "or cut where gamma^H < this tolerance (reports the bias bound)")
    mc_workers: int = h(8, "re-rollout env slots (cpu backend: packed into at most one worker process per trial CPU)")
    rollout_in_workers: bool = h(True, "cpu backend: collect each rollout inside the env worker processes (a copy of the actor in each, "
                                 "no driver round trip per step); false: the driver steps all envs in lockstep. Changes only the random stream")
    eval_in_workers: bool = h(True, "cpu backend, eval_protocol episodes: run each evaluation episode inside an env worker process (a copy "
                              "of the actor, no driver round trip per step); deterministic results are those of the lockstep path")
    mc_in_workers: bool = h(True, "cpu backend: run the re-rollouts inside the env worker processes (a copy of the policy in each, "
                            "no driver round trip per step); false: the driver steps all slots in lockstep. Changes only the random stream")

    # IQL / SARSA
    iql_checkpoint: Optional[str] = h(None, "Q/V checkpoint from pretrain-iql (sarsa: expectile 0.5)")
    iql_expectile: float = h(0.7, "expectile the IQL Q/V were trained with (sarsa: 0.5)")
    iql_online_updates: int = h(0, "gradient steps on Q/V per iteration with the new data (0: frozen)")

    # estimator quality (optional, costly): compare against MC with many expert samples
    quality_every: int = h(0, "score the advantages against an MC oracle at iterations 1, 1 + this, 1 + 2 * this, ... (0: never)")
    quality_samples: int = h(16, "re-rollouts per state of the quality oracle")
    quality_policy: str = h("expert", "the quality oracle's re-rollout policy: expert (the advantage of pi*) | current (the rollout "
                            "policy's own advantage, the quantity GAE, TD(N) and on-policy MC estimate)")
    quality_envs: Optional[int] = h(None, "score only the first this many envs' transitions of the batch (the oracle's cost grows with them; null: all)")
    quality_mode: str = h("batch", "batch: the batch's advantages vs the oracle's on the same transitions (rank over all of them); actions: the "
                          "reference's action-ranking analysis (methods/gae/rank_*.py): per state, rank of quality_actions sampled actions, "
                          "each scored on quality_samples re-rollouts that start with it")
    quality_states: int = h(16, "quality_mode=actions: states of the batch (of its first quality_envs envs) to rank actions at")
    quality_actions: int = h(8, "quality_mode=actions: actions sampled from the rollout policy per state (reference K = 8)")

    def __post_init__(self):
        from algorithms.estimators import ESTIMATORS
        from algorithms.updates import UPDATES

        require_choice(self, "estimator", ESTIMATORS)
        require_choice(self, "update", UPDATES)
        for name, choices in (("mc_policy", MC_POLICIES), ("quality_policy", MC_POLICIES), ("mc_q", MC_Q_SCHEMES), ("mc_time_limit", MC_TIME_LIMITS),
                              ("critic_training", CRITIC_TRAINING), ("rollout_reset", ROLLOUT_RESETS), ("eval_protocol", EVAL_PROTOCOLS),
                              ("quality_mode", QUALITY_MODES)):
            require_choice(self, name, choices)
        require_at_least(self, ("num_envs", "num_steps", "num_iterations", "eval_every", "num_eval_episodes", "minibatch_size",
                                "update_epochs", "mc_samples", "mc_workers", "quality_samples", "td_n", "quality_states"), 1)
        require_at_least(self, ("quality_actions",), 2)
        if self.quality_every and self.quality_mode == "actions" and self.estimator == "mc" and self.mc_q != "rerollout":
            raise ValueError("quality_mode=actions scores an MC estimator by its own Q re-rollouts of each sampled action: it needs mc_q=rerollout")
        if self.quality_envs is not None and self.quality_envs < 1:
            raise ValueError(f"quality_envs must be >= 1, got {self.quality_envs}")
        require_at_least(self, ("gae_critic_epochs", "iql_online_updates", "quality_every", "gae_warmup_iters", "gae_critic_pretrain_epochs"), 0)
        if self.num_minibatches is not None and not 1 <= self.num_minibatches <= self.batch_size:
            raise ValueError(f"num_minibatches must be in [1, num_envs * num_steps = {self.batch_size}], got {self.num_minibatches}")
        require_in_range(self, "gamma", 0, 1, "(]")
        require_in_range(self, "gae_lambda", 0, 1, "[]")
        if self.advantage_detrend and self.estimator == "uniform":
            raise ValueError("advantage_detrend needs an estimator with V(s) (gae, td, mc, iql, sarsa), not uniform")
        if self.awr_beta <= 0:
            raise ValueError(f"awr_beta must be > 0, got {self.awr_beta}")
        if self.mc_horizon is not None and self.mc_horizon < 1:
            raise ValueError(f"mc_horizon must be >= 1, got {self.mc_horizon}")
        if self.mc_tolerance is not None:
            require_in_range(self, "mc_tolerance", 0, 1, "()")
        require_in_range(self, "iql_expectile", 0, 1, "()")
        if self.offline and self.rollout_reset == "once":
            raise ValueError("offline collects one batch: rollout_reset=once has no meaning there; use rollout_reset=iteration")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def effective_minibatch_size(self) -> int:
        """Transitions per minibatch: batch // num_minibatches (the reference's rule) or minibatch_size."""
        if self.num_minibatches is not None:
            return max(1, self.batch_size // self.num_minibatches)
        return self.minibatch_size

    @property
    def label(self) -> str:
        return self.cell or f"{self.estimator}+{self.update}"
