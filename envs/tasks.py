"""Headless task variants.

A headless variant subclasses a stock ManiSkill task and only rebuilds the primitive actors of
``_load_scene`` through :mod:`envs.primitives`, so no ``RenderMaterial`` is created when the scene
cannot render.  Physics, state dict (same actor names, same order) and observations are the stock ones.

Adding a task = one subclass + one entry in ``HEADLESS_VARIANTS``.
"""
from __future__ import annotations

import numpy as np
import sapien
from mani_skill.envs.tasks.tabletop.pick_cube import PickCubeEnv
from mani_skill.envs.tasks.tabletop.push_cube import PushCubeEnv
from mani_skill.utils.registration import REGISTERED_ENVS, register_env
from mani_skill.utils.scene_builder.table import TableSceneBuilder

from envs import primitives


class HeadlessPickCubeEnv(PickCubeEnv):
    def _load_scene(self, options: dict):
        self.table_scene = TableSceneBuilder(self, robot_init_qpos_noise=self.robot_init_qpos_noise)
        self.table_scene.build()
        self.cube = primitives.build_cube(
            self.scene,
            half_size=self.cube_half_size,
            color=[1, 0, 0, 1],
            name="cube",
            initial_pose=sapien.Pose(p=[0, 0, self.cube_half_size]),
        )
        self.goal_site = primitives.build_sphere(
            self.scene,
            radius=self.goal_thresh,
            color=[0, 1, 0, 1],
            name="goal_site",
            body_type="kinematic",
            add_collision=False,
            initial_pose=sapien.Pose(),
        )
        self._hidden_objects.append(self.goal_site)


class HeadlessPushCubeEnv(PushCubeEnv):
    def _load_scene(self, options: dict):
        self.table_scene = TableSceneBuilder(env=self, robot_init_qpos_noise=self.robot_init_qpos_noise)
        self.table_scene.build()
        self.obj = primitives.build_cube(
            self.scene,
            half_size=self.cube_half_size,
            color=np.array([12, 42, 160, 255]) / 255,
            name="cube",
            body_type="dynamic",
            initial_pose=sapien.Pose(p=[0, 0, self.cube_half_size]),
        )
        self.goal_region = primitives.build_target_disc(
            self.scene,
            radius=self.goal_radius,
            thickness=1e-5,
            name="goal_region",
            add_collision=False,
            body_type="kinematic",
            initial_pose=sapien.Pose(p=[0, 0, 1e-3]),
        )


# stock id -> (headless id, class).  Same max_episode_steps as the stock registration.
HEADLESS_VARIANTS = {
    "PickCube-v1": ("PickCubeHeadless-v1", HeadlessPickCubeEnv),
    "PushCube-v1": ("PushCubeHeadless-v1", HeadlessPushCubeEnv),
}


def register_headless_variants() -> None:
    """Register every headless variant with ManiSkill/gymnasium (idempotent)."""
    for stock_id, (headless_id, cls) in HEADLESS_VARIANTS.items():
        if headless_id in REGISTERED_ENVS:
            continue
        steps = REGISTERED_ENVS[stock_id].max_episode_steps
        register_env(headless_id, max_episode_steps=steps)(cls)


def resolve_env_id(env_id: str, can_render: bool) -> str:
    """The id to build: the stock id where rendering works, else its headless variant.

    A task with no headless variant is returned unchanged (it may still build if it has no
    primitive visuals, or fail with ManiSkill's own error).
    """
    if can_render:
        return env_id
    if env_id in HEADLESS_VARIANTS:
        return HEADLESS_VARIANTS[env_id][0]
    return env_id


def stock_env_id(env_id: str) -> str:
    """Inverse of :func:`resolve_env_id`: checkpoints record the stock id."""
    for stock_id, (headless_id, _) in HEADLESS_VARIANTS.items():
        if env_id == headless_id:
            return stock_id
    return env_id
