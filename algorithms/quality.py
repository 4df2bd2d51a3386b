"""Estimator quality: how well an estimator's advantages match a reference (an MC oracle) on the same batch.

Metrics (keys of :func:`advantage_quality`), over the pairs (est_i, ref_i) where both are finite:

* ``quality/spearman``: Spearman rank correlation (Pearson correlation of average ranks; ties share the
  mean rank).  NaN when either side is constant.
* ``quality/pearson``: linear correlation.
* ``quality/bias``: mean(est - ref);  ``quality/rmse``: sqrt(mean((est - ref)^2)).
* ``quality/sign_agreement``: fraction with sign(est) == sign(ref) (what AWR/RECAP act on).
* Within-group versions, for ``groups`` (an integer label per sample):
  ``quality/spearman_within`` = the mean, over groups with >= 3 samples in which neither side is constant,
  of the Spearman correlation inside the group; ``quality/rmse_within`` = RMSE after subtracting each
  group's mean from est and from ref (errors in how actions are ordered *inside* a group, blind to an
  offset shared by the whole group); ``quality/groups_within`` = how many groups the Spearman mean used.

  Default groups, for [T, N] inputs: the env index n.  In a rollout column n holds one env's consecutive
  steps from one reset (an iteration's rollout starts every env from a fresh seeded reset; with 50-step
  rollouts that is one episode, plus the start of a new one after an early success), so "within" removes
  what differs between start states (cube and goal placement) and keeps what differs between the steps
  and actions of one episode.  Flat inputs have no default groups; :func:`obs_groups` groups identical
  observation rows (several actions sampled at one state).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy().reshape(-1)
    return np.asarray(x, dtype=np.float64).reshape(-1)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """[n] -> ranks 1..n as float64; tied values get the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # start index of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    run_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def pearson(x, y) -> float:
    """Pearson correlation of two equal-size sequences (tensors or arrays of any shape, flattened); nan when either
    is constant."""
    a, b = _np(x), _np(y)  # float64, flattened
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman rank correlation of two equal-length sequences (tensors or arrays of any shape, flattened)."""
    a, b = _np(x), _np(y)
    if a.shape != b.shape:
        raise ValueError(f"spearman needs equal sizes, got {a.size} and {b.size}")
    if a.size < 2:
        return float("nan")
    return pearson(average_ranks(a), average_ranks(b))


def obs_groups(obs: torch.Tensor) -> torch.Tensor:
    """obs [B, obs_dim] -> group label [B]: equal rows share a label."""
    _, inverse = torch.unique(obs.detach().cpu().reshape(obs.shape[0], -1), dim=0, return_inverse=True)
    return inverse


def env_groups(shape) -> torch.Tensor:
    """[T, N] -> label [T, N] = n (the env column)."""
    T, N = shape
    return torch.arange(N).expand(T, N).clone()


def advantage_quality(est, ref, groups=None, prefix: str = "quality/") -> dict:
    """est, ref: advantages of the same samples, both [T, N] or both flat [B].  ``groups``: int labels of the same
    shape (default: :func:`env_groups` for [T, N], none for flat).  Returns the metrics of the module docstring."""
    if tuple(est.shape) != tuple(ref.shape):
        raise ValueError(f"estimate and reference advantages differ in shape: {tuple(est.shape)} vs {tuple(ref.shape)}")
    if groups is None and len(est.shape) == 2:
        groups = env_groups(tuple(est.shape))
    e, r = _np(est), _np(ref)
    ok = np.isfinite(e) & np.isfinite(r)
    e, r = e[ok], r[ok]
    out = {
        f"{prefix}samples": int(ok.sum()),
        f"{prefix}spearman": spearman(e, r),
        f"{prefix}pearson": pearson(e, r) if e.size > 1 else float("nan"),
        f"{prefix}bias": float((e - r).mean()) if e.size else float("nan"),
        f"{prefix}rmse": float(np.sqrt(((e - r) ** 2).mean())) if e.size else float("nan"),
        f"{prefix}sign_agreement": float((np.sign(e) == np.sign(r)).mean()) if e.size else float("nan"),
    }
    if groups is not None:
        g = _np(groups).astype(np.int64)
        if g.size != ok.size:
            raise ValueError(f"groups has {g.size} labels for {ok.size} samples")
        g = g[ok]
        rhos, sq = [], []
        for label in np.unique(g):
            m = g == label
            if m.sum() < 2:
                continue
            eg, rg = e[m], r[m]
            sq.append(((eg - eg.mean()) - (rg - rg.mean())) ** 2)
            if m.sum() >= 3 and np.ptp(eg) > 0 and np.ptp(rg) > 0:
                rhos.append(spearman(eg, rg))
        out[f"{prefix}spearman_within"] = float(np.mean(rhos)) if rhos else float("nan")
        out[f"{prefix}rmse_within"] = float(np.sqrt(np.concatenate(sq).mean())) if sq else float("nan")
        out[f"{prefix}groups_within"] = len(rhos)
    return out


def oracle_estimator(ctx):
    """The quality oracle: an MC estimator of the trial's task with ``quality_samples`` re-rollouts following
    ``quality_policy`` (its own env slots and random stream)."""
    from algorithms.estimators.mc import MCEstimator

    cfg = dataclasses.replace(ctx.cfg, estimator="mc", mc_policy=ctx.cfg.quality_policy, mc_samples=ctx.cfg.quality_samples)
    return MCEstimator(dataclasses.replace(ctx, cfg=cfg))


class QualityProbe:
    """``quality_mode=batch``: measures a trial's advantages on its batch against MC re-rollouts of the
    ``quality_policy`` with ``cfg.quality_samples`` samples (``algorithms.action_ranking`` is the other mode).

    The rollout must carry simulator states.  The reference estimator is built on first use and kept (its
    re-rollout envs are reused); :meth:`close` releases it."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._reference = None

    def _mc(self):
        if self._reference is None:
            self._reference = oracle_estimator(self.ctx)
        return self._reference

    def measure(self, rollout, estimate, agent=None, estimator=None) -> dict:
        """Returns ``quality/*`` metrics of ``estimate`` (advantages [T, N]; q, v where present) vs the MC reference.
        (``estimator`` is unused: the batch's own estimate is scored; the argument matches the action-ranking probe.)"""
        if rollout.states is None:
            raise ValueError("the quality probe re-rolls from the rollout's states: collect the rollout with save_states=True")
        if self.ctx.cfg.quality_policy == "expert" and self.ctx.expert is None:
            raise ValueError("the quality probe needs the expert policy (expert_checkpoint) for its MC reference")
        if self.ctx.cfg.quality_policy == "current" and agent is None:
            raise ValueError("quality_policy=current needs the policy that collected the rollout (the agent argument)")
        k = self.ctx.cfg.quality_envs
        if k is not None and k < rollout.num_envs:
            rollout = rollout.envs(k)
            estimate = dataclasses.replace(estimate, **{f: getattr(estimate, f)[:, :k] for f in ("advantages", "returns", "q", "v")
                                                         if getattr(estimate, f) is not None})
        # quality_policy=expert: the re-rollouts follow the expert, which also stands in for the agent argument;
        # current: they follow ``agent``, the policy that collected the rollout (the probe runs before the update)
        ref = self._mc().estimate(rollout, agent if agent is not None else self.ctx.expert)
        out = advantage_quality(estimate.advantages, ref.advantages)
        for name in ("q", "v"):
            mine, theirs = getattr(estimate, name), getattr(ref, name)
            if mine is not None and theirs is not None:
                d = (_np(mine) - _np(theirs))
                d = d[np.isfinite(d)]
                out[f"quality/{name}_bias"] = float(d.mean()) if d.size else float("nan")
                out[f"quality/{name}_rmse"] = float(np.sqrt((d ** 2).mean())) if d.size else float("nan")
        out["quality/reference_std"] = float(ref.advantages.float().std())
        out["quality/sim_steps"] = int(ref.sim_steps)
        return out

    def close(self) -> None:
        if self._reference is not None:
            self._reference.close()
            self._reference = None
