"""Monitor settings (:class:`MonitorConfig`; one source: :func:`monitor_config`) and results."""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tcc_model.errors import ConfigError, safe_text
from tcc_model.stream.phase import PHASE_SOURCES


@dataclass(frozen=True)
class DetectorSpec:
    """One anomaly detector: what it reports, which setting holds its threshold, what it sees."""

    name: str
    kind: str  # FrameResult.anomaly_kind when it fires
    threshold: str  # MonitorConfig field (and calibration key) of its threshold
    statistic: str  # unit of the statistic compared with the threshold
    needs_pixels: bool
    sees: str
    cost: str  # extra work per frame


DETECTORS: dict[str, DetectorSpec] = {
    d.name: d
    for d in (
        DetectorSpec(
            "off_trajectory",
            "off_trajectory",
            "distance_threshold",
            "embedding distance",
            False,
            "distance of the embedding to the aligned reference band: the m-th largest of the "
            "last n frames",
            "reuses the band distance; a sort of n values",
        ),
        DetectorSpec(
            "stillness",
            "stalled",
            "still_threshold",
            "stillness evidence",
            False,
            "motion far below the normal motion at that progress, accumulated (CUSUM): per frame "
            "the log ratio of normal to observed motion, a still_pixel_weight mix of image motion "
            "(RMS change of a 16x16 thumbnail over motion_lag frames) and feature motion (the "
            "embedding's change over direction_lag frames; alone when the stream has no pixels), "
            "minus still_drift, summed while positive, reset in rest phases. A frozen stretch "
            "whose evidence is e per frame fires after threshold / (e - still_drift) frames",
            "the 16x16 thumbnail (an area resize of the already resized frame), one 768-value "
            "difference and two logarithms",
        ),
        DetectorSpec(
            "direction",
            "backwards",
            "direction_threshold",
            "backward fraction",
            False,
            "direction of the embedding's motion over direction_lag frames against the normal "
            "direction at that progress: mean over direction_frames of max(0, -cos) x "
            "min(1, speed / normal speed)",
            "one D-value difference and dot product",
        ),
        DetectorSpec(
            "appearance",
            "appearance_change",
            "appearance_threshold",
            "robust z-score",
            True,
            "thumbnail change since the episode's first frame against the normal change at that "
            "progress (median, 1.4826 MAD): the appearance_m-th largest z of the last "
            "appearance_n frames",
            "one 768-value difference and a sort of appearance_n values",
        ),
        DetectorSpec(
            "phase_skip",
            "phase_skipped",
            "skip_threshold",
            "1 - peak probability",
            False,
            "the committed phase jumped over a phase whose probability stayed low",
            "none beyond the phase tracker (K values)",
        ),
        DetectorSpec(
            "progress_stall",
            "stalled",
            "stall_seconds",
            "seconds",
            False,
            "aligned progress advancing less than stall_min_advance (the filter's prior keeps it "
            "moving: weak for real stalls)",
            "a few scalar operations",
        ),
        DetectorSpec(
            "progress_backwards",
            "backwards",
            "backwards_threshold",
            "progress",
            False,
            "fall of the aligned progress from its running peak (the peak rises at most "
            "backwards_peak_rate per second)",
            "one scalar comparison",
        ),
    )
}
DEFAULT_DETECTORS = ("off_trajectory", "stillness", "appearance", "progress_backwards")
"""Chosen on the dev set (README, streaming section): direction and phase_skip raised false
alarms on normal dev episodes without catching more; switch them on with ``detectors``."""
CALIBRATED_THRESHOLDS = tuple(d.threshold for d in DETECTORS.values())
"""The calibration keys read by the monitors (one threshold per detector)."""
CALIBRATED_SETTINGS = (
    "temperature",
    "phase_source",
    "rest_phases",
    "detectors",
    *CALIBRATED_THRESHOLDS,
)
"""MonitorConfig fields :func:`monitor_config` takes from the bundle's calibration."""
ANOMALY_KINDS = tuple(dict.fromkeys(d.kind for d in DETECTORS.values()))
RUNTIME_SETTINGS = (
    *CALIBRATED_THRESHOLDS,
    "detectors",
    "rest_phases",
    "temperature",
    "phase_margin",
    "evidence_decay",
    "window_back",
    "end_progress",
    "stall_min_advance",
    "backwards_peak_rate",
    "still_drift",
    "still_pixel_weight",
    "skip_hold_frames",
    "off_trajectory_m",
    "off_trajectory_n",
    "appearance_m",
    "appearance_n",
    "direction_frames",
)
"""MonitorConfig fields a running monitor can change (``MonitorBase.update_settings``); the
others (window, transition, start, fps, phase_source, lags) size its state: build a new monitor."""

