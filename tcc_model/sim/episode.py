"""Simulate and render one pouring episode: robot kinematics, bottle physics, liquid, labels.

Per frame: the scripted hand pose drives the gripper and a 2-link arm (analytic IK); the bottle
follows the hand while held and falls with MuJoCo physics once dropped; liquid flows when the tilt
exceeds a fill-dependent threshold, travels on a ballistic arc drawn as capsules, fills the cup or
grows a puddle on the table. Labels are derived from what was simulated (flow, bottle on table).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from tcc_model.sim.geometry import matrix_from_quat, quat_from_matrix, quats_z_to, rot_y
from tcc_model.sim.ranges import SamplingRanges
from tcc_model.sim.renderer import OffscreenRenderer, shared_renderer
from tcc_model.sim.scene import (
    LINK_LENGTH,
    SHOULDER_HEIGHT,
    STATION_SEED,
    STREAM_SEGMENTS,
    RenderQuality,
    SceneParams,
    build_mjcf,
    sample_scene,
)
from tcc_model.sim.script import (
    FINE_PHASES,
    GRAVITY,
    STREAM_DOWN_SPEED,
    STREAM_SPEED,
    MotionScript,
    flow_threshold_deg,
    make_script,
)

#: the 5 Pouring-style phases and the key events that start phases 1..4
POURING_PHASES: tuple[str, ...] = (
    "approach",
    "grasp_and_carry",
    "pour",
    "bring_back",
    "withdraw",
)
KEY_EVENTS: tuple[str, ...] = (
    "hand_touches_bottle",
    "liquid_starts",
    "pouring_complete",
    "bottle_back_on_table",
)

_GRASP, _PLACE, _RELEASE = (FINE_PHASES.index(n) for n in ("grasp", "place", "release"))
# hand frame at zero tilt: x = approach direction (world -y), y = world +x, z = up
_HAND_REST = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
_HIDDEN = np.array([0.0, 0.0, -5.0])
_STREAM_TIMES = np.linspace(0.0, 0.6, 200)  # s, samples of the ballistic arc
_GRAVITY_VEC = np.array([0.0, 0.0, -GRAVITY])


@dataclass
class EpisodeResult:
    """Rendered frames and per-frame ground truth of one episode."""

    frames: np.ndarray  # [T, H, W, 3] RGB uint8
    fine_phase: np.ndarray  # [T] index into FINE_PHASES
    phase: np.ndarray  # [T] index into POURING_PHASES
    key_events: dict[str, int]  # the events that happened, in KEY_EVENTS order
    flow: np.ndarray  # [T] bool: liquid leaves the bottle
    spill: np.ndarray  # [T] bool: the stream lands outside the cup
    anomaly: str | None
    anomaly_mask: np.ndarray  # [T] bool
    dropped: bool
    final_cup_fill: float
    scene: SceneParams
    script: MotionScript

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def pouring_phases(num_frames: int, key_events: dict[str, int]) -> np.ndarray:
    """Per-frame Pouring phase ids: the number of key events at or before each frame."""
    frames = np.sort(np.fromiter(key_events.values(), dtype=np.int64, count=len(key_events)))
    return np.searchsorted(frames, np.arange(num_frames), side="right")


@dataclass
class _Liquid:
    """Liquid state carried from frame to frame, and the constants it is computed with."""

    dt: float  # s per frame
    cup_xy: np.ndarray
    rim_inner_radius: float
    cup_per_bottle: float  # cup fill gained per bottle fill poured
    bottle_fill: float = 1.0
    cup_fill: float = 0.0
    puddle_radius: float = 0.0
    puddle_xy: np.ndarray | None = None
    flow_start: int | None = None
    flow_end: int | None = None


class PouringEpisode:
    """One randomised episode: scene, script and the per-frame simulation that renders it."""

    def __init__(
        self,
        rng: np.random.Generator,
        anomaly: str | None = None,
        size: int = 112,
        fps: float = 12.0,
        min_frames: int | None = None,
        max_frames: int | None = None,
        quality: RenderQuality = RenderQuality(),
        variation: str = "full",
        ranges: SamplingRanges | None = None,
        station: int = STATION_SEED,
    ) -> None:
        if size < 16:
            raise ValueError(f"size must be >= 16 pixels, got {size}")
        ranges = ranges or SamplingRanges()
        self.rng = rng
        self.size = size
        self.quality = quality
        self.scene = sample_scene(rng, variation, ranges, station)
        self.script = make_script(
            self.scene, rng, anomaly, fps, min_frames, max_frames, motion=ranges.motion
        )
        # camera shake has its own stream: rendering or not leaves the physics unchanged
        self.camera_rng = np.random.default_rng(rng.integers(2**63))
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.scene, quality, size))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_ids = {
            name: int(m.body(name).mocapid[0])
            for name in ("upper_arm", "elbow", "forearm", "hand", "finger_left", "finger_right")
        }
        self._stream_mocap = np.array(
            [m.body(f"stream{i}").mocapid[0] for i in range(STREAM_SEGMENTS)]
        )
        self._stream_geoms = np.array([m.geom(f"stream{i}").id for i in range(STREAM_SEGMENTS)])
        self._cup_liquid = m.geom("cup_liquid").id
        self._puddle = m.geom("puddle").id
        self._qpos = int(m.joint("bottle").qposadr[0])
        self._qvel = int(m.joint("bottle").dofadr[0])
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.options = mujoco.MjvOption()

    # ------------------------------------------------------------------ robot
    def _set_mocap(self, name: str, pos: np.ndarray, quat: np.ndarray) -> None:
        i = self._arm_ids[name]
        self.data.mocap_pos[i] = pos
        self.data.mocap_quat[i] = quat

    def _set_link(self, name: str, start: np.ndarray, end: np.ndarray) -> None:
        self._set_mocap(name, (start + end) / 2, quats_z_to(end - start)[0])

    def _pose_robot(self, hand: np.ndarray, tilt: float, grip: float) -> None:
        """Gripper at ``hand`` tilted by ``tilt``, fingers ``grip`` apart, arm by 2-link IK."""
        rotation = rot_y(tilt) @ _HAND_REST
        quat = quat_from_matrix(rotation)
        self._set_mocap("hand", hand, quat)
        self._set_mocap("finger_left", hand + rotation @ [-0.02, grip + 0.006, 0.0], quat)
        self._set_mocap("finger_right", hand + rotation @ [-0.02, -grip - 0.006, 0.0], quat)
        shoulder = np.asarray(self.scene.robot_base) + [0.0, 0.0, SHOULDER_HEIGHT]
        to_wrist = hand + rotation @ [-0.14, 0.0, 0.0] - shoulder
        reach = np.clip(np.linalg.norm(to_wrist), 1e-3, 2 * LINK_LENGTH - 1e-3)
        direction = to_wrist / max(np.linalg.norm(to_wrist), 1e-9)
        up = np.array([0.0, 0.0, 1.0]) - direction[2] * direction
        up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([1.0, 0.0, 0.0])
        elbow_height = np.sqrt(max(LINK_LENGTH**2 - (reach / 2) ** 2, 0.0))
        elbow = shoulder + direction * reach / 2 + up * elbow_height
        wrist = shoulder + direction * reach
        self._set_link("upper_arm", shoulder, elbow)
        self._set_mocap("elbow", elbow, np.array([1.0, 0.0, 0.0, 0.0]))
        self._set_link("forearm", elbow, wrist)

    # ------------------------------------------------------------------ liquid
    def _draw_stream(
        self, mouth: np.ndarray, velocity: np.ndarray, t_tail: float, t_head: float, width: float
    ) -> None:
        times = np.linspace(t_tail, t_head, STREAM_SEGMENTS + 1)[:, None]
        points = mouth + times * velocity + 0.5 * times**2 * _GRAVITY_VEC
        start, end = points[:-1], points[1:]
        self.data.mocap_pos[self._stream_mocap] = (start + end) / 2
        self.data.mocap_quat[self._stream_mocap] = quats_z_to(end - start)
        half_length = np.maximum(np.linalg.norm(end - start, axis=1) / 2, 1e-4)
        self.model.geom_size[self._stream_geoms, 0] = width
        self.model.geom_size[self._stream_geoms, 1] = half_length

    def _hide_stream(self) -> None:
        self.data.mocap_pos[self._stream_mocap] = _HIDDEN

    def _set_cup_fill(self, fill: float) -> None:
        p, m, g = self.scene, self.model, self._cup_liquid
        height = max(fill * p.cup_height * 0.9, 0.0005)
        m.geom_rgba[g, 3] = p.liquid_rgba[3] if fill > 0.01 else 0.0
        m.geom_size[g, 1] = height / 2
        flare = p.cup_radius * (p.cup_flare - 1) * min((0.01 + height) / p.cup_height, 1.0)
        m.geom_size[g, 0] = p.cup_radius - 0.005 + flare
        m.geom_pos[g, 2] = 0.0105 + height / 2

    def _set_puddle(self, xy: np.ndarray, radius: float) -> None:
        self.model.geom_size[self._puddle, :2] = [radius, 0.0008]
        self.model.geom_pos[self._puddle] = [xy[0], xy[1], 0.0008]

    # ------------------------------------------------------------------ main loop
    def run(self, renderer: OffscreenRenderer | None = None, render: bool = True) -> EpisodeResult:
        """Simulate every frame and render it (default: the process-wide renderer of ``size``).

        With ``render=False`` only the simulation and labels are computed (frames ``[T, 0, 0, 3]``);
        they are identical to those of a rendered run of the same episode.
        """
        if render:
            renderer = shared_renderer(self.size) if renderer is None else renderer
            if renderer.size != self.size:
                raise ValueError(f"renderer size {renderer.size} differs from size {self.size}")
            renderer.bind(self.model)
        return self._run(renderer if render else None)

    def _run(self, renderer: OffscreenRenderer | None) -> EpisodeResult:
        m, d, p, s = self.model, self.data, self.scene, self.script
        T, dt = s.num_frames, s.frame_dt
        side = self.size if renderer is not None else 0
        frames = np.zeros((T, side, side, 3), np.uint8)
        flow = np.zeros(T, bool)
        spill = np.zeros(T, bool)
        on_table = np.zeros(T, bool)
        liquid = _Liquid(
            dt=dt,
            cup_xy=np.asarray(p.cup_xy),
            rim_inner_radius=(p.cup_radius * p.cup_flare - 0.004) * 0.95,
            cup_per_bottle=(
                (p.bottle_radius**2 * p.bottle_height) / (p.cup_radius**2 * p.cup_height) * 0.55
            ),
        )
        dropped = False
        substeps = max(1, round(dt / m.opt.timestep))
        self.options.flags[mujoco.mjtVisFlag.mjVIS_STATIC] = 1
        for f in range(T):
            hand, tilt, grip = s.hand_pos[f], float(s.tilt[f]), float(s.grip[f])
            self._pose_robot(hand, tilt, grip)
            dropped = self._move_bottle(f, hand, tilt, grip, dropped, substeps)
            bottle_pos = d.qpos[self._qpos : self._qpos + 3].copy()
            axis = matrix_from_quat(d.qpos[self._qpos + 3 : self._qpos + 7])[:, 2]
            on_table[f] = not dropped and abs(bottle_pos[2]) < 4e-3 and axis[2] > 0.99
            mouth = bottle_pos + axis * p.bottle_total_height
            tilt_deg = float(np.degrees(np.arccos(np.clip(axis[2], -1.0, 1.0))))
            flow[f], rate = self._pour(f, liquid, tilt_deg, dropped)
            spill[f] = self._stream(f, liquid, mouth, axis, rate, dropped)
            if dropped and tilt_deg > 75 and bottle_pos[2] < 0.06 and liquid.bottle_fill > 0.02:
                # the fallen bottle empties onto the table
                liquid.puddle_xy = mouth[:2] if liquid.puddle_xy is None else liquid.puddle_xy
                liquid.puddle_radius = min(liquid.puddle_radius + dt * 0.05, 0.1)
                liquid.bottle_fill -= dt * 0.3
            self._set_cup_fill(liquid.cup_fill)
            if liquid.puddle_xy is not None and liquid.puddle_radius > 0:
                self._set_puddle(liquid.puddle_xy, liquid.puddle_radius)
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            mujoco.mj_camlight(m, d)  # light directions: not part of mj_kinematics
            if renderer is not None:
                frames[f] = self._render(renderer)
        return self._result(frames, flow, spill, on_table, dropped, liquid.cup_fill)

    def _move_bottle(
        self, f: int, hand: np.ndarray, tilt: float, grip: float, dropped: bool, substeps: int
    ) -> bool:
        """Bottle at frame ``f``: held (kinematic), standing, or falling (physics); dropped yet?"""
        m, d, p, s = self.model, self.data, self.scene, self.script
        if s.drop_frame is not None and f >= s.drop_frame:
            if not dropped:
                dropped = True
                d.qvel[self._qvel : self._qvel + 3] = (
                    hand - s.hand_pos[max(f - 1, 0)]
                ) / s.frame_dt
                d.qvel[self._qvel + 3 : self._qvel + 6] = self.rng.normal(0.0, 2.0, 3)
            for _ in range(substeps):
                mujoco.mj_step(m, d)
            return dropped
        phase = s.fine_phase[f]
        gripping = grip < p.bottle_radius + 0.01
        held = (_GRASP < phase < _RELEASE) or (phase in (_GRASP, _RELEASE) and gripping)
        if held:
            bottle_rotation = rot_y(tilt)
            base = hand - bottle_rotation @ [0.0, 0.0, s.grasp_height]
            base[2] = 0.0 if base[2] < 0.004 else base[2]
            d.qpos[self._qpos : self._qpos + 7] = [*base, *quat_from_matrix(bottle_rotation)]
        d.qvel[:] = 0.0
        return dropped

    def _pour(self, f: int, liquid: _Liquid, tilt_deg: float, dropped: bool) -> tuple[bool, float]:
        """Liquid leaves the bottle above a fill-dependent tilt: ``(flowing, fraction poured)``."""
        threshold = flow_threshold_deg(liquid.bottle_fill)
        flowing = tilt_deg > threshold and liquid.bottle_fill > 0.02 and not dropped
        rate = 0.0
        if flowing:
            rate = float(np.clip((tilt_deg - threshold) / 40.0, 0.15, 1.0)) * liquid.dt * 0.5
            liquid.bottle_fill -= rate
            liquid.flow_start = f if liquid.flow_start is None else liquid.flow_start
            liquid.flow_end = None
        elif liquid.flow_start is not None and liquid.flow_end is None:
            liquid.flow_end = f
        return bool(flowing), rate

    def _stream(
        self,
        f: int,
        liquid: _Liquid,
        mouth: np.ndarray,
        axis: np.ndarray,
        rate: float,
        dropped: bool,
    ) -> bool:
        """Draw the ballistic stream, fill the cup or grow the puddle (``rate > 0``: flowing).

        Returns True when the flowing stream lands outside the cup (a spill)."""
        p, dt, flowing = self.scene, liquid.dt, rate > 0.0
        velocity = axis * STREAM_SPEED + [0.0, 0.0, -STREAM_DOWN_SPEED]
        times = _STREAM_TIMES[:, None]
        arc = mouth + times * velocity + 0.5 * times**2 * _GRAVITY_VEC
        # the stream enters the cup if it crosses the rim plane inside the rim
        below_rim = np.flatnonzero(arc[:, 2] <= p.cup_height)
        enters = len(below_rim) > 0 and (
            np.linalg.norm(arc[below_rim[0], :2] - liquid.cup_xy) < liquid.rim_inner_radius
        )
        surface = 0.0105 + liquid.cup_fill * p.cup_height * 0.9 if enters else 0.0
        hits = np.flatnonzero(arc[:, 2] <= surface)
        k_hit = int(hits[0]) if len(hits) else len(_STREAM_TIMES) - 1
        t_land = float(_STREAM_TIMES[k_hit])
        flow_start, flow_end = liquid.flow_start, liquid.flow_end
        if flowing and flow_start is not None:  # the head of the stream advances from the mouth
            t_head, t_tail = min(t_land, (f - flow_start + 1) * dt * 1.5), 0.0
        elif flow_end is not None and not dropped and (f - flow_end) * dt * 1.5 < t_land + 0.05:
            t_head, t_tail = t_land, min(t_land, (f - flow_end + 1) * dt * 1.5)  # tail falls
        else:
            t_head = t_tail = 0.0
        if t_head <= t_tail:
            self._hide_stream()
            return False
        self._draw_stream(mouth, velocity, t_tail, t_head, 0.004 + (0.003 if flowing else 0.0015))
        if not flowing:
            return False
        if enters:
            liquid.cup_fill = min(liquid.cup_fill + rate * liquid.cup_per_bottle, 0.95)
            return False
        liquid.puddle_xy = arc[k_hit, :2] if liquid.puddle_xy is None else liquid.puddle_xy
        liquid.puddle_radius = min(liquid.puddle_radius + rate * 0.12, 0.12)
        return True

    def _render(self, renderer: OffscreenRenderer) -> np.ndarray:
        """Render the current state from the episode camera, with a little camera shake."""
        p, cam, rng = self.scene, self.camera, self.camera_rng
        cam.lookat[:] = np.asarray(p.cam_lookat) + rng.normal(0.0, p.cam_shake, 3)
        cam.distance = p.cam_distance
        cam.azimuth = p.cam_azimuth + rng.normal(0.0, p.cam_shake * 20)
        cam.elevation = p.cam_elevation
        return renderer.render(self.data, cam, self.options, self.quality.shadows)

    def _result(
        self,
        frames: np.ndarray,
        flow: np.ndarray,
        spill: np.ndarray,
        on_table: np.ndarray,
        dropped: bool,
        cup_fill: float,
    ) -> EpisodeResult:
        """Key events from the simulated state, then the Pouring phases they delimit."""
        s, T = self.script, len(frames)
        fine = s.fine_phase
        events: dict[str, int] = {KEY_EVENTS[0]: int(np.argmax(fine >= _GRASP))}
        if flow.any():
            events[KEY_EVENTS[1]] = int(np.argmax(flow))
            pour_end = int(T - np.argmax(flow[::-1]))
            if pour_end < T:
                events[KEY_EVENTS[2]] = pour_end
                back = np.flatnonzero(on_table & (np.arange(T) > pour_end) & (fine >= _PLACE))
                if len(back):
                    events[KEY_EVENTS[3]] = int(back[0])
        mask = s.anomaly_mask | spill if s.anomaly is not None else np.zeros(T, bool)
        return EpisodeResult(
            frames=frames,
            fine_phase=fine.copy(),
            phase=pouring_phases(T, events),
            key_events=events,
            flow=flow,
            spill=spill,
            anomaly=s.anomaly,
            anomaly_mask=mask,
            dropped=dropped,
            final_cup_fill=float(cup_fill),
            scene=self.scene,
            script=s,
        )
