"""The env fork server (envs.forkserver) on real ManiSkill: env sets share one server and close independently, a dead
server is replaced at the next request, and a server that cannot start is one clear error naming it."""
import os
import signal
import time

import psutil
import pytest
import torch

from envs import EnvConfig, make_vector_env
from envs.forkserver import EnvForkServer, ForkedWorker
from envs.vector import EnvWorkerError


def _cfg(num_envs: int, workers: int) -> EnvConfig:
    return EnvConfig("PickCube-v1", num_envs=num_envs, reward_mode="sparse", backend="cpu", num_workers=workers)


def _live_descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def test_env_sets_share_one_server_and_close_independently():
    before = _live_descendants()
    with EnvForkServer() as server:
        assert server.pid is None  # nothing starts before an env set asks
        a = make_vector_env(_cfg(2, 2), server)
        b = make_vector_env(_cfg(1, 1), server)
        first = server.pid
        # both sets' workers are the one server's children; neither set counts the shared server as its own
        assert {p.pid for p in psutil.Process(first).children()} == set(a.worker_pids() + b.worker_pids())
        assert first not in a.worker_pids() + b.worker_pids() and len(a.worker_pids()) == 2
        a.reset(seed=0)
        b.reset(seed=1)
        a_pids = a.worker_pids()
        a.close()
        for pid in a_pids:  # reaped by the server at once: no zombie left behind (TimeoutExpired otherwise)
            ForkedWorker(pid).wait(timeout=5)
        assert b.step(torch.zeros(1, 8)).obs.shape == (1, 42)  # the other set is untouched
        b.close()
        assert server.pid == first  # still up for the next set

        # the server dies (killed): the next set gets a new one
        os.kill(first, signal.SIGKILL)
        end = time.monotonic() + 5
        while server.pid is not None and time.monotonic() < end:
            time.sleep(0.01)
        with make_vector_env(_cfg(1, 1), server) as c:
            assert server.pid not in (None, first) and c.reset(seed=2).shape == (1, 42)
    assert _live_descendants() - before == set()  # closed after its sets: the server and every worker are gone


def test_a_server_that_cannot_start_is_one_error_naming_it(tmp_path, monkeypatch):
    # a sapien that fails to import: the server dies before it forks anything
    (tmp_path / "sapien").mkdir()
    (tmp_path / "sapien" / "__init__.py").write_text("raise ImportError('no simulator here')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    before = _live_descendants()
    with EnvForkServer() as server:
        with pytest.raises(EnvWorkerError, match=r"the env fork server exited \(code 1\) before forking its workers"):
            make_vector_env(_cfg(2, 2), server)
    assert _live_descendants() - before == set()
