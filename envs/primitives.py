"""Primitive actor builders whose visual shapes are optional.

ManiSkill's ``actors.build_cube``/``build_sphere`` create a ``sapien.render.RenderMaterial``
unconditionally, which raises on a machine with no rendering device.  These builders produce the same
collision geometry, mass and body type, and add the visual shape only when the scene can render.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import sapien
from mani_skill.envs.scene import ManiSkillScene
from mani_skill.utils.structs.pose import Pose


def _build(builder, name: str, body_type: str, initial_pose):
    if initial_pose is not None:
        builder.set_initial_pose(initial_pose)
    if body_type == "dynamic":
        return builder.build(name=name)
    if body_type == "static":
        return builder.build_static(name=name)
    if body_type == "kinematic":
        return builder.build_kinematic(name=name)
    raise ValueError(f"unknown body type {body_type!r}")


def _material(color):
    return sapien.render.RenderMaterial(base_color=color)


def build_box(
    scene: ManiSkillScene,
    half_sizes: Sequence[float],
    color,
    name: str,
    body_type: str = "dynamic",
    add_collision: bool = True,
    initial_pose: Optional[Union[Pose, sapien.Pose]] = None,
):
    builder = scene.create_actor_builder()
    if add_collision:
        builder.add_box_collision(half_size=list(half_sizes))
    if scene.can_render():
        builder.add_box_visual(half_size=list(half_sizes), material=_material(color))
    return _build(builder, name, body_type, initial_pose)


def build_cube(scene: ManiSkillScene, half_size: float, color, name: str, **kw):
    return build_box(scene, [half_size] * 3, color, name, **kw)


def build_sphere(
    scene: ManiSkillScene,
    radius: float,
    color,
    name: str,
    body_type: str = "dynamic",
    add_collision: bool = True,
    initial_pose: Optional[Union[Pose, sapien.Pose]] = None,
):
    builder = scene.create_actor_builder()
    if add_collision:
        builder.add_sphere_collision(radius=radius)
    if scene.can_render():
        builder.add_sphere_visual(radius=radius, material=_material(color))
    return _build(builder, name, body_type, initial_pose)


def build_target_disc(
    scene: ManiSkillScene,
    radius: float,
    thickness: float,
    name: str,
    body_type: str = "kinematic",
    add_collision: bool = False,
    initial_pose: Optional[Union[Pose, sapien.Pose]] = None,
):
    """Red/white bullseye used as a goal region (visual only, unless ``add_collision``)."""
    red, white = [194 / 255, 19 / 255, 22 / 255, 1.0], [1.0, 1.0, 1.0, 1.0]
    builder = scene.create_actor_builder()
    if add_collision:
        builder.add_cylinder_collision(radius=radius, half_length=thickness / 2)
    if scene.can_render():
        for k, color in enumerate([red, white, red, white, red]):
            builder.add_cylinder_visual(
                radius=radius * (5 - k) / 5,
                half_length=thickness / 2 + k * 1e-5,
                material=_material(color),
            )
    return _build(builder, name, body_type, initial_pose)