# Anomaly scores are each detector's statistic divided by its calibrated threshold (the largest
# ratio wins), so one fixed threshold applies to every kind.
ANOMALY_SCORE_THRESHOLD = 1.0


@dataclass(frozen=True)
class MonitorConfig:
    """Settings of the streaming monitor. ``None`` thresholds come from the calibration."""

    window: int = 64
    window_back: int = 16
    transition: tuple[float, ...] = (0.005, 0.02, 0.30, 0.45, 0.15, 0.05, 0.025)
    transition_min_offset: int = -2
    start: str = "beginning"
    start_frames: int = 4
    evidence_decay: float = 0.95
    temperature: float | None = None
    phase_margin: float = 0.1
    phase_source: str = "auto"
    distance_threshold: float | None = None
    off_trajectory_m: int = 3
    off_trajectory_n: int = 5
    stall_seconds: float | None = None
    stall_min_advance: float = 0.01
    rest_phases: tuple[str, ...] = ()
    end_progress: float = 0.97
    backwards_threshold: float | None = None
    # The running peak of ``progress_backwards`` rises at most this much aligned progress per
    # second (a run lasts ~10 s: 0.1/s). The estimate sometimes flips for a few frames to a
    # look-alike moment far ahead (tilting up and tilting down look alike) and flips back;
    # followed at full speed, such a flip reads as a large fall. 0.3/s follows any real run.
    backwards_peak_rate: float = 0.3
    skip_threshold: float | None = None
    skip_hold_frames: int = 5
    fps: float | None = None
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    still_threshold: float | None = None
    still_drift: float = 0.7
    still_pixel_weight: float = 0.3
    motion_lag: int = 2
    direction_threshold: float | None = None
    direction_lag: int = 3
    direction_frames: int = 4
    appearance_threshold: float | None = None
    appearance_m: int = 3
    appearance_n: int = 5

    def __post_init__(self) -> None:
        if self.window < 4 or not 0 <= self.window_back < self.window:
            raise ConfigError(
                f"MonitorConfig: need window >= 4 and 0 <= window_back < window, got "
                f"window={self.window}, window_back={self.window_back}"
            )
        kernel = np.asarray(self.transition, dtype=np.float64)
        if kernel.ndim != 1 or kernel.size == 0 or (kernel < 0).any() or kernel.sum() <= 0:
            raise ConfigError("MonitorConfig.transition must be non-negative probabilities")
        if not self.transition_min_offset <= 0 < self.transition_min_offset + kernel.size:
            raise ConfigError("MonitorConfig.transition must include the 'stay' offset 0")
        if self.start not in ("beginning", "anywhere"):
            raise ConfigError(
                f"MonitorConfig.start must be 'beginning' or 'anywhere', got {self.start!r}"
            )
        if not 1 <= self.off_trajectory_m <= self.off_trajectory_n:
            raise ConfigError("MonitorConfig: need 1 <= off_trajectory_m <= off_trajectory_n")
        if not self.backwards_peak_rate > 0:
            raise ConfigError(
                f"MonitorConfig.backwards_peak_rate must be > 0 (progress per second), got "
                f"{self.backwards_peak_rate}"
            )
        if not 0 < self.evidence_decay <= 1:
            raise ConfigError("MonitorConfig.evidence_decay must be in (0, 1]")
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ConfigError(
                f"MonitorConfig.detectors: unknown {unknown}; choose from {list(DETECTORS)}"
            )
        if not 1 <= self.appearance_m <= self.appearance_n:
            raise ConfigError("MonitorConfig: need 1 <= appearance_m <= appearance_n")
        if self.still_drift < 0 or not 0 <= self.still_pixel_weight <= 1:
            raise ConfigError(
                "MonitorConfig: need still_drift >= 0 and 0 <= still_pixel_weight <= 1"
            )
        if min(self.motion_lag, self.direction_lag, self.direction_frames) < 1:
            raise ConfigError("MonitorConfig: motion_lag, direction_lag, direction_frames >= 1")
        if self.phase_source not in PHASE_SOURCES:
            raise ConfigError(
                f"MonitorConfig.phase_source must be one of {PHASE_SOURCES}, "
                f"got {self.phase_source!r}"
            )


