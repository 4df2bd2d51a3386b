"""Estimator pieces against exact values: the chain MDP of envs/toy.py, whose V and Q follow by dynamic programming."""
from __future__ import annotations

import pytest
import torch

from algorithms.agent import Agent
from algorithms.estimators.gae import gae
from algorithms.returns import discounted_returns
from algorithms.rollout import collect_rollout
from algorithms.value_functions import expectile_loss
from envs.toy import ChainConfig, ChainEnv, chain_env_factory, decode_obs, exact_values

GAMMA = 0.8


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These networks are tiny: on a loaded 2-core machine extra intra-op threads only spin (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def chain_agent(cfg: ChainConfig, seed: int = 0) -> Agent:
    """A Gaussian policy that mostly moves right, p(right | s) = Phi(mu(s)) varying with the state around 0.7."""
    torch.manual_seed(seed)
    agent = Agent(cfg.length + 1, 1, init_logstd=0.0)
    with torch.no_grad():
        agent.actor_mean[6].weight.normal_(0, 0.1)
        agent.actor_mean[6].bias.fill_(0.5)
    return agent


@torch.no_grad()
def simulated_returns(agent, cfg: ChainConfig, first_action=None, seed=1) -> torch.Tensor:
    """Discounted return of one episode per env from the start cell, optionally forcing the first action."""
    env = ChainEnv(cfg.replace(autoreset=False))
    obs = env.reset(seed=0)
    G, disc = torch.zeros(cfg.num_envs), torch.ones(cfg.num_envs)
    ids = torch.arange(cfg.num_envs)
    gen = torch.Generator().manual_seed(seed)
    first = True
    while len(ids):
        a = agent.act(obs, generator=gen)
        if first and first_action is not None:
            a[:] = first_action
        first = False
        s = env.step(a, env_ids=ids)
        G[ids] += disc[ids] * s.reward
        disc[ids] *= GAMMA
        keep = ~(s.terminated | s.truncated)
        ids, obs = ids[keep], s.final_obs[keep]
    return G


def test_chain_env_api_state_roundtrip_and_partial_autoreset():
    cfg = ChainConfig(num_envs=2, length=3, max_episode_steps=4, start_cell=0)
    env = ChainEnv(cfg)
    obs = env.reset(seed=5)
    assert obs.shape == (2, env.obs_dim) and env.act_dim == 1 and env.state_dim == 1 and env.backend == "toy"
    s = env.step(torch.tensor([[1.0], [-1.0]]))
    saved = env.get_state()
    assert saved.elapsed.tolist() == [1, 1] and saved.sim[:, 0].tolist() == [1.0, 0.0]
    # env 0 reaches the goal: reward 1, terminated, auto-reset to the start cell; env 1 keeps running
    s = env.step(torch.tensor([[1.0], [1.0]]))
    assert s.reward.tolist() == [1.0, 0.0] and s.terminated.tolist() == [True, False] and s.success.tolist() == [True, False]
    assert decode_obs(s.final_obs, 3, 4)[0].tolist() == [2, 1]
    assert decode_obs(s.obs, 3, 4)[0].tolist() == [0, 1] and decode_obs(s.obs, 3, 4)[1].tolist() == [0, 2]
    # restoring a saved state reproduces its observation and its continuation
    restored = env.set_state(saved)
    assert torch.equal(restored, torch.stack([torch.eye(4)[1], torch.eye(4)[0]]) + torch.tensor([0, 0, 0, 0.25]))
    again = env.step(torch.tensor([[1.0], [1.0]]))
    assert torch.equal(again.final_obs, s.final_obs) and torch.equal(again.reward, s.reward)
    # subset stepping and truncation at the time limit
    env.reset(seed=0)
    for _ in range(3):
        st = env.step(torch.tensor([[-1.0]]), env_ids=torch.tensor([1]))
    st = env.step(torch.tensor([[-1.0]]), env_ids=torch.tensor([1]))
    assert st.truncated.tolist() == [True] and st.terminated.tolist() == [False]
    assert env.get_state().elapsed.tolist() == [0, 0]  # env 1 auto-reset, env 0 never stepped
    with pytest.raises(ValueError, match="non-goal cell"):
        ChainConfig(length=3, start_cell=2)


def test_exact_values_match_simulated_returns():
    cfg = ChainConfig(num_envs=4000, length=4, max_episode_steps=8, start_cell=0)
    agent = chain_agent(cfg)
    vals = exact_values(agent, GAMMA, cfg)
    p = vals.p_right[:-1]
    assert 0.4 < float(p.min()) and float(p.max()) < 0.95 and float(p.max() - p.min()) > 0.05  # stochastic, state-dependent
    for first, exact in ((None, vals.v[0, 0]), (1.0, vals.q_right[0, 0]), (-1.0, vals.q_left[0, 0])):
        G = simulated_returns(agent, cfg, first_action=first)
        se = G.std() / cfg.num_envs ** 0.5
        assert abs(float(G.mean() - exact)) < 4 * float(se) + 1e-6, (first, float(G.mean()), float(exact))
    # Bellman consistency of the table itself
    assert torch.allclose(vals.v, vals.p_right * vals.q_right + (1 - vals.p_right) * vals.q_left, atol=1e-6)


def _rollout(cfg, agent, T, seed=3):
    env = ChainEnv(cfg)
    obs = env.reset(seed=seed)
    return collect_rollout(agent, env, obs, T, torch.device("cpu"), save_states=True, generator=torch.Generator().manual_seed(seed))


def test_gae_with_true_values_is_exact():
    """lambda = 1: GAE returns are the discounted MC returns (bootstrapped with the true V only where the rollout
    cuts an episode); lambda = 0: the one-step advantage, which for these deterministic moves is Q - V exactly."""
    cfg = ChainConfig(num_envs=4, length=4, max_episode_steps=5, start_cell=None)
    agent = chain_agent(cfg)
    vals = exact_values(agent, GAMMA, cfg)
    ro = _rollout(cfg, agent, T=23)
    assert ro.terminated.any() and ro.truncated.any() and not (ro.terminated & ro.truncated).all()
    T, N = ro.rewards.shape
    v = vals.v_of(ro.flat(ro.obs)).reshape(T, N)
    v_next = vals.v_of(ro.flat(ro.next_obs)).reshape(T, N)

    _, ret1 = gae(ro.rewards, v, v_next, ro.terminated, ro.dones, GAMMA, 1.0)
    mc, complete = discounted_returns(ro.rewards, ro.terminated, ro.truncated, GAMMA)
    assert complete.any() and not complete.all()
    assert torch.allclose(ret1[complete], mc[complete], atol=1e-6)
    # steps of the episode the rollout cuts: sum of rewards to T, then gamma^(T-t) V(true successor of the last step)
    for n in range(N):
        for t in range(T):
            if complete[t, n]:
                continue
            g = sum(GAMMA ** (k - t) * float(ro.rewards[k, n]) for k in range(t, T)) + GAMMA ** (T - t) * float(v_next[T - 1, n])
            assert abs(float(ret1[t, n]) - g) < 1e-5

    adv0, _ = gae(ro.rewards, v, v_next, ro.terminated, ro.dones, GAMMA, 0.0)
    exact_adv = (vals.q_of(ro.flat(ro.obs), ro.flat(ro.actions)) - vals.v_of(ro.flat(ro.obs))).reshape(T, N)
    assert torch.allclose(adv0, exact_adv, atol=1e-6)


def fit_expectile(samples: torch.Tensor, tau: float, steps: int = 1500) -> float:
    """Minimise the expectile loss over a scalar by gradient descent (what IQL's V regression does per state)."""
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.4)
    for _ in range(steps):
        loss = expectile_loss(samples - v, tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return v.item()


def test_expectile_regression_mean_at_half_and_max_as_tau_to_one():
    cfg = ChainConfig(num_envs=1, length=4, max_episode_steps=8, start_cell=0)
    agent = chain_agent(cfg)
    vals = exact_values(agent, GAMMA, cfg)
    cell, el = 1, 2
    # Q(s, a) for a fixed sample of on-policy actions at s: exactly the targets V is regressed on
    obs = torch.zeros(4000, cfg.length + 1)
    obs[:, cell] = 1.0
    obs[:, -1] = el / cfg.max_episode_steps
    with torch.no_grad():
        actions = agent.act(obs, generator=torch.Generator().manual_seed(0))
    q = vals.q_of(obs, actions)
    assert float(vals.q_right[cell, el]) > float(vals.q_left[cell, el])

    v_half = fit_expectile(q, 0.5)
    assert abs(v_half - float(q.mean())) < 1e-4  # tau = 0.5: the mean...
    assert abs(v_half - float(vals.v[cell, el])) < 0.01  # ...= the on-policy V, up to the sampling of 4000 actions
    fits = {tau: fit_expectile(q, tau) for tau in (0.7, 0.9, 0.99, 0.999)}
    taus = sorted(fits)
    assert all(fits[a] < fits[b] for a, b in zip(taus, taus[1:])) and v_half < fits[0.7]
    top, spread = float(q.max()), float(q.max() - q.min())
    assert top - fits[0.999] < 0.01 * spread and fits[0.999] <= top + 1e-6  # -> max_a Q(s, a) as tau -> 1
    # the first-order condition that defines the tau-expectile holds at the fit
    for tau, v in fits.items():
        above, below = (q - v).clamp(min=0).mean(), (v - q).clamp(min=0).mean()
        assert abs(float(tau * above - (1 - tau) * below)) < 1e-4


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    from algorithms.data import rollout_transitions, save_dataset

    cfg = ChainConfig(num_envs=16, length=4, max_episode_steps=10, start_cell=None)
    agent = chain_agent(cfg, seed=2)
    ro = _rollout(cfg, agent, T=64, seed=11)
    path = tmp_path_factory.mktemp("toy") / "toy_data.pt"
    save_dataset(path, rollout_transitions(ro), env_id=cfg.env_id, control_mode=cfg.control_mode, config={"source": "toy"})
    return path, cfg, agent


def _pretrain(dataset, out, tau):
    from algorithms.pretrain_values import IQLPretrainConfig, pretrain_iql

    return pretrain_iql(IQLPretrainConfig(dataset=str(dataset), out=str(out), expectile=tau, gamma=GAMMA, steps=800,
                                          lr=2e-3, batch_size=128, hidden=64, target_update_rate=0.02, seed=0))


def test_iql_pretraining_on_toy_data_orders_actions(toy_dataset, tmp_path):
    from algorithms.value_functions import load_iql

    path, cfg, agent = toy_dataset
    vals = exact_values(agent, GAMMA, cfg)
    goal, H = cfg.length - 1, cfg.max_episode_steps
    cells = torch.arange(goal).repeat_interleave(H)
    els = torch.arange(H).repeat(goal)
    # where the goal is out of reach in the steps left, every action is worth 0: no order to learn there
    gap = (vals.q_right - vals.q_left)[cells, els]
    assert bool((gap >= 0).all())
    cells, els = cells[gap > 1e-3], els[gap > 1e-3]
    assert len(cells) >= 2 * goal
    from envs.toy import chain_obs

    obs = chain_obs(cells, els, cfg.length, H)
    right, left = torch.ones(len(obs), 1), -torch.ones(len(obs), 1)
    exact_right = vals.q_right[cells, els] - vals.v[cells, els]
    exact_left = vals.q_left[cells, els] - vals.v[cells, els]
    assert int((exact_right > 0.05).sum()) >= goal * H // 2 and int((exact_left < -0.05).sum()) >= goal * H // 2
    means = {}
    for tau in (0.5, 0.8):
        values, ck = load_iql(_pretrain(path, tmp_path / f"v{tau}.pt", tau), obs_dim=cfg.length + 1, act_dim=1)
        assert ck["config"]["expectile"] == tau and ck["config"]["dataset_sha256"]
        with torch.no_grad():
            a_right, a_left = values.advantage(obs, right), values.advantage(obs, left)
            means[tau] = float(values.value(obs).mean())
        # moving toward the goal is better in every such state: right has A > 0, left A < 0
        assert float((a_right > a_left).float().mean()) == 1.0
        assert bool((a_left[exact_left < -0.05] < 0).all())
        if tau == 0.5:
            # (a higher expectile lifts V toward Q(s, right): A(s, right) > 0 stays, but too small to resolve)
            assert bool((a_right[exact_right > 0.05] > 0).all())
        if tau == 0.5:  # SARSA on the data policy's own data: its exact V, up to what 1024 transitions tell
            with torch.no_grad():
                v_grid = values.value(chain_obs(torch.arange(goal).repeat_interleave(H), torch.arange(H).repeat(goal), cfg.length, H)).reshape(goal, H)
            assert bool((v_grid[1:] > v_grid[:-1]).all())  # closer to the goal is worth more, at every elapsed time
            # early in the episode (away from the time limit, which V(s') bootstraps through) it is close
            assert float((v_grid[:, : H // 2] - vals.v[:goal, : H // 2]).abs().mean()) < 0.06
    assert means[0.8] > means[0.5]  # a higher expectile sits higher


def test_sarsa_estimator_on_toy_rollout_matches_exact_advantages(toy_dataset, tmp_path):
    from algorithms.config import FinetuneConfig
    from algorithms.estimators import TrialContext, make_estimator
    from algorithms.quality import advantage_quality

    path, cfg, agent = toy_dataset
    ck = _pretrain(path, tmp_path / "sarsa.pt", 0.5)
    fcfg = FinetuneConfig(estimator="sarsa", env_id=cfg.env_id, control_mode=cfg.control_mode, iql_checkpoint=str(ck),
                          gamma=GAMMA, iql_online_updates=5, minibatch_size=16)
    ctx = TrialContext(cfg=fcfg, device=torch.device("cpu"), make_env=chain_env_factory(cfg), obs_dim=cfg.length + 1, act_dim=1)
    est = make_estimator("sarsa", ctx)
    ro = _rollout(cfg.replace(num_envs=4), agent, T=20, seed=99)
    e = est.estimate(ro, agent)
    assert e.advantages.shape == (20, 4) and torch.allclose(e.advantages, e.q - e.v)
    vals = exact_values(agent, GAMMA, cfg)
    exact = (vals.q_of(ro.flat(ro.obs), ro.flat(ro.actions)) - vals.v_of(ro.flat(ro.obs))).reshape(20, 4)
    qm = advantage_quality(e.advantages, exact)
    assert qm["quality/spearman"] > 0.8 and qm["quality/sign_agreement"] > 0.85, qm
    # online updates change the networks; the state round-trips into a fresh estimator
    before = [p.clone() for p in est.values.parameters()]
    m = est.after_update(ro, e, agent)
    assert set(m) == {"losses/q_loss", "losses/value_loss"}
    assert any(not torch.equal(a, b) for a, b in zip(before, est.values.parameters()))
    fresh = make_estimator("sarsa", ctx)
    fresh.load_state_dict(est.state_dict())
    assert torch.equal(fresh.estimate(ro, agent).advantages, est.estimate(ro, agent).advantages)
    # IQL refuses a SARSA (tau 0.5) checkpoint when the trial asks for tau 0.7
    from algorithms.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="needs Q/V trained with expectile 0.7, but .* expectile 0.5"):
        make_estimator("iql", TrialContext(cfg=FinetuneConfig(estimator="iql", env_id=cfg.env_id, control_mode=cfg.control_mode,
                                                              iql_checkpoint=str(ck), gamma=GAMMA, iql_expectile=0.7),
                                           device=torch.device("cpu"), make_env=chain_env_factory(cfg), obs_dim=cfg.length + 1, act_dim=1))
    with pytest.raises(CheckpointError, match="gamma=0.8, the trial uses gamma=0.9"):
        make_estimator("sarsa", TrialContext(cfg=FinetuneConfig(estimator="sarsa", env_id=cfg.env_id, control_mode=cfg.control_mode,
                                                                iql_checkpoint=str(ck), gamma=0.9),
                                             device=torch.device("cpu"), make_env=chain_env_factory(cfg), obs_dim=cfg.length + 1, act_dim=1))


# --- Monte-Carlo re-rollouts (algorithms/estimators/mc.py) against the exact values ------------------------------

def _mc_estimate(cfg, agent, ro, samples, seed, mc_q="transition"):
    from algorithms.config import FinetuneConfig
    from algorithms.estimators.base import TrialContext
    from algorithms.estimators.mc import MCEstimator

    # the exact values are finite-horizon (elapsed is part of the state): re-rollouts keep the rollout's counter
    fcfg = FinetuneConfig(estimator="mc", update="awr", mc_policy="current", mc_samples=samples, mc_workers=16, gamma=GAMMA, seed=seed,
                          mc_q=mc_q, mc_time_limit="restore")
    est = MCEstimator(TrialContext(cfg=fcfg, device=torch.device("cpu"), make_env=chain_env_factory(cfg), obs_dim=cfg.length + 1, act_dim=1))
    try:
        return est.estimate(ro, agent)
    finally:
        est.close()


def _exact_qv(vals, ro):
    T, N = ro.rewards.shape
    q = vals.q_of(ro.flat(ro.obs), ro.flat(ro.actions)).reshape(T, N).float()
    v = vals.v_of(ro.flat(ro.obs)).reshape(T, N).float()
    return q, v


@pytest.mark.parametrize("mc_q", ["transition", "rerollout"])
def test_mc_converges_to_true_q_and_v_as_samples_grow(mc_q):
    cfg = ChainConfig(num_envs=3, length=5, max_episode_steps=8, start_cell=None)
    agent = chain_agent(cfg)
    vals = exact_values(agent, GAMMA, cfg)
    ro = _rollout(cfg, agent, T=8)
    q_true, v_true = _exact_qv(vals, ro)
    rmse = {}
    for m in (1, 16, 256):
        e = _mc_estimate(cfg, agent, ro, m, seed=11, mc_q=mc_q)
        rmse[m] = float(torch.sqrt(((e.q - q_true) ** 2 + (e.v - v_true) ** 2).mean() / 2))
    assert rmse[1] > rmse[16] > rmse[256], rmse
    assert rmse[256] < 0.03, rmse  # sd of one return here is < 0.5, so 256 samples give ~0.03 at worst
    e = _mc_estimate(cfg, agent, ro, 256, seed=12)
    assert torch.allclose(e.advantages, e.q - e.v)


def test_mc_single_sample_is_unbiased_over_many_draws():
    cfg = ChainConfig(num_envs=2, length=4, max_episode_steps=6, start_cell=None)
    agent = chain_agent(cfg)
    vals = exact_values(agent, GAMMA, cfg)
    ro = _rollout(cfg, agent, T=6)
    q_true, v_true = _exact_qv(vals, ro)
    draws = torch.stack([torch.stack([e.q, e.v]) for e in (_mc_estimate(cfg, agent, ro, 1, seed=100 + k) for k in range(300))])
    mean, se = draws.mean(0), draws.std(0) / 300 ** 0.5
    truth = torch.stack([q_true, v_true])
    z = (mean - truth).abs() / se.clamp(min=1e-3)
    assert (z < 4.5).all(), (mean - truth, se)


def test_stochastic_transitions_need_rerolled_q():
    """With slips (the move goes the other way with probability 0.3), Q(s_t, a_t) = r_t + gamma V(s_t+1) from the
    rollout's one sampled successor stays unbiased but keeps that successor's noise however many re-rollouts back
    V(s_t+1); re-rolling Q from (s_t, a_t) averages the slips too.  So at M = 256 the re-rolled advantages are close to
    the exact ones and rank them better, the transition scheme's are not (mc_q's help text says when each is right)."""
    from algorithms.quality import spearman

    cfg = ChainConfig(num_envs=6, length=5, max_episode_steps=8, start_cell=None, slip=0.3)
    agent = chain_agent(cfg)
    vals = exact_values(agent, GAMMA, cfg)
    ro = _rollout(cfg, agent, T=8)
    q_true, v_true = _exact_qv(vals, ro)
    a_true = (q_true - v_true).flatten()
    err, rho = {}, {}
    for scheme in ("transition", "rerollout"):
        e = _mc_estimate(cfg, agent, ro, 256, seed=21, mc_q=scheme)
        a = e.advantages.flatten()
        err[scheme] = float(torch.sqrt(((a - a_true) ** 2).mean()))
        rho[scheme] = spearman(a.numpy(), a_true.numpy())
    assert err["rerollout"] < 0.05 < err["transition"], err
    assert rho["rerollout"] > rho["transition"] + 0.3 and rho["rerollout"] > 0.8, rho  # measured 0.90 vs 0.24


def test_exact_values_with_slips_match_simulated_returns():
    cfg = ChainConfig(num_envs=4000, length=4, max_episode_steps=6, start_cell=1, slip=0.3)
    agent = chain_agent(cfg)
    vals = exact_values(agent, GAMMA, cfg)
    g = simulated_returns(agent, cfg)
    assert abs(float(g.mean()) - float(vals.v[1, 0])) < 4 * float(g.std()) / 4000 ** 0.5


@pytest.mark.parametrize("estimator", ["gae", "td"])
def test_critic_bootstrap_terminal_adds_the_final_value_at_terminations_only(estimator):
    """The reference's ppo_finetune bootstraps V(final obs) at every episode end (critic_bootstrap_terminal=true);
    ours by default bootstraps only at time limits.  With lambda = 0 / N = 1 the two targets differ exactly by
    gamma * V(final obs) on terminated steps and nowhere else."""
    from algorithms.config import FinetuneConfig
    from algorithms.estimators import TrialContext, make_estimator

    cfg = ChainConfig(num_envs=4, length=4, max_episode_steps=5, start_cell=None)
    agent = chain_agent(cfg)
    with torch.no_grad():
        agent.critic[-1].bias.fill_(0.5)  # V(final obs) != 0, so the choice shows
    ro = _rollout(cfg, agent, T=23)
    assert ro.terminated.any() and ro.truncated.any()
    targets = {}
    for boot in (False, True):
        fcfg = FinetuneConfig(estimator=estimator, env_id=cfg.env_id, control_mode=cfg.control_mode, gamma=GAMMA,
                              gae_lambda=0.0, td_n=1, gae_reset_critic=False, critic_bootstrap_terminal=boot)
        ctx = TrialContext(cfg=fcfg, device=torch.device("cpu"), make_env=chain_env_factory(cfg), obs_dim=cfg.length + 1, act_dim=1)
        targets[boot] = make_estimator(estimator, ctx).estimate(ro, agent).returns
    T, N = ro.rewards.shape
    v_final = agent.get_value(ro.flat(ro.next_obs)).reshape(T, N).detach()
    diff = targets[True] - targets[False]
    assert torch.allclose(diff[ro.terminated], GAMMA * v_final[ro.terminated], atol=1e-6)
    assert torch.allclose(diff[~ro.terminated], torch.zeros(()), atol=1e-6)
