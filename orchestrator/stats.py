"""Aggregate statistics over seeds, following rliable's definitions (Agarwal et al., 2021).

Scores come grouped in *strata* (rliable's tasks): one 1-D array of per-run scores per stratum.
Every function accepts

* a 1-D array or a flat list of numbers: one stratum,
* a 2-D array shaped ``(runs, tasks)``: rliable's layout, one stratum per column,
* a list of 1-D arrays: one stratum each (they may differ in length, e.g. a task with a failed seed).

Definitions (rliable's):

* IQM: mean of the middle 50% of all runs pooled over strata, ``scipy.stats.trim_mean(x, 0.25)``
  (which drops ``floor(n / 4)`` runs at each end; for n < 4 nothing is dropped).
* Stratified bootstrap: each replicate resamples runs with replacement *within* each stratum, keeping
  every stratum's size, and recomputes the statistic on the pooled resample.  The 95% interval is the
  percentile interval (rliable's default method) of the replicates.
* Few runs: with fewer than ``MIN_BOOTSTRAP_RUNS`` runs in a stratum a resample can take only a handful of
  values (3 runs: 10 distinct multisets), and the percentile interval degenerates (e.g. [0.0, 0.0] when two of
  three runs scored 0).  ``interval_estimate(method="auto")`` then uses a Student-t interval,
  ``point +- t(0.975, n-1) * s / sqrt(n)`` on the pooled runs, and says so in ``Interval.method``.
* Probability of improvement P(X > Y): per stratum the Mann-Whitney U statistic over all run pairs
  (1 when x > y, 0.5 on ties) divided by ``n_x * n_y``, averaged over strata.  Its interval resamples
  X and Y independently within each stratum.

We implement these with numpy rather than importing rliable: rliable pins ``arch<8``, whose import
fails with pandas 3 (see SPEC.md, "Statistics").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
from scipy.stats import t as student_t
from scipy.stats import trim_mean

Scores = Union[np.ndarray, Sequence[float], Sequence[Sequence[float]]]
Statistic = Callable[..., np.ndarray]  # called as f(samples, axis=-1): one value per row of samples
RngLike = Union[None, int, np.random.Generator]

DEFAULT_REPS = 10_000  # rliable uses 50k; at 10k the Monte-Carlo error of a 2.5% quantile is ~0.3 points of success
MIN_BOOTSTRAP_RUNS = 5  # below this many runs per stratum the percentile bootstrap degenerates (module docstring)
METHODS = ("auto", "percentile", "t")


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap confidence interval (NaN bounds when it cannot be resampled)."""

    point: float
    low: float
    high: float
    n: int  # runs behind the estimate (pooled over strata)
    method: str = "percentile"  # how low/high were computed: "percentile" (bootstrap), "t", or "none"

    def format(self, scale: float = 1.0, digits: int = 1) -> str:
        """``"62.5 [50.0, 75.0]"``; ``"62.5"`` when there is no interval; ``"-"`` with no estimate."""
        if not np.isfinite(self.point):
            return "-"
        s = f"{self.point * scale:.{digits}f}"
        if np.isfinite(self.low) and np.isfinite(self.high):
            s += f" [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"
        return s


def iqm(scores: Scores, axis: Optional[int] = None):
    """Interquartile mean: with ``axis=None`` over all runs of all strata pooled (rliable's ``aggregate_iqm``)."""
    if axis is None:
        return float(trim_mean(np.concatenate(as_strata(scores)), 0.25))
    return trim_mean(np.asarray(scores, dtype=float), 0.25, axis=axis)


def as_strata(scores: Scores) -> list[np.ndarray]:
    """Normalise the accepted layouts (module docstring) to a list of non-empty float arrays, one per stratum."""
    if isinstance(scores, np.ndarray):
        arr = scores.astype(float)
        if arr.ndim == 1:
            groups = [arr]
        elif arr.ndim == 2:
            groups = [arr[:, j] for j in range(arr.shape[1])]
        else:
            raise ValueError(f"scores must be 1-D (runs) or 2-D (runs x tasks), got shape {arr.shape}")
    elif len(scores) and all(np.ndim(s) == 0 for s in scores):
        groups = [np.asarray(scores, dtype=float)]
    else:
        groups = [np.asarray(s, dtype=float).ravel() for s in scores]
    groups = [g for g in groups if g.size]
    if not groups:
        raise ValueError("no scores to aggregate")
    if any(np.isnan(g).any() for g in groups):
        raise ValueError("scores contain NaN; drop runs without a value before aggregating")
    return groups


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _resample_indices(n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(reps, n))


