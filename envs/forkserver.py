"""Env worker processes forked from one process that imported torch, SAPIEN and ManiSkill first.

A worker started on its own (``python -m envs.worker``) spends 250-440 MiB of private memory on those imports
(benchmarks/RESULTS.md), whatever number of envs it then hosts, so at 100 envs over 16 workers the imports are
most of a trial's memory.  Forked from one pre-imported server, the workers share those pages copy-on-write and
each keeps only what it writes (its scenes, the objects whose reference counts change).

The server is a plain subprocess (``python -m envs.fork_parent``), not multiprocessing's forkserver: that one
re-imports the caller's ``__main__``, which breaks scripts and notebooks without a main guard.  It imports the
heavy modules, but creates no scene and no thread, so forking it is safe.  It serves any number of env sets, one
after another or at once: a trial's rollout envs and its MC re-rollout slots share one server (one import, 3-5 s
and a few hundred MiB, instead of one per set).  Each request carries a worker's socket and the batch's memory
file (SCM_RIGHTS over a Unix socket) and its arguments; the server forks the worker, answers its pid, and reaps
it when it exits.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Optional


class ForkServerError(RuntimeError):
    """The server died before it forked a worker (its own traceback is on stderr)."""


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


class EnvForkServer:
    """One fork server process, started at the first request and shared by every env set built with it.

    Thread-safe (a trial starts its re-rollout slots in a background thread while its main envs start).  Close it
    after the env sets that use it: :meth:`close` ends the server once its workers have exited; a request after
    that starts a new one.  Workers outlive neither their env set (closed with it) nor this process (a worker
    whose socket closes exits)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._ctl: Optional[socket.socket] = None

    @property
    def pid(self) -> Optional[int]:
        """The server's process id while it runs (memory accounting), else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _start(self, env: dict) -> None:
        ctl, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one message per request
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "envs.fork_parent", str(child.fileno())],
                                          pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            ctl.close()
            raise
        finally:
            child.close()
        self._ctl = ctl

    def fork_workers(self, worker_args: list[list], mem_fd: int, env: dict) -> tuple[list[Connection], list[ForkedWorker]]:
        """Fork one worker per entry of ``worker_args`` (``envs.worker.worker_main``'s arguments after the connection
        and ``mem_fd``), each running with environment ``env``.  Returns (connections to the workers, the workers),
        in order.  :class:`ForkServerError` if the server is dead (the workers forked so far are killed)."""
        conns, workers = [], []
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._close_locked()
                self._start(env)
            try:
                for args in worker_args:
                    parent, child = socket.socketpair()
                    try:
                        msg = json.dumps({"args": args, "env": env}).encode()
                        socket.send_fds(self._ctl, [msg], [mem_fd, child.fileno()])
                        answer = self._ctl.recv(64)
                    except OSError:
                        answer = b""
                    finally:
                        child.close()
                    conns.append(Connection(parent.detach()))
                    if not answer:
                        self._proc.wait()
                        raise ForkServerError(f"the env fork server exited (code {self._proc.returncode}) before forking its workers")
                    workers.append(ForkedWorker(int(answer)))
            except BaseException:
                for c in conns:
                    c.close()
                for w in workers:
                    w.kill()
                raise
        return conns, workers

    def _close_locked(self) -> None:
        if self._ctl is not None:
            self._ctl.close()  # the server's end reads EOF: it waits for its workers, then exits
            self._ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a worker of an env set still open keeps it waiting
                self._proc.kill()
                self._proc.wait(timeout=5)
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def __enter__(self) -> "EnvForkServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
