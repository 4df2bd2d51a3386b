"""MC re-rollouts on real ManiSkill: the batched scheme gives the straightforward scheme's estimates at a fraction of the cost."""
import pytest
import torch

from algorithms.checkpoint import load_policy
from algorithms.config import FinetuneConfig
from algorithms.estimators.base import TrialContext
from algorithms.estimators.mc import MCEstimator, horizon_from, naive_mc_advantages
from algorithms.rollout import collect_rollout
from envs import EnvConfig, make_vector_env

CK = "experiments/checkpoints/pickcube"


@pytest.fixture(scope="module")
def setup(env_fork_server):
    dev = torch.device("cpu")
    start, _ = load_policy(f"{CK}/start.pt")
    expert, _ = load_policy(f"{CK}/expert.pt")
    ecfg = EnvConfig(num_envs=1, reward_mode="sparse")
    venv = make_vector_env(ecfg, env_fork_server)
    ro = collect_rollout(start, venv, venv.reset(seed=5), 8, dev, save_states=True, generator=torch.Generator().manual_seed(0))
    venv.close()
    slots = make_vector_env(ecfg.replace(num_envs=2, autoreset=False), env_fork_server)
    yield dev, start, expert, ro, slots
    slots.close()


def _estimator(slots, expert, dev, **kw):
    cfg = FinetuneConfig(estimator="mc", update="awr", mc_workers=2, **kw)
    ctx = TrialContext(cfg=cfg, device=dev, make_env=lambda n, autoreset=True: slots, expert=expert, obs_dim=42, act_dim=8)
    return MCEstimator(ctx)


@pytest.mark.parametrize("mc_q,in_workers", [("transition", True), ("rerollout", True), ("rerollout", False)])
def test_batched_mc_matches_straightforward_with_deterministic_expert(setup, mc_q, in_workers):
    dev, start, expert, ro, slots = setup
    # the straightforward scheme runs to the rollout's time limit: finite-horizon values (mc_time_limit=restore);
    # in_workers: the jobs run inside the env worker processes, else the driver steps the slots in lockstep
    est = _estimator(slots, expert, dev, mc_samples=1, mc_deterministic=True, mc_q=mc_q, mc_time_limit="restore", mc_in_workers=in_workers)
    ours = est.estimate(ro, start)
    naive, naive_steps = naive_mc_advantages(ro, expert, slots, 1, 0.8, dev, deterministic=True)
    # exact state restore makes "restore s_t, execute a_t" land on the saved s_{t+1}: identical returns
    assert torch.allclose(ours.advantages.cpu(), naive, atol=1e-6)
    if mc_q == "transition":  # half the re-rollouts, and short ones; the 1/3 target is measured in benchmarks/mc_rerollout.py
        assert ours.sim_steps * 2 < naive_steps, (ours.sim_steps, naive_steps)
    else:  # the same re-rollouts as the straightforward scheme, but stopped at termination and batched across t
        assert ours.sim_steps < naive_steps, (ours.sim_steps, naive_steps)
    assert ours.advantages.shape == (8, 1)
    assert torch.allclose(ours.q - ours.v, ours.advantages)


def test_mc_values_are_discounted_success_returns(setup):
    dev, start, expert, ro, slots = setup
    est = _estimator(slots, expert, dev, mc_samples=2, mc_q="transition")
    e = est.estimate(ro, start)
    # sparse reward 1 once, at success: every return is 0 or gamma^k <= 1
    assert (e.v >= 0).all() and (e.v <= 1).all()
    assert e.sim_steps > 0 and e.diagnostics["mc/jobs"] == 2 * (8 + int(not ro.dones[-1, 0]))
    # the reference's scheme: M V re-rollouts and M Q re-rollouts of every s_t, each with a whole episode ahead
    est = _estimator(slots, expert, dev, mc_samples=2, mc_q="rerollout", mc_time_limit="reset")
    e = est.estimate(ro, start)
    assert (e.q >= 0).all() and (e.q <= 1).all() and e.diagnostics["mc/jobs"] == 2 * 8 + 2 * 8


def test_horizon_cut_and_bias_bound(setup):
    dev, start, expert, ro, slots = setup
    cfg = FinetuneConfig(estimator="mc", update="awr", mc_tolerance=0.01)
    assert horizon_from(cfg) == 21  # 0.8^21 < 0.01 <= 0.8^20
    est = _estimator(slots, expert, dev, mc_samples=1, mc_horizon=3)
    e = est.estimate(ro, start)
    assert e.diagnostics["mc/horizon"] == 3
    assert e.diagnostics["mc/horizon_bias_bound"] == pytest.approx(0.8**3)
    assert e.diagnostics["mc/mean_rerollout_len"] <= 3


def test_rerollouts_in_workers_are_reproducible_and_a_failing_chunk_is_one_error(env_fork_server, setup):
    from algorithms.estimators.mc import _rerollout_chunk
    from envs.vector import EnvWorkerError

    dev, start, expert, ro, slots = setup
    runs = []
    for _ in range(2):  # fresh slots each time: CPU PhysX restores depend slightly on an env's contact history
        with make_vector_env(EnvConfig(num_envs=2, reward_mode="sparse", autoreset=False, num_workers=2), env_fork_server) as fresh:
            runs.append(_estimator(fresh, expert, dev, mc_samples=2, mc_q="rerollout").estimate(ro, start))
    assert torch.equal(runs[0].advantages, runs[1].advantages)  # the same seed, the same stochastic re-rollouts
    assert runs[0].sim_steps == runs[1].sim_steps > 0
    with pytest.raises(EnvWorkerError, match="KeyError"):
        slots.map_workers(_rerollout_chunk, [{"seed": 0}, {"seed": 1}, {"seed": 2}])
    slots.reset(seed=0)  # every worker answered: the env still works
    assert slots.step(torch.zeros(2, 8)).obs.shape == (2, 42)
