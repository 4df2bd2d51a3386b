"""The CPU vector env's batch buffers in shared memory: one block, one row per env, seen by driver and workers.

Arrays (N = num_envs): ``act`` [N, act_dim] float32, ``obs`` and ``final`` [N, obs_dim] float32, ``rew`` [N]
float32, ``term``/``trunc``/``succ`` [N] bool, ``sim`` [N, state_dim] float32, ``elapsed`` [N] int64.

The block is an anonymous memory file (``memfd``): the driver creates it before it starts the workers and
passes the descriptor to them, so nothing has a name in /dev/shm that a crash could leave behind, and the
memory goes away with the last process that maps it.  Who may write a row when is decided by the command
protocol of :mod:`envs.vector` (a worker touches only its own envs' rows, and only while it handles a command).
"""
from __future__ import annotations

import mmap
import os

import numpy as np


def _fields(num_envs: int, obs_dim: int, act_dim: int, state_dim: int):
    n = num_envs
    return [
        ("act", np.float32, (n, act_dim)),
        ("obs", np.float32, (n, obs_dim)),
        ("final", np.float32, (n, obs_dim)),
        ("sim", np.float32, (n, state_dim)),
        ("elapsed", np.int64, (n,)),
        ("rew", np.float32, (n,)),
        ("term", np.bool_, (n,)),
        ("trunc", np.bool_, (n,)),
        ("succ", np.bool_, (n,)),
    ]


def new_memory_file() -> int:
    """An empty anonymous memory file (close-on-exec: only the workers it is passed to get it)."""
    return os.memfd_create("o2o-vector-env", os.MFD_CLOEXEC)


class SharedBatch:
    """Numpy views of every batch array, laid out in the memory file ``fd`` (8-byte aligned)."""

    def __init__(self, fd: int, num_envs: int, obs_dim: int, act_dim: int, state_dim: int, create: bool = False):
        layout, offset = [], 0
        for name, dtype, shape in _fields(num_envs, obs_dim, act_dim, state_dim):
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            layout.append((name, dtype, shape, offset))
            offset += -(-nbytes // 8) * 8
        if create:
            os.ftruncate(fd, offset)
        self._map = mmap.mmap(fd, offset)
        for name, dtype, shape, off in layout:
            setattr(self, name, np.ndarray(shape, dtype=dtype, buffer=self._map, offset=off))

    def close(self) -> None:
        for name, _, _ in _fields(0, 0, 0, 0):
            self.__dict__.pop(name, None)  # the views must go before the map can close
        try:
            self._map.close()
        except BufferError:  # a caller still holds a view: the map closes when that is collected
            pass
