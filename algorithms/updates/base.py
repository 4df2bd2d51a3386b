"""The policy-update-rule interface.

A rule owns the actor's optimiser and turns a flat batch with advantages into new actor weights.
Adding a rule = one module with a subclass + one entry in ``algorithms.updates.UPDATES``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class UpdateBatch:
    """Flat batch: obs [B, obs_dim], actions [B, act_dim], logprobs (behaviour policy) [B], advantages [B]."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    advantages: torch.Tensor

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


class UpdateRule:
    name: str = ""

    def __init__(self, cfg, agent, generator: torch.Generator):
        self.cfg = cfg
        self.gen = generator
        self.optimizer = torch.optim.Adam(actor_parameters(agent), lr=cfg.learning_rate, eps=cfg.adam_eps)

    def update(self, agent, batch: UpdateBatch) -> dict:
        """Returns metrics named as in SPEC.md (``losses/policy_loss``, ``charts/pos_ratio``, ...)."""
        raise NotImplementedError

    def minibatches(self, batch: UpdateBatch):
        """Shuffled index tensors of ``cfg.minibatch_size`` (last one may be smaller), on the batch's device."""
        return shuffled_minibatches(len(batch), self.cfg.minibatch_size, self.gen, batch.obs.device)

    def step(self, agent, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(actor_parameters(agent), self.cfg.max_grad_norm)
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
