"""Randomised pouring scene: sampled parameters and the MJCF model built from them.

Everything the robot moves (arm links, gripper, liquid stream) is a mocap body posed per frame by
:mod:`tcc_model.sim.episode`; the bottle has a free joint so a dropped bottle falls with physics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tcc_model.sim.geometry import lathe_mesh
from tcc_model.sim.ranges import (  # LIQUID_COLOURS: re-exported
    LIQUID_COLOURS,  # noqa: F401
    DistractorRanges,
    SamplingRanges,
    draw,
    draw_mirrored,
)

TABLE_TEXTURES: tuple[str, ...] = ("checker", "gradient", "flat", "wood")
DISTRACTOR_TYPES: tuple[str, ...] = ("box", "sphere", "cylinder", "ellipsoid")
#: number of capsules drawing the liquid stream
STREAM_SEGMENTS = 14
#: robot shoulder height above its base and the length of both arm links (m)
SHOULDER_HEIGHT = 0.22
LINK_LENGTH = 0.30


@dataclass(frozen=True)
class RenderQuality:
    """Offscreen render settings; the defaults are the fast ones (512² shadow map, no MSAA)."""

    shadow_size: int = 512
    msaa_samples: int = 0
    shadows: bool = True


@dataclass
class Distractor:
    """A primitive object standing on the table that the robot ignores."""

    kind: str
    xy: list[float]
    size: list[float]
    rgba: list[float]
    yaw: float


@dataclass
class SceneParams:
    """All randomised scene parameters of one episode (lengths in metres, angles in degrees)."""

    pour_sign: int  # +1: cup to the right of the bottle (world +x), -1: to the left
    bottle_radius: float
    bottle_height: float  # cylindrical body
    shoulder_height: float
    neck_radius: float
    neck_height: float
    bottle_waist: float  # relative radius at mid height
    bottle_rgba: list[float]
    label_rgba: list[float]
    cap_rgba: list[float]
    cup_radius: float
    cup_height: float
    cup_flare: float  # rim radius / base radius
    cup_rgba: list[float]
    liquid_rgba: list[float]
    bottle_xy: list[float]
    cup_xy: list[float]
    table_texture: str
    table_rgb1: list[float]
    table_rgb2: list[float]
    table_repeat: float
    table_reflectance: float
    floor_rgb1: list[float]
    floor_rgb2: list[float]
    wall_rgb1: list[float]
    wall_rgb2: list[float]
    robot_rgba: list[float]
    gripper_rgba: list[float]
    robot_base: list[float]
    light_dir: list[float]
    light_diffuse: float
    light_tint: list[float]
    ambient: float
    cam_azimuth: float
    cam_elevation: float
    cam_distance: float
    cam_lookat: list[float]
    cam_fovy: float
    cam_shake: float
    distractors: list[Distractor] = field(default_factory=list)

    @property
    def bottle_total_height(self) -> float:
        """Height of the bottle from its base to the top of the cap."""
        return self.bottle_height + self.shoulder_height + self.neck_height + 0.006

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (plain floats and lists)."""
        return asdict(self)


def _colour(rng: np.random.Generator, low: float = 0.05, high: float = 0.95) -> list[float]:
    return [float(c) for c in rng.uniform(low, high, 3)]


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _sample_distractors(
    rng: np.random.Generator, bottle_xy: np.ndarray, cup_xy: np.ndarray, ranges: DistractorRanges
) -> list[Distractor]:
    """Primitives placed away from the bottle, the cup and the strip between them.

    ``rng`` is the distractors' own stream: their number changes how many draws they take.
    """
    x_low = min(bottle_xy[0], cup_xy[0]) - 0.1
    x_high = max(bottle_xy[0], cup_xy[0]) + 0.1
    clearance = ranges.clearance
    distractors = []
    for _ in range(int(rng.integers(ranges.count[0], ranges.count[1] + 1))):
        candidates = np.stack([rng.uniform(-0.5, 0.5, 30), rng.uniform(-0.25, 0.12, 30)], axis=1)
        clear = (
            (np.linalg.norm(candidates - bottle_xy, axis=1) > clearance)
            & (np.linalg.norm(candidates - cup_xy, axis=1) > clearance)
            & ~(
                (candidates[:, 0] > x_low)
                & (candidates[:, 0] < x_high)
                & (candidates[:, 1] > -0.09)
            )
        )
        if not clear.any():
            continue
        xy = candidates[int(np.argmax(clear))]
        distractors.append(
            Distractor(
                kind=str(rng.choice(DISTRACTOR_TYPES)),
                xy=[float(v) for v in xy],
                size=[float(v) for v in rng.uniform(*ranges.size, 3)],
                rgba=[*_colour(rng), 1.0],
                yaw=_uniform(rng, 0.0, 180.0),
            )
        )
    return distractors


VARIATIONS = ("full", "station")
STATION_SEED = 20_190_415


