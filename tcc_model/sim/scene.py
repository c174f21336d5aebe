"""Randomised pouring scene: the sampled parameters of one episode (MJCF text: ``sim.mjcf``).

Everything the robot moves (arm links, gripper, liquid stream) is a mocap body posed per frame by
:mod:`tcc_model.sim.episode`; the bottle has a free joint so a dropped bottle falls with physics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

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


def _sample_layout(rng: np.random.Generator) -> tuple[int, np.ndarray, np.ndarray]:
    """Pour direction and the bottle and cup positions on the table."""
    pour_sign = int(rng.choice([-1, 1]))
    separation = rng.uniform(0.2, 0.3)
    bottle_x = rng.uniform(-0.05, 0.05) - pour_sign * separation / 2
    bottle_xy = np.array([bottle_x, rng.uniform(-0.06, 0.04)])
    cup_xy = np.array([bottle_x + pour_sign * separation, rng.uniform(-0.06, 0.04)])
    return pour_sign, bottle_xy, cup_xy


def _sample_objects(rng: np.random.Generator, r: SamplingRanges) -> dict[str, Any]:
    """Bottle, cup and liquid: shapes and colours."""
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
    return {**bottle, **cup}


def _sample_room(
    rng: np.random.Generator, fixed: np.random.Generator, r: SamplingRanges
) -> dict[str, Any]:
    """Table, floor, wall and robot looks from ``fixed``; the lights from ``rng``."""
    return dict(
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


def _sample_camera(
    rng: np.random.Generator, r: SamplingRanges, is_station: bool, middle: np.ndarray
) -> dict[str, Any]:
    """Camera pose: the station's pose jittered a little, or a free draw around ``middle``."""
    if is_station:
        c = r.camera
        jitter = [float(v) for v in draw_mirrored(rng, c.jitter, 6)]
        return dict(
            cam_azimuth=90.0 + 25.0 + c.azimuth_deg * jitter[0],
            cam_elevation=-28.0 + c.elevation_deg * jitter[1],
            cam_distance=0.78 + c.distance * jitter[2],
            cam_lookat=[c.lookat * jitter[3], 0.02 + c.lookat * jitter[4], 0.12],
            cam_fovy=45.0 + c.fovy_deg * jitter[5],
            cam_shake=draw(rng, c.shake),
        )
    return dict(
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
    changes no other draw of the episode (see :mod:`tcc_model.sim.ranges`). The draws happen in
    a fixed order (layout, objects, room, distractors, camera): reordering them changes every
    generated dataset.
    """
    if variation not in VARIATIONS:
        raise ValueError(f"variation must be one of {VARIATIONS}, got {variation!r}")
    r = ranges or SamplingRanges()
    is_station = variation == "station"
    # The station's fixed look comes from its own generator; per-episode draws use ``rng``.
    fixed = np.random.default_rng(station) if is_station else rng
    pour_sign, bottle_xy, cup_xy = _sample_layout(rng)
    objects = _sample_objects(rng, r)
    room = _sample_room(rng, fixed, r)
    distractor_rng = np.random.default_rng(rng.integers(2**63))
    distractors = _sample_distractors(distractor_rng, bottle_xy, cup_xy, r.distractors)
    camera = _sample_camera(rng, r, is_station, (bottle_xy + cup_xy) / 2)
    return SceneParams(
        pour_sign=pour_sign,
        bottle_xy=[float(v) for v in bottle_xy],
        cup_xy=[float(v) for v in cup_xy],
        distractors=distractors,
        **objects,
        **room,
        **camera,
    )


# MJCF building lives in tcc_model.sim.mjcf; these names stay importable from here.
from tcc_model.sim.mjcf import bottle_profile, build_mjcf, cup_profile  # noqa: E402, F401
