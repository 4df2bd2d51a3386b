"""Generalised advantage estimation with an online critic (SPEC.md: lambda 0.9, truncation vs termination)."""
from __future__ import annotations

import torch


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
