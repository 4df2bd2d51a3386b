"""Action ranking: the reference's estimator-quality analysis, run inside a trial (``quality_mode=actions``).

The reference scores advantage estimators by how they order actions *within* a state (zyc00/OfflineRLPlayGround,
``methods/gae/rank_mc_vs_gae.py`` and ``rank_nstep_td.py``; its README, "Action Ranking Quality": GAE 0.93,
TD(20) 0.96, IQL Q-V 0.01-0.18).  Per iteration probed:

1. S = ``quality_states`` states drawn from the batch (its first ``quality_envs`` envs);
2. K = ``quality_actions`` actions sampled at each from the rollout policy;
3. M = ``quality_samples`` re-rollouts per (state, action): restore the state, execute the action, then follow the
   oracle policy (``quality_policy``; the reference's is the rollout policy itself, ``current``) to the episode's
   end (``mc_time_limit`` and ``mc_horizon`` as for MC).  The oracle's Q(s, a_k) is the mean of the M returns;
4. the estimator's advantage of (s, a_k) is the mean, over the same M trajectories, of the advantage it gives
   their first step (GAE and TD(N): from the trial's critic as it is; IQL/SARSA: Q - V of (s, a_k)).  An MC
   estimator instead scores (s, a_k) with its own re-rollouts (its ``mc_samples``, ``mc_policy``);
5. rho = Spearman over the K actions of one state, averaged over the states where the oracle's K values differ
   and the estimator's are not all equal (the reference's mean; the median is reported too).

Metrics (``quality/`` prefix): ``spearman`` (the mean per-state rho, the column the report compares with the
reference), ``spearman_median``, ``top1`` (share of states where both pick the same best action), ``states``
(states the rho averages over), ``spearman_pooled`` (one rank correlation over all S*K centred advantages),
``bias``, ``rmse``, ``sign_agreement`` of the centred advantages (each side minus its mean over the state's K
actions, so a V shared by the state cancels), ``sim_steps``.
"""
from __future__ import annotations

import numpy as np
import torch

from algorithms.quality import advantage_quality, oracle_estimator, spearman
from algorithms.rollout import Rollout
from envs.vector import EnvState


