"""The env layer on the real ManiSkill CPU simulation: headless task, step/auto-reset semantics, state restore.

Offsets used below (PickCube-v1, obs_mode="state"), checked by ``test_state_and_obs_layout``:
  obs: ``envs.obs_layout`` (qpos 0:9, qvel 9:18, is_grasped 18, tcp pose 19:26, goal pos 26:29, cube pose 29:36, ...)
  sim state: table-workspace 0:13, cube 13:26 (pos 13:16, quat 16:20, lin vel 20:23, ang vel 23:26),
             goal_site 26:39, panda 39:70.

Measured restore accuracy (CPU PhysX, 2 cores, 2026-11-25): with no contact between robot and cube a
restored replay matches the original to ~1e-6 in obs; with the expert's gripper holding the cube it does
not (see ``test_contact_rich_replay_*``).
"""
from __future__ import annotations

import pytest
import torch

from envs import BackendUnavailable, EnvConfig, EnvState, make_vector_env, resolve_backend
from envs.backend import physx_gpu_library
from envs.obs_layout import (CUBE_POS, CUBE_TO_GOAL, GOAL_POS, GRASPED, QPOS, QVEL, TCP_POS, TCP_TO_CUBE, is_arm_static,
                             is_placed)
from envs.tasks import HEADLESS_VARIANTS, resolve_env_id, stock_env_id

from conftest import PICKCUBE_ACT_DIM, PICKCUBE_OBS_DIM

S_CUBE_POS, S_CUBE_VEL, S_GOAL_POS = slice(13, 16), slice(20, 26), slice(26, 29)
NO_CONTACT_ATOL = 1e-4  # measured: typically 1e-6, up to 1.1e-5 (a finger velocity at its joint limit)


@pytest.fixture(scope="module")
def venv(env_fork_server):
    """Two CPU workers, dense reward (informative rewards to compare), success does not terminate."""
    env = make_vector_env(EnvConfig("PickCube-v1", num_envs=2, reward_mode="dense", backend="cpu", terminate_on_success=False), env_fork_server)
    yield env
    env.close()


def small_random_actions(n_steps: int, num_envs: int, seed: int, scale: float = 0.3) -> list[torch.Tensor]:
    """Small random joint deltas with the gripper kept open: the robot stays clear of the cube."""
    g = torch.Generator().manual_seed(seed)
    acts = []
    for _ in range(n_steps):
        a = (torch.rand(num_envs, PICKCUBE_ACT_DIM, generator=g) * 2 - 1) * scale
        a[:, -1] = 1.0
        acts.append(a)
    return acts


def run(venv, actions, env_ids=None):
    obs, rew = [], []
    for a in actions:
        s = venv.step(a, env_ids=env_ids)
        assert not (s.terminated | s.truncated).any(), "segment must stay inside one episode"
        obs.append(s.obs)
        rew.append(s.reward)
    return torch.stack(obs), torch.stack(rew)


def test_resolve_env_id_maps_stock_ids_to_headless_variants():
    assert resolve_env_id("PickCube-v1", can_render=False) == "PickCubeHeadless-v1"
    assert resolve_env_id("PushCube-v1", can_render=False) == "PushCubeHeadless-v1"
    assert resolve_env_id("PickCube-v1", can_render=True) == "PickCube-v1"
    assert resolve_env_id("StackCube-v1", can_render=False) == "StackCube-v1"  # no variant: unchanged
    for stock, (headless, _) in HEADLESS_VARIANTS.items():
        assert stock_env_id(headless) == stock
        assert stock_env_id(stock) == stock


def test_headless_pickcube_builds_and_steps(venv):
    assert venv.backend == "cpu"
    assert (venv.num_envs, venv.obs_dim, venv.act_dim, venv.state_dim) == (2, PICKCUBE_OBS_DIM, PICKCUBE_ACT_DIM, 70)
    obs = venv.reset(seed=0)
    assert obs.shape == (2, 42) and obs.dtype == torch.float32
    assert not torch.equal(obs[0], obs[1])  # seeds 0 and 1: different initial cube/goal
    s = venv.step(torch.zeros(2, 8))
    assert s.obs.shape == s.final_obs.shape == (2, 42)
    for t in (s.reward, s.terminated, s.truncated, s.success):
        assert t.shape == (2,)
    assert s.reward.dtype == torch.float32 and s.terminated.dtype == torch.bool
    assert torch.isfinite(s.reward).all() and (s.reward > 0).all()  # dense reaching reward is positive
    st = venv.get_state()
    assert st.sim.shape == (2, 70) and st.elapsed.tolist() == [1, 1]


