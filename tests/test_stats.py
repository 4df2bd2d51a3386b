"""orchestrator.stats against rliable's published definitions, on hand-computable examples."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator import stats


def test_iqm_drops_a_quarter_at_each_end():
    # 8 runs: floor(8/4) = 2 dropped per side -> mean of 3, 4, 5, 6.
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)
    # An outlier in the top quarter does not move it.
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 1000]) == pytest.approx(4.5)
    # 5 runs: one dropped per side; 3 runs: nothing dropped (plain mean).
    assert stats.iqm([0.0, 0.2, 0.4, 0.6, 5.0]) == pytest.approx(0.4)
    assert stats.iqm([0.9, 0.95, 1.0]) == pytest.approx(0.95)
    # rliable pools runs x tasks before trimming: a 4 x 2 matrix is the 8 values 1..8.
    assert stats.iqm(np.arange(1, 9).reshape(4, 2)) == pytest.approx(4.5)


def test_iqm_along_an_axis_for_bootstrap_replicates():
    rows = np.array([np.arange(1, 9), np.arange(1, 9) * 10])
    np.testing.assert_allclose(stats.iqm(rows, axis=1), [4.5, 45.0])


def test_strata_layouts():
    assert [g.tolist() for g in stats.as_strata([1, 2, 3])] == [[1, 2, 3]]
    assert [g.tolist() for g in stats.as_strata(np.array([[1, 10], [2, 20]]))] == [[1, 2], [10, 20]]
    assert [g.tolist() for g in stats.as_strata([[1, 2, 3], [4]])] == [[1, 2, 3], [4]]
    with pytest.raises(ValueError, match="no scores"):
        stats.as_strata([])
    with pytest.raises(ValueError, match="NaN"):
        stats.as_strata([0.5, float("nan")])


def test_probability_of_improvement_counts_pairs_with_half_ties():
    x, y = [1.0, 2.0, 3.0], [2.0, 2.0, 0.5]
    # Pairs (x_i, y_j): x=1 beats 0.5 only -> 1; x=2 ties 2 twice, beats 0.5 -> 2; x=3 beats all -> 3.  6/9.
    assert stats.probability_of_improvement(x, y) == pytest.approx(6 / 9)
    assert stats.probability_of_improvement(y, x) == pytest.approx(3 / 9)  # P(X>Y) + P(Y>X) = 1
    assert stats.probability_of_improvement([0.5, 0.7], [0.5, 0.7]) == pytest.approx(0.5)
    assert stats.probability_of_improvement([0.9, 1.0], [0.1, 0.2, 0.3]) == 1.0
    # Averaged over tasks (strata): task 1 gives 1.0, task 2 gives 0.0.
    assert stats.probability_of_improvement([[1.0, 1.0], [0.0]], [[0.0], [1.0, 1.0]]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="strata"):
        stats.probability_of_improvement([[1.0], [2.0]], [[1.0]])


def test_bootstrap_ci_is_reproducible_and_brackets_the_estimate():
    scores = [0.55, 0.6, 0.62, 0.7, 0.71, 0.8, 0.85, 0.9]
    a = stats.interval_estimate(scores, reps=5000, rng=1)
    b = stats.interval_estimate(scores, reps=5000, rng=1)
    assert a == b
    assert a.point == pytest.approx(stats.iqm(scores))
    assert min(scores) <= a.low < a.point < a.high <= max(scores)
    assert a.n == len(scores)


def test_identical_runs_give_a_zero_width_interval_and_one_run_gives_none():
    iv = stats.interval_estimate([0.7, 0.7, 0.7], reps=200, rng=0)
    assert (iv.point, iv.low, iv.high) == pytest.approx((0.7, 0.7, 0.7))
    single = stats.interval_estimate([0.7], reps=200, rng=0)
    assert single.point == 0.7 and np.isnan(single.low) and np.isnan(single.high)
    assert single.format(scale=100) == "70.0"
    assert iv.format(scale=100) == "70.0 [70.0, 70.0]"


def test_bootstrap_resamples_within_strata():
    # Task A's runs are all 0, task B's all 1: a within-task resample always holds 2 zeros and 2 ones,
    # so every replicate's mean is exactly 0.5.  A pooled (unstratified) resample would vary.
    reps = stats.stratified_bootstrap([[0.0, 0.0], [1.0, 1.0]], statistic=np.mean, reps=1000, rng=0)
    assert np.all(reps == 0.5)
    pooled = stats.stratified_bootstrap([0.0, 0.0, 1.0, 1.0], statistic=np.mean, reps=1000, rng=0)
    assert pooled.std() > 0.1


def test_bootstrap_ci_matches_the_textbook_percentile_interval():
    # Same definition written naively (loop over replicates, np.mean): the vectorised version must agree
    # within Monte-Carlo error.
    scores = np.array([0.2, 0.4, 0.45, 0.5, 0.6, 0.9])
    gen = np.random.default_rng(7)
    naive = [np.mean(gen.choice(scores, size=scores.size, replace=True)) for _ in range(20_000)]
    lo, hi = np.percentile(naive, [2.5, 97.5])
    iv = stats.interval_estimate(scores, statistic=np.mean, reps=20_000, rng=3)
    assert iv.low == pytest.approx(lo, abs=0.01) and iv.high == pytest.approx(hi, abs=0.01)


def test_probability_of_improvement_interval():
    x, y = [0.9, 0.95, 1.0, 0.92], [0.6, 0.7, 0.65, 0.93]
    iv = stats.probability_of_improvement_interval(x, y, reps=4000, rng=0)
    assert iv.point == pytest.approx(stats.probability_of_improvement(x, y))
    assert iv.point == pytest.approx(14 / 16)  # 0.9 and 0.92 beat 3 of 4 (not 0.93); 0.95 and 1.0 beat all 4
    assert 0 <= iv.low <= iv.point <= iv.high == 1.0
    # Naive loop over replicates (explicit resampling of both samples) agrees within Monte-Carlo error.
    gen = np.random.default_rng(5)
    naive = [stats.probability_of_improvement(gen.choice(x, 4), gen.choice(y, 4)) for _ in range(8000)]
    assert iv.low == pytest.approx(np.percentile(naive, 2.5), abs=0.04)
    separated = stats.probability_of_improvement_interval([0.9, 1.0], [0.1, 0.2], reps=500, rng=0)
    assert (separated.point, separated.low, separated.high) == (1.0, 1.0, 1.0)


def test_matches_rliable_when_installed():
    """Cross-check against rliable itself (skipped where it is absent; it is not a dependency)."""
    metrics = pytest.importorskip("rliable.metrics")
    gen = np.random.default_rng(0)
    for runs, tasks in [(8, 1), (5, 3), (10, 2)]:
        x, y = gen.random((runs, tasks)), gen.random((runs + 2, tasks))
        y[0, 0] = x[0, 0]  # a tie
        assert stats.iqm(x) == pytest.approx(metrics.aggregate_iqm(x))
        assert stats.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))


def test_t_interval_below_five_runs_and_bootstrap_from_five():
    # 3 runs 0.93/0.95/0.97: mean 0.95, s = 0.02, t(0.975, 2) = 4.3027 -> half-width 0.0497
    iv = stats.interval_estimate([0.93, 0.95, 0.97], method="auto")
    assert iv.method == "t" and (iv.low, iv.high) == pytest.approx((0.95 - 0.049685, 0.95 + 0.049685), abs=1e-5)
    # two zeros out of three: the percentile bootstrap says [0, 0.x] from 10 distinct resamples; t does not collapse
    assert stats.interval_estimate([0.0, 0.0, 0.3], method="t").high > 0.3
    five = stats.interval_estimate([0.1, 0.2, 0.3, 0.4, 0.5], method="auto", rng=0)
    assert five.method == "percentile" and 0.1 <= five.low < five.point < five.high <= 0.5
    assert stats.interval_estimate([0.5], method="auto").method == "none"
    with pytest.raises(ValueError, match="method"):
        stats.interval_estimate([0.5, 0.6], method="bca")


def test_interval_estimates_is_rliable_shaped():
    out = stats.interval_estimates({"a": [0.1, 0.2, 0.3], "b": np.arange(8) / 8}, stats.iqm, reps=500, rng=0)
    assert set(out) == {"a", "b"} and out["a"].method == "t" and out["b"].method == "percentile"
    assert out["b"].point == pytest.approx(stats.iqm(np.arange(8) / 8))


def test_performance_profile_counts_runs_above_each_threshold():
    taus = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    point, low, high = stats.performance_profile([0.1, 0.5, 0.9], taus, reps=500, rng=0)
    np.testing.assert_allclose(point, [1, 2 / 3, 1 / 3, 1 / 3, 0])  # > tau, strictly: 0.5 is not above 0.5
    assert np.all(low <= point) and np.all(point <= high)
    _, nan_low, _ = stats.performance_profile([0.4], taus)
    assert np.isnan(nan_low).all()
