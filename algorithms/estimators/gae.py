"""Generalised advantage estimation with a critic trained online (SPEC.md: lambda 0.9, truncation vs termination).

:class:`CriticEstimator` holds what GAE and TD(N) share: the critic's start (fresh as in the reference, the
start policy's own, or a ``pretrain-critic`` file), its training (jointly inside the update rule's loss, the
reference's way, or separately after the update), critic-only warm-up iterations and per-batch critic
pre-training epochs.  Subclasses only say how advantages and critic targets follow from V.
"""
from __future__ import annotations

import torch

from algorithms import rng
from algorithms.estimators.base import AdvantageEstimator, Estimate, TrialContext
from algorithms.optim import optimizer_step
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


class CriticEstimator(AdvantageEstimator):
    """An estimator whose advantages come from ``agent.critic``, V(s) [B] (GAE, TD(N))."""

    has_critic = True

    def __init__(self, ctx: TrialContext):
        super().__init__(ctx)
        self._optimizer = None  # the critic-only Adam: separate training, warm-up, pre-training epochs
        self._pending_state = None
        self.gen = torch.Generator().manual_seed(self.cfg.seed + 11)

    def targets(self, rollout: Rollout, values: torch.Tensor, next_values: torch.Tensor):
        """values, next_values [T, N] -> (advantages [T, N], critic targets [T, N])."""
        raise NotImplementedError

    def prepare(self, agent) -> None:
        """Set the critic up before the update rule builds its optimiser (a resumed trial's weights load after)."""
        cfg = self.cfg
        if cfg.gae_critic_checkpoint:
            from algorithms.value_functions import load_critic_into

            load_critic_into(agent, cfg.gae_critic_checkpoint, obs_dim=self.ctx.obs_dim)
        elif cfg.gae_reset_critic:
            # the start policy's critic was fitted to the dense pretraining reward (the reference resets it too)
            from algorithms.agent import mlp

            agent.critic = mlp(self.ctx.obs_dim, 1).to(self.ctx.device)
        self._optimizer = torch.optim.Adam(agent.critic.parameters(), lr=cfg.gae_critic_lr, eps=cfg.adam_eps)
        if self._pending_state:
            self._optimizer.load_state_dict(self._pending_state)
            self._pending_state = None

    @property
    def trains_jointly(self) -> bool:
        return self.cfg.critic_training == "joint"

    def terminated(self, rollout: Rollout) -> torch.Tensor:
        """[T, N] flags of the steps whose successor is worth 0 (none with ``critic_bootstrap_terminal``)."""
        if self.cfg.critic_bootstrap_terminal:
            return torch.zeros_like(rollout.terminated)
        return rollout.terminated

    @torch.no_grad()
    def _advantages(self, rollout: Rollout, agent):
        shape = rollout.rewards.shape
        values = agent.get_value(rollout.flat(rollout.obs)).reshape(shape)
        next_values = agent.get_value(rollout.flat(rollout.next_obs)).reshape(shape)
        adv, returns = self.targets(rollout, values, next_values)
        return adv, returns, values

    def estimate(self, rollout: Rollout, agent) -> Estimate:
        adv, returns, values = self._advantages(rollout, agent)
        diag = {}
        if self.cfg.gae_critic_pretrain_epochs:
            diag["losses/critic_pretrain_loss"] = self.fit_critic(agent, rollout, returns, self.cfg.gae_critic_pretrain_epochs)
            adv, returns, values = self._advantages(rollout, agent)
        diag["charts/value_mean"] = float(values.mean())
        return Estimate(advantages=adv, returns=returns, v=values, diagnostics=diag)

    def score(self, rollout: Rollout, agent) -> torch.Tensor:
        return self._advantages(rollout, agent)[0]  # the critic as it is: no pre-training epochs on probe data

    def fit_critic(self, agent, rollout: Rollout, returns: torch.Tensor, epochs: int) -> float:
        """``epochs`` passes of 0.5 (V(s) - target)^2 with the critic-only Adam; returns the mean loss."""
        obs = rollout.flat(rollout.obs)
        targets = rollout.flat(returns)
        losses = []
        for _ in range(epochs):
            for idx in shuffled_minibatches(obs.shape[0], self.cfg.effective_minibatch_size, self.gen, obs.device):
                loss = 0.5 * ((agent.get_value(obs[idx]) - targets[idx]) ** 2).mean()
                optimizer_step(self._optimizer, loss, agent.critic.parameters(), self.cfg.max_grad_norm)
                losses.append(loss.detach())
        return mean_of(losses)

    def warm_up(self, rollout: Rollout, estimate: Estimate, agent) -> dict:
        """A warm-up iteration: the critic trains on this batch for ``update_epochs``, the policy does not move."""
        return {"losses/value_loss": self.fit_critic(agent, rollout, estimate.returns, self.cfg.update_epochs), "charts/critic_warmup": 1.0}

    def after_update(self, rollout: Rollout, estimate: Estimate, agent) -> dict:
        if self.trains_jointly:
            return {}  # the update rule trained the critic inside its loss
        return {"losses/value_loss": self.fit_critic(agent, rollout, estimate.returns, self.cfg.gae_critic_epochs)}

    def state_dict(self) -> dict:
        return {"optimizer": self._optimizer.state_dict() if self._optimizer else None, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "gen" in state:
            rng.restore(self.gen, state["gen"])
        if self._optimizer is not None and state.get("optimizer"):
            self._optimizer.load_state_dict(state["optimizer"])
        else:
            self._pending_state = state.get("optimizer")


class GAEEstimator(CriticEstimator):
    """GAE(gamma, lambda) with the agent's critic; critic targets are the lambda-returns."""

    name = "gae"

    def targets(self, rollout, values, next_values):
        rewards = rollout.rewards * self.cfg.reward_scale
        return gae(rewards, values, next_values, self.terminated(rollout), rollout.dones, self.cfg.gamma, self.cfg.gae_lambda)