def test_reset_with_same_seed_gives_same_obs(venv):
    a = venv.reset(seed=7)
    venv.step(torch.ones(2, 8) * 0.5)
    b = venv.reset(seeds=[7, 8])
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs 2 seeds"):
        venv.reset(seeds=[1])


def test_state_and_obs_layout(venv):
    obs = venv.reset(seed=3)
    st = venv.get_state()
    assert torch.allclose(st.sim[:, S_CUBE_POS], obs[:, CUBE_POS], atol=1e-6)
    assert torch.allclose(st.sim[:, S_GOAL_POS], obs[:, GOAL_POS], atol=1e-6)
    assert torch.all(obs[:, QVEL] == 0)  # a fresh episode starts at rest
    assert torch.allclose(obs[:, CUBE_TO_GOAL], obs[:, GOAL_POS] - obs[:, CUBE_POS], atol=1e-6)
    assert torch.allclose(obs[:, TCP_TO_CUBE], obs[:, CUBE_POS] - obs[:, TCP_POS], atol=1e-6)


def test_success_is_placed_and_arm_static(venv, expert_checkpoint):
    """``envs.obs_layout``'s predicates read PickCube's success off the observation, step by step, along the expert's
    episodes (success does not end them here, so the steps after the first success are checked too)."""
    from algorithms.checkpoint import load_policy

    agent, _ = load_policy(expert_checkpoint, env_id="PickCube-v1", obs_dim=42, act_dim=8)
    obs, agree, succeeded = venv.reset(seed=5), [], 0
    with torch.no_grad():
        for _ in range(49):
            s = venv.step(agent.act(obs, deterministic=True))
            agree.append(torch.equal(s.success, is_placed(s.obs) & is_arm_static(s.obs)))
            succeeded += int(s.success.sum())
            obs = s.obs
    assert succeeded > 0, "premise: the expert succeeds within 49 steps"
    assert all(agree), f"predicates disagree with the env's success at steps {[t + 1 for t, a in enumerate(agree) if not a]}"


def test_autoreset_obs_keeps_the_previous_grasp_and_the_rollout_marks_it(env_fork_server, expert_checkpoint):
    """ManiSkill's plain CPU reset keeps PhysX's contacts: after the expert succeeds holding the cube, the auto-reset's
    first observation still says "grasped" with the cube far from the gripper, and the next step's does not.
    ``Rollout.after_autoreset`` marks that observation, so probes can tell it from a real grasp."""
    from algorithms.checkpoint import load_policy
    from algorithms.rollout import collect_rollout

    agent, _ = load_policy(expert_checkpoint, env_id="PickCube-v1", obs_dim=42, act_dim=8)
    env = make_vector_env(EnvConfig("PickCube-v1", num_envs=1, backend="cpu"), env_fork_server)
    try:
        ro = collect_rollout(agent, env, env.reset(seeds=[100]), 30, torch.device("cpu"), deterministic=True)
    finally:
        env.close()
    ends = ro.success[:, 0].nonzero().flatten().tolist()
    assert ends and ends[0] < 29, "premise: the expert succeeds within 29 steps"
    t = ends[0] + 1
    assert ro.after_autoreset[:, 0].nonzero().flatten().tolist()[0] == t
    assert bool(ro.next_obs[t - 1, 0, GRASPED] > 0.5), "premise: the expert holds the cube when it succeeds"
    assert bool(ro.obs[t, 0, GRASPED] > 0.5) and float(ro.obs[t, 0, TCP_TO_CUBE].norm()) > 0.05
    assert not bool(ro.next_obs[t, 0, GRASPED] > 0.5)


def test_truncation_at_50_steps_then_partial_autoreset(venv):
    acts = small_random_actions(50, 2, seed=1, scale=1.0)
    venv.reset(seed=11)
    for t, a in enumerate(acts[:-1]):
        s = venv.step(a)
        assert not (s.terminated | s.truncated).any(), f"ended early at step {t + 1}"
        assert torch.equal(s.obs, s.final_obs)  # nothing ended: no reset
    before = venv.get_state()
    assert before.elapsed.tolist() == [49, 49]
    last = venv.step(acts[-1])
    assert last.truncated.all() and not last.terminated.any()
    # obs is the first observation of a fresh episode (at rest, counter 0); final_obs the last of the old one
    assert torch.all(last.obs[:, QVEL] == 0)
    assert (last.final_obs[:, QVEL].abs().amax(1) > 1e-3).all()
    assert venv.get_state().elapsed.tolist() == [0, 0]
    # replaying the 50th step from the restored step-49 state truncates again (the counter is part of the
    # state) and reproduces the same final observation
    venv.set_state(before)
    again = venv.step(acts[-1])
    assert again.truncated.all()
    assert torch.allclose(again.final_obs, last.final_obs, atol=NO_CONTACT_ATOL)


