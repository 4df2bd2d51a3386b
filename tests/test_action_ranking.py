"""The reference's action-ranking quality analysis (quality_mode=actions): metrics by hand, the probe on the chain MDP
whose values are known, and recorded re-rollout trajectories on real ManiSkill (inside the env workers)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from algorithms.action_ranking import ActionRankingProbe, ranking_metrics
from algorithms.config import FinetuneConfig


def test_ranking_metrics_by_hand():
    oracle = torch.tensor([[0.1, 0.5, 0.3, 0.2],    # state 0
                           [0.4, 0.4, 0.4, 0.4],    # state 1: the oracle cannot rank: skipped
                           [0.9, 0.1, 0.5, 0.7]])   # state 2
    est = torch.tensor([[1.0, 9.0, 4.0, 2.0],       # the same order as the oracle: rho 1, same best action
                        [3.0, 1.0, 2.0, 0.0],
                        [0.0, 3.0, 2.0, 1.0]])      # the reverse order: rho -1, other best action
    m = ranking_metrics(est, oracle)
    assert m["quality/states"] == 2
    assert m["quality/spearman"] == pytest.approx(0.0) and m["quality/spearman_median"] == pytest.approx(0.0)
    assert m["quality/top1"] == pytest.approx(0.5)
    # a state-wide offset (a V shared by the state's actions) changes no metric: the pooled ones use centred values
    shifted = ranking_metrics(est + torch.tensor([[5.0], [-2.0], [1.0]]), oracle)
    assert shifted == pytest.approx(m, nan_ok=True)
    same = ranking_metrics(oracle * 3 + 1, oracle)
    assert same["quality/spearman"] == pytest.approx(1.0) and same["quality/top1"] == 1.0 and same["quality/states"] == 2
    assert same["quality/sign_agreement"] == pytest.approx(1.0)
    flat = ranking_metrics(torch.zeros(3, 4), oracle)  # an estimator that ranks nothing (uniform)
    assert flat["quality/states"] == 0 and math.isnan(flat["quality/spearman"])


@pytest.fixture
def chain_trial():
    from algorithms.agent import Agent
    from algorithms.estimators import TrialContext
    from algorithms.rollout import collect_rollout
    from envs.toy import ChainConfig, ChainEnv, chain_env_factory

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    chain = ChainConfig(num_envs=2, length=4, max_episode_steps=8, start_cell=None)
    torch.manual_seed(0)
    agent = Agent(chain.length + 1, 1, init_logstd=0.0)
    with torch.no_grad():
        agent.actor_mean[6].bias.fill_(0.3)
        for p in agent.critic.parameters():  # V = 0: TD(N >= H) and GAE(lambda = 1) are the trajectory's return
            p.zero_()
    cfg = FinetuneConfig(env_id=chain.env_id, control_mode=chain.control_mode, gamma=0.8, quality_every=1, quality_mode="actions",
                         quality_policy="current", quality_states=6, quality_actions=6, quality_samples=64, mc_workers=16,
                         mc_time_limit="restore", estimator="td", td_n=8, update="awr")
    ctx = TrialContext(cfg=cfg, device=torch.device("cpu"), make_env=chain_env_factory(chain), expert=None,
                       obs_dim=chain.length + 1, act_dim=1)
    env = ChainEnv(chain)
    ro = collect_rollout(agent, env, env.reset(seed=4), 12, torch.device("cpu"), save_states=True, generator=torch.Generator().manual_seed(4))
    yield chain, agent, cfg, ctx, ro
    torch.set_num_threads(n)


def test_trajectory_estimator_scored_on_the_oracles_own_rerollouts(chain_trial):
    """TD(N >= episode length) with V = 0 gives each trajectory's first step its return: its mean over the M
    re-rollouts of (s, a_k) *is* the oracle's Q, so every state that can be ranked is ranked perfectly."""
    from algorithms.estimators import make_estimator

    chain, agent, cfg, ctx, ro = chain_trial
    td = make_estimator("td", ctx)
    probe = ActionRankingProbe(ctx)
    try:
        m = probe.measure(ro, None, agent, td)
        gae = make_estimator("gae", dataclasses.replace(ctx, cfg=dataclasses.replace(cfg, estimator="gae", gae_lambda=1.0)))
        g = probe.measure(ro, None, agent, gae)
        uniform = probe.measure(ro, None, agent, make_estimator("uniform", ctx))
    finally:
        probe.close()
    assert m["quality/states"] >= 3, m  # on a 4-cell chain with noise 1, most states have both moves among 6 actions
    assert m["quality/spearman"] == pytest.approx(1.0) and m["quality/top1"] == 1.0
    assert m["quality/rmse"] == pytest.approx(0.0, abs=1e-6) and m["quality/sim_steps"] > 6 * 6 * 64
    assert g["quality/spearman"] == pytest.approx(1.0)
    assert uniform["quality/states"] == 0 and math.isnan(uniform["quality/spearman"])