def _draw_counts(n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps x n) matrix: how often each of n runs is drawn in each bootstrap resample of size n."""
    idx = _resample_indices(n, reps, rng)
    flat = (np.arange(reps)[:, None] * n + idx).ravel()  # one bincount for all replicates at once
    return np.bincount(flat, minlength=reps * n).reshape(reps, n).astype(float)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` range of bootstrap replicates (the percentile method)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def stratified_bootstrap(scores: Scores, statistic: Statistic = iqm, reps: int = DEFAULT_REPS, rng: RngLike = None) -> np.ndarray:
    """``reps`` replicates of ``statistic`` on within-stratum resamples of the runs (pooled per replicate)."""
    groups = as_strata(scores)
    gen = _rng(rng)
    # One (reps x n_k) block of resampled runs per stratum, side by side: each row is one pooled replicate.
    samples = np.concatenate([g[_resample_indices(g.size, reps, gen)] for g in groups], axis=1)
    return np.asarray(statistic(samples, axis=-1), dtype=float)


def t_interval(scores: Scores, point: float, confidence: float = 0.95) -> tuple[float, float]:
    """``point +- t(1 - alpha/2, n - 1) * s / sqrt(n)`` over the pooled runs (s: sample standard deviation)."""
    pooled = np.concatenate(as_strata(scores))
    if pooled.size < 2:
        return float("nan"), float("nan")
    half = student_t.ppf(0.5 + confidence / 2, pooled.size - 1) * pooled.std(ddof=1) / np.sqrt(pooled.size)
    return float(point - half), float(point + half)


def interval_estimate(
    scores: Scores,
    statistic: Statistic = iqm,
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    rng: RngLike = None,
    method: str = "percentile",
) -> Interval:
    """Point estimate of ``statistic`` on the pooled runs with a ``confidence`` interval.

    ``method``: "percentile" (stratified bootstrap, rliable's), "t" (Student-t on the pooled runs) or
    "auto" (percentile when every stratum has at least ``MIN_BOOTSTRAP_RUNS`` runs, else t).  The interval is
    NaN (method "none") when every stratum holds a single run: nothing can vary, and a zero-width interval
    would claim a certainty that one seed cannot give.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    groups = as_strata(scores)
    pooled = np.concatenate(groups)
    point = float(statistic(pooled[None, :], axis=-1)[0])
    if all(g.size < 2 for g in groups):
        return Interval(point, float("nan"), float("nan"), pooled.size, "none")
    if method == "t" or (method == "auto" and min(g.size for g in groups) < MIN_BOOTSTRAP_RUNS):
        return Interval(point, *t_interval(groups, point, confidence), pooled.size, "t")
    low, high = percentile_interval(stratified_bootstrap(groups, statistic, reps, rng), confidence)
    return Interval(point, low, high, pooled.size, "percentile")


def interval_estimates(
    score_dict: dict,
    aggregate_fn: Statistic = iqm,
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    rng: RngLike = None,
    method: str = "auto",
) -> dict[str, Interval]:
    """rliable's ``get_interval_estimates`` shape: {algorithm: scores} -> {algorithm: Interval} of ``aggregate_fn``."""
    gen = _rng(rng)
    return {k: interval_estimate(v, aggregate_fn, reps, confidence, gen, method) for k, v in score_dict.items()}


def performance_profile(scores: Scores, taus: np.ndarray, reps: int = 1_000, confidence: float = 0.95,
                        rng: RngLike = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rliable's run-score profile: the fraction of runs scoring above each tau, with a stratified-bootstrap band.

    Returns (fraction [len(taus)], low [len(taus)], high [len(taus)]); the band is NaN with one run per stratum.
    """
    taus = np.asarray(taus, dtype=float)
    groups = as_strata(scores)

    def above(samples, axis=-1):  # samples: [reps, runs] -> [reps, len(taus)]
        return (np.asarray(samples)[..., None] > taus).mean(axis=-2)

    point = above(np.concatenate(groups)[None, :])[0]
    if all(g.size < 2 for g in groups):
        nan = np.full_like(point, np.nan)
        return point, nan, nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stratified_bootstrap(groups, above, reps, rng), [tail, 100 - tail], axis=0)
    return point, low, high


def _win_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """S[i, j] = 1 if x_i > y_j, 0.5 on a tie, else 0: the Mann-Whitney kernel."""
    return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])


def _paired_strata(scores_x: Scores, scores_y: Scores) -> tuple[list[np.ndarray], list[np.ndarray]]:
    gx, gy = as_strata(scores_x), as_strata(scores_y)
    if len(gx) != len(gy):
        raise ValueError(f"X has {len(gx)} strata (tasks) and Y has {len(gy)}; they must match")
    return gx, gy


def probability_of_improvement(scores_x: Scores, scores_y: Scores) -> float:
    """P(X > Y): probability that a random run of X beats a random run of Y on the same task, averaged over tasks."""
    gx, gy = _paired_strata(scores_x, scores_y)
    return float(np.mean([_win_matrix(x, y).mean() for x, y in zip(gx, gy)]))


def probability_of_improvement_interval(
    scores_x: Scores,
    scores_y: Scores,
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    rng: RngLike = None,
) -> Interval:
    """P(X > Y) with a percentile interval from independent within-stratum resampling of X and of Y."""
    gx, gy = _paired_strata(scores_x, scores_y)
    gen = _rng(rng)
    point = probability_of_improvement(gx, gy)
    n = sum(x.size + y.size for x, y in zip(gx, gy))
    if all(x.size < 2 and y.size < 2 for x, y in zip(gx, gy)):
        return Interval(point, float("nan"), float("nan"), n)
    per_task = []
    for x, y in zip(gx, gy):
        # A resample is fully described by how often each run was drawn, so P for replicate r is
        # cx_r . S . cy_r / (n_x n_y): no (reps x n_x x n_y) array is ever built.
        cx, cy = _draw_counts(x.size, reps, gen), _draw_counts(y.size, reps, gen)
        per_task.append(np.sum((cx @ _win_matrix(x, y)) * cy, axis=1) / (x.size * y.size))
    low, high = percentile_interval(np.mean(per_task, axis=0), confidence)
    return Interval(point, low, high, n)
