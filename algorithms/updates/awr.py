"""Advantage-weighted regression: weighted behaviour cloning, w = min(exp(A / beta), w_max)."""
from __future__ import annotations

import torch

from algorithms.updates.base import UpdateBatch, UpdateRule, mean_of


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """[B] -> [B]; clamped before exp so large advantages cannot overflow."""
    return torch.exp(torch.clamp(adv / beta, max=torch.log(torch.tensor(max_weight)).item())).clamp(max=max_weight)


class AWRUpdate(UpdateRule):
    name = "awr"

    def update(self, agent, batch: UpdateBatch) -> dict:
        cfg = self.cfg
        w = awr_weights(batch.advantages, cfg.awr_beta, cfg.awr_max_weight)
        losses = []
        for _ in range(cfg.update_epochs):
            for idx in self.minibatches(batch):
                logp = agent.log_prob(batch.obs[idx], batch.actions[idx])
                loss = -(w[idx] * logp).mean()
                self.step(agent, loss)
                losses.append(loss.detach())
        policy_loss = mean_of(losses)
        return {
            "losses/policy_loss": policy_loss,
            "losses/pos_loss": policy_loss,
            "charts/pos_ratio": float((batch.advantages > 0).float().mean()),
            "charts/awr_weight_mean": float(w.mean()),
            "charts/awr_weight_clipped": float((w >= cfg.awr_max_weight).float().mean()),
        }