def _cube_at_goal(state: EnvState, row: int, where=(0.05, 0.1, 0.1)) -> EnvState:
    """The given state with cube and goal moved to ``where`` (cube at rest): success on the next step."""
    sim = state.sim.clone()
    sim[row, S_CUBE_POS] = torch.tensor(where)
    sim[row, S_GOAL_POS] = torch.tensor(where)
    sim[row, S_CUBE_VEL] = 0
    return EnvState(sim, state.elapsed.clone())


def test_success_does_not_terminate_when_configured(venv):
    venv.reset(seed=0)
    st = venv.get_state()
    venv.set_state(_cube_at_goal(st, 1)[[1]], env_ids=[1])
    s = venv.step(torch.zeros(2, 8))
    assert s.success.tolist() == [False, True]
    assert not s.terminated.any() and not s.truncated.any()
    assert s.reward[1] == 5.0  # dense reward at success
    assert torch.equal(s.obs, s.final_obs)  # the episode runs on
    assert venv.get_state().elapsed.tolist() == [1, 1]


def test_success_terminates_and_resets_by_default(env_fork_server):
    with make_vector_env(EnvConfig("PickCube-v1", num_envs=1, reward_mode="sparse", backend="cpu"), env_fork_server) as env:
        assert env.config.terminate_on_success
        env.reset(seed=0)
        for _ in range(3):
            env.step(torch.zeros(1, 8))
        env.set_state(_cube_at_goal(env.get_state(), 0))
        s = env.step(torch.zeros(1, 8))
        assert s.success.item() and s.terminated.item() and not s.truncated.item()
        assert s.reward.item() == 1.0  # sparse reward
        assert torch.allclose(s.final_obs[0, CUBE_POS], s.final_obs[0, GOAL_POS], atol=0.025)  # last obs: cube at goal
        assert torch.all(s.obs[0, QVEL] == 0) and abs(s.obs[0, CUBE_POS][2] - 0.02) < 1e-3  # new episode: cube on table
        assert env.get_state().elapsed.tolist() == [0]


def test_restore_then_replay_reproduces_obs_and_rewards(venv):
    venv.reset(seed=21)
    run(venv, small_random_actions(5, 2, seed=2))
    snap = venv.get_state()
    acts = small_random_actions(10, 2, seed=3)
    obs1, rew1 = run(venv, acts)
    assert torch.allclose(obs1[-1, :, CUBE_POS], snap.sim[:, S_CUBE_POS], atol=1e-4), "premise: robot never touched the cube"
    restored = venv.set_state(snap)
    assert restored.shape == (2, 42)
    assert torch.allclose(venv.get_state().sim, snap.sim, atol=1e-6)
    assert torch.equal(venv.get_state().elapsed, snap.elapsed)
    obs2, rew2 = run(venv, acts)
    assert torch.allclose(obs2, obs1, atol=NO_CONTACT_ATOL, rtol=0)
    assert torch.allclose(rew2, rew1, atol=NO_CONTACT_ATOL, rtol=0)


def test_restore_into_a_different_env_index(venv):
    venv.reset(seed=31)
    snap = venv.get_state()
    obs_at_snap = venv.step(torch.zeros(2, 8)).obs
    snap = venv.get_state()
    acts = small_random_actions(8, 1, seed=4)
    obs0, rew0 = run(venv, acts, env_ids=[0])  # env 0 alone
    # env 1 (other seed, other history) takes env 0's snapshot and replays env 0's actions
    restored = venv.set_state(snap[[0]], env_ids=[1])
    assert torch.allclose(restored[0], obs_at_snap[0], atol=1e-6)
    obs1, rew1 = run(venv, acts, env_ids=[1])
    assert torch.allclose(obs1, obs0, atol=NO_CONTACT_ATOL, rtol=0)
    assert torch.allclose(rew1, rew0, atol=NO_CONTACT_ATOL, rtol=0)


