"""Advantage-weighted regression, as the reference computes it (SPEC.md, AWR):

A_n = (A - mean A) / (std A + 1e-8) over the whole batch (``awr_norm_adv``); w = min(exp(A_n / beta), w_max),
computed once per batch; in each minibatch w is re-normalised to mean 1 (``awr_mb_renorm``);
loss = -mean(w * log pi(a|s)).
"""
from __future__ import annotations

import math

import torch

from algorithms.updates.base import UpdateBatch, UpdateRule, mean_of, normalize


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """[B] -> [B]: min(exp(adv / beta), max_weight), clamped before exp so large advantages cannot overflow."""
    return torch.exp(torch.clamp(adv / beta, max=math.log(max_weight))).clamp(max=max_weight)


def batch_advantages(cfg, adv: torch.Tensor) -> torch.Tensor:
    """The advantages AWR and RECAP weight with: normalised over the batch when ``awr_norm_adv``; [B] -> [B]."""
    return normalize(adv) if cfg.awr_norm_adv else adv


def effective_fraction(w: torch.Tensor) -> float:
    """Kish's effective sample size of weights w [B] as a fraction of B: (sum w)^2 / (B sum w^2), in (0, 1]; 1 when
    every weight is equal, 1/B when one sample carries all the weight."""
    return float(w.sum() ** 2 / (w.numel() * w.pow(2).sum()).clamp(min=1e-12))


def mean_one(w: torch.Tensor) -> torch.Tensor:
    """w / sum(w) * len(w): weights of mean 1 (the reference's per-minibatch re-normalisation); [b] -> [b]."""
    return w / w.sum().clamp(min=1e-12) * w.numel()


def awr_loss(weights: torch.Tensor, logp: torch.Tensor, renorm: bool) -> torch.Tensor:
    """One minibatch: weights, logp [b] -> scalar -mean(w * logp)."""
    w = mean_one(weights) if renorm else weights
    return -(w.detach() * logp).mean()


class AWRUpdate(UpdateRule):
    name = "awr"

    def update(self, agent, batch: UpdateBatch) -> dict:
        cfg = self.cfg
        adv_n = batch_advantages(cfg, batch.advantages)
        w = awr_weights(adv_n, cfg.awr_beta, cfg.awr_max_weight)
        losses, v_losses = [], []
        for _ in range(cfg.update_epochs):
            for idx in self.minibatches(batch):
                loss = awr_loss(w[idx], agent.log_prob(batch.obs[idx], batch.actions[idx]), cfg.awr_mb_renorm)
                v_loss = self.value_loss(agent, batch, idx)
                self.step(agent, loss, v_loss)
                losses.append(loss.detach())
                if v_loss is not None:
                    v_losses.append(v_loss.detach())
        policy_loss = mean_of(losses)
        return {
            "losses/policy_loss": policy_loss,
            "losses/pos_loss": policy_loss,
            "charts/pos_ratio": float((adv_n > 0).float().mean()),
            "charts/awr_weight_mean": float(w.mean()),
            "charts/awr_weight_max": float(w.max()),
            "charts/awr_weight_clipped": float((w >= cfg.awr_max_weight).float().mean()),
            "charts/awr_weight_ess": effective_fraction(w),
            **self.critic_metrics(v_losses),
        }
