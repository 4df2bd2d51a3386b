"""Batched torch API over ManiSkill, the same on both backends.

* ``gpu``: one ManiSkill env with ``num_envs=N`` on ``physx_cuda``.
* ``cpu``: N worker processes with one CPU-PhysX env each (:mod:`envs.worker`).

Shapes: obs [N, obs_dim] float32, actions [N, act_dim], reward/terminated/truncated/success [N].
Auto-reset is partial: an env whose episode ended (terminated or truncated) is reset on its own and the
returned ``obs`` row is the first observation of its new episode; ``final_obs`` holds the last one.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from envs.backend import resolve_backend
from envs.config import EnvConfig


class Step(NamedTuple):
    obs: torch.Tensor  # [N, obs_dim], after auto-reset
    reward: torch.Tensor  # [N] float32
    terminated: torch.Tensor  # [N] bool
    truncated: torch.Tensor  # [N] bool
    success: torch.Tensor  # [N] bool, success at this step
    final_obs: torch.Tensor  # [N, obs_dim], before auto-reset


@dataclass
class EnvState:
    """Batched simulator state: ``sim`` [N, state_dim] float32, ``elapsed`` [N] int64 (steps into the episode)."""

    sim: torch.Tensor
    elapsed: torch.Tensor

    def __len__(self) -> int:
        return self.sim.shape[0]

    def __getitem__(self, idx) -> "EnvState":
        return EnvState(self.sim[idx], self.elapsed[idx])

    def to(self, device) -> "EnvState":
        return EnvState(self.sim.to(device), self.elapsed.to(device))


class EnvWorkerError(RuntimeError):
    pass


class VectorEnv:
    """Common interface; use :func:`make_vector_env`."""

    num_envs: int
    obs_dim: int
    act_dim: int
    state_dim: int
    device: torch.device
    backend: str
    config: EnvConfig

    def reset(self, seed: Optional[int] = None, seeds: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Reset all envs; env i uses ``seed + i`` (or ``seeds[i]``). Returns obs [N, obs_dim]."""
        raise NotImplementedError

    def step(self, actions: torch.Tensor, env_ids: Optional[torch.Tensor] = None) -> Step:
        """Step all envs, or only ``env_ids`` (results then have len(env_ids) rows).

        Stepping a subset is a saving on the cpu backend; on gpu every env steps and the others' results are dropped.
        """
        raise NotImplementedError

    def get_state(self) -> EnvState:
        raise NotImplementedError

    def set_state(self, state: EnvState, env_ids: Optional[torch.Tensor] = None, warmup: bool = True) -> torch.Tensor:
        """Restore ``state`` (rows matching ``env_ids``, or all envs). Returns the restored obs [len, obs_dim]."""
        raise NotImplementedError

    def step_cost(self, num_stepped: int) -> int:
        """Simulator steps that stepping ``num_stepped`` envs costs: the subset on cpu, the whole batch on gpu."""
        return num_stepped

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CpuVectorEnv(VectorEnv):
    backend = "cpu"

    def __init__(self, config: EnvConfig):
        self.config = config
        self.num_envs = config.num_envs
        self.device = torch.device("cpu")
        # Plain subprocesses rather than multiprocessing's spawn/forkserver: those re-import the
        # caller's __main__, which breaks scripts and notebooks without a main guard.
        self._conns, self._procs = [], []
        args = json.dumps([config.env_id, config.control_mode, config.reward_mode, config.max_episode_steps, config.autoreset, config.terminate_on_success])
        # one thread per worker (N workers share the cores); SAPIEN's missing-libvulkan notice is noise for state-only sims
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONWARNINGS=",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:Failed to find system libvulkan"])))
        for _ in range(self.num_envs):
            parent, child = socket.socketpair()
            p = subprocess.Popen(
                [sys.executable, "-m", "envs.worker", str(child.fileno()), args],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
            child.close()
            self._conns.append(Connection(parent.detach()))
            self._procs.append(p)
        self._closed = False
        try:
            dims = [self._recv(c) for c in self._conns]
        except Exception:
            self.close()
            raise
        self.obs_dim, self.act_dim, self.state_dim = dims[0]

    def _recv(self, conn):
        try:
            status, payload = conn.recv()
        except EOFError as e:
            raise EnvWorkerError("an env worker process died") from e
        if status != "ok":
            raise EnvWorkerError(f"env worker failed:\n{payload}")
        return payload

    def _call(self, ids, cmd, datas):
        for i, d in zip(ids, datas):
            self._conns[i].send((cmd, d))
        return [self._recv(self._conns[i]) for i in ids]

    def reset(self, seed=None, seeds=None):
        if seeds is None:
            seed = 0 if seed is None else int(seed)
            seeds = [seed + i for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        obs = self._call(range(self.num_envs), "reset", [int(s) for s in seeds])
        return torch.from_numpy(np.stack(obs))

    def step(self, actions, env_ids=None):
        ids = list(range(self.num_envs)) if env_ids is None else [int(i) for i in env_ids]
        acts = actions.detach().to("cpu", torch.float32).numpy()
        if len(acts) != len(ids):
            raise ValueError(f"step got {len(acts)} actions for {len(ids)} envs")
        out = self._call(ids, "step", list(acts))
        obs, rew, term, trunc, succ, final = zip(*out)
        return Step(
            torch.from_numpy(np.stack(obs)),
            torch.tensor(rew, dtype=torch.float32),
            torch.tensor(term, dtype=torch.bool),
            torch.tensor(trunc, dtype=torch.bool),
            torch.tensor(succ, dtype=torch.bool),
            torch.from_numpy(np.stack(final)),
        )

    def get_state(self):
        out = self._call(range(self.num_envs), "get_state", [None] * self.num_envs)
        flat, elapsed = zip(*out)
        return EnvState(torch.from_numpy(np.stack(flat)), torch.tensor(elapsed, dtype=torch.int64))

    def set_state(self, state, env_ids=None, warmup=True):
        ids = list(range(self.num_envs)) if env_ids is None else [int(i) for i in env_ids]
        sim = state.sim.detach().to("cpu", torch.float32).numpy()
        el = state.elapsed.to("cpu").tolist()
        if len(sim) != len(ids):
            raise ValueError(f"set_state got {len(sim)} states for {len(ids)} envs")
        obs = self._call(ids, "set_state", [(sim[k], int(el[k]), warmup) for k in range(len(ids))])
        return torch.from_numpy(np.stack(obs))

    def close(self):
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for c in self._conns:
            try:
                c.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        for c in self._conns:
            c.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class GpuVectorEnv(VectorEnv):
    """One batched ManiSkill env on GPU PhysX.  Same semantics as the cpu backend (not runnable in this workplace)."""

    backend = "gpu"

    def __init__(self, config: EnvConfig):
        from envs.worker import StateLayout, make_single_env

        self.config = config
        self.num_envs = config.num_envs
        self._env = make_single_env(config.env_id, config.control_mode, config.reward_mode, sim_backend="physx_cuda", num_envs=config.num_envs)
        self.device = self._env.device
        self._env.reset(seed=0)
        self._layout = StateLayout(self._env.get_state_dict())
        self.obs_dim = self._env.observation_space.shape[-1]
        self.act_dim = self._env.action_space.shape[-1]
        self.state_dim = self._layout.dim

    def reset(self, seed=None, seeds=None):
        if seeds is None:
            seed = 0 if seed is None else int(seed)
            seeds = [seed + i for i in range(self.num_envs)]
        obs, _ = self._env.reset(seed=[int(s) for s in seeds])
        return obs.float()

    def step(self, actions, env_ids=None):
        env = self._env
        full = torch.zeros((self.num_envs, self.act_dim), device=self.device)
        idx = torch.arange(self.num_envs, device=self.device) if env_ids is None else torch.as_tensor(env_ids, device=self.device)
        full[idx] = actions.to(self.device, torch.float32)
        obs, rew, term, _, info = env.step(full)
        if not self.config.terminate_on_success:
            term = torch.zeros_like(term)
        trunc = env._elapsed_steps >= self.config.max_episode_steps
        success = info.get("success", torch.zeros_like(term))
        final = obs.clone()
        done = term | trunc
        if self.config.autoreset and done.any():
            done_idx = torch.nonzero(done).flatten()
            obs, _ = env.reset(options={"env_idx": done_idx})
            obs = torch.where(done[:, None], obs, final)
        return Step(obs[idx].float(), rew[idx].float(), term[idx].bool(), trunc[idx].bool(), success[idx].bool(), final[idx].float())

    def get_state(self):
        flat = self._layout.flatten(self._env.get_state_dict())
        return EnvState(flat.float(), self._env._elapsed_steps.clone().long())

    def set_state(self, state, env_ids=None, warmup=True):
        from envs.worker import restore_state

        # A zero-action warm-up step advances every env of the batch, so restore the whole batch:
        # the other envs get their own current state back (and warm contacts for it).
        full = self.get_state()
        if env_ids is None:
            full = EnvState(state.sim.to(self.device).float(), state.elapsed.to(self.device).long())
        else:
            idx = torch.as_tensor(env_ids, device=self.device)
            full.sim[idx] = state.sim.to(self.device, full.sim.dtype)
            full.elapsed[idx] = state.elapsed.to(self.device, full.elapsed.dtype)
        restore_state(self._env, self._layout, full.sim, full.elapsed, None, warmup)
        obs = self._env.get_obs().float()
        return obs if env_ids is None else obs[torch.as_tensor(env_ids, device=self.device)]

    def step_cost(self, num_stepped):
        return self.num_envs  # every env of the batch steps, whatever subset was asked for

    def close(self):
        self._env.close()


def make_vector_env(config: EnvConfig) -> VectorEnv:
    """Build the vector env for ``config``; ``backend='auto'`` is resolved here, once."""
    backend = resolve_backend(config.backend)
    config = config.replace(backend=backend)
    if backend == "gpu":
        return GpuVectorEnv(config)
    return CpuVectorEnv(config)
