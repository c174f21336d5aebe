"""MJCF text of a sampled pouring scene: table, room, cup, bottle (free joint), robot, liquid."""

from __future__ import annotations

from typing import Any

import numpy as np

from tcc_model.sim.geometry import lathe_mesh
from tcc_model.sim.scene import (
    LINK_LENGTH,
    SHOULDER_HEIGHT,
    STREAM_SEGMENTS,
    Distractor,
    RenderQuality,
    SceneParams,
)


def bottle_profile(p: SceneParams) -> np.ndarray:
    """(radius, z) profile of the bottle: slightly waisted body, cosine shoulder, neck and lip."""
    r, h, neck_r = p.bottle_radius, p.bottle_height, p.neck_radius
    body_z = np.linspace(0.02, h, 6)
    body_r = r * (1 - (1 - p.bottle_waist) * np.sin(np.pi * body_z / h) ** 2)
    u = np.linspace(0.15, 1.0, 6)
    blend = 0.5 - 0.5 * np.cos(np.pi * u)
    top = h + p.shoulder_height + p.neck_height
    points = [
        [(0.0, 0.0), (r * 0.92, 0.0), (r, 0.008)],
        np.stack([body_r, body_z], 1),
        np.stack([r + (neck_r - r) * blend, h + p.shoulder_height * u], 1),
        [
            (neck_r, top),
            (neck_r * 1.1, top + 0.002),
            (neck_r * 1.1, top + 0.006),
            (0.0, top + 0.006),
        ],
    ]
    return np.concatenate([np.asarray(block, dtype=np.float64) for block in points])


def cup_profile(p: SceneParams) -> np.ndarray:
    """(radius, z) profile of the cup: flared wall with a 4 mm thick rim and base."""
    r, h, wall = p.cup_radius, p.cup_height, 0.004
    rim = r * p.cup_flare
    return np.array(
        [
            (0.0, 0.0),
            (r * 0.95, 0.0),
            (r, 0.004),
            (rim, h),
            (rim - wall * 0.5, h + 0.002),
            (rim - wall, h),
            (r - wall, 0.006 + wall),
            (0.0, 0.006 + wall),
        ]
    )


def _fmt(values: Any) -> str:
    return " ".join(f"{float(v):.4f}" for v in np.atleast_1d(values))


def _mesh_xml(name: str, profile: np.ndarray) -> str:
    vertices, faces = lathe_mesh(profile, 32)
    vertex_text = " ".join(f"{v:.5f}" for v in vertices.ravel())
    face_text = " ".join(str(int(i)) for i in faces.ravel())
    return f'<mesh name="{name}" vertex="{vertex_text}" face="{face_text}"/>'


def _distractor_xml(index: int, d: Distractor) -> str:
    size = np.asarray(d.size)
    if d.kind == "sphere":
        size_text, z = _fmt(size[0]), size[0]
    elif d.kind == "cylinder":
        size_text, z = _fmt(size[:2] * [1.0, 1.5]), size[1] * 1.5
    else:  # box, ellipsoid
        size_text, z = _fmt(size), size[2]
    return (
        f'<geom name="distractor{index}" type="{d.kind}" size="{size_text}" '
        f'pos="{d.xy[0]:.4f} {d.xy[1]:.4f} {z:.4f}" euler="0 0 {d.yaw:.2f}" rgba="{_fmt(d.rgba)}"/>'
    )


def _table_texture_xml(p: SceneParams) -> str:
    """The table's 2-D texture: a builtin pattern, or random marks on a flat colour for wood."""
    if p.table_texture == "wood":
        return (
            f'<texture name="table" type="2d" builtin="flat" width="256" height="256" '
            f'rgb1="{_fmt(p.table_rgb1)}" rgb2="{_fmt(p.table_rgb2)}" mark="random" random="0.25" '
            f'markrgb="{_fmt(np.asarray(p.table_rgb2) * 0.6)}"/>'
        )
    return (
        f'<texture name="table" type="2d" builtin="{p.table_texture}" width="256" '
        f'height="256" rgb1="{_fmt(p.table_rgb1)}" rgb2="{_fmt(p.table_rgb2)}"/>'
    )


def _robot_xml(p: SceneParams, no_contact: str) -> str:
    """Robot base (static) and the mocap bodies of the arm links, hand and fingers."""
    robot, gripper = _fmt(p.robot_rgba), _fmt(p.gripper_rgba)
    base = p.robot_base
    return f"""<body name="robot_base" pos="{base[0]:.4f} {base[1]:.4f} 0">
      <geom type="cylinder" size="0.07 0.02" pos="0 0 0.02" rgba="0.15 0.15 0.15 1"/>
      <geom type="cylinder" size="0.05 0.09" pos="0 0 0.11" rgba="{robot}"/>
      <geom type="sphere" size="0.055" pos="0 0 {SHOULDER_HEIGHT}" rgba="{robot}"/>
    </body>
    <body name="upper_arm" mocap="true">
      <geom type="capsule" size="0.035 {LINK_LENGTH / 2}" rgba="{robot}" {no_contact}/>
    </body>
    <body name="elbow" mocap="true">
      <geom type="sphere" size="0.042" rgba="0.2 0.2 0.2 1" {no_contact}/>
    </body>
    <body name="forearm" mocap="true">
      <geom type="capsule" size="0.03 {LINK_LENGTH / 2}" rgba="{robot}" {no_contact}/>
    </body>
    <body name="hand" mocap="true">
      <geom type="box" size="0.02 0.055 0.03" pos="-0.075 0 0" rgba="{gripper}" {no_contact}/>
      <geom type="cylinder" size="0.03 0.03" pos="-0.11 0 0" euler="0 90 0" rgba="0.2 0.2 0.2 1"
            {no_contact}/>
    </body>
    <body name="finger_left" mocap="true">
      <geom type="box" size="0.05 0.006 0.022" rgba="{gripper}" {no_contact}/>
    </body>
    <body name="finger_right" mocap="true">
      <geom type="box" size="0.05 0.006 0.022" rgba="{gripper}" {no_contact}/>
    </body>"""