def test_mc_estimator_scored_by_its_own_rerollouts_and_the_oracle_is_the_true_q(chain_trial):
    """An MC estimator scores (s, a_k) with its own re-rollouts; both it and the oracle estimate the true Q of the
    chain (dynamic programming), so each agrees with it, centred per state, up to sampling noise."""
    from algorithms.estimators import make_estimator
    from envs.toy import exact_values

    chain, agent, cfg, ctx, ro = chain_trial
    mcfg = dataclasses.replace(cfg, estimator="mc", mc_policy="current", mc_samples=64, mc_q="rerollout")
    mc = make_estimator("mc", dataclasses.replace(ctx, cfg=mcfg))
    before = mc.gen.get_state().clone()
    probe = ActionRankingProbe(ctx)
    try:
        s = probe.scores(ro, agent, mc)
        m = probe.measure(ro, None, agent, mc)
    finally:
        probe.close()
        mc.close()
    assert torch.equal(mc.gen.get_state(), before)  # the trial's own re-rollout stream is untouched
    S, K = s["oracle"].shape
    assert (S, K) == (6, 6) and s["actions"].shape == (6, 6, 1)
    vals = exact_values(agent, 0.8, chain)
    q = vals.q_of(s["obs"].repeat_interleave(K, 0), s["actions"].reshape(S * K, 1)).reshape(S, K)

    def centred(x):
        return x - x.mean(1, keepdim=True)

    for name in ("oracle", "estimate"):
        err = (centred(s[name]) - centred(q)).abs()
        # 64 returns of at most 1 each: a standard error below 0.07 per value
        assert err.mean() < 0.07 and err.max() < 0.25, (name, err)
    assert m["quality/states"] >= 3 and m["quality/rmse"] < 0.1, m


def test_bad_action_ranking_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown quality_mode 'states'"):
        FinetuneConfig(quality_mode="states")
    with pytest.raises(ValueError, match="quality_actions must be >= 2"):
        FinetuneConfig(quality_mode="actions", quality_actions=1)
    with pytest.raises(ValueError, match="needs mc_q=rerollout"):
        FinetuneConfig(estimator="mc", update="awr", quality_every=1, quality_mode="actions", mc_q="transition")


def test_recorded_rerollouts_on_maniskill_match_their_returns(env_fork_server):
    """Real PickCube on CPU PhysX, re-rollouts inside 2 env worker processes: each recorded trajectory's
    discounted rewards are the engine's return, it ends its episode at its last real step, and the padding
    after it is flagged truncated with zero reward."""
    from algorithms.checkpoint import load_policy
    from algorithms.estimators.mc import RerolloutEngine
    from algorithms.rollout import collect_rollout
    from envs import EnvConfig, make_vector_env

    start, _ = load_policy("experiments/checkpoints/pickcube/start.pt")
    ecfg = EnvConfig(num_envs=1, reward_mode="sparse")
    with make_vector_env(ecfg, env_fork_server) as venv:
        ro = collect_rollout(start, venv, venv.reset(seed=3), 3, torch.device("cpu"), save_states=True)
    states = ro.states[:, 0]
    with make_vector_env(ecfg.replace(num_envs=2, autoreset=False, num_workers=2), env_fork_server) as slots:
        engine = RerolloutEngine(slots, gamma=0.8, horizon=12, in_workers=True)
        first = torch.zeros(len(states), 8)
        G, stats = engine.returns(states, start, torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                                  first_actions=first, record=True)
    tr = stats["trajectories"]
    L, J = tr["rewards"].shape
    assert J == 3 and L == tr["length"].max() <= 12 and (tr["actions"][0] == 0).all()  # the forced first action
    disc = 0.8 ** np.arange(L)[:, None]
    assert np.allclose((tr["rewards"] * disc).sum(0), G.numpy(), atol=1e-6)
    for j, n in enumerate(tr["length"]):
        assert tr["terminated"][n - 1, j] or tr["truncated"][n - 1, j]
        assert not (tr["terminated"][: n - 1, j] | tr["truncated"][: n - 1, j]).any()
        assert tr["truncated"][n:, j].all() and (tr["rewards"][n:, j] == 0).all()
    assert stats["steps"] == tr["length"].sum()
