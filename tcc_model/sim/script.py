"""The scripted robot motion of one pouring episode and its anomalies.

The task is a list of segments (one fine phase each) between hand keyframes ``(x, y, z, tilt,
grip)``. Every segment gets a random duration (global speed factor times a per-segment factor),
some are followed by a natural pause, and anomalies edit the list: ``stall`` freezes mid-segment,
``reversed`` undoes a segment and redoes it, ``miss`` offsets the aim so the stream misses the cup,
``drop`` releases the bottle during transport (the fall itself is simulated in the episode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tcc_model.sim.geometry import min_jerk, rot_y
from tcc_model.sim.ranges import MotionRanges, draw
from tcc_model.sim.scene import SceneParams

#: the 11 fine phases, in task order
FINE_PHASES: tuple[str, ...] = (
    "reach",
    "grasp",
    "lift",
    "transport",
    "tilt",
    "pour",
    "untilt",
    "return",
    "place",
    "release",
    "retreat",
)
ANOMALY_TYPES: tuple[str, ...] = ("drop", "miss", "stall", "reversed")
#: initial speed of the liquid leaving the bottle mouth along the bottle axis (m/s)
STREAM_SPEED = 0.2
#: extra downward speed of the liquid at the mouth (m/s)
STREAM_DOWN_SPEED = 0.05
GRAVITY = 9.81
#: flow starts above FLOW_TILT_EMPTY_DEG - FLOW_TILT_SPAN_DEG * fill degrees of tilt
FLOW_TILT_EMPTY_DEG = 95.0
FLOW_TILT_SPAN_DEG = 45.0

_BASE_DURATION_S = {
    "reach": 1.2,
    "grasp": 0.4,
    "lift": 0.6,
    "transport": 0.9,
    "tilt": 0.8,
    "pour": 1.1,
    "untilt": 0.6,
    "return": 0.9,
    "place": 0.5,
    "release": 0.3,
    "retreat": 0.9,
}
_REVERSE_OF = {"lift": "place", "transport": "return", "tilt": "untilt", "return": "transport"}


@dataclass
class Segment:
    """One scripted stretch of motion: a fine phase through hand keyframes ``[K, 5]``."""

    phase: str
    keyframes: np.ndarray  # rows: x, y, z, tilt (rad, about world y), gripper half opening
    duration: float
    anomalous: bool = False

    @property
    def moves(self) -> bool:
        """Whether the hand travels (not only tilts or opens/closes the gripper)."""
        return bool(np.linalg.norm(self.keyframes[-1, :3] - self.keyframes[0, :3]) > 1e-6)

    @property
    def path_length(self) -> float:
        """Length of the hand path through the keyframes (m)."""
        return float(np.linalg.norm(np.diff(self.keyframes[:, :3], axis=0), axis=1).sum())

    def state_at(self, u: np.ndarray) -> np.ndarray:
        """Hand states ``[len(u), 5]`` at path parameters ``u`` in [0, 1] (piecewise linear)."""
        spans = len(self.keyframes) - 1
        if spans == 0:
            return np.repeat(self.keyframes[:1], len(u), axis=0)
        x = np.clip(u, 0.0, 1.0) * spans
        i = np.minimum(x.astype(int), spans - 1)
        a = (x - i)[:, None]
        return self.keyframes[i] * (1 - a) + self.keyframes[i + 1] * a


@dataclass
class MotionScript:
    """Per-frame hand trajectory and fine-phase labels of one episode."""

    hand_pos: np.ndarray  # [T, 3]
    tilt: np.ndarray  # [T] radians about world y
    grip: np.ndarray  # [T] gripper half opening (m)
    fine_phase: np.ndarray  # [T] index into FINE_PHASES
    anomaly_mask: np.ndarray  # [T] bool: frames of a scripted anomaly
    frame_dt: float  # simulated seconds per frame
    grasp_height: float
    anomaly: str | None
    drop_frame: int | None
    anomaly_info: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # sampled motion parameters

    @property
    def num_frames(self) -> int:
        return len(self.fine_phase)


def _state(pos: np.ndarray, tilt: float, grip: float) -> np.ndarray:
    return np.array([*pos, tilt, grip], dtype=np.float64)


def flow_threshold_deg(bottle_fill: float | np.ndarray) -> float | np.ndarray:
    """Tilt (degrees from upright) above which liquid leaves a bottle filled to ``bottle_fill``."""
    return FLOW_TILT_EMPTY_DEG - FLOW_TILT_SPAN_DEG * bottle_fill


def rim_crossing(mouth: np.ndarray, axis: np.ndarray, rim_height: float) -> np.ndarray:
    """Where streams leaving ``mouth [N, 3]`` along bottle ``axis [N, 3]`` cross ``z = rim_height``.

    Returns the crossing points ``[N, 3]`` of the ballistic arcs (the mouths themselves when they
    are already below the rim).
    """
    velocity = axis * STREAM_SPEED - [0.0, 0.0, STREAM_DOWN_SPEED]
    height = np.maximum(mouth[:, 2] - rim_height, 0.0)
    t = (velocity[:, 2] + np.sqrt(velocity[:, 2] ** 2 + 2 * GRAVITY * height)) / GRAVITY
    crossing = mouth + t[:, None] * velocity
    crossing[:, 2] = np.minimum(mouth[:, 2], rim_height)
    return crossing


def _pour_position(
    p: SceneParams,
    rng: np.random.Generator,
    grasp_height: float,
    tilt_range: tuple[float, float],
    miss: bool,
) -> np.ndarray:
    """Hand position for pouring: streams from every tilt in ``tilt_range`` (radians, from flow
    onset to the largest tilt) cross the rim around the cup centre (next to the cup if ``miss``)."""
    sign = p.pour_sign
    tilts = np.linspace(*tilt_range, 16)
    rotations = np.stack([rot_y(sign * t) for t in tilts])
    to_mouth = rotations @ np.array([0.0, 0.0, p.bottle_total_height - grasp_height])
    hand_z = p.cup_height + rng.uniform(0.03, 0.08) - to_mouth[-1, 2]  # mouth height at full tilt
    crossing = rim_crossing(to_mouth + [0.0, 0.0, hand_z], rotations[:, :, 2], p.cup_height)
    centre_x = (crossing[:, 0].min() + crossing[:, 0].max()) / 2
    hand = np.array(
        [
            p.cup_xy[0] - centre_x + rng.uniform(-0.15, 0.15) * p.cup_radius,
            p.cup_xy[1] + rng.uniform(-0.15, 0.15) * p.cup_radius,
            hand_z,
        ]
    )
    if miss:
        offset = rng.uniform(0.09, 0.15) * rng.choice([-1, 1])
        if rng.integers(2) == 0:  # along the pour direction; never into the cup's side
            hand[0] += offset + (sign * 0.02 if sign * offset < 0 else 0.0)
        else:  # in front of the cup
            hand[1] -= abs(offset)
    return hand


def _keyframes(
    p: SceneParams, rng: np.random.Generator, anomaly: str | None
) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """Hand states (position, tilt, grip) that each fine phase moves through, and the draws."""
    bx, by = p.bottle_xy
    sign = p.pour_sign
    grasp_height = p.bottle_height * rng.uniform(0.45, 0.65)
    tilt_max = np.deg2rad(rng.uniform(100, 130))
    lift = rng.uniform(0.08, 0.16)
    home = np.array(
        [bx * 0.4 + rng.uniform(-0.05, 0.05), rng.uniform(0.22, 0.3), rng.uniform(0.22, 0.32)]
    )
    grasp = np.array([bx, by, grasp_height])
    pregrasp = grasp + np.array([0.0, rng.uniform(0.08, 0.13), rng.uniform(0.0, 0.05)])
    lifted = grasp + np.array([0.0, 0.0, lift])
    pour_extra_tilt = np.deg2rad(rng.uniform(0, 12))
    tilts = (float(np.deg2rad(flow_threshold_deg(1.0))), float(tilt_max + pour_extra_tilt))
    pour = _pour_position(p, rng, grasp_height, tilts, miss=anomaly == "miss")
    place = grasp + np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.02), 0.0])
    above_place = place + np.array([0.0, 0.0, lift * 0.7])
    end = home + rng.uniform(-0.04, 0.04, 3)
    opened = p.bottle_radius + rng.uniform(0.025, 0.04)
    closed = p.bottle_radius + 0.004
    pour_jitter = rng.uniform(-0.006, 0.006, 3)
    tilted = sign * tilt_max
    keyframes = {
        "reach": [_state(home, 0, opened), _state(pregrasp, 0, opened), _state(grasp, 0, opened)],
        "grasp": [_state(grasp, 0, opened), _state(grasp, 0, closed)],
        "lift": [_state(grasp, 0, closed), _state(lifted, 0, closed)],
        "transport": [_state(lifted, 0, closed), _state(pour, 0, closed)],
        "tilt": [_state(pour, 0, closed), _state(pour, tilted, closed)],
        "pour": [
            _state(pour, tilted, closed),
            _state(pour + pour_jitter, sign * (tilt_max + pour_extra_tilt), closed),
        ],
        "untilt": [
            _state(pour + pour_jitter, sign * (tilt_max + pour_extra_tilt), closed),
            _state(pour, 0, closed),
        ],
        "return": [_state(pour, 0, closed), _state(above_place, 0, closed)],
        "place": [_state(above_place, 0, closed), _state(place, 0, closed)],
        "release": [_state(place, 0, closed), _state(place, 0, opened)],
        "retreat": [
            _state(place, 0, opened),
            _state(place + np.array([0.0, 0.1, 0.02]), 0, opened),
            _state(end, 0, opened),
        ],
    }
    drawn = {
        "grasp_height": float(grasp_height),
        "tilt_max_deg": float(np.rad2deg(tilt_max)),
        "lift_height": float(lift),
        "pour_position": [float(v) for v in pour],
    }
    return keyframes, drawn


def _task_segments(
    p: SceneParams, rng: np.random.Generator, anomaly: str | None, motion: MotionRanges
) -> tuple[list[Segment], float, dict[str, Any]]:
    """The nominal task as segments with randomised durations and natural pauses.

    Every segment takes the same draws whatever ``motion`` says (the pause length is drawn
    even when there is no pause), so other motion ranges change nothing else of the episode.
    """
    keyframes, drawn = _keyframes(p, rng, anomaly)
    speed = draw(rng, motion.speed)
    segments = []
    for phase in FINE_PHASES:
        frames = np.stack(keyframes[phase])
        duration = _BASE_DURATION_S[phase] * speed * draw(rng, motion.segment_speed)
        segments.append(Segment(phase, frames, duration))
        pause_u, pause_seconds = rng.random(), draw(rng, motion.pause_seconds)
        if phase != "pour" and pause_u < motion.pause_probability:  # natural pause
            segments.append(Segment(phase, frames[-1:], pause_seconds))
    params = {  # this key order is the one the episode labels are written in
        "grasp_height": drawn["grasp_height"],
        "tilt_max_deg": drawn["tilt_max_deg"],
        "lift_height": drawn["lift_height"],
        "speed_factor": float(speed),
        "pour_position": drawn["pour_position"],
    }
    return segments, drawn["grasp_height"], params


def _insert_anomaly(
    segments: list[Segment], rng: np.random.Generator, anomaly: str | None
) -> dict[str, Any]:
    """Edit ``segments`` in place for ``stall`` / ``reversed``; returns the anomaly description."""
    if anomaly == "stall":
        k = int(rng.integers(1, len(segments) - 1))
        seg = segments[k]
        middle = seg.state_at(np.array([0.5]))
        first = Segment(seg.phase, np.concatenate([seg.keyframes[:1], middle]), seg.duration / 2)
        frozen = Segment(seg.phase, middle, rng.uniform(2.0, 3.5), anomalous=True)
        second = Segment(seg.phase, np.concatenate([middle, seg.keyframes[-1:]]), seg.duration / 2)
        segments[k : k + 1] = [first, frozen, second]
        return {"stall_phase": seg.phase, "stall_seconds": float(frozen.duration)}
    if anomaly == "reversed":
        candidates = [i for i, s in enumerate(segments) if s.phase in _REVERSE_OF and s.moves]
        k = int(rng.choice(candidates))
        seg = segments[k]
        undo = Segment(_REVERSE_OF[seg.phase], seg.keyframes[::-1].copy(), seg.duration, True)
        redo = Segment(seg.phase, seg.keyframes.copy(), seg.duration, True)
        segments[k + 1 : k + 1] = [undo, redo]
        return {"reversed_phase": seg.phase}
    if anomaly == "drop":
        return {"drop_fraction": float(rng.uniform(0.2, 0.8))}
    return {}


def _follow_segments(
    segments: list[Segment], seg_index: np.ndarray, eased: np.ndarray, bumps: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame hand states ``[T, 5]``, fine phases and anomaly mask along ``segments``.

    ``seg_index [T]``: each frame's segment; ``eased [T]``: its eased time within the segment;
    ``bumps [S, 3]``: each segment's sideways bulge.
    """
    num_frames = len(seg_index)
    states = np.zeros((num_frames, 5))
    fine_phase = np.zeros(num_frames, dtype=np.int64)
    anomaly_mask = np.zeros(num_frames, dtype=bool)
    for k, seg in enumerate(segments):
        frames = np.flatnonzero(seg_index == k)
        states[frames] = seg.state_at(eased[frames])
        if seg.moves:  # curved path, bulging in proportion to the distance (up to 10 cm)
            bulge = bumps[k] * min(1.0, seg.path_length / 0.1)
            states[frames, :3] += np.sin(np.pi * eased[frames])[:, None] * bulge
        fine_phase[frames] = FINE_PHASES.index(seg.phase)
        anomaly_mask[frames] = seg.anomalous
    return states, fine_phase, anomaly_mask