def build_mjcf(
    p: SceneParams, quality: RenderQuality = RenderQuality(), framebuffer_size: int = 640
) -> str:
    """MJCF text of the scene: table, room, cup, bottle (free joint), robot and liquid stream.

    ``framebuffer_size`` is the offscreen framebuffer side: the largest image it can render.
    Long because it is one straight-line XML template, read top to bottom like the scene.
    """
    no_contact = 'contype="0" conaffinity="0"'
    liquid = _fmt(p.liquid_rgba)
    stream = "\n".join(
        f'<body name="stream{i}" mocap="true" pos="0 0 -5"><geom name="stream{i}" type="capsule" '
        f'size="0.006 0.01" rgba="{liquid}" {no_contact}/></body>'
        for i in range(STREAM_SEGMENTS)
    )
    legs = "\n".join(
        f'<geom type="box" size="0.025 0.025 0.365" pos="{x} {y} -0.385" rgba="0.3 0.25 0.2 1"/>'
        for x in (0.62, -0.62)
        for y in (-0.33, 0.43)
    )
    distractors = "\n".join(_distractor_xml(i, d) for i, d in enumerate(p.distractors))
    cap_z = p.bottle_height + p.shoulder_height + p.neck_height
    ambient = _fmt([p.ambient] * 3)
    return f"""
<mujoco model="pouring">
  <option timestep="0.002" gravity="0 0 -9.81"/>
  <visual>
    <headlight ambient="{ambient}" diffuse="0.25 0.25 0.25" specular="0.05 0.05 0.05"/>
    <quality shadowsize="{quality.shadow_size}" offsamples="{quality.msaa_samples}"/>
    <global offwidth="{framebuffer_size}" offheight="{framebuffer_size}" fovy="{p.cam_fovy:.2f}"/>
  </visual>
  <asset>
    <texture type="skybox" builtin="gradient" rgb1="{_fmt(p.wall_rgb1)}" rgb2="{_fmt(p.wall_rgb2)}"
             width="64" height="64"/>
    {_table_texture_xml(p)}
    <material name="table" texture="table" texrepeat="{p.table_repeat:.2f} {p.table_repeat:.2f}"
              reflectance="{p.table_reflectance:.3f}"/>
    <texture name="floor" type="2d" builtin="checker" width="128" height="128"
             rgb1="{_fmt(p.floor_rgb1)}" rgb2="{_fmt(p.floor_rgb2)}"/>
    <material name="floor" texture="floor" texrepeat="6 6"/>
    <texture name="wall" type="2d" builtin="gradient" width="128" height="128"
             rgb1="{_fmt(p.wall_rgb1)}" rgb2="{_fmt(p.wall_rgb2)}"/>
    <material name="wall" texture="wall"/>
    <material name="shiny" specular="0.6" shininess="0.6"/>
    {_mesh_xml("bottle", bottle_profile(p))}
    {_mesh_xml("cup", cup_profile(p))}
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 2" dir="{_fmt(p.light_dir)}"
           diffuse="{_fmt(np.asarray(p.light_tint) * p.light_diffuse)}" castshadow="true"/>
    <light pos="0.6 -0.8 1.2" dir="-0.4 0.6 -1" diffuse="0.25 0.25 0.25" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor"/>
    <geom name="wall" type="plane" size="3 1.5 0.1" pos="0 1.4 0.5" euler="90 0 0" material="wall"/>
    <geom name="table" type="box" size="0.7 0.45 0.02" pos="0 0.05 -0.02" material="table"/>
    {legs}
    {distractors}
    <body name="cup" pos="{p.cup_xy[0]:.4f} {p.cup_xy[1]:.4f} 0">
      <geom type="mesh" mesh="cup" rgba="{_fmt(p.cup_rgba)}" material="shiny" {no_contact}/>
      <geom type="cylinder" size="{p.cup_radius:.4f} {p.cup_height / 2:.4f}"
            pos="0 0 {p.cup_height / 2:.4f}" group="3"/>
      <geom name="cup_liquid" type="cylinder" size="{p.cup_radius * 0.9:.4f} 0.001" pos="0 0 0.011"
            rgba="{liquid}" {no_contact}/>
    </body>
    <geom name="puddle" type="cylinder" size="0.001 0.0008" pos="0 0 -3" rgba="{liquid}"
          {no_contact}/>
    <body name="bottle" pos="{p.bottle_xy[0]:.4f} {p.bottle_xy[1]:.4f} 0">
      <freejoint name="bottle"/>
      <geom type="mesh" mesh="bottle" rgba="{_fmt(p.bottle_rgba)}" mass="0.4" material="shiny"/>
      <geom type="cylinder" size="{p.bottle_radius * 1.01:.4f} {p.bottle_height * 0.15:.4f}"
            pos="0 0 {p.bottle_height * 0.45:.4f}" rgba="{_fmt(p.label_rgba)}" mass="0.001"
            {no_contact}/>
      <geom type="cylinder" size="{p.neck_radius * 1.2:.4f} 0.008" pos="0 0 {cap_z:.4f}"
            rgba="{_fmt(p.cap_rgba)}" mass="0.005" {no_contact}/>
    </body>
    {_robot_xml(p, no_contact)}
    {stream}
  </worldbody>
</mujoco>"""
