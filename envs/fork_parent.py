"""The process env workers are forked from (started by :func:`envs.forkserver.start_forked_workers`).

Its own module, which the ``envs`` package does not import, so that ``python -m envs.fork_parent`` runs it as
``__main__`` without a second copy in ``sys.modules``.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from multiprocessing.connection import Connection


def serve(pid_fd: int, mem_fd: int, jobs: list) -> int:
    """The server: import, fork one worker per (socket fd, arguments) job, report their pids, reap them."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import gymnasium  # noqa: F401  (the shared imports: everything a worker needs before it builds a scene)
    import mani_skill.envs  # noqa: F401
    import sapien  # noqa: F401
    import torch  # noqa: F401

    from envs.worker import worker_main

    pids = []
    for fd, args in jobs:
        pid = os.fork()
        if pid == 0:
            os.close(pid_fd)
            for other, _ in jobs:
                if other != fd:
                    os.close(other)
            code = 0
            try:
                worker_main(Connection(fd), mem_fd, *args)
            except BaseException:
                traceback.print_exc()  # what an exec'd worker's interpreter would have printed
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)  # no interpreter teardown: see envs.worker
        pids.append(pid)
    for fd, _ in jobs:
        os.close(fd)
    os.write(pid_fd, json.dumps(pids).encode())
    os.close(pid_fd)
    failed = 0
    while True:
        try:
            _, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1 if failed else 0
        failed += status != 0


if __name__ == "__main__":
    code = serve(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
