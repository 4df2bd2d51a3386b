"""Where PickCube-v1's state observation keeps each quantity (obs_mode "state", 42 floats per env).

ManiSkill 3.0.1's ``PickCubeEnv``: the agent's qpos (9) and qvel (9), then ``_get_obs_extra``: is_grasped (1), tcp pose
(7), goal position (3), cube pose (7), tcp-to-cube (3), cube-to-goal (3).  Probes that sort transitions by what the
robot is doing (grasping, placing, coming to rest) and the env tests read states through these names;
``tests/test_envs.py::test_state_and_obs_layout`` checks them against the live simulator.
"""
from __future__ import annotations

QPOS = slice(0, 9)
QVEL = slice(9, 18)
ARM_QVEL = slice(9, 16)  # the seven arm joints: PickCube's "robot static" ignores the two finger joints
GRASPED = 18  # 1.0 while the gripper holds the cube
TCP_POS = slice(19, 22)
GOAL_POS = slice(26, 29)
CUBE_POS = slice(29, 32)
TCP_TO_CUBE = slice(36, 39)
CUBE_TO_GOAL = slice(39, 42)

# PickCube-v1's success: the cube within GOAL_THRESH of the goal AND every arm joint's speed at most STATIC (Panda.is_static)
GOAL_THRESH = 0.025
STATIC = 0.2


def is_grasped(obs):
    """obs [..., 42] -> bool [...]: the gripper holds the cube."""
    return obs[..., GRASPED] > 0.5


def is_placed(obs):
    """obs [..., 42] -> bool [...]: the cube is within the goal's threshold."""
    return obs[..., CUBE_TO_GOAL].norm(dim=-1) <= GOAL_THRESH


def is_arm_static(obs):
    """obs [..., 42] -> bool [...]: no arm joint moves faster than PickCube's success allows."""
    return obs[..., ARM_QVEL].abs().amax(dim=-1) <= STATIC
