"""PPO: clipped importance-ratio objective, per-minibatch advantage normalisation, target-KL stop.

As the reference computes it (RL/ppo_finetune.py): a minibatch whose approx KL (before its step) exceeds
``target_kl`` ends the update; with a jointly trained critic the loss adds ``gae_value_coef * v_loss``.
:func:`ppo_loss` is also the loss of pretraining (``algorithms.pretrain``).
"""
from __future__ import annotations

import torch

from algorithms.updates.base import UpdateBatch, UpdateRule, mean_of, normalize


def ppo_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float, norm_adv: bool):
    """All [b].  Returns (clipped policy loss, approx KL (k3 estimator), clip fraction), the last two detached."""
    logratio = new_logp - old_logp
    ratio = logratio.exp()
    if norm_adv and adv.numel() > 1:
        adv = normalize(adv)
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1).abs() > clip).float().mean()
    return pg, approx_kl, clipfrac


class PPOUpdate(UpdateRule):
    name = "ppo"

    def update(self, agent, batch: UpdateBatch) -> dict:
        cfg = self.cfg
        losses, kls, clipfracs, v_losses = [], [], [], []
        stopped_early = False
        for _ in range(cfg.update_epochs):
            for idx in self.minibatches(batch):
                dist = agent.dist(batch.obs[idx])
                logp = dist.log_prob(batch.actions[idx]).sum(-1)
                pg, approx_kl, clipfrac = ppo_loss(logp, batch.logprobs[idx], batch.advantages[idx], cfg.ppo_clip, cfg.ppo_norm_adv)
                kls.append(approx_kl)
                clipfracs.append(clipfrac)
                if cfg.target_kl is not None and float(approx_kl) > cfg.target_kl:
                    stopped_early = True
                    break
                loss = pg - cfg.ent_coef * dist.entropy().sum(-1).mean()
                v_loss = self.value_loss(agent, batch, idx)
                self.step(agent, loss, v_loss)
                losses.append(pg.detach())
                if v_loss is not None:
                    v_losses.append(v_loss.detach())
            if stopped_early:
                break
        return {
            "losses/policy_loss": mean_of(losses),
            "losses/approx_kl": mean_of(kls),
            "losses/clipfrac": mean_of(clipfracs),
            "charts/ppo_kl_stop": float(stopped_early),
            "charts/pos_ratio": float((batch.advantages > 0).float().mean()),
            **self.critic_metrics(v_losses),
        }