def test_get_and_set_a_subset(venv):
    venv.reset(seed=41)
    run(venv, small_random_actions(3, 2, seed=5))
    before = venv.get_state()
    other = EnvState(before.sim.clone(), before.elapsed.clone())
    other.sim[0, S_CUBE_POS] += torch.tensor([0.02, -0.01, 0.0])
    other.elapsed[0] = 17
    obs = venv.set_state(other[[0]], env_ids=[0])
    assert obs.shape == (1, 42)
    assert torch.allclose(obs[0, CUBE_POS], other.sim[0, S_CUBE_POS], atol=1e-6)
    after = venv.get_state()
    assert after.elapsed.tolist() == [17, before.elapsed[1].item()]
    assert torch.equal(after.sim[1], before.sim[1])  # env 1 untouched, not even warmed up
    assert torch.allclose(after.sim[0, S_CUBE_POS], other.sim[0, S_CUBE_POS], atol=1e-6)
    with pytest.raises(ValueError, match="1 states for 2 envs"):
        venv.set_state(other[[0]])


def test_backend_gpu_fails_with_one_clear_line():
    cuda = torch.cuda.is_available()
    if cuda and physx_gpu_library().exists():
        pytest.skip("GPU simulation is available on this machine")
    with pytest.raises(BackendUnavailable) as info:
        make_vector_env(EnvConfig("PickCube-v1", num_envs=1, backend="gpu"))
    msg = str(info.value)
    assert "\n" not in msg and "backend 'cpu'" in msg
    assert ("CUDA" in msg) if not cuda else ("libPhysXGpu_64.so" in msg and str(physx_gpu_library()) in msg)
    assert resolve_backend("auto") == "cpu"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("tpu")


# -- contact-rich restore: the shipped expert holds the cube ---------------------------------------------

CONTACT_STEPS = 5


@pytest.fixture(scope="module")
def contact_replay(venv, expert_checkpoint):
    """Expert rollout until env 0 holds the cube in the air; snapshot; 5 more steps; restore; replay them."""
    from algorithms.checkpoint import load_policy

    agent, _ = load_policy(expert_checkpoint, env_id="PickCube-v1", obs_dim=42, act_dim=8)
    with torch.no_grad():
        obs = venv.reset(seed=3)
        for _ in range(30):
            if obs[0, GRASPED] == 1 and obs[0, CUBE_POS][2] > 0.04:
                break
            obs = venv.step(agent.act(obs, deterministic=True)).obs
        else:
            pytest.fail("the expert did not lift the cube within 30 steps")
        snap = venv.get_state()
        acts, orig_obs, orig_rew = [], [], []
        for _ in range(CONTACT_STEPS):
            acts.append(agent.act(obs, deterministic=True))
            s = venv.step(acts[-1])
            assert not (s.terminated | s.truncated).any()
            obs = s.obs
            orig_obs.append(s.obs)
            orig_rew.append(s.reward)
    venv.set_state(snap)
    replay_obs, replay_rew = run(venv, acts)
    return torch.stack(orig_obs)[:, 0], torch.stack(orig_rew)[:, 0], replay_obs[:, 0], replay_rew[:, 0], snap


def test_contact_rich_replay_stays_close(contact_replay):
    """What holds with the gripper holding the cube: positions within 1 mm / 1 mrad, rewards within 0.01
    (dense reward, 0..5).  Measured: positions ~2e-4, velocities and the cube quaternion ~2e-2."""
    obs1, rew1, obs2, rew2, snap = contact_replay
    assert (obs1[:, GRASPED] == 1).all(), "premise: the gripper holds the cube throughout"
    assert (obs1[-1, CUBE_POS] - snap.sim[0, S_CUBE_POS]).norm() > 0.005, "premise: the cube moves with the gripper"
    for part in (QPOS, TCP_POS, CUBE_POS):
        assert torch.allclose(obs2[:, part], obs1[:, part], atol=1e-3, rtol=0)
    assert torch.allclose(obs2, obs1, atol=0.1, rtol=0)
    assert torch.allclose(rew2, rew1, atol=0.01, rtol=0)


@pytest.mark.xfail(strict=True, reason=(
    "CPU PhysX loses its contact cache (friction anchors, contact manifolds) when a body is teleported; "
    "a no-op set_state of the grasped cube alone already changes the next step by ~2e-2 in finger velocity "
    "and cube orientation, with or without the zero-action warm-up"))
def test_contact_rich_replay_is_exact(contact_replay):
    obs1, rew1, obs2, rew2, _ = contact_replay
    assert torch.allclose(obs2, obs1, atol=NO_CONTACT_ATOL, rtol=0)
    assert torch.allclose(rew2, rew1, atol=NO_CONTACT_ATOL, rtol=0)
