"""A trial's env maker: vector envs of one :class:`EnvConfig`, any of them startable in the background.

A cpu-backend env set starts its worker processes (forked from a server that imports ManiSkill once, 3-4 s, shared by
the factory's sets when it is given one), so a trial that will need a second set (MC re-rollout slots) starts it
while its main envs start: their workers build their scenes at the same time.  A gpu-backend set is built inside
this process, on its one PhysX GPU system, with nothing to overlap: it is built when it is asked for, in the
caller's thread, never concurrently with another.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

from envs.backend import resolve_backend
from envs.config import EnvConfig
from envs.forkserver import EnvForkServer
from envs.vector import VectorEnv, make_vector_env


class EnvFactory:
    """``factory(num_envs, autoreset)`` builds (or hands over the started) vector env of ``config`` with that size.

    The caller owns every env it was handed; :meth:`close` closes those started and never claimed.  ``fork_server``:
    the server every cpu-backend set's workers are forked from (its owner closes it after them); None: each set
    starts its own."""

    def __init__(self, config: EnvConfig, fork_server: Optional[EnvForkServer] = None):
        self.config = config
        self.fork_server = fork_server
        self._started: dict[tuple[int, bool], Future] = {}
        self._pool: Optional[ThreadPoolExecutor] = None

    def _config(self, num_envs: int, autoreset: bool) -> EnvConfig:
        return self.config.replace(num_envs=num_envs, autoreset=autoreset)

    def start(self, num_envs: int, autoreset: bool = True) -> None:
        """Begin building that env set in a background thread; the next call asking for it receives it.  On the gpu
        backend (given, or what ``auto`` resolves to) this does nothing: the call asking for it builds it."""
        if self.config.backend == "gpu" or resolve_backend(self.config.backend) == "gpu":
            return
        key = (num_envs, autoreset)
        if key not in self._started:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="env-start")
            self._started[key] = self._pool.submit(make_vector_env, self._config(num_envs, autoreset), self.fork_server)

    def __call__(self, num_envs: int, autoreset: bool = True) -> VectorEnv:
        started = self._started.pop((num_envs, autoreset), None)
        if started is not None:
            return started.result()  # a failed start raises here, where the env is needed
        return make_vector_env(self._config(num_envs, autoreset), self.fork_server)

    def close(self) -> None:
        """Close the env sets started and never claimed (waiting for a start under way)."""
        for started in self._started.values():
            try:
                started.result().close()
            except Exception:  # it failed to start: nothing to close, and the trial is over
                pass
        self._started.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
