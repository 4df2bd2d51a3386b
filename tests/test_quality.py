"""Estimator-quality metrics, and the quality probe (MC reference) on the chain MDP whose advantages are known."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from algorithms.quality import advantage_quality, average_ranks, obs_groups, pearson, spearman


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 200).astype(float)  # many ties
    y = x + rng.normal(0, 2, 200)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert np.allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    t = torch.randn(50)
    assert spearman(t, t.exp()) == pytest.approx(1.0)  # rank correlation: any increasing map is perfect
    assert spearman(t, -t ** 3) == pytest.approx(-1.0)
    assert math.isnan(spearman(torch.ones(5), torch.randn(5)))
    assert pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[2.0], [4.0], [7.0]])) == pytest.approx(
        stats.pearsonr([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]).statistic, abs=1e-12)
    assert math.isnan(pearson(torch.ones(5), torch.randn(5)))
    with pytest.raises(ValueError, match="equal sizes"):
        spearman(torch.ones(3), torch.ones(4))


def test_bias_rmse_and_within_group_metrics():
    torch.manual_seed(0)
    ref = torch.randn(10, 4)  # [T, N]
    offset = torch.tensor([0.0, 1.0, -2.0, 3.0])  # one shift per env column
    est = ref + offset  # right order inside every env, wrong level across envs
    q = advantage_quality(est, ref)
    assert q["quality/bias"] == pytest.approx(float(offset.mean()), abs=1e-6)
    assert q["quality/rmse"] == pytest.approx(float(offset.pow(2).mean().sqrt()), abs=1e-6)
    assert q["quality/spearman_within"] == pytest.approx(1.0) and q["quality/rmse_within"] == pytest.approx(0.0, abs=1e-6)
    assert q["quality/groups_within"] == 4 and q["quality/spearman"] < 1.0 and q["quality/samples"] == 40
    # flat inputs: no default groups; explicit ones work, and NaN pairs are dropped
    flat = advantage_quality(est.flatten(), ref.flatten())
    assert "quality/spearman_within" not in flat
    e2 = est.flatten().clone()
    e2[0] = float("nan")
    g = advantage_quality(e2, ref.flatten(), groups=torch.arange(4).repeat(10))
    assert g["quality/samples"] == 39 and g["quality/spearman_within"] == pytest.approx(1.0)
    assert advantage_quality(-ref, ref)["quality/sign_agreement"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        advantage_quality(est, ref.flatten())
    obs = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0]])
    labels = obs_groups(obs)
    assert labels[0] == labels[2] and labels[0] != labels[1]


def test_quality_probe_against_exact_chain_advantages():
    from algorithms.agent import Agent
    from algorithms.config import FinetuneConfig
    from algorithms.estimators import Estimate, TrialContext
    from algorithms.quality import QualityProbe
    from algorithms.rollout import collect_rollout
    from envs.toy import ChainConfig, ChainEnv, chain_env_factory, exact_values

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chain = ChainConfig(num_envs=2, length=4, max_episode_steps=8, start_cell=None)
        torch.manual_seed(0)
        agent = Agent(chain.length + 1, 1, init_logstd=0.0)
        with torch.no_grad():
            agent.actor_mean[6].bias.fill_(0.5)
        # exact values are finite-horizon (elapsed is in the state): the oracle keeps the rollout's step counter
        cfg = FinetuneConfig(env_id=chain.env_id, control_mode=chain.control_mode, gamma=0.8, quality_every=1,
                             quality_samples=128, mc_workers=8, mc_time_limit="restore")
        ctx = TrialContext(cfg=cfg, device=torch.device("cpu"), make_env=chain_env_factory(chain), expert=agent,
                           obs_dim=chain.length + 1, act_dim=1)
        env = ChainEnv(chain)
        ro = collect_rollout(agent, env, env.reset(seed=4), 12, torch.device("cpu"), save_states=True,
                             generator=torch.Generator().manual_seed(4))
        vals = exact_values(agent, 0.8, chain)
        obs, act = ro.flat(ro.obs), ro.flat(ro.actions)
        q, v = vals.q_of(obs, act).reshape(12, 2), vals.v_of(obs).reshape(12, 2)
        probe = QualityProbe(ctx)
        try:
            exact = probe.measure(ro, Estimate(advantages=q - v, q=q, v=v))
            flipped = probe.measure(ro, Estimate(advantages=v - q))
        finally:
            probe.close()
        # the MC reference (128 expert samples per state) agrees with the exact advantages up to sampling noise
        assert exact["quality/spearman"] > 0.8 and flipped["quality/spearman"] < -0.8, (exact, flipped)
        assert abs(exact["quality/bias"]) < 0.05 and exact["quality/rmse"] < 0.12
        assert exact["quality/v_rmse"] < 0.12 and exact["quality/sim_steps"] > 0
        # quality_envs: the oracle scores the first env's column only, at a fraction of the simulation
        import dataclasses

        one = QualityProbe(dataclasses.replace(ctx, cfg=dataclasses.replace(cfg, quality_envs=1)))
        try:
            first = one.measure(ro, Estimate(advantages=q - v, q=q, v=v))
        finally:
            one.close()
        assert first["quality/spearman"] > 0.8 and first["quality/sim_steps"] < exact["quality/sim_steps"]
        # quality_policy=current: the oracle follows the policy that collected the rollout, no expert needed
        cur_ctx = dataclasses.replace(ctx, expert=None, cfg=dataclasses.replace(cfg, quality_policy="current"))
        current = QualityProbe(cur_ctx)
        try:
            on = current.measure(ro, Estimate(advantages=q - v, q=q, v=v), agent)
            with pytest.raises(ValueError, match="quality_policy=current needs the policy"):
                current.measure(ro, Estimate(advantages=q - v))
        finally:
            current.close()
        assert on["quality/spearman"] > 0.8 and abs(on["quality/bias"]) < 0.05
        with pytest.raises(ValueError, match="save_states=True"):
            QualityProbe(ctx).measure(collect_rollout(agent, env, env.reset(seed=1), 2, torch.device("cpu")), Estimate(advantages=q[:2]))
    finally:
        torch.set_num_threads(n)
