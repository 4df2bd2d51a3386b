"""Gaussian actor-critic MLP (SPEC.md), parameter names as in ManiSkill's PPO baseline ``Agent``."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.distributions import Normal


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim: int, out_dim: int, hidden: int = 256, out_std: float = math.sqrt(2)) -> nn.Sequential:
    """in -> 256 -> 256 -> 256 -> out with Tanh; indices 0, 2, 4, 6 are the Linear layers."""
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, out_dim), std=out_std),
    )


class Agent(nn.Module):
    """Actor mean ``actor_mean`` [obs_dim -> act_dim], state-independent ``actor_logstd`` [1, act_dim],
    critic ``critic`` [obs_dim -> 1]."""

    def __init__(self, obs_dim: int, act_dim: int, init_logstd: float = -0.5):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.critic = mlp(obs_dim, 1, out_std=1.0)
        self.actor_mean = mlp(obs_dim, act_dim, out_std=0.01 * math.sqrt(2))
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), float(init_logstd)))

    def set_logstd(self, logstd: float) -> "Agent":
        """Set ``actor_logstd`` [1, act_dim] to ``logstd`` on every action dim (not a gradient step); returns self."""
        with torch.no_grad():
            self.actor_logstd.fill_(float(logstd))
        return self

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, obs_dim] -> V(s) [B]."""
        return self.critic(obs).squeeze(-1)

    def _mean_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, obs_dim] -> (mean, std), both [B, act_dim]."""
        mean = self.actor_mean(obs)
        return mean, self.actor_logstd.expand_as(mean).exp()

    def dist(self, obs: torch.Tensor) -> Normal:
        return Normal(*self._mean_std(obs))

    @staticmethod
    def _sample(mean: torch.Tensor, std: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> torch.Tensor:
        if deterministic:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    def act(self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs [B, obs_dim] -> action [B, act_dim] (the mean when deterministic)."""
        # no Normal built: this is the per-step call of evaluation and MC re-rollouts
        return self._sample(*self._mean_std(obs), deterministic, generator)

    def act_and_log_prob(self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None):
        """obs [B, obs_dim] -> (action [B, act_dim], log pi(action | obs) [B]) from one actor forward."""
        mean, std = self._mean_std(obs)
        action = self._sample(mean, std, deterministic, generator)
        return action, Normal(mean, std).log_prob(action).sum(-1)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) summed over action dims: [B]."""
        return self.dist(obs).log_prob(action).sum(-1)

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """Returns action [B, act_dim], log_prob [B], entropy [B], value [B]."""
        d = self.dist(obs)
        if action is None:
            action = d.sample()
        return action, d.log_prob(action).sum(-1), d.entropy().sum(-1), self.get_value(obs)


def actor_payload(agent: "Agent") -> dict:
    """The actor's weights as numpy arrays plus its sizes: what travels to an env worker process to act there
    (numpy, not tensors: torch's pickling of tensors between processes needs multiprocessing's resource sharer)."""
    return {"obs_dim": agent.obs_dim, "act_dim": agent.act_dim,
            "weights": {k: v.detach().to("cpu").numpy() for k, v in agent.state_dict().items() if k.startswith("actor_")}}


def agent_from_payload(payload: dict) -> "Agent":
    """The acting copy built from :func:`actor_payload` (its critic is left untrained: acting does not use it)."""
    agent = Agent(payload["obs_dim"], payload["act_dim"])
    agent.load_state_dict({k: torch.from_numpy(v) for k, v in payload["weights"].items()}, strict=False)
    return agent
