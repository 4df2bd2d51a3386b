"""Env worker processes forked from one process that imported torch, SAPIEN and ManiSkill first.

A worker started on its own (``python -m envs.worker``) spends 250-440 MiB of private memory on those imports
(benchmarks/RESULTS.md), whatever number of envs it then hosts, so at 100 envs over 16 workers the imports are
most of a trial's memory.  Forked from one pre-imported server, the workers share those pages copy-on-write and
each keeps only what it writes (its scenes, the objects whose reference counts change).

The server is a plain subprocess (``python -m envs.fork_parent``), not multiprocessing's forkserver: that one
re-imports the caller's ``__main__``, which breaks scripts and notebooks without a main guard.  It imports the
heavy modules, but creates no scene and no thread, so forking it is safe; it then forks one worker per block,
writes their pids to a pipe, and reaps them as they exit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection


class ForkServerError(RuntimeError):
    """The server died before it forked the workers (its own traceback is on stderr)."""


class ForkedWorker:
    """A worker process forked by the server: not this process's child, so it is watched by pid (the server
    reaps it as soon as it exits, so a finished worker's pid stops existing)."""

    def __init__(self, pid: int):
        self.pid = pid

    def poll(self):
        """None while the process exists, else 0 (its exit status belongs to the server)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return 0
        return None

    def wait(self, timeout: float) -> None:
        """Wait until the process is gone; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"env worker {self.pid}", timeout)
            time.sleep(0.01)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_forked_workers(worker_args: list[list], mem_fd: int, env: dict) -> tuple[subprocess.Popen, list[Connection], list[ForkedWorker]]:
    """Start the server and one worker per entry of ``worker_args`` (``envs.worker.worker_main``'s arguments after
    the connection and ``mem_fd``).  Returns (server, connections to the workers, the workers), in order."""
    import socket

    parents, children = [], []
    for _ in worker_args:
        parent, child = socket.socketpair()
        parents.append(Connection(parent.detach()))
        children.append(child)
    pid_r, pid_w = os.pipe()
    jobs = [[c.fileno(), a] for c, a in zip(children, worker_args)]
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "envs.fork_parent", str(pid_w), str(mem_fd), json.dumps(jobs)],
            pass_fds=(pid_w, mem_fd, *(c.fileno() for c in children)), env=env, stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(pid_w)
        for c in children:
            c.close()
    with os.fdopen(pid_r, "rb") as f:
        answer = f.read()  # EOF once the server and every worker have closed the write end
    if not answer:
        server.wait()
        for c in parents:
            c.close()
        raise ForkServerError(f"the env fork server exited (code {server.returncode}) before forking its workers")
    return server, parents, [ForkedWorker(pid) for pid in json.loads(answer)]
