"""The process env workers are forked from (started by :class:`envs.forkserver.EnvForkServer`).

Its own module, which the ``envs`` package does not import, so that ``python -m envs.fork_parent`` runs it as
``__main__`` without a second copy in ``sys.modules``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Connection


def _reap(*_) -> None:
    """SIGCHLD: reap every exited worker now, so that its pid stops existing (clients watch workers by pid)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(ctl_fd: int) -> int:
    """The server: import, then fork one worker per request on ``ctl_fd`` (a message {"args", "env"} with the
    batch's memory file and the worker's socket attached), answer its pid, reap it when it exits.  Returns once the
    client has closed its end and every worker has exited."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import gymnasium  # noqa: F401  (the shared imports: everything a worker needs before it builds a scene)
    import mani_skill.envs  # noqa: F401
    import sapien  # noqa: F401
    import torch  # noqa: F401

    from envs.worker import worker_main

    ctl = socket.socket(fileno=ctl_fd)
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 2)
        except ConnectionResetError:
            break
        if not msg:  # the client closed its end, or exited
            break
        job = json.loads(msg)
        mem_fd, conn_fd = fds
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ctl.close()
            os.environ.clear()
            os.environ.update(job["env"])
            code = 0
            try:
                worker_main(Connection(conn_fd), mem_fd, *job["args"])
            except BaseException:
                traceback.print_exc()  # what an exec'd worker's interpreter would have printed
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)  # no interpreter teardown: see envs.worker
        os.close(mem_fd)
        os.close(conn_fd)
        try:
            ctl.send(str(pid).encode())
        except OSError:  # the client is gone: its new worker reads EOF on its socket and exits
            break
    ctl.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    while True:  # the workers of env sets still open finish first
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return 0


if __name__ == "__main__":
    code = serve(int(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