def sample_scene(
    rng: np.random.Generator,
    variation: str = "full",
    ranges: SamplingRanges | None = None,
    station: int = STATION_SEED,
) -> SceneParams:
    """Draw the randomised scene of one episode: shapes, materials, layout, lights and camera.

    ``variation="full"`` randomises everything per episode (domain randomisation).
    ``"station"`` models one robot cell filmed by a fixed camera: the room, the robot and the
    camera pose come from a fixed draw (seeded by ``station``) with small per-episode jitter,
    while bottles, cups, liquids, layout, distractors and lighting still vary per episode.
    ``ranges`` (default :class:`SamplingRanges`) bounds every per-episode draw; changing a range
    changes no other draw of the episode (see :mod:`tcc_model.sim.ranges`).
    """
    if variation not in VARIATIONS:
        raise ValueError(f"variation must be one of {VARIATIONS}, got {variation!r}")
    r = ranges or SamplingRanges()
    is_station = variation == "station"
    # The station's fixed look comes from its own generator; per-episode draws use ``rng``.
    fixed = np.random.default_rng(station) if is_station else rng
    pour_sign = int(rng.choice([-1, 1]))
    separation = rng.uniform(0.2, 0.3)
    bottle_x = rng.uniform(-0.05, 0.05) - pour_sign * separation / 2
    bottle_xy = np.array([bottle_x, rng.uniform(-0.06, 0.04)])
    cup_xy = np.array([bottle_x + pour_sign * separation, rng.uniform(-0.06, 0.04)])
    o = r.objects
    bottle = dict(
        bottle_radius=draw(rng, o.bottle_radius),
        bottle_height=draw(rng, o.bottle_height),
        shoulder_height=draw(rng, o.shoulder_height),
        neck_radius=draw(rng, o.neck_radius),
        neck_height=draw(rng, o.neck_height),
        bottle_waist=draw(rng, o.bottle_waist),
        bottle_rgba=[*_colour(rng), float(rng.choice([1.0, 0.85, 0.6]))],
        label_rgba=[*_colour(rng), 1.0],
        cap_rgba=[*_colour(rng), 1.0],
    )
    cup = dict(
        cup_radius=draw(rng, o.cup_radius),
        cup_height=draw(rng, o.cup_height),
        cup_flare=draw(rng, o.cup_flare),
        cup_rgba=[*_colour(rng), 1.0],
        liquid_rgba=list(r.liquid.colours[int(rng.random() * len(r.liquid.colours))]),
    )
    room = dict(
        table_texture=str(fixed.choice(TABLE_TEXTURES)),
        table_rgb1=_colour(fixed),
        table_rgb2=_colour(fixed),
        table_repeat=_uniform(fixed, 1.0, 8.0),
        table_reflectance=float(fixed.choice([0.0, 0.0, 0.03])),
        floor_rgb1=_colour(fixed),
        floor_rgb2=_colour(fixed),
        wall_rgb1=_colour(fixed),
        wall_rgb2=_colour(fixed),
        robot_rgba=[*_colour(fixed, 0.3, 0.95), 1.0],
        gripper_rgba=[*_colour(fixed, 0.05, 0.5), 1.0],
        robot_base=[_uniform(fixed, -0.1, 0.1), _uniform(fixed, 0.42, 0.5), 0.0],
        light_dir=[draw_mirrored(rng, r.lighting.light_offset) for _ in range(2)] + [-1.0],
        light_diffuse=draw(rng, r.lighting.light_diffuse),
        light_tint=[float(v) for v in rng.uniform(*r.lighting.light_tint, 3)],
        ambient=draw(rng, r.lighting.ambient),
    )
    distractor_rng = np.random.default_rng(rng.integers(2**63))
    distractors = _sample_distractors(distractor_rng, bottle_xy, cup_xy, r.distractors)
    middle = (bottle_xy + cup_xy) / 2
    if is_station:
        # nominal pose of the station camera, jittered a little per episode
        c = r.camera
        jitter = [float(v) for v in draw_mirrored(rng, c.jitter, 6)]
        camera = dict(
            cam_azimuth=90.0 + 25.0 + c.azimuth_deg * jitter[0],
            cam_elevation=-28.0 + c.elevation_deg * jitter[1],
            cam_distance=0.78 + c.distance * jitter[2],
            cam_lookat=[c.lookat * jitter[3], 0.02 + c.lookat * jitter[4], 0.12],
            cam_fovy=45.0 + c.fovy_deg * jitter[5],
            cam_shake=draw(rng, c.shake),
        )
    else:
        camera = dict(
            cam_azimuth=90.0 + _uniform(rng, -40, 40),
            cam_elevation=_uniform(rng, -40, -12),
            cam_distance=_uniform(rng, 0.6, 0.9),
            cam_lookat=[
                float(middle[0] + rng.uniform(-0.05, 0.05)),
                float(middle[1] + rng.uniform(0.0, 0.1)),
                _uniform(rng, 0.08, 0.16),
            ],
            cam_fovy=_uniform(rng, 35, 55),
            cam_shake=_uniform(rng, 0.0, 0.004),
        )
    return SceneParams(
        pour_sign=pour_sign,
        bottle_xy=[float(v) for v in bottle_xy],
        cup_xy=[float(v) for v in cup_xy],
        distractors=distractors,
        **bottle,
        **cup,
        **room,
        **camera,
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


def build_mjcf(
    p: SceneParams, quality: RenderQuality = RenderQuality(), framebuffer_size: int = 640
) -> str:
    """MJCF text of the scene: table, room, cup, bottle (free joint), robot and liquid stream.

    ``framebuffer_size`` is the offscreen framebuffer side: the largest image it can render.
    """
    if p.table_texture == "wood":
        table_texture = (
            f'<texture name="table" type="2d" builtin="flat" width="256" height="256" '
            f'rgb1="{_fmt(p.table_rgb1)}" rgb2="{_fmt(p.table_rgb2)}" mark="random" random="0.25" '
            f'markrgb="{_fmt(np.asarray(p.table_rgb2) * 0.6)}"/>'
        )
    else:
        table_texture = (
            f'<texture name="table" type="2d" builtin="{p.table_texture}" width="256" '
            f'height="256" rgb1="{_fmt(p.table_rgb1)}" rgb2="{_fmt(p.table_rgb2)}"/>'
        )
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
    robot, gripper = _fmt(p.robot_rgba), _fmt(p.gripper_rgba)
    base = p.robot_base
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
    {table_texture}
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
    <body name="robot_base" pos="{base[0]:.4f} {base[1]:.4f} 0">
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
    </body>
    {stream}
  </worldbody>
</mujoco>"""
