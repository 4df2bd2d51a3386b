"""Shared fixtures: a throwaway policy checkpoint, the shipped policies, and a CLI runner.

Everything here is real: checkpoints are written with the project's own format, the CLI runs as a process of its own
(``python -m orchestrator``, forked from a pre-imported server) in the repository root.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = REPO_ROOT / "experiments" / "checkpoints" / "pickcube"

# PickCube-v1, obs_mode="state", pd_joint_delta_pos (SPEC.md)
PICKCUBE_OBS_DIM = 42
PICKCUBE_ACT_DIM = 8


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def policy_checkpoint(tmp_path_factory) -> Path:
    """An untrained PickCube-v1 policy (fixed init seed) saved in the project's checkpoint format."""
    from algorithms.agent import Agent
    from algorithms.checkpoint import save_policy

    torch.manual_seed(0)
    agent = Agent(PICKCUBE_OBS_DIM, PICKCUBE_ACT_DIM)
    path = tmp_path_factory.mktemp("policy") / "untrained.pt"
    save_policy(path, agent, env_id="PickCube-v1", control_mode="pd_joint_delta_pos",
                config={"note": "untrained test policy"}, metrics={"success_det": 0.0})
    return path


@pytest.fixture(scope="session")
def expert_checkpoint() -> Path:
    """The shipped expert pi* (deterministic success >= 95%): a policy that really grasps the cube."""
    path = SHIPPED / "expert.pt"
    if not path.is_file():
        pytest.skip(f"shipped expert policy {path} is not there yet")
    return path


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, timeout=...)`` runs ``python -m orchestrator *args`` in the repo root, no stdin, and returns
    its ``subprocess.CompletedProcess``.  Each command is its own process, forked from a server that imported torch
    and the CLI once (tests/cli_fork_server.py): the same entry point, exit status and output as a new interpreter,
    without paying the imports (several CPU-seconds) each time."""
    from tests.cli_fork_server import ForkServer

    server = ForkServer()
    try:
        yield lambda *args, timeout=300: server.run([str(a) for a in args], REPO_ROOT, timeout)
    finally:
        server.close()


@pytest.fixture(scope="session")
def env_fork_server():
    """One env fork server (envs.forkserver) for the session's in-process env sets and trials: each set's workers fork
    from it instead of a server of their own that imports ManiSkill again (3-5 s each, some fifty times a session).
    Tests of process lifetimes (tests/test_env_factory.py, the dead-worker test) leave it out."""
    from envs.forkserver import EnvForkServer

    with EnvForkServer() as server:
        yield server


# The session runs Ray in this process (tests/test_grid.py's cluster and in-process launches, tests/test_analysis.py's
# Tune run), whose native threads outlive ray.shutdown() and can crash the interpreter's C++ teardown after every
# result is in (orchestrator.process_exit): the session ends as the CLI does, with pytest's own exit status.
_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    from orchestrator.process_exit import end_process

    end_process(config.stash.get(_EXIT_STATUS, 0))
