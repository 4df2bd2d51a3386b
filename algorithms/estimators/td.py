"""TD(N): N-step returns bootstrapped with the critic (SPEC.md, the reference's phase 2b).

A(s_t, a_t) = sum_{k<n} gamma^k r_{t+k} + gamma^n V(s_{t+n}) - V(s_t), where the sum stops early at an episode's
end (termination: no bootstrap; time limit: bootstrap from V of the final observation) and at the rollout's end
(bootstrap from V of the state reached).  The critic trains on the N-step targets.  TD(1) is the one-step TD
error; N >= the episode length is the Monte-Carlo return of the rollout itself.
"""
from __future__ import annotations

import torch

from algorithms.estimators.gae import CriticEstimator


def n_step_targets(rewards, next_values, terminated, dones, gamma: float, n: int) -> torch.Tensor:
    """All inputs [T, N] (``next_values`` = V(true successor of step t)).  Returns the N-step targets [T, N]."""
    T = rewards.shape[0]
    out = torch.zeros_like(rewards)
    for t in range(T):
        g = torch.zeros_like(rewards[0])
        disc = torch.ones_like(rewards[0])
        alive = torch.ones_like(rewards[0], dtype=torch.bool)
        for k in range(min(n, T - t)):
            s = t + k
            g = g + alive * disc * rewards[s]
            disc = disc * gamma
            stop = alive & (dones[s] | (k == n - 1) | (s == T - 1))
            g = g + stop * disc * next_values[s] * (~terminated[s])
            alive = alive & ~stop
        out[t] = g
    return out


class TDEstimator(CriticEstimator):
    name = "td"

    def targets(self, rollout, values, next_values):
        rewards = rollout.rewards * self.cfg.reward_scale
        g = n_step_targets(rewards, next_values, self.terminated(rollout), rollout.dones, self.cfg.gamma, self.cfg.td_n)
        return g - values, g