def _drop_frame(fine_phase: np.ndarray, unit_time: np.ndarray, fraction: float) -> int:
    """First frame at ``fraction`` of the transport segment (or of transport, if none is)."""
    transport = FINE_PHASES.index("transport")
    late = (fine_phase == transport) & (unit_time >= fraction)
    return int(np.argmax(late)) if late.any() else int(np.argmax(fine_phase >= transport))


def make_script(
    p: SceneParams,
    rng: np.random.Generator,
    anomaly: str | None = None,
    fps: float = 12.0,
    min_frames: int | None = None,
    max_frames: int | None = None,
    motion: MotionRanges | None = None,
) -> MotionScript:
    """Sample the hand trajectory of one episode at ``fps``.

    The episode lasts its scripted duration: ``round(duration * fps)`` frames (simulated time per
    frame within half a frame of ``1 / fps``). ``min_frames`` / ``max_frames``, when given, clamp
    the length by stretching or compressing simulated time; ``params["time_scale"]`` (simulated
    seconds per video second) records by how much. ``motion`` bounds speed and pauses.
    """
    if anomaly is not None and anomaly not in ANOMALY_TYPES:
        raise ValueError(f"anomaly must be None or one of {ANOMALY_TYPES}, got {anomaly!r}")
    low, high = min_frames or 1, max_frames or 1_000_000
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    segments, grasp_height, params = _task_segments(p, rng, anomaly, motion or MotionRanges())
    info = _insert_anomaly(segments, rng, anomaly)

    durations = np.array([s.duration for s in segments])
    starts = np.concatenate([[0.0], np.cumsum(durations)])
    total = float(starts[-1])
    natural = max(int(round(total * fps)), 1)
    num_frames = int(np.clip(natural, low, high))
    frame_dt = total / num_frames
    t = (np.arange(num_frames) + 0.5) * frame_dt
    seg_index = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(segments) - 1)
    eased = min_jerk((t - starts[seg_index]) / durations[seg_index])

    bumps = rng.normal(0.0, 0.02, (len(segments), 3)) * [1.0, 1.0, 1.5]  # curved paths
    states, fine_phase, anomaly_mask = _follow_segments(segments, seg_index, eased, bumps)
    drop_frame = None
    if anomaly == "drop":
        unit_time = (t - starts[seg_index]) / durations[seg_index]
        drop_frame = _drop_frame(fine_phase, unit_time, info["drop_fraction"])
        anomaly_mask[drop_frame:] = True
        info["drop_frame"] = drop_frame

    states[:, :3] += rng.normal(0.0, 0.0008, (num_frames, 3))  # hand tremor
    params.update(duration_s=total, frame_dt_s=frame_dt, time_scale=frame_dt * fps)
    params["clamped"] = num_frames != natural
    return MotionScript(
        hand_pos=states[:, :3],
        tilt=states[:, 3],
        grip=states[:, 4],
        fine_phase=fine_phase,
        anomaly_mask=anomaly_mask,
        frame_dt=frame_dt,
        grasp_height=grasp_height,
        anomaly=anomaly,
        drop_frame=drop_frame,
        anomaly_info=info,
        params=params,
    )
