"""A task's observation and action sizes, known before any simulator process starts.

Commands check every checkpoint against the task before they start Ray or env workers, so they need the
sizes cheaply.  Importing ManiSkill alone costs 2-4 s of CPU on a 2-core machine, and building an env in the
checking process would create a CPU PhysX scene there (a process that later runs GPU simulation must not have
one), so the tasks this project runs are answered from :data:`KNOWN_SPACES`, measured with ``obs_mode="state"``
on ManiSkill 3.0.1 and re-measured against the simulator by tests/test_bad_input.py.  Any other env id is
checked against ManiSkill's registry (:data:`REGISTERED_IDS`, a snapshot for the installed version, else one
import; no env built) and its sizes are left to the env itself: the callers then check the checkpoints against
each other, and against the env when it starts.
"""
from __future__ import annotations

import contextlib
import difflib
import warnings
from typing import NamedTuple, Optional


class TaskSpaces(NamedTuple):
    obs_dim: int
    act_dim: int


class UnknownTask(ValueError):
    """An env id that ManiSkill does not register."""


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


# ManiSkill's registry as ``import mani_skill.envs`` fills it, for the version named (checked against the live
# registry by tests/test_bad_input.py); another installed version is read from the registry itself.
REGISTRY_VERSION = "3.0.1"
HEADLESS_IDS = ("PickCubeHeadless-v1", "PushCubeHeadless-v1")  # envs.tasks.HEADLESS_VARIANTS, without importing ManiSkill
REGISTERED_IDS = frozenset({
    'AnymalC-Reach-v1', 'AnymalC-Spin-v1', 'ArchitecTHOR_SceneManipulation-v1', 'AssemblingKits-v1', 'DrawSVG-v1',
    'DrawTriangle-v1', 'Empty-v1', 'FMBAssembly1Easy-v1', 'InsertFlower-v1', 'LiftPegUpright-v1', 'MS-AntRun-v1',
    'MS-AntWalk-v1', 'MS-CartpoleBalance-v1', 'MS-CartpoleSwingUp-v1', 'MS-HopperHop-v1', 'MS-HopperStand-v1',
    'MS-HumanoidRun-v1', 'MS-HumanoidStand-v1', 'MS-HumanoidWalk-v1', 'OpenCabinetDoor-v1', 'OpenCabinetDrawer-v1',
    'PegInsertionSide-v1', 'PickClutterYCB-v1', 'PickCube-v1', 'PickCubeSO100-v1', 'PickCubeWidowXAI-v1',
    'PickSingleYCB-v1', 'PlaceSphere-v1', 'PlugCharger-v1', 'PokeCube-v1', 'PullCube-v1', 'PullCubeTool-v1',
    'PushCube-v1', 'PushT-v1', 'PutCarrotOnPlateInScene-v1', 'PutEggplantInBasketScene-v1',
    'PutSpoonOnTableClothInScene-v1', 'ReplicaCADPrepareGroceriesTrain_SceneManipulation-v1',
    'ReplicaCADPrepareGroceriesVal_SceneManipulation-v1', 'ReplicaCADSetTableTrain_SceneManipulation-v1',
    'ReplicaCADSetTableVal_SceneManipulation-v1', 'ReplicaCADTidyHouseTrain_SceneManipulation-v1',
    'ReplicaCADTidyHouseVal_SceneManipulation-v1', 'ReplicaCAD_SceneManipulation-v1', 'RoboCasaKitchen-v1',
    'RollBall-v1', 'RotateSingleObjectInHandLevel0-v1', 'RotateSingleObjectInHandLevel1-v1',
    'RotateSingleObjectInHandLevel2-v1', 'RotateSingleObjectInHandLevel3-v1', 'RotateValveLevel0-v1',
    'RotateValveLevel1-v1', 'RotateValveLevel2-v1', 'RotateValveLevel3-v1', 'RotateValveLevel4-v1',
    'SO100GraspCube-v1', 'SceneManipulation-v1', 'StackCube-v1', 'StackGreenCubeOnYellowCubeBakedTexInScene-v1',
    'StackPyramid-v1', 'TableTopFreeDraw-v1', 'TriFingerRotateCubeLevel0-v1', 'TriFingerRotateCubeLevel1-v1',
    'TriFingerRotateCubeLevel2-v1', 'TriFingerRotateCubeLevel3-v1', 'TriFingerRotateCubeLevel4-v1', 'TurnFaucet-v1',
    'TwoRobotPickCube-v1', 'TwoRobotStackCube-v1', 'UnitreeG1PlaceAppleInBowl-v1', 'UnitreeG1Stand-v1',
    'UnitreeG1TransportBox-v1', 'UnitreeGo2-Reach-v1', 'UnitreeH1Stand-v1',
})


def registered_env_ids() -> list[str]:
    """Every id ManiSkill registers (stock tasks and this project's headless variants).  From the snapshot when
    the installed ManiSkill is the one it was taken from, else by importing ManiSkill (2-4 s of CPU)."""
    from importlib import metadata

    if metadata.version("mani_skill") == REGISTRY_VERSION:
        return sorted(REGISTERED_IDS | set(HEADLESS_IDS))
    return live_registered_env_ids()


def live_registered_env_ids() -> list[str]:
    """ManiSkill's registry after importing it (and registering this project's headless variants)."""
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


def task_spaces(env_id: str, control_mode: str) -> Optional[TaskSpaces]:
    """Observation and action sizes of ``env_id`` under ``control_mode`` (state observations), or None for a
    registered task outside :data:`KNOWN_SPACES` (its sizes are known once its env is built).

    Raises UnknownTask (one line) for an id ManiSkill does not register."""
    known = KNOWN_SPACES.get((env_id, control_mode))
    if known is None:
        check_env_id(env_id)
    return known