@dataclass
class FrameResult:
    """What the monitor says about one frame (``nan`` / ``-1`` fields when ``valid`` is False)."""

    frame_index: int
    valid: bool
    progress: float = float("nan")
    progress_std: float = float("nan")
    reference_id: str = ""
    reference_frame: int = -1
    reference_length: int = 0
    phase_id: int = -1
    phase_name: str = ""
    phase_confidence: float = float("nan")
    phase_probabilities: tuple[float, ...] = ()  # [K] per phase, before hysteresis; () if invalid
    phase_progress: float = float("nan")
    distance: float = float("nan")
    anomaly_score: float = float("nan")
    anomaly: bool = False
    anomaly_kind: str = ""
    detector: str = ""  # the detector that fired (a key of DETECTORS), "" when none
    anomaly_description: str = ""
    frames_since_onset: int = -1
    latency_s: float = 0.0
    stamp: float = float("nan")
    invalid_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """Resolved threshold per detector name (``inf``: the detector cannot fire)."""

    values: dict[str, float]

    def __getitem__(self, name: str) -> float:
        return self.values.get(name, math.inf)


class EmbeddingEngine(Protocol):
    """The part of an inference engine the monitor uses."""

    bundle_id: str
    preprocess: Any

    def encode_frames(self, frames: np.ndarray) -> Any: ...

    def embed(self, context_features: np.ndarray) -> Any: ...


# --------------------------------------------------------------------------------------------
# One source of monitor settings: bundle calibration + overrides, type-checked
# --------------------------------------------------------------------------------------------
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce_scalar(value: object, kind: type) -> object:
    """``value`` as ``kind`` (bool, int, float, str) or raise TypeError; strings are parsed."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise TypeError
    if isinstance(value, bool):
        raise TypeError
    if kind is int:
        if isinstance(value, int | np.integer):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise TypeError
    if kind is float:
        if isinstance(value, int | float | np.integer | np.floating):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise TypeError
    if kind is str and isinstance(value, str):
        return value
    raise TypeError


def _coerce(value: object, hint: Any) -> object:
    """``value`` converted to the field type ``hint`` (``X | None``, ``tuple[X, ...]``, scalars)."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, list | tuple | np.ndarray):
            raise TypeError
        return tuple(_coerce_scalar(v, args[0]) for v in value)
    return _coerce_scalar(value, hint)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def config_with(base: MonitorConfig, values: Mapping[str, object], source: str) -> MonitorConfig:
    """``base`` with ``values`` (field name -> value) checked against the field types.

    Raises :class:`ConfigError` naming ``source``, the key, the value and the expected type.
    """
    hints = typing.get_type_hints(MonitorConfig)
    changes: dict[str, object] = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"{source}: unknown monitor setting {safe_text(key)!r}; known: "
                f"{', '.join(sorted(hints))}"
            )
        try:
            changes[key] = _coerce(value, hints[key])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{source}: monitor setting {key}={safe_text(repr(value))}: expected "
                f"{_type_name(hints[key])}"
            ) from None
    try:
        return replace(base, **changes)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def calibrated_settings(calibration: Mapping[str, Any]) -> dict[str, object]:
    """The :data:`CALIBRATED_SETTINGS` a calibration holds, as MonitorConfig values."""
    return {k: calibration[k] for k in CALIBRATED_SETTINGS if k in calibration}


def monitor_config(
    bundle_dir: str | Path | None, overrides: Mapping[str, object] | None = None
) -> MonitorConfig:
    """The monitor settings: the bundle's calibration (``references.json``), then ``overrides``.

    The one place the live node, the bag evaluation and the benchmark get their
    :class:`MonitorConfig` from. ``overrides`` map field names to values (strings from a command
    line or ROS parameters are converted to the field type); an unknown key or a value of the
    wrong type raises :class:`ConfigError` naming key, value and expected type.
    ``bundle_dir=None`` gives the defaults plus the overrides.
    """
    config = MonitorConfig()
    if bundle_dir is not None:
        from tcc_model.stream.references import REFERENCES_JSON, reference_metadata

        calibration = reference_metadata(bundle_dir).get("calibration", {})
        source = f"{Path(bundle_dir) / REFERENCES_JSON} calibration"
        config = config_with(config, calibrated_settings(calibration), source)
    return config_with(config, dict(overrides or {}), "monitor override")
