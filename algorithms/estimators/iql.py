"""IQL and SARSA advantages: A = Q(s, a) - V(s) from networks pretrained offline (``pretrain-iql``).

IQL needs a checkpoint trained with ``cfg.iql_expectile``; SARSA one trained with expectile 0.5 (mean
regression: the data policy's own Q and V).  With ``cfg.iql_online_updates`` > 0 the networks keep
learning: that many IQL steps on minibatches (``cfg.minibatch_size``) of each new batch, with the
learning rate and target rate they were pretrained with.
"""
from __future__ import annotations

from typing import Optional

import torch

from algorithms import rng
from algorithms.checkpoint import CheckpointError
from algorithms.estimators.base import AdvantageEstimator, Estimate, TrialContext
from algorithms.rollout import Rollout


def required_expectile(cfg, estimator: str) -> float:
    """The expectile ``estimator`` needs its Q/V trained with: 0.5 for sarsa, ``cfg.iql_expectile`` for iql."""
    return 0.5 if estimator == "sarsa" else float(cfg.iql_expectile)


def load_trial_values(cfg, estimator: Optional[str] = None, obs_dim=None, act_dim=None, device="cpu"):
    """Load ``cfg.iql_checkpoint`` for ``estimator`` ("iql" | "sarsa"; default ``cfg.estimator``) and check it fits
    the trial (env, dims, expectile, gamma).  Returns (IQLValues, checkpoint dict); raises CheckpointError or
    ValueError in one line.  Cheap: trials call it before any simulator starts."""
    from algorithms.value_functions import load_iql

    estimator = estimator or cfg.estimator
    if not cfg.iql_checkpoint:
        raise ValueError(f"estimator {estimator} needs --iql-checkpoint (make one with `pretrain-iql`)")
    values, ckpt = load_iql(cfg.iql_checkpoint, obs_dim=obs_dim, act_dim=act_dim, env_id=cfg.env_id,
                            control_mode=cfg.control_mode, device=device)
    trained, want = float(ckpt["config"]["expectile"]), required_expectile(cfg, estimator)
    if abs(trained - want) > 1e-9:
        hint = "SARSA = pretrain-iql --expectile 0.5" if estimator == "sarsa" else f"pretrain-iql --expectile {want:g}"
        raise CheckpointError(f"estimator {estimator} needs Q/V trained with expectile {want:g}, but {cfg.iql_checkpoint} was trained with expectile {trained:g} ({hint})")
    if abs(float(ckpt["config"]["gamma"]) - cfg.gamma) > 1e-9:
        raise CheckpointError(f"{cfg.iql_checkpoint} holds Q/V for gamma={ckpt['config']['gamma']}, the trial uses gamma={cfg.gamma}")
    return values, ckpt


class IQLEstimator(AdvantageEstimator):
    name = "iql"

    def __init__(self, ctx: TrialContext):
        super().__init__(ctx)
        from algorithms.value_functions import IQLLearner

        cfg = self.cfg
        self.values, ckpt = load_trial_values(cfg, self.name, obs_dim=ctx.obs_dim or None, act_dim=ctx.act_dim or None, device=ctx.device)
        self.values.eval()
        self.learner = IQLLearner(self.values, float(ckpt["config"]["expectile"]), cfg.gamma, float(ckpt["config"].get("lr", 3e-4)),
                                  float(ckpt["config"].get("target_update_rate", 0.005)))
        self.gen = torch.Generator().manual_seed(cfg.seed + 7)
        self.checkpoint_sha256 = ckpt["sha256"]

    @torch.no_grad()
    def estimate(self, rollout: Rollout, agent) -> Estimate:
        obs = rollout.flat(rollout.obs).to(self.ctx.device)
        actions = rollout.flat(rollout.actions).to(self.ctx.device)
        shape = rollout.rewards.shape
        q = self.values.q_value(obs, actions).reshape(shape)
        v = self.values.value(obs).reshape(shape)
        adv = q - v
        return Estimate(advantages=adv, q=q, v=v, diagnostics={"charts/q_mean": float(q.mean()), "charts/value_mean": float(v.mean())})

    def after_update(self, rollout: Rollout, estimate: Estimate, agent) -> dict:
        n = self.cfg.iql_online_updates
        if n == 0:
            return {}
        dev = self.ctx.device
        obs = rollout.flat(rollout.obs).to(dev)
        actions = rollout.flat(rollout.actions).to(dev)
        rewards = rollout.flat(rollout.rewards).to(dev).float() * self.cfg.reward_scale
        next_obs = rollout.flat(rollout.next_obs).to(dev)
        terminated = rollout.flat(rollout.terminated).to(dev)
        B = obs.shape[0]
        self.values.train()
        q_losses, v_losses = [], []
        for _ in range(n):
            idx = torch.randint(B, (min(self.cfg.minibatch_size, B),), generator=self.gen).to(dev)
            m = self.learner.update(obs[idx], actions[idx], rewards[idx], next_obs[idx], terminated[idx])
            q_losses.append(m["q_loss"])
            v_losses.append(m["v_loss"])
        self.values.eval()
        return {"losses/q_loss": sum(q_losses) / n, "losses/value_loss": sum(v_losses) / n}

    def state_dict(self) -> dict:
        return {"learner": self.learner.state_dict(), "gen": self.gen.get_state(), "checkpoint_sha256": self.checkpoint_sha256}

    def load_state_dict(self, state: dict) -> None:
        if state.get("checkpoint_sha256") != self.checkpoint_sha256:
            raise CheckpointError(f"the saved {self.name} estimator state was trained from another Q/V checkpoint than {self.cfg.iql_checkpoint}")
        self.learner.load_state_dict(state["learner"])
        rng.restore(self.gen, state["gen"])


class SarsaEstimator(IQLEstimator):
    """IQL with expectile 0.5: on-policy (data-policy) Q and V."""

    name = "sarsa"
