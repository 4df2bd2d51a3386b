"""Discounted Monte-Carlo returns of recorded trajectories (no bootstrapping)."""
from __future__ import annotations

import torch


def discounted_returns(rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, gamma: float):
    """rewards, terminated, truncated [T, N] -> (returns [T, N], complete [T, N] bool).

    returns[t] = sum_k gamma^k r[t + k] up to and including the step where the episode ends (terminated
    or truncated: a truncated episode's return stops at the time limit, like the finite-horizon value).
    ``complete`` is False for the steps whose episode had not ended by the last step T - 1: their sum
    is cut by the end of the recording, not by the episode, so it is not a return.
    """
    T = rewards.shape[0]
    returns = torch.zeros_like(rewards, dtype=torch.float32)
    complete = torch.zeros_like(terminated, dtype=torch.bool)
    done = terminated | truncated
    run = torch.zeros_like(rewards[0], dtype=torch.float32)
    ended = torch.zeros_like(done[0])
    for t in reversed(range(T)):
        # an episode ending at t starts a new backward sum
        run = torch.where(done[t], torch.zeros_like(run), run)
        run = rewards[t].float() + gamma * run
        ended = done[t] | ended
        returns[t] = run
        complete[t] = ended
    return returns, complete
