"""A task's observation and action sizes, known before any simulator process starts.

Commands check every checkpoint against the task before they start Ray or env workers, so they need the
sizes cheaply.  Importing ManiSkill alone costs 2-4 s on a 2-core machine, too slow for a refusal, so the
tasks this project runs are answered from :data:`KNOWN_SPACES` (measured with ``obs_mode="state"`` on
ManiSkill 3.0.1 and re-measured by tests/test_bad_input.py).  Any other (env id, control mode) is looked up
in ManiSkill's registry and built once, in this process, on the CPU simulation (about 0.3 s after the
import): no worker process, no Ray.
"""
from __future__ import annotations

import contextlib
import difflib
import warnings
from typing import NamedTuple


class TaskSpaces(NamedTuple):
    obs_dim: int
    act_dim: int


class UnknownTask(ValueError):
    """An env id that ManiSkill does not register, or a control mode the task does not support."""


# (stock env id, control mode) -> sizes with obs_mode="state"
KNOWN_SPACES: dict[tuple[str, str], TaskSpaces] = {
    ("PickCube-v1", "pd_joint_delta_pos"): TaskSpaces(42, 8),
    ("PickCube-v1", "pd_joint_pos"): TaskSpaces(42, 8),
    ("PickCube-v1", "pd_ee_delta_pos"): TaskSpaces(42, 4),
    ("PickCube-v1", "pd_ee_delta_pose"): TaskSpaces(42, 7),
    ("PushCube-v1", "pd_joint_delta_pos"): TaskSpaces(35, 8),
    ("PushCube-v1", "pd_joint_pos"): TaskSpaces(35, 8),
    ("PushCube-v1", "pd_ee_delta_pos"): TaskSpaces(35, 4),
    ("PushCube-v1", "pd_ee_delta_pose"): TaskSpaces(35, 7),
}


def registered_env_ids() -> list[str]:
    """Every id ManiSkill registers (stock tasks and this project's headless variants).  Imports ManiSkill."""
    with _quiet_sapien():
        import mani_skill.envs  # noqa: F401  (registers the stock tasks)
    from mani_skill.utils.registration import REGISTERED_ENVS

    from envs.tasks import register_headless_variants

    register_headless_variants()
    return sorted(REGISTERED_ENVS)


@contextlib.contextmanager
def _quiet_sapien():
    """SAPIEN's missing-libvulkan notice: state-only simulation needs no renderer, and a refusal must stay one line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to find system libvulkan")
        yield


def check_env_id(env_id: str) -> None:
    """UnknownTask naming the closest registered ids unless ``env_id`` is a ManiSkill task."""
    if any(env_id == known for known, _ in KNOWN_SPACES):
        return
    ids = registered_env_ids()
    if env_id not in ids:
        close = difflib.get_close_matches(env_id, ids, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(sorted({k for k, _ in KNOWN_SPACES}))}"
        raise UnknownTask(f"env id {env_id!r} is not a registered ManiSkill task ({hint})")


def task_spaces(env_id: str, control_mode: str) -> TaskSpaces:
    """Observation and action sizes of ``env_id`` under ``control_mode`` (state observations).

    Raises UnknownTask (one line) for an unregistered id or an unsupported control mode."""
    known = KNOWN_SPACES.get((env_id, control_mode))
    if known is not None:
        return known
    check_env_id(env_id)
    from envs.worker import make_single_env

    try:
        with _quiet_sapien():
            env = make_single_env(env_id, control_mode, "sparse")
    except AssertionError as e:  # ManiSkill asserts on an unsupported control mode
        first = (str(e).strip().splitlines() or [""])[0]
        raise UnknownTask(f"control mode {control_mode!r} does not fit {env_id}: {first}") from None
    except Exception as e:  # a task that needs a renderer, assets that are not downloaded, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UnknownTask(f"{env_id} ({control_mode}) cannot be built on this machine: {type(e).__name__}: {first}") from None
    try:
        return TaskSpaces(int(env.observation_space.shape[-1]), int(env.action_space.shape[-1]))
    finally:
        env.close()
