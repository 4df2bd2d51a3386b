"""The policy-update-rule interface.

A rule owns the optimiser and turns a flat batch with advantages into new actor weights.  With
``critic_training=joint`` and an estimator that has a critic (GAE, TD(N)), the rule also trains the critic:
every minibatch loss gains ``gae_value_coef * 0.5 * (V(s) - target)^2`` and one Adam with one grad-norm
clip steps actor and critic together, as the reference code does.  The joint clip matters: while the
critic is fresh its gradient dominates the norm and keeps the actor's steps small.
Adding a rule = one module with a subclass + one entry in ``algorithms.updates.UPDATES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from algorithms.optim import optimizer_step


@dataclass
class UpdateBatch:
    """Flat batch: obs [B, obs_dim], actions [B, act_dim], logprobs (behaviour policy) [B], advantages [B];
    returns [B]: critic targets, present when the rule trains the critic jointly."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    advantages: torch.Tensor
    returns: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.obs.shape[0]


def shuffled_minibatches(n: int, size: int, generator: torch.Generator, device="cpu"):
    """Index tensors covering ``range(n)`` once in a random order, ``size`` each (the last may be smaller).

    The order is drawn on the CPU generator (the same order on every device) and moved to ``device`` once, so
    indexing GPU tensors costs no host-to-device copy per minibatch."""
    perm = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, size):
        yield perm[start : start + size]


def mean_of(values: list) -> float:
    """Mean of a list of 0-d tensors with a single host sync (a ``.item()`` per minibatch stalls the GPU queue)."""
    return float(torch.stack(values).mean()) if values else 0.0


def actor_parameters(agent) -> list:
    return list(agent.actor_mean.parameters()) + [agent.actor_logstd]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-8), the reference's advantage normalisation; [B] -> [B]."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + 1e-8)


class UpdateRule:
    name: str = ""

    def __init__(self, cfg, agent, generator: torch.Generator, train_critic: bool = False):
        self.cfg = cfg
        self.gen = generator
        self.train_critic = train_critic
        self.params = actor_parameters(agent) + (list(agent.critic.parameters()) if train_critic else [])
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.learning_rate, eps=cfg.adam_eps)

    def update(self, agent, batch: UpdateBatch) -> dict:
        """Returns metrics named as in SPEC.md (``losses/policy_loss``, ``charts/pos_ratio``, ...)."""
        raise NotImplementedError

    def minibatches(self, batch: UpdateBatch):
        """Shuffled index tensors of ``cfg.effective_minibatch_size`` (the last may be smaller), on the batch's device."""
        return shuffled_minibatches(len(batch), self.cfg.effective_minibatch_size, self.gen, batch.obs.device)

    def value_loss(self, agent, batch: UpdateBatch, idx) -> Optional[torch.Tensor]:
        """0.5 * mean (V(s) - target)^2 on the minibatch, or None when this rule does not train the critic."""
        if not self.train_critic or batch.returns is None:
            return None
        return 0.5 * ((agent.get_value(batch.obs[idx]) - batch.returns[idx]) ** 2).mean()

    def step(self, agent, loss: torch.Tensor, v_loss: Optional[torch.Tensor] = None) -> None:
        if v_loss is not None:
            loss = loss + self.cfg.gae_value_coef * v_loss
        optimizer_step(self.optimizer, loss, self.params, self.cfg.max_grad_norm)

    @staticmethod
    def critic_metrics(v_losses: list) -> dict:
        return {"losses/value_loss": mean_of(v_losses)} if v_losses else {}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
