"""IQL and SARSA advantages: A = Q(s, a) - V(s) from networks pretrained offline (``pretrain-iql``).

IQL needs a checkpoint trained with ``cfg.iql_expectile``; SARSA one trained with expectile 0.5 (mean
regression: the data policy's own Q and V).  With ``cfg.iql_online_updates`` > 0 the networks keep
learning: that many IQL steps on minibatches (``cfg.minibatch_size``) of each new batch, with the
learning rate and target rate they were pretrained with.
"""
from __future__ import annotations

import torch

from algorithms.checkpoint import CheckpointError
from algorithms.estimators.base import AdvantageEstimator, Estimate, TrialContext
from algorithms.rollout import Rollout


class IQLEstimator(AdvantageEstimator):
    name = "iql"

    def required_expectile(self) -> float:
        return self.cfg.iql_expectile

    def __init__(self, ctx: TrialContext):
        super().__init__(ctx)
        from algorithms.value_functions import IQLLearner, load_iql

        cfg = self.cfg
        if not cfg.iql_checkpoint:
            raise ValueError(f"estimator {self.name} needs --iql-checkpoint (make one with `pretrain-iql`)")
        self.values, ckpt = load_iql(cfg.iql_checkpoint, obs_dim=ctx.obs_dim or None, act_dim=ctx.act_dim or None,
                                     env_id=cfg.env_id, control_mode=cfg.control_mode, device=ctx.device)
        trained = float(ckpt["config"]["expectile"])
        want = self.required_expectile()
        if abs(trained - want) > 1e-9:
            hint = " (SARSA = pretrain-iql --expectile 0.5)" if self.name == "sarsa" else f" (pretrain-iql --expectile {want:g})"
            raise CheckpointError(f"estimator {self.name} needs Q/V trained with expectile {want:g}, but {cfg.iql_checkpoint} was trained with expectile {trained:g}{hint}")
        if abs(float(ckpt["config"]["gamma"]) - cfg.gamma) > 1e-9:
            raise CheckpointError(f"{cfg.iql_checkpoint} holds Q/V for gamma={ckpt['config']['gamma']}, the trial uses gamma={cfg.gamma}")
        self.values.eval()
        self.learner = IQLLearner(self.values, trained, cfg.gamma, float(ckpt["config"].get("lr", 3e-4)),
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
        self.gen.set_state(state["gen"])


class SarsaEstimator(IQLEstimator):
    """IQL with expectile 0.5: on-policy (data-policy) Q and V."""

    name = "sarsa"

    def required_expectile(self) -> float:
        return 0.5
