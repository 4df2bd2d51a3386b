"""Packing several CPU-PhysX envs into one worker process: results do not depend on the process layout.

The reference layout is one env per process, each its own interpreter (what the cpu backend did before envs were
packed and workers forked from one pre-imported process); the same seeds and actions must give bit-identical
observations, rewards, flags and states with forked workers, all envs in one process and with uneven blocks, through truncation, partial auto-reset, subset steps and a state restored across workers.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from envs import EnvConfig, make_vector_env
from envs.config import available_cpus
from envs.vector import EnvWorkerError, worker_blocks

from conftest import PICKCUBE_ACT_DIM

N = 3
NO_CONTACT_ATOL = 1e-4  # restore precision without contact, as in test_envs.py


def scripted_episode(num_workers: int, fork_server=None, fork: bool = True) -> dict:
    """55 random steps (truncation and auto-reset at 50), then subset steps in shuffled order, then env 0's
    state restored into env 2 (another worker unless all share one) and both stepped with the same action."""
    cfg = EnvConfig("PickCube-v1", num_envs=N, reward_mode="dense", backend="cpu", num_workers=num_workers,
                    fork_workers=fork)
    g = torch.Generator().manual_seed(5)
    out: dict = {"obs": [], "rew": [], "flags": [], "final": []}
    with make_vector_env(cfg, fork_server) as env:
        assert env.num_workers == num_workers
        out["obs"].append(env.reset(seed=100))
        for _ in range(55):
            s = env.step(torch.rand(N, PICKCUBE_ACT_DIM, generator=g) * 2 - 1)
            out["obs"].append(s.obs)
            out["final"].append(s.final_obs)
            out["rew"].append(s.reward)
            out["flags"].append(torch.stack([s.terminated, s.truncated, s.success]))
        for _ in range(3):
            s = env.step(torch.rand(2, PICKCUBE_ACT_DIM, generator=g) * 2 - 1, env_ids=[2, 0])
            out["obs"].append(s.obs)
            out["rew"].append(s.reward)
        state = env.get_state()
        env.set_state(state[[0]], env_ids=[2])
        a = torch.rand(1, PICKCUBE_ACT_DIM, generator=g) * 2 - 1
        s = env.step(torch.cat([a, a]), env_ids=[0, 2])
        out["copy"] = s.obs
        out["state"] = env.get_state()
    return out


@pytest.fixture(scope="module")
def one_env_per_process():
    return scripted_episode(num_workers=N, fork=False)


@pytest.mark.parametrize("num_workers", [N, 1, 2])  # forked, one env each; all in one process; blocks [0] and [1, 2]
def test_trajectories_do_not_depend_on_the_process_layout(env_fork_server, one_env_per_process, num_workers):
    ref, got = one_env_per_process, scripted_episode(num_workers, env_fork_server)
    assert ref["flags"][49][1].all() and not ref["flags"][48][1].any(), "premise: every env truncates at step 50"
    for key in ("obs", "final", "rew", "flags"):
        for t, (a, b) in enumerate(zip(ref[key], got[key])):
            assert torch.equal(a, b), f"{key} differs at step {t} with {num_workers} worker(s)"
    assert torch.equal(ref["copy"], got["copy"])
    assert torch.allclose(got["copy"][0], got["copy"][1], atol=NO_CONTACT_ATOL, rtol=0)  # env 2 replays env 0
    assert torch.equal(ref["state"].sim, got["state"].sim) and torch.equal(ref["state"].elapsed, got["state"].elapsed)


def test_worker_count_defaults_to_granted_cpus_and_blocks_are_balanced():
    assert EnvConfig(num_envs=1000).resolved_workers() == available_cpus() == len(os.sched_getaffinity(0))
    assert EnvConfig(num_envs=1).resolved_workers() == 1
    assert EnvConfig(num_envs=10, num_workers=16).resolved_workers() == 10  # never an idle process
    assert [len(b) for b in worker_blocks(10, 4)] == [2, 3, 2, 3]
    assert [i for b in worker_blocks(100, 16) for i in b] == list(range(100))
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        EnvConfig(num_workers=0)


def test_dead_worker_raises_and_close_leaves_no_process():
    env = make_vector_env(EnvConfig("PickCube-v1", num_envs=2, backend="cpu", num_workers=2))
    pids = env.worker_pids()
    env.reset(seed=0)
    os.kill(pids[1], signal.SIGKILL)
    with pytest.raises(EnvWorkerError, match="died"):
        env.step(torch.zeros(2, PICKCUBE_ACT_DIM))
    env.close()
    time.sleep(0.1)
    for pid in pids:  # reaped: no zombie, no orphan
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(EnvWorkerError, match="closed"):
        env.step(torch.zeros(2, PICKCUBE_ACT_DIM))


def _rollouts_in_workers(num_workers: int, fork_server):
    from algorithms.checkpoint import load_policy
    from algorithms.rollout import collect_rollout

    start, _ = load_policy("experiments/checkpoints/pickcube/start.pt")
    cfg = EnvConfig("PickCube-v1", num_envs=N, reward_mode="sparse", backend="cpu", num_workers=num_workers)
    with make_vector_env(cfg, fork_server) as env:
        obs = env.reset(seed=4)
        first = collect_rollout(start, env, obs, 55, torch.device("cpu"), save_states=True, generator=torch.Generator().manual_seed(1), in_workers=True)
        second = collect_rollout(start, env, first.last_obs, 5, torch.device("cpu"), generator=torch.Generator().manual_seed(2), in_workers=True)
    return start, first, second


def test_rollouts_inside_the_workers_do_not_depend_on_the_process_layout(env_fork_server):
    """``rollout_in_workers``: every worker runs its envs for the whole rollout with its own copy of the actor,
    sampling each env's actions from that env's own stream, so 1, 2 or 3 processes give bit-identical rollouts
    (55 steps: through a truncation and auto-reset), and the next rollout continues where this one stopped."""
    start, ref, ref2 = _rollouts_in_workers(1, env_fork_server)
    assert bool(ref.truncated.any()) and ref.states.sim.shape[:2] == (55, N)
    # the log-probs computed in one batch afterwards are those of the sampled actions
    assert torch.allclose(ref.logprobs, start.log_prob(ref.flat(ref.obs), ref.flat(ref.actions)).reshape(55, N))
    assert torch.equal(ref2.obs[0], ref.last_obs)
    for workers in (2, N):
        _, got, got2 = _rollouts_in_workers(workers, env_fork_server)
        for key in ("obs", "actions", "logprobs", "values", "rewards", "terminated", "truncated", "success", "next_obs", "last_obs"):
            assert torch.equal(getattr(ref, key), getattr(got, key)), f"{key} differs with {workers} workers"
        assert torch.equal(ref.states.sim, got.states.sim) and torch.equal(ref.last_state.elapsed, got.last_state.elapsed)
        assert torch.equal(ref2.actions, got2.actions) and torch.equal(ref2.rewards, got2.rewards)


def test_evaluation_inside_the_workers(env_fork_server):
    """``eval_in_workers``: deterministic episodes give the lockstep path's results; stochastic ones do not depend
    on the process layout (each episode samples from its own stream)."""
    from algorithms.checkpoint import load_policy
    from algorithms.evaluate import evaluate

    start, _ = load_policy("experiments/checkpoints/pickcube/start.pt")
    got = {}
    for workers in (1, 2):
        with make_vector_env(EnvConfig("PickCube-v1", num_envs=2, reward_mode="sparse", backend="cpu", num_workers=workers), env_fork_server) as env:
            for det in (True, False):
                got[workers, det] = evaluate(start, env, 5, 300, det, in_workers=True)
            lockstep = evaluate(start, env, 5, 300, True)
        assert (got[workers, True].success_rate, got[workers, True].mean_length) == (lockstep.success_rate, lockstep.mean_length)
        assert got[workers, True].mean_return == pytest.approx(lockstep.mean_return)
    assert got[1, False] == got[2, False] and got[1, False].episodes == 5 and not got[1, False].deterministic
