"""Collecting ``num_steps`` x ``num_envs`` transitions from a vector env with a Gaussian policy."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from envs.vector import EnvState, VectorEnv


@dataclass
class Rollout:
    """One batch of T x N transitions (tensors on the policy's device, states on CPU).

    obs, next_obs: [T, N, obs_dim]; ``next_obs`` is the true successor (before any auto-reset).
    actions: [T, N, act_dim]; logprobs, values, rewards: [T, N];
    terminated, truncated, success: [T, N] bool;
    states: EnvState with sim [T, N, state_dim], elapsed [T, N] (state *before* each action), if saved;
    last_obs: [N, obs_dim] and last_state: the state after the last step (where the next rollout resumes).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    success: torch.Tensor
    next_obs: torch.Tensor
    states: Optional[EnvState] = None
    last_obs: Optional[torch.Tensor] = None
    last_state: Optional[EnvState] = None

    @property
    def dones(self) -> torch.Tensor:
        return self.terminated | self.truncated

    @property
    def num_steps(self) -> int:
        return self.obs.shape[0]

    @property
    def num_envs(self) -> int:
        return self.obs.shape[1]

    def envs(self, k: int) -> "Rollout":
        """The first ``k`` envs' transitions: every [T, N, ...] field cut to [T, k, ...] (states too)."""
        cut = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                cut[f.name] = None
            elif f.name in ("last_obs", "last_state"):
                cut[f.name] = v[:k]
            else:
                cut[f.name] = v[:, :k]
        return Rollout(**cut)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """[T, N, ...] -> [T*N, ...]."""
        return x.reshape(-1, *x.shape[2:])


@torch.no_grad()
def collect_rollout(
    agent,
    venv: VectorEnv,
    obs: torch.Tensor,
    num_steps: int,
    device: torch.device,
    save_states: bool = False,
    deterministic: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Rollout:
    """Run ``num_steps`` steps from the current env state, whose observation is ``obs`` [N, obs_dim]."""
    T, N = num_steps, venv.num_envs
    buf = {k: [] for k in ("obs", "actions", "logprobs", "values", "rewards", "terminated", "truncated", "success", "next_obs")}
    sims, elapsed = [], []
    obs = obs.to(device)
    for _ in range(T):
        if save_states:
            s = venv.get_state()
            sims.append(s.sim.cpu())
            elapsed.append(s.elapsed.cpu())
        action, logprob = agent.act_and_log_prob(obs, deterministic=deterministic, generator=generator)
        value = agent.get_value(obs)
        step = venv.step(action)
        buf["obs"].append(obs)
        buf["actions"].append(action)
        buf["logprobs"].append(logprob)
        buf["values"].append(value)
        buf["rewards"].append(step.reward.to(device))
        buf["terminated"].append(step.terminated.to(device))
        buf["truncated"].append(step.truncated.to(device))
        buf["success"].append(step.success.to(device))
        buf["next_obs"].append(step.final_obs.to(device))
        obs = step.obs.to(device)
    out = {k: torch.stack(v) for k, v in buf.items()}
    states = EnvState(torch.stack(sims), torch.stack(elapsed)) if save_states else None
    last_state = venv.get_state().to("cpu") if save_states else None
    return Rollout(**out, states=states, last_obs=obs, last_state=last_state)
