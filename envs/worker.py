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


class LocalEnvs:
    """The envs of one worker process, in-process, with the :class:`envs.vector.VectorEnv` interface (step,
    get_state, set_state; local env ids 0..count-1).  The worker's pipe commands use it env by env; a function
    sent with :meth:`envs.vector.CpuVectorEnv.map_workers` runs against the whole of it, with no round trip
    to the driver per step."""

    backend = "cpu"

    def __init__(self, slots: list, layout: StateLayout, max_episode_steps: int, autoreset: bool, terminate_on_success: bool):
        import torch

        env = slots[0].env
        self.slots, self.layout = slots, layout
        self.max_episode_steps, self.autoreset, self.terminate_on_success = max_episode_steps, autoreset, terminate_on_success
        self.num_envs = len(slots)
        self.obs_dim, self.act_dim, self.state_dim = env.observation_space.shape[-1], env.action_space.shape[-1], layout.dim
        self.device = torch.device("cpu")

    def reset_one(self, j: int, seed: int):
        """Seeded reset of env ``j`` (the scene rebuilt, as the pipe's reset does); returns its obs [obs_dim] numpy."""
        return self.slots[j].reset(seed, rebuild=True)

    def step_one(self, j: int, action, autoreset: bool | None = None) -> tuple:
        """Step env ``j`` with ``action`` [1, act_dim] tensor: (obs after any auto-reset, reward, terminated,
        truncated, success, final obs), obs as numpy [obs_dim].  ``autoreset`` overrides the env's setting."""
        autoreset = self.autoreset if autoreset is None else autoreset
        slot = self.slots[j]
        obs, rew, term, _, info = slot.env.step(action)
        term_j = bool(term[0]) and self.terminate_on_success
        trunc_j = int(slot.env._elapsed_steps[0]) >= self.max_episode_steps
        final = obs[0].numpy()
        nxt = slot.reset(slot.rng.integers(2**31)) if autoreset and (term_j or trunc_j) else final
        return nxt, float(rew[0]), term_j, trunc_j, bool(info["success"][0]) if "success" in info else False, final

    def get_one(self, j: int) -> tuple:
        env = self.slots[j].env
        return self.layout.flatten(env.get_state_dict())[0].numpy(), int(env._elapsed_steps[0])

    def set_one(self, j: int, sim, elapsed: int, warmup: bool):
        """Restore env ``j`` to ``sim`` [state_dim] numpy, ``elapsed``; returns its obs [obs_dim] numpy."""
        import torch

        env = self.slots[j].env
        restore_state(env, self.layout, torch.from_numpy(np.array(sim, dtype=np.float32)[None]), [int(elapsed)], None, warmup)
        return env.get_obs()[0].numpy()

    def _local_ids(self, env_ids) -> list:
        return list(range(self.num_envs)) if env_ids is None else [int(j) for j in env_ids]

    def step(self, actions, env_ids=None):
        import torch

        from envs.vector import Step

        ids = self._local_ids(env_ids)
        acts = actions.detach().to("cpu", torch.float32)
        rows = [self.step_one(j, acts[k : k + 1]) for k, j in enumerate(ids)]
        obs, rew, term, trunc, succ, final = zip(*rows)
        return Step(torch.from_numpy(np.stack(obs)), torch.tensor(rew, dtype=torch.float32), torch.tensor(term),
                    torch.tensor(trunc), torch.tensor(succ), torch.from_numpy(np.stack(final)))

    def get_state(self):
        import torch

        from envs.vector import EnvState

        sim, elapsed = zip(*(self.get_one(j) for j in range(self.num_envs)))
        return EnvState(torch.from_numpy(np.stack(sim)), torch.tensor(elapsed, dtype=torch.int64))

    def set_state(self, state, env_ids=None, warmup=True):
        import torch

        ids = self._local_ids(env_ids)
        sim, elapsed = state.sim.detach().to("cpu", torch.float32).numpy(), state.elapsed.tolist()
        return torch.from_numpy(np.stack([self.set_one(j, sim[k], elapsed[k], warmup) for k, j in enumerate(ids)]))

    def step_cost(self, num_stepped: int) -> int:
        return num_stepped

    def close(self) -> None:
        for slot in self.slots:
            slot.env.close()


def worker_main(conn, mem_fd: int, first: int, count: int, env_id: str, control_mode: str, reward_mode: str,
                max_episode_steps: int, autoreset: bool, terminate_on_success: bool = True):
    """Serve envs ``first .. first+count-1`` of the batch: build them, report (obs_dim, act_dim, state_dim),
    map the shared batch once told to, then run commands until "close".  Commands carry global env ids; data
    travels through the shared batch rows of those ids, the reply ("ok" | "error", payload) says when.
    A "call" command (fn, payload) runs ``fn(local_envs, payload)`` and replies with its result."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from envs.shared_batch import SharedBatch

    torch.set_num_threads(1)
    try:
        slots = []
        for _ in range(count):
            env = make_single_env(env_id, control_mode, reward_mode)
            env.reset(seed=0)
            slots.append(EnvSlot(env))
        local = LocalEnvs(slots, StateLayout(env.get_state_dict()), max_episode_steps, autoreset, terminate_on_success)
        dims = (local.obs_dim, local.act_dim, local.state_dim)
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
            buf.obs[i], buf.rew[i], buf.term[i], buf.trunc[i], buf.succ[i], buf.final[i] = local.step_one(
                i - first, torch.from_numpy(buf.act[i : i + 1]))

    def get_state(ids):
        for i in ids:
            buf.sim[i], buf.elapsed[i] = local.get_one(i - first)

    def set_state(ids, warmup):
        for i in ids:
            buf.obs[i] = local.set_one(i - first, buf.sim[i].copy(), int(buf.elapsed[i]), warmup)

    while True:
        try:
            cmd, data = conn.recv()
        except EOFError:
            break
        try:
            reply = None
            if cmd == "step":
                step(data)
            elif cmd == "reset":
                for i, seed in data:
                    buf.obs[i] = local.reset_one(i - first, seed)
            elif cmd == "get_state":
                get_state(data)
            elif cmd == "set_state":
                set_state(*data)
            elif cmd == "call":
                fn, payload = data
                reply = fn(local, payload)
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", reply))
        except (BrokenPipeError, ConnectionResetError):
            break  # the driver is gone (killed, or stopped by a time limit): nothing to report to
        except Exception:
            try:
                conn.send(("error", traceback.format_exc()))
            except (BrokenPipeError, ConnectionResetError):
                break
    local.close()
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
