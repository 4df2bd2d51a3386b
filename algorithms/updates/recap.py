"""RECAP-style AWR: pull toward positive-advantage actions, push away from negative ones.

Positives (A > 0): w = min(exp(A / beta), w_max), normalised to mean 1 over the positives of the batch.
Negatives (A <= 0): w = min(exp(|A| / beta), w_max), normalised to mean 1 over the negatives.
loss = -mean(pos_mask * w * log pi) + recap_alpha * mean(neg_mask * w * max(log pi, -recap_nll_clip)).

Guard: for a Gaussian the push-away term is unbounded below (widen the std, move the mean away).  Once an
action's negative log-likelihood exceeds ``recap_nll_clip`` its term has no gradient, and the actor log-std
is kept >= ``recap_min_logstd``.  ``charts/recap_guard_frac`` is the fraction of negatives the clip held.
The clip bounds the gradient, not the motion: momentum and shared weights still move clipped actions a little.

``recap_alpha = 0`` is AWR restricted to the positives (negatives ignored rather than down-weighted),
which is the "near-ignore" of the seed's AWR row; ``update=awr`` keeps the small negative weights.
"""
from __future__ import annotations

import torch

from algorithms.updates.awr import awr_weights
from algorithms.updates.base import UpdateBatch, UpdateRule, mean_of


class RecapUpdate(UpdateRule):
    name = "recap"

    def update(self, agent, batch: UpdateBatch) -> dict:
        cfg = self.cfg
        adv = batch.advantages
        pos = adv > 0
        neg = ~pos
        w = torch.zeros_like(adv)
        if pos.any():
            wp = awr_weights(adv[pos], cfg.awr_beta, cfg.awr_max_weight)
            w[pos] = wp / wp.mean()
        if neg.any():
            wn = awr_weights(adv[neg].abs(), cfg.awr_beta, cfg.awr_max_weight)
            w[neg] = wn / wn.mean()
        pos_f, neg_f = pos.float(), neg.float()
        pos_losses, neg_losses, totals, held, negs = [], [], [], [], []
        for _ in range(cfg.update_epochs):
            for idx in self.minibatches(batch):
                logp = agent.log_prob(batch.obs[idx], batch.actions[idx])
                pos_loss = -(pos_f[idx] * w[idx] * logp).mean()
                clipped = torch.clamp(logp, min=-cfg.recap_nll_clip)
                neg_loss = (neg_f[idx] * w[idx] * clipped).mean()
                loss = pos_loss + cfg.recap_alpha * neg_loss
                self.step(agent, loss)
                with torch.no_grad():
                    agent.actor_logstd.clamp_(min=cfg.recap_min_logstd)
                    n = neg_f[idx].sum()
                    negs.append(n)
                    held.append(((logp < -cfg.recap_nll_clip).float() * neg_f[idx]).sum() / n.clamp(min=1))
                pos_losses.append(pos_loss.detach())
                neg_losses.append(neg_loss.detach())
                totals.append(loss.detach())
        # mean over the minibatches that had negatives, computed on-device (one sync instead of one per minibatch)
        has_neg = (torch.stack(negs) > 0).float()
        guard_frac = float((torch.stack(held) * has_neg).sum() / has_neg.sum().clamp(min=1))
        return {
            "losses/policy_loss": mean_of(totals),
            "losses/pos_loss": mean_of(pos_losses),
            "losses/neg_loss": mean_of(neg_losses),
            "charts/pos_ratio": float(pos.float().mean()),
            "charts/recap_guard_frac": guard_frac,
            "charts/recap_guard_acted": float(guard_frac > 0),
        }
