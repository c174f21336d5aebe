"""One episode: simulate until the labels check out, render it, and build its label dict.

Every normal episode passes every key event in order, with no spilled liquid; every anomalous
episode has a non-empty ``anomaly_mask``. An episode that fails these checks is simulated again
from a derived seed (``metadata.attempt``). MuJoCo (:mod:`tcc_model.sim`) is imported on use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tcc_model.data.sim_pouring.plan import DATASET_NAME

if TYPE_CHECKING:
    from tcc_model.sim import EpisodeResult

#: simulation attempts per episode before giving up (a failed check re-simulates)
MAX_ATTEMPTS = 10
STATION_SEED = 20_190_415  # = tcc_model.sim.scene.STATION_SEED (not imported: MuJoCo)


@dataclass(frozen=True)
class RenderSettings:
    """Per-episode rendering and sampling settings shared by every episode of a dataset.

    ``ranges`` is a :class:`tcc_model.sim.ranges.SamplingRanges` (None: the defaults); the
    settings travel with every job to the rendering processes.
    """

    size: int = 112
    fps: float = 12.0
    min_frames: int | None = None  # None: no clamp (the video shows the simulated speed)
    max_frames: int | None = None
    variation: str = "full"  # "full" domain randomisation or one fixed "station" camera/room
    station: int = STATION_SEED  # seed of the station's fixed room, robot and camera
    ranges: Any = None
    shift: dict[str, Any] | None = None  # {"factors": [...], "size": s}, recorded only


def _check_render_settings(settings: RenderSettings) -> None:
    if settings.size < 16 or settings.size % 2:
        raise ValueError(f"size must be an even number >= 16 (H.264), got {settings.size}")
    if not settings.fps > 0:
        raise ValueError(f"fps must be positive, got {settings.fps}")
    low, high = settings.min_frames or 1, settings.max_frames or 1_000_000
    if not 1 <= low <= high:
        raise ValueError(
            f"need 1 <= min_frames <= max_frames, got {settings.min_frames}, {settings.max_frames}"
        )
    if settings.variation not in ("full", "station"):
        raise ValueError(f"variation must be 'full' or 'station', got {settings.variation!r}")


def _episode_problem(result: EpisodeResult) -> str | None:
    """Why a simulated episode cannot be used as labelled, or ``None`` when it can."""
    from tcc_model.sim import KEY_EVENTS

    if result.anomaly is None:
        if list(result.key_events) != list(KEY_EVENTS):
            return f"missing key events: {sorted(set(KEY_EVENTS) - set(result.key_events))}"
        if result.key_events[KEY_EVENTS[0]] == 0:
            return "hand touches the bottle in the first frame"
        if result.spill.any() or result.dropped:
            return "liquid spilled in a normal episode"
        return None
    if not result.anomaly_mask.any():
        return f"{result.anomaly} anomaly left no anomalous frame"
    if result.anomaly in ("stall", "reversed") and result.spill.any():
        return f"liquid spilled in a {result.anomaly} episode"
    return None


def simulate_episode(
    seed: int, anomaly: str | None, settings: RenderSettings = RenderSettings()
) -> tuple[EpisodeResult, int]:
    """Simulate and render the episode of ``seed``; returns the result and the attempt used.

    Attempt 0 simulates ``seed`` itself; an episode that fails the label checks (see the module
    docstring) is simulated again from ``[seed, attempt]``. Only the accepted attempt is rendered.
    """
    from tcc_model.sim import ANOMALY_TYPES as SIM_ANOMALIES
    from tcc_model.sim import PouringEpisode

    if anomaly is not None and anomaly not in SIM_ANOMALIES:
        raise ValueError(f"anomaly must be None or one of {SIM_ANOMALIES}, got {anomaly!r}")
    _check_render_settings(settings)
    problem = None
    for attempt in range(MAX_ATTEMPTS):
        rng_seed = seed if attempt == 0 else [seed, attempt]
        args = (anomaly, settings.size, settings.fps, settings.min_frames, settings.max_frames)
        kwargs = {
            "variation": settings.variation,
            "ranges": settings.ranges,
            "station": settings.station,
        }
        # check the labels on a simulation without rendering, then render the accepted attempt
        problem = _episode_problem(
            PouringEpisode(np.random.default_rng(rng_seed), *args, **kwargs).run(render=False)
        )
        if problem is None:
            return PouringEpisode(np.random.default_rng(rng_seed), *args, **kwargs).run(), attempt
    raise RuntimeError(
        f"episode seed {seed} ({anomaly or 'normal'}): no valid simulation in {MAX_ATTEMPTS} "
        f"attempts (last: {problem}); try other min_frames/max_frames"
    )


def episode_labels(result: EpisodeResult, seed: int, attempt: int, fps: float) -> dict[str, Any]:
    """Label dict in the ``EpisodeLabels`` JSON shape (``video`` left empty)."""
    from tcc_model.sim import FINE_PHASES, POURING_PHASES

    anomalous = result.anomaly is not None
    return {
        "format_version": 1,
        "video": "",
        "fps": float(fps),
        "num_frames": int(result.num_frames),
        "phase_names": list(POURING_PHASES),
        "phase_ids": result.phase.astype(int).tolist(),
        "key_events": dict(result.key_events),
        "anomaly": result.anomaly,
        "anomaly_mask": result.anomaly_mask.astype(int).tolist() if anomalous else None,
        "metadata": {
            "generator": DATASET_NAME,
            "seed": int(seed),
            "attempt": int(attempt),
            "fine_phase_names": list(FINE_PHASES),
            "fine_phase_ids": result.fine_phase.astype(int).tolist(),
            "flow_mask": result.flow.astype(int).tolist(),
            "spill_mask": result.spill.astype(int).tolist(),
            "dropped": bool(result.dropped),
            "final_cup_fill": round(float(result.final_cup_fill), 6),
            "anomaly_info": result.script.anomaly_info,
            "motion": result.script.params,
            "scene": result.scene.to_dict(),
        },
    }


def render_episode(
    seed: int,
    anomaly: str | None,
    size: int = 112,
    *,
    fps: float = 12.0,
    min_frames: int | None = None,
    max_frames: int | None = None,
    variation: str = "full",
    settings: RenderSettings | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one episode: RGB uint8 frames ``[N, size, size, 3]`` and its label dict.

    ``anomaly`` is ``None`` or one of ``drop``, ``miss``, ``stall``, ``reversed``. The label dict
    has the ``EpisodeLabels`` JSON shape with an empty ``video``. ``min_frames``/``max_frames``
    clamp the episode length (simulated time is stretched or compressed to fit; recorded in
    ``metadata.motion.time_scale``). ``variation`` is ``"full"`` (everything randomised) or
    ``"station"`` (one fixed camera and room). ``settings``, when given, replaces all of these
    but ``anomaly`` and ``seed`` (and adds the sampling ranges and the station).
    """
    if settings is None:
        settings = RenderSettings(int(size), float(fps), min_frames, max_frames, variation)
    result, attempt = simulate_episode(int(seed), anomaly, settings)
    return result.frames, episode_labels(result, int(seed), attempt, settings.fps)
