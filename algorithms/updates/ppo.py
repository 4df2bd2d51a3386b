"""PPO: clipped importance-ratio objective (clip 0.2), optional advantage normalisation, target-KL stop."""
from __future__ import annotations

import torch

from algorithms.updates.base import UpdateBatch, UpdateRule, mean_of


class PPOUpdate(UpdateRule):
    name = "ppo"

    def update(self, agent, batch: UpdateBatch) -> dict:
        cfg = self.cfg
        losses, kls, clipfracs = [], [], []
        stopped_early = False
        for _ in range(cfg.update_epochs):
            for idx in self.minibatches(batch):
                dist = agent.dist(batch.obs[idx])
                logp = dist.log_prob(batch.actions[idx]).sum(-1)
                logratio = logp - batch.logprobs[idx]
                ratio = logratio.exp()
                adv = batch.advantages[idx]
                if cfg.ppo_norm_adv and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip)).mean()
                loss = pg - cfg.ent_coef * dist.entropy().sum(-1).mean()
                self.step(agent, loss)
                with torch.no_grad():
                    kls.append(((ratio - 1) - logratio).mean())
                    clipfracs.append(((ratio - 1).abs() > cfg.ppo_clip).float().mean())
                losses.append(pg.detach())
            # one host sync per epoch, for the early stop
            if cfg.target_kl is not None and kls and float(kls[-1]) > cfg.target_kl:
                stopped_early = True
                break
        return {
            "losses/policy_loss": mean_of(losses),
            "losses/approx_kl": mean_of(kls),
            "losses/clipfrac": mean_of(clipfracs),
            "charts/ppo_kl_stop": float(stopped_early),
            "charts/pos_ratio": float((batch.advantages > 0).float().mean()),
        }
