"""A worker process of :class:`envs.vector.CpuVectorEnv`: several ManiSkill envs (CPU PhysX), stepped in turn.

CPU PhysX refuses ``num_envs > 1`` inside one ManiSkill env, but separate ``gym.make`` envs of one env each
live side by side in a process, each with its own scene, and give the same trajectories as one env per
process (``tests/test_envs.py`` compares the layouts).  Commands come over a pipe; observations, actions,
rewards, flags and states go through the shared batch (:mod:`envs.shared_batch`).
"""
from __future__ import annotations

import os
import traceback

import numpy as np


def make_single_env(env_id: str, control_mode: str, reward_mode: str, sim_backend: str = "physx_cpu", num_envs: int = 1):
    """Build the (unwrapped) ManiSkill env, headless variant where the machine cannot render."""
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the stock tasks)

    from envs.backend import can_render
    from envs.tasks import register_headless_variants, resolve_env_id

    register_headless_variants()
    renders = can_render()
    kwargs = dict(
        num_envs=num_envs,
        obs_mode="state",
        control_mode=control_mode,
        reward_mode=reward_mode,
        sim_backend=sim_backend,
        render_backend="gpu" if renders else "none",
    )
    env = gym.make(resolve_env_id(env_id, renders), **kwargs)
    return env.unwrapped


class StateLayout:
    """Flattens ManiSkill's nested state dict into one vector and back, in a fixed key order."""

    def __init__(self, state_dict: dict):
        self.entries = []  # (path tuple, width)
        self._walk(state_dict, ())
        self.dim = sum(w for _, w in self.entries)

    def _walk(self, d, prefix):
        for k in d:  # insertion order is ManiSkill's own and is stable for a given task
            v = d[k]
            if isinstance(v, dict):
                self._walk(v, prefix + (k,))
            else:
                self.entries.append((prefix + (k,), int(v.shape[-1])))

    def flatten(self, state_dict: dict):
        """state dict of [B, w] tensors -> [B, dim] tensor."""
        import torch

        parts = []
        for path, _ in self.entries:
            v = state_dict
            for k in path:
                v = v[k]
            parts.append(v)
        return torch.cat(parts, dim=-1)

    def unflatten(self, flat) -> dict:
        """[B, dim] tensor -> nested state dict of [B, w] tensors."""
        out: dict = {}
        i = 0
        for path, w in self.entries:
            d = out
            for k in path[:-1]:
                d = d.setdefault(k, {})
            d[path[-1]] = flat[..., i : i + w]
            i += w
        return out


def restore_state(env, layout: StateLayout, flat, elapsed, env_idx=None, warmup: bool = True):
    """Exact restore of a (batched) ManiSkill env.

    PhysX caches contacts from the previous step; a freshly set state has none, so the first step after
    a plain ``set_state_dict`` differs from the original trajectory.  Warm-up = set, one zero-action
    step, set again, then restore the elapsed-step counter (it decides truncation).
    ``flat`` [B, dim], ``elapsed`` [B] int, ``env_idx`` [B] or None for all envs.
    """
    import torch

    sd = layout.unflatten(flat)
    env.set_state_dict(sd, env_idx)
    if warmup:
        zero = torch.zeros(env.action_space.shape, dtype=torch.float32, device=env.device)
        env.step(zero)
        env.set_state_dict(sd, env_idx)
    elapsed = torch.as_tensor(elapsed, dtype=env._elapsed_steps.dtype, device=env._elapsed_steps.device)
    if env_idx is None:
        env._elapsed_steps[:] = elapsed
    else:
        env._elapsed_steps[env_idx] = elapsed


class EnvSlot:
    """One env of a worker: the ManiSkill env and its autoreset seed stream (seeded by each seeded reset)."""

    def __init__(self, env):
        self.env = env
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int, rebuild: bool = False) -> np.ndarray:
        # A plain reset keeps PhysX's contact memory from the previous episode, so after a contact-rich episode
        # the same seed gives a (slightly) different trajectory.  Seeded resets asked for by the caller rebuild the
        # scene (about 0.2 s) so that they do not depend on history: resumed trials replay bit for bit.
        if rebuild:
            self.rng = np.random.default_rng(int(seed))
        obs, _ = self.env.reset(seed=int(seed), options={"reconfigure": True} if rebuild else None)
        return obs[0].numpy()


def worker_main(conn, mem_fd: int, first: int, count: int, env_id: str, control_mode: str, reward_mode: str,
                max_episode_steps: int, autoreset: bool, terminate_on_success: bool = True):
    """Serve envs ``first .. first+count-1`` of the batch: build them, report (obs_dim, act_dim, state_dim),
    map the shared batch once told to, then run commands until "close".  Commands carry global env ids; data
    travels through the shared batch rows of those ids, the reply ("ok" | "error", payload) says when."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from envs.shared_batch import SharedBatch

    torch.set_num_threads(1)
    try:
        slots = {}
        for i in range(first, first + count):
            env = make_single_env(env_id, control_mode, reward_mode)
            env.reset(seed=0)
            slots[i] = EnvSlot(env)
        layout = StateLayout(env.get_state_dict())
        dims = (env.observation_space.shape[-1], env.action_space.shape[-1], layout.dim)
        conn.send(("ok", dims))
        cmd, num_envs = conn.recv()
        if cmd != "attach":
            return
        buf = SharedBatch(mem_fd, num_envs, *dims)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return

    def step(ids):
        for i in ids:
            env = slots[i].env
            obs, rew, term, _, info = env.step(torch.from_numpy(buf.act[i : i + 1]))
            buf.term[i] = term_i = bool(term[0]) and terminate_on_success
            buf.trunc[i] = trunc_i = int(env._elapsed_steps[0]) >= max_episode_steps
            buf.succ[i] = bool(info["success"][0]) if "success" in info else False
            buf.rew[i] = float(rew[0])
            buf.final[i] = obs[0].numpy()
            if autoreset and (term_i or trunc_i):
                buf.obs[i] = slots[i].reset(slots[i].rng.integers(2**31))
            else:
                buf.obs[i] = buf.final[i]

    def get_state(ids):
        for i in ids:
            env = slots[i].env
            buf.sim[i] = layout.flatten(env.get_state_dict())[0].numpy()
            buf.elapsed[i] = int(env._elapsed_steps[0])

    def set_state(ids, warmup):
        for i in ids:
            env = slots[i].env
            restore_state(env, layout, torch.from_numpy(buf.sim[i : i + 1].copy()), [int(buf.elapsed[i])], None, warmup)
            buf.obs[i] = env.get_obs()[0].numpy()

    while True:
        try:
            cmd, data = conn.recv()
        except EOFError:
            break
        try:
            if cmd == "step":
                step(data)
            elif cmd == "reset":
                for i, seed in data:
                    buf.obs[i] = slots[i].reset(seed, rebuild=True)
            elif cmd == "get_state":
                get_state(data)
            elif cmd == "set_state":
                set_state(*data)
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", None))
        except Exception:
            conn.send(("error", traceback.format_exc()))
    for slot in slots.values():
        slot.env.close()
    buf.close()
    try:
        conn.send(("ok", None))
    except OSError:  # the driver is gone
        pass


if __name__ == "__main__":
    import json
    import sys
    from multiprocessing.connection import Connection

    _conn = Connection(int(sys.argv[1]))
    worker_main(_conn, int(sys.argv[2]), *json.loads(sys.argv[3]))
    # The envs are closed and the parent has its answer; skip interpreter teardown (2-3 s of module
    # cleanup, more on a loaded machine, which made close() hit its 5 s wait and kill the worker).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
