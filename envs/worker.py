"""One ManiSkill env (CPU PhysX) in its own process, driven over a pipe by :class:`envs.vector.CpuVectorEnv`.

CPU simulation allows exactly one env per process, so the CPU backend vectorises over these workers.
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


def worker_main(conn, env_id: str, control_mode: str, reward_mode: str, max_episode_steps: int, autoreset: bool, terminate_on_success: bool = True):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    try:
        env = make_single_env(env_id, control_mode, reward_mode)
        env.reset(seed=0)
        layout = StateLayout(env.get_state_dict())
        conn.send(("ok", (env.observation_space.shape[-1], env.action_space.shape[-1], layout.dim)))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    rng = np.random.default_rng(0)

    def obs_np(obs):
        return obs[0].numpy().astype(np.float32)

    def reset(seed, rebuild=False):
        # A plain reset keeps PhysX's contact memory from the previous episode, so after a contact-rich episode
        # the same seed gives a (slightly) different trajectory.  Seeded resets asked for by the caller rebuild the
        # scene (about 0.2 s) so that they do not depend on history: resumed trials replay bit for bit.
        obs, _ = env.reset(seed=int(seed), options={"reconfigure": True} if rebuild else None)
        return obs_np(obs)

    while True:
        try:
            cmd, data = conn.recv()
        except EOFError:
            break
        try:
            if cmd == "step":
                obs, rew, term, _, info = env.step(torch.as_tensor(data[None], dtype=torch.float32))
                term_b = bool(term[0]) and terminate_on_success
                trunc_b = int(env._elapsed_steps[0]) >= max_episode_steps
                success = bool(info["success"][0]) if "success" in info else False
                final = obs_np(obs)
                nxt = final
                if autoreset and (term_b or trunc_b):
                    nxt = reset(rng.integers(2**31))
                conn.send(("ok", (nxt, float(rew[0]), term_b, trunc_b, success, final)))
            elif cmd == "reset":
                rng = np.random.default_rng(int(data))
                conn.send(("ok", reset(data, rebuild=True)))
            elif cmd == "get_state":
                flat = layout.flatten(env.get_state_dict())[0].numpy().astype(np.float32)
                conn.send(("ok", (flat, int(env._elapsed_steps[0]))))
            elif cmd == "set_state":
                flat, elapsed, warmup = data
                restore_state(env, layout, torch.as_tensor(flat[None]), [elapsed], None, warmup)
                conn.send(("ok", obs_np(env.get_obs())))
            elif cmd == "close":
                conn.send(("ok", None))
                break
            else:
                conn.send(("error", f"unknown command {cmd!r}"))
        except Exception:
            conn.send(("error", traceback.format_exc()))
    env.close()


if __name__ == "__main__":
    import json
    import sys
    from multiprocessing.connection import Connection

    _conn = Connection(int(sys.argv[1]))
    worker_main(_conn, *json.loads(sys.argv[2]))
    # The env is closed and the parent has its answer; skip interpreter teardown (2-3 s of module
    # cleanup, more on a loaded machine, which made close() hit its 5 s wait and kill the worker).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