class ActionRankingProbe:
    """Scores a trial's estimator by the reference's within-state action ranking; the oracle's re-rollout env
    slots (``mc_workers``) are built on first use and kept until :meth:`close`."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self._oracle = None
        self.gen = torch.Generator().manual_seed(self.cfg.seed + 17)

    def _mc(self):
        if self._oracle is None:
            self._oracle = oracle_estimator(self.ctx)
        return self._oracle

    def _pick_states(self, rollout: Rollout):
        """(sim [S, D], elapsed [S], obs [S, obs_dim]) of S states drawn without replacement from the batch."""
        k = self.cfg.quality_envs
        if k is not None and k < rollout.num_envs:
            rollout = rollout.envs(k)
        sim = rollout.flat(rollout.states.sim)
        elapsed = rollout.flat(rollout.states.elapsed)
        obs = rollout.flat(rollout.obs)
        S = min(self.cfg.quality_states, sim.shape[0])
        idx = torch.randperm(sim.shape[0], generator=self.gen)[:S]
        return sim[idx], elapsed[idx], obs[idx]

    def measure(self, rollout: Rollout, estimate, agent, estimator=None) -> dict:
        """``quality/*`` metrics of ``estimator`` at states of ``rollout`` (collected by ``agent``, with states);
        ``estimate`` (the batch's own) is not used."""
        s = self.scores(rollout, agent, estimator)
        out = ranking_metrics(s["estimate"], s["oracle"])
        out["quality/sim_steps"] = s["sim_steps"]
        out["quality/reference_std"] = float((s["oracle"] - s["oracle"].mean(1, keepdim=True)).std())
        return out

    @torch.no_grad()
    def scores(self, rollout: Rollout, agent, estimator) -> dict:
        """Steps 1-4 of the module docstring: ``estimate`` and ``oracle`` [S, K] (the oracle's mean returns),
        ``obs`` [S, obs_dim] of the states, ``actions`` [S, K, act_dim], ``sim_steps``."""
        cfg, dev = self.cfg, self.ctx.device
        if rollout.states is None:
            raise ValueError("the action-ranking probe restores the batch's states: collect the rollout with save_states=True")
        if estimator is None:
            raise ValueError("the action-ranking probe scores an estimator on re-rollouts: pass the trial's estimator")
        if cfg.quality_policy == "expert" and self.ctx.expert is None:
            raise ValueError("quality_policy=expert needs the expert policy (expert_checkpoint) for the oracle's re-rollouts")
        sim, elapsed, obs = self._pick_states(rollout)
        S, K, M = sim.shape[0], cfg.quality_actions, cfg.quality_samples
        actions = agent.act(obs.to(dev).repeat_interleave(K, 0), generator=self._action_gen(dev))  # [S*K, act_dim], state-major
        # jobs in (state, action, sample) order
        job_sim = sim.repeat_interleave(K * M, 0)
        job_elapsed = elapsed.repeat_interleave(K * M, 0)
        job_actions = actions.cpu().repeat_interleave(M, 0)
        oracle = self._mc()
        trajectories = not estimator.needs_states
        G, stats = oracle.engine().returns(oracle.job_states(EnvState(job_sim, job_elapsed)), oracle.rollout_policy(agent), dev, False, oracle.gen,
                                           first_actions=job_actions, record=trajectories)
        q_oracle = G.reshape(S, K, M).mean(-1)
        if trajectories:
            est = estimator.score(_trajectory_rollout(stats["trajectories"], dev), agent)[0]  # first steps [S*K*M]
            est = est.reshape(S, K, M).mean(-1).cpu()
        else:  # an MC estimator: its own re-rollouts of each (s, a_k), one step each
            one = _first_step_rollout(sim, elapsed, obs, actions, K, dev)
            est = estimator.score(one, agent).reshape(S, K).cpu()
        return {"estimate": est, "oracle": q_oracle, "obs": obs.cpu(), "actions": actions.cpu().reshape(S, K, -1),
                "sim_steps": int(stats["sim_steps"])}

    def _action_gen(self, dev) -> torch.Generator:
        g = torch.Generator(device=dev)
        g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.gen)))
        return g

    def close(self) -> None:
        if self._oracle is not None:
            self._oracle.close()
            self._oracle = None


def ranking_metrics(est: torch.Tensor, oracle: torch.Tensor, prefix: str = "quality/") -> dict:
    """est, oracle [S, K]: one row per state, one column per action.  Returns the module docstring's metrics."""
    e = est.double().numpy()
    o = oracle.double().numpy()
    rhos, top1 = [], []
    for es, os_ in zip(e, o):
        if np.ptp(os_) <= 1e-8 or np.ptp(es) <= 0 or not np.all(np.isfinite(es)):
            continue
        rhos.append(spearman(es, os_))
        top1.append(float(np.argmax(es) == np.argmax(os_)))
    ec = est - est.mean(1, keepdim=True)
    oc = oracle - oracle.mean(1, keepdim=True)
    pooled = advantage_quality(ec.flatten(), oc.flatten(), prefix=prefix)
    out = {
        f"{prefix}spearman": float(np.mean(rhos)) if rhos else float("nan"),
        f"{prefix}spearman_median": float(np.median(rhos)) if rhos else float("nan"),
        f"{prefix}top1": float(np.mean(top1)) if top1 else float("nan"),
        f"{prefix}states": len(rhos),
        f"{prefix}spearman_pooled": pooled[f"{prefix}spearman"],
    }
    for k in ("samples", "bias", "rmse", "sign_agreement"):
        out[f"{prefix}{k}"] = pooled[f"{prefix}{k}"]
    return out


def _trajectory_rollout(tr: dict, dev) -> Rollout:
    """The engine's recorded trajectories ([L, J] numpy, see ``TrajectoryRecorder``) as a Rollout of J envs."""
    def t(k, dtype=None):
        x = torch.from_numpy(np.ascontiguousarray(tr[k])).to(dev)
        return x if dtype is None else x.to(dtype)

    rewards = t("rewards", torch.float32)
    terminated, truncated = t("terminated", torch.bool), t("truncated", torch.bool)
    zeros = torch.zeros_like(rewards)
    return Rollout(obs=t("obs", torch.float32), actions=t("actions", torch.float32), logprobs=zeros, values=zeros, rewards=rewards,
                   terminated=terminated, truncated=truncated, success=terminated & (rewards > 0), next_obs=t("next_obs", torch.float32))


def _first_step_rollout(sim, elapsed, obs, actions, K: int, dev) -> Rollout:
    """A one-step Rollout of S*K envs: state s repeated for each of its K actions (for an MC estimator's own
    re-rollouts; under mc_q=rerollout only the states before the step are restored)."""
    sims, els = sim.repeat_interleave(K, 0), elapsed.repeat_interleave(K, 0)
    o = obs.to(dev).repeat_interleave(K, 0)
    B = o.shape[0]
    zeros = torch.zeros(1, B, device=dev)
    false = torch.zeros(1, B, dtype=torch.bool, device=dev)
    return Rollout(obs=o[None], actions=actions[None].to(dev), logprobs=zeros, values=zeros, rewards=zeros, terminated=false,
                   truncated=false, success=false, next_obs=o[None], states=EnvState(sims[None], els[None]),
                   last_state=EnvState(sims, els))
