"""RECAP-style AWR, as the reference computes it (SPEC.md): pull toward good actions, push away bad ones.

A_n = batch-normalised advantage (``awr_norm_adv``).  Positives (A_n > 0): w = min(exp(A_n / beta), w_max);
negatives: w = min(exp(|A_n| / beta), w_max), both computed once per batch.  In each minibatch each set's
weights are re-normalised to mean 1 within the set (``awr_mb_renorm``);
pos_loss = -mean over the minibatch's positives of w * log pi, neg_loss = +mean over its negatives of
w * log pi, loss = pos_loss + recap_alpha * neg_loss.  ``recap_alpha = 0`` is AWR on the positives only.

Guard (not in the reference; null turns it off): for a Gaussian the push-away term is unbounded below (widen
the std, move the mean away).  With ``recap_nll_clip`` a negative whose -log pi exceeds the bound has no
gradient, and ``recap_min_logstd`` keeps the actor log-std above a floor.  ``charts/recap_guard_frac`` is the
fraction of negatives the clip held.
"""
from __future__ import annotations

import torch

from algorithms.updates.awr import awr_weights, batch_advantages, mean_one
from algorithms.updates.base import UpdateBatch, UpdateRule, mean_of


def recap_losses(w: torch.Tensor, pos: torch.Tensor, logp: torch.Tensor, renorm: bool, nll_clip=None):
    """One minibatch: weights w [b], positive mask pos [b] bool, logp [b] -> (pos_loss, neg_loss) scalars.

    Each is the mean over its own set (0 for an empty set); ``nll_clip`` bounds the negatives' -log pi."""
    zero = logp.sum() * 0.0
    neg = ~pos
    pos_loss = neg_loss = zero
    if bool(pos.any()):
        wp = mean_one(w[pos]) if renorm else w[pos]
        pos_loss = -(wp.detach() * logp[pos]).mean()
    if bool(neg.any()):
        wn = mean_one(w[neg]) if renorm else w[neg]
        lp = logp[neg] if nll_clip is None else torch.clamp(logp[neg], min=-nll_clip)
        neg_loss = (wn.detach() * lp).mean()
    return pos_loss, neg_loss


class RecapUpdate(UpdateRule):
    name = "recap"

    def update(self, agent, batch: UpdateBatch) -> dict:
        cfg = self.cfg
        adv_n = batch_advantages(cfg, batch.advantages)
        pos = adv_n > 0
        w = awr_weights(adv_n.abs(), cfg.awr_beta, cfg.awr_max_weight)  # exp(A_n/beta) for positives, exp(|A_n|/beta) for negatives
        pos_losses, neg_losses, totals, v_losses, held, negs = [], [], [], [], [], []
        for _ in range(cfg.update_epochs):
            for idx in self.minibatches(batch):
                logp = agent.log_prob(batch.obs[idx], batch.actions[idx])
                pos_loss, neg_loss = recap_losses(w[idx], pos[idx], logp, cfg.awr_mb_renorm, cfg.recap_nll_clip)
                loss = pos_loss + cfg.recap_alpha * neg_loss
                v_loss = self.value_loss(agent, batch, idx)
                self.step(agent, loss, v_loss)
                with torch.no_grad():
                    if cfg.recap_min_logstd is not None:
                        agent.actor_logstd.clamp_(min=cfg.recap_min_logstd)
                    neg_mb = (~pos[idx]).float()
                    n = neg_mb.sum()
                    negs.append(n)
                    bound = cfg.recap_nll_clip if cfg.recap_nll_clip is not None else float("inf")
                    held.append(((logp < -bound).float() * neg_mb).sum() / n.clamp(min=1))
                pos_losses.append(pos_loss.detach())
                neg_losses.append(neg_loss.detach())
                totals.append(loss.detach())
                if v_loss is not None:
                    v_losses.append(v_loss.detach())
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
            "charts/actor_logstd": float(agent.actor_logstd.detach().mean()),
            **self.critic_metrics(v_losses),
        }
