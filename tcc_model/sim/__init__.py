"""MuJoCo robot-pouring simulator: randomised scenes, scripted motion, physics and rendering.

Rendering is offscreen; ``MUJOCO_GL`` defaults to ``egl`` (set it before the first ``import mujoco``
of the process to choose ``osmesa`` instead). Submodules:

* :mod:`tcc_model.sim.ranges`: the per-episode sampling ranges (typed configuration) and shifts,
* :mod:`tcc_model.sim.scene`: sampled scene parameters and the MJCF built from them,
* :mod:`tcc_model.sim.script`: the scripted motion, fine phases and anomalies,
* :mod:`tcc_model.sim.episode`: the per-frame simulation, rendering and labels.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from tcc_model.sim.episode import (  # noqa: E402
    KEY_EVENTS,
    POURING_PHASES,
    EpisodeResult,
    PouringEpisode,
    pouring_phases,
)
from tcc_model.sim.ranges import SHIFT_FACTORS, SamplingRanges, shifted, widened  # noqa: E402
from tcc_model.sim.scene import (  # noqa: E402
    STATION_SEED,
    RenderQuality,
    SceneParams,
    build_mjcf,
    sample_scene,
)
from tcc_model.sim.script import ANOMALY_TYPES, FINE_PHASES, MotionScript, make_script  # noqa: E402

__all__ = [
    "ANOMALY_TYPES",
    "FINE_PHASES",
    "KEY_EVENTS",
    "POURING_PHASES",
    "EpisodeResult",
    "MotionScript",
    "PouringEpisode",
    "RenderQuality",
    "SHIFT_FACTORS",
    "STATION_SEED",
    "SamplingRanges",
    "SceneParams",
    "build_mjcf",
    "make_script",
    "pouring_phases",
    "sample_scene",
    "shifted",
    "widened",
]
