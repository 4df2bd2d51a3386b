"""Batched torch API over ManiSkill, the same on both backends.

* ``gpu``: one ManiSkill env with ``num_envs=N`` on ``physx_cuda``.
* ``cpu``: a few worker processes (by default one per CPU granted), each hosting a block of the N
  CPU-PhysX envs (:mod:`envs.worker`); batch data in shared memory.

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
from envs.forkserver import EnvForkServer, ForkServerError
from envs.shared_batch import SharedBatch, new_memory_file


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


def worker_blocks(num_envs: int, num_workers: int) -> list[range]:
    """Contiguous, balanced blocks of env ids, one per worker process (sizes differ by at most one)."""
    return [range(w * num_envs // num_workers, (w + 1) * num_envs // num_workers) for w in range(num_workers)]


class CpuVectorEnv(VectorEnv):
    """``config.resolved_workers()`` processes, each hosting a contiguous block of the N envs (:mod:`envs.worker`).

    Per call the driver writes the inputs into the shared batch (:mod:`envs.shared_batch`), sends each worker
    concerned one short command naming its env ids, and reads the outputs once every one of them has answered.
    An env's trajectory depends only on its own seed and actions, not on which process hosts it.
    """

    backend = "cpu"

    def __init__(self, config: EnvConfig, fork_server: Optional[EnvForkServer] = None):
        """``fork_server``: the server to fork the workers from (``config.fork_workers``), shared with other env sets
        and closed by its owner after them; None: one of this env set's own, closed with it."""
        self.config = config
        self.num_envs = config.num_envs
        self.num_workers = config.resolved_workers()
        self.device = torch.device("cpu")
        self._closed = False
        self._conns, self._procs, self._buf, self._own_server = [], [], None, None
        self._mem_fd = new_memory_file()
        self._blocks = worker_blocks(self.num_envs, self.num_workers)
        self._owner = np.repeat(np.arange(self.num_workers), [len(b) for b in self._blocks])
        # one thread per worker (the workers share the cores); SAPIEN's missing-libvulkan notice is noise for state-only sims
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONWARNINGS=",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:Failed to find system libvulkan"])))
        try:
            worker_args = [[block.start, len(block), config.env_id, config.control_mode, config.reward_mode,
                            config.max_episode_steps, config.autoreset, config.terminate_on_success] for block in self._blocks]
            if config.fork_workers:
                if fork_server is None:
                    fork_server = self._own_server = EnvForkServer()
                try:
                    self._conns, self._procs = fork_server.fork_workers(worker_args, self._mem_fd, env)
                except ForkServerError as e:
                    raise EnvWorkerError(str(e)) from e
            else:
                # Plain subprocesses rather than multiprocessing's spawn/forkserver: those re-import the
                # caller's __main__, which breaks scripts and notebooks without a main guard.
                for args in worker_args:
                    parent, child = socket.socketpair()
                    p = subprocess.Popen(
                        [sys.executable, "-m", "envs.worker", str(child.fileno()), str(self._mem_fd), json.dumps(args)],
                        pass_fds=(child.fileno(), self._mem_fd), env=env, stdin=subprocess.DEVNULL,
                    )
                    child.close()
                    self._conns.append(Connection(parent.detach()))
                    self._procs.append(p)
            dims = self._gather(range(self.num_workers))
            self.obs_dim, self.act_dim, self.state_dim = dims[0]
            self._buf = SharedBatch(self._mem_fd, self.num_envs, *dims[0], create=True)
            for c in self._conns:
                c.send(("attach", self.num_envs))
        except BaseException:
            self.close()
            raise

    def _gather(self, workers) -> list:
        """Every listed worker's answer, in order; all are read before an error is raised, so none is left behind."""
        answers, failure = [], None
        for w in workers:
            try:
                status, payload = self._conns[w].recv()
            except (EOFError, OSError) as e:
                failure = failure or EnvWorkerError(f"env worker process {w} (pid {self._procs[w].pid}) died")
                failure.__cause__ = e
                continue
            if status != "ok":
                failure = failure or EnvWorkerError(f"env worker {w} failed:\n{payload}")
            answers.append(payload)
        if failure is not None:
            raise failure
        return answers

    def _command(self, cmd: str, ids: np.ndarray, extra=None) -> None:
        """Send ``cmd`` to the workers hosting env ``ids`` (each gets its own ids), then wait for all of them."""
        owners = self._owner[ids]
        workers = np.unique(owners)
        for w in workers:
            mine = ids[owners == w].tolist()
            try:
                self._conns[w].send((cmd, mine if extra is None else (mine, extra)))
            except OSError as e:
                raise EnvWorkerError(f"env worker process {w} (pid {self._procs[w].pid}) died") from e
        self._gather(workers)

    def _ids(self, env_ids) -> np.ndarray:
        """Validated env ids as an int64 array (all envs for None); refuses a closed env before any work."""
        if self._closed:
            raise EnvWorkerError("the vector env is closed")
        if env_ids is None:
            return np.arange(self.num_envs)
        ids = torch.as_tensor(env_ids).to("cpu", torch.int64).numpy().reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_envs):
            raise ValueError(f"env ids must be in 0..{self.num_envs - 1}, got {ids.tolist()}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"env ids must be distinct, got {ids.tolist()}")
        return ids

    def reset(self, seed=None, seeds=None):
        if seeds is None:
            seed = 0 if seed is None else int(seed)
            seeds = [seed + i for i in range(self.num_envs)]
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        ids = self._ids(None)
        owners = self._owner
        for w in range(self.num_workers):
            self._conns[w].send(("reset", [(int(i), int(seeds[i])) for i in ids[owners == w]]))
        self._gather(range(self.num_workers))
        return torch.from_numpy(self._buf.obs.copy())

    def step(self, actions, env_ids=None):
        ids = self._ids(env_ids)
        acts = actions.detach().to("cpu", torch.float32).numpy()
        if len(acts) != len(ids):
            raise ValueError(f"step got {len(acts)} actions for {len(ids)} envs")
        b = self._buf
        b.act[ids] = acts
        self._command("step", ids)
        return Step(
            torch.from_numpy(b.obs[ids]),  # fancy indexing copies out of the shared rows
            torch.from_numpy(b.rew[ids]),
            torch.from_numpy(b.term[ids]),
            torch.from_numpy(b.trunc[ids]),
            torch.from_numpy(b.succ[ids]),
            torch.from_numpy(b.final[ids]),
        )

    def get_state(self):
        self._command("get_state", self._ids(None))
        return EnvState(torch.from_numpy(self._buf.sim.copy()), torch.from_numpy(self._buf.elapsed.copy()))

    def set_state(self, state, env_ids=None, warmup=True):
        ids = self._ids(env_ids)
        sim = state.sim.detach().to("cpu", torch.float32).numpy()
        if len(sim) != len(ids):
            raise ValueError(f"set_state got {len(sim)} states for {len(ids)} envs")
        b = self._buf
        b.sim[ids] = sim
        b.elapsed[ids] = state.elapsed.to("cpu").numpy()
        self._command("set_state", ids, bool(warmup))
        return torch.from_numpy(b.obs[ids])

    @property
    def worker_blocks(self) -> list[range]:
        """The env ids each worker process hosts, in worker order (contiguous, balanced)."""
        return list(self._blocks)

    def map_workers(self, fn, payloads: Sequence, progress=None) -> list:
        """Run ``fn(local_envs, payload)`` inside the worker processes for every payload and return the results in
        the order of ``payloads``.  Payload i runs on worker ``i % num_workers`` (each worker takes its payloads
        in order) against that worker's own envs (:class:`envs.worker.LocalEnvs`, no round trip to this process
        per step): which envs ran what, and so every env's history, is the same from run to run, which CPU PhysX
        needs to replay bit for bit.  ``fn`` must be a module-level function (it travels by name).  ``progress(i)``
        is called as payload ``i`` completes.  The shared batch is not touched: the envs' states afterwards are
        whatever ``fn`` left."""
        from multiprocessing.connection import wait

        if self._closed:
            raise EnvWorkerError("the vector env is closed")
        results = [None] * len(payloads)
        queues = [iter(range(w, len(payloads), self.num_workers)) for w in range(self.num_workers)]
        running, failure = {}, None  # conn -> (worker, payload index)

        def send(w, i):
            nonlocal failure
            try:
                self._conns[w].send(("call", (fn, payloads[i])))
            except OSError as e:
                failure = failure or EnvWorkerError(f"env worker process {w} (pid {self._procs[w].pid}) died")
                failure.__cause__ = failure.__cause__ or e
                return
            running[self._conns[w]] = (w, i)

        for w in range(self.num_workers):
            i = next(queues[w], None)
            if i is not None:
                send(w, i)
        while running:
            for conn in wait(list(running)):
                w, i = running.pop(conn)
                try:
                    status, payload = conn.recv()
                except (EOFError, OSError) as e:
                    failure = failure or EnvWorkerError(f"env worker process {w} (pid {self._procs[w].pid}) died")
                    failure.__cause__ = failure.__cause__ or e
                    continue
                if status != "ok":
                    failure = failure or EnvWorkerError(f"env worker {w} failed:\n{payload}")
                    continue
                results[i] = payload
                if progress is not None:
                    progress(i)
                nxt = None if failure else next(queues[w], None)
                if nxt is not None:
                    send(w, nxt)
        if failure is not None:  # raised once every running call has answered, so no reply is left in a pipe
            raise failure
        return results

    def worker_pids(self) -> list[int]:
        """Process ids of the workers, then of the server they were forked from if it is this env set's own (memory
        accounting; a shared server is its owner's to count)."""
        server = self._own_server.pid if self._own_server is not None else None
        return [p.pid for p in self._procs] + ([server] if server is not None else [])

    def close(self):
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for c in self._conns:
            try:
                c.send(("close", None))
            except OSError:
                pass
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if self._own_server is not None:
            self._own_server.close()
        for c in self._conns:
            c.close()
        if self._buf is not None:
            self._buf.close()
        os.close(self._mem_fd)

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


def make_vector_env(config: EnvConfig, fork_server: Optional[EnvForkServer] = None) -> VectorEnv:
    """Build the vector env for ``config``; ``backend='auto'`` is resolved here, once.  ``fork_server``: a server
    the cpu backend's workers are forked from, shared with other env sets (None: the set starts its own)."""
    backend = resolve_backend(config.backend)
    config = config.replace(backend=backend)
    if backend == "gpu":
        return GpuVectorEnv(config)
    return CpuVectorEnv(config, fork_server)
