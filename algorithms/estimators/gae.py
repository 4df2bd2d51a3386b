"""Generalised advantage estimation with an online critic (SPEC.md: lambda 0.9, truncation vs termination)."""
from __future__ import annotations

import torch

from algorithms.estimators.base import AdvantageEstimator, Estimate, TrialContext
from algorithms.rollout import Rollout
from algorithms.updates.base import mean_of, shuffled_minibatches


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
):
    """All inputs [T, N].  ``next_values`` = V(true successor) (zeroed by ``terminated``);
    ``dones`` (terminated | truncated) cut the recursion, so a truncated episode bootstraps from V(final obs)
    and a terminated one from 0.  Returns (advantages [T, N], returns = advantages + values [T, N])."""
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    notterm = (~terminated).float()
    notdone = (~dones).float()
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * next_values[t] * notterm[t] - values[t]
        last = delta + gamma * lam * notdone[t] * last
        adv[t] = last
    return adv, adv + values


class GAEEstimator(AdvantageEstimator):
    """GAE with the agent's own critic, trained online on each batch's lambda-returns.

    The critic may be initialised from a value checkpoint (``pretrain-critic``) via ``gae_critic_checkpoint``.
    """

    name = "gae"

    def __init__(self, ctx: TrialContext):
        super().__init__(ctx)
        self._optimizer = None
        self._initialised = False
        self._resumed = False
        self._pending_state = None

    def _setup(self, agent):
        if self._initialised:
            return
        self._initialised = True
        if self.cfg.gae_critic_checkpoint:
            from algorithms.value_functions import load_critic_into

            load_critic_into(agent, self.cfg.gae_critic_checkpoint, obs_dim=self.ctx.obs_dim)
        elif not self._resumed:
            # the start policy's critic was fitted to the dense pretraining reward: start from a fresh one
            from algorithms.agent import mlp

            agent.critic = mlp(self.ctx.obs_dim, 1, out_std=1.0).to(self.ctx.device)
        self._optimizer = torch.optim.Adam(agent.critic.parameters(), lr=self.cfg.gae_critic_lr, eps=self.cfg.adam_eps)
        if self._pending_state:
            self._optimizer.load_state_dict(self._pending_state)
            self._pending_state = None

    @torch.no_grad()
    def estimate(self, rollout: Rollout, agent) -> Estimate:
        self._setup(agent)
        values = agent.get_value(rollout.flat(rollout.obs)).reshape(rollout.rewards.shape)
        next_values = agent.get_value(rollout.flat(rollout.next_obs)).reshape(rollout.rewards.shape)
        rewards = rollout.rewards * self.cfg.reward_scale
        adv, returns = gae(rewards, values, next_values, rollout.terminated, rollout.dones, self.cfg.gamma, self.cfg.gae_lambda)
        return Estimate(advantages=adv, returns=returns, v=values, diagnostics={"charts/value_mean": float(values.mean())})

    def after_update(self, rollout: Rollout, estimate: Estimate, agent) -> dict:
        self._setup(agent)
        obs = rollout.flat(rollout.obs)
        targets = rollout.flat(estimate.returns)
        gen = torch.Generator().manual_seed(int(targets.numel()) + self.cfg.seed)
        losses = []
        for _ in range(self.cfg.gae_critic_epochs):
            for idx in shuffled_minibatches(obs.shape[0], self.cfg.minibatch_size, gen, obs.device):
                loss = self.cfg.gae_value_coef * ((agent.get_value(obs[idx]) - targets[idx]) ** 2).mean()
                self._optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.critic.parameters(), self.cfg.max_grad_norm)
                self._optimizer.step()
                losses.append(loss.detach())
        return {"losses/value_loss": mean_of(losses)}

    def state_dict(self) -> dict:
        return {"optimizer": self._optimizer.state_dict() if self._optimizer else None}

    def load_state_dict(self, state: dict) -> None:
        self._resumed = True
        self._pending_state = state.get("optimizer")
        if self._optimizer is not None and self._pending_state:
            self._optimizer.load_state_dict(self._pending_state)
            self._pending_state = None
