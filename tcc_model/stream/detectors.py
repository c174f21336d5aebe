"""Anomaly detectors: per-frame statistics, each divided by its calibrated threshold.

What each detector sees is in :data:`tcc_model.stream.config.DETECTORS`; the largest ratio
statistic / threshold is the frame's anomaly score and names the detector that fired.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tcc_model.stream.config import (
    ANOMALY_SCORE_THRESHOLD,
    DETECTORS,
    MonitorConfig,
    Thresholds,
)
from tcc_model.stream.profiles import ProgressProfiles


def _ratio(value: float, threshold: float) -> float:
    if not math.isfinite(threshold):
        return 0.0
    return value / threshold if threshold > 0 else (math.inf if value > 0 else 0.0)


def _log_deficit(value: float, normal: float, floor: float) -> float:
    """``log((normal + floor) / (value + floor))``: > 0 when ``value`` is below normal."""
    return math.log((normal + floor) / (value + floor))


def _mth_largest(values: deque[float], m: int) -> float:
    return sorted(values)[-m] if len(values) >= m else 0.0


class AnomalyTracker:
    """Stateful anomaly rules fed once per valid frame (see :meth:`update`)."""

    def __init__(
        self,
        thresholds: Thresholds,
        config: MonitorConfig,
        phase_names: Sequence[str],
        profiles: ProgressProfiles | None = None,
        off_reasons: Mapping[str, str] | None = None,
    ) -> None:
        self.thresholds, self.config, self.phase_names = thresholds, config, list(phase_names)
        self.profiles = profiles
        self.rest = {i for i, n in enumerate(phase_names) if n in set(config.rest_phases)}
        self._off = dict(off_reasons or {})
        self._saw_pixels: bool | None = None
        self.reset()

    def reset(self) -> None:
        cfg = self.config
        self.distances: deque[float] = deque(maxlen=cfg.off_trajectory_n)
        self.appearance: deque[float] = deque(maxlen=cfg.appearance_n)
        self.backward: deque[float] = deque(maxlen=cfg.direction_frames)
        self.anchor_progress = float("nan")
        self.anchor_time = 0.0
        self.still_evidence = 0.0
        self.still_since = -1
        self._last_frame = -1
        self._last_t = math.nan
        self.peak = -math.inf
        self.skip_countdown = 0
        self.skip_evidence = 0.0
        self.skip_text = ""
        self.onset_frame = -1
        self.statistics: dict[str, float] = dict.fromkeys(DETECTORS, 0.0)

    def reconfigure(
        self, thresholds: Thresholds, config: MonitorConfig, off_reasons: Mapping[str, str]
    ) -> None:
        """New thresholds and settings from the next frame on; the episode's state is kept."""
        self.thresholds, self.config, self._off = thresholds, config, dict(off_reasons)
        self.rest = {i for i, n in enumerate(self.phase_names) if n in set(config.rest_phases)}
        self.distances = deque(self.distances, maxlen=config.off_trajectory_n)
        self.appearance = deque(self.appearance, maxlen=config.appearance_n)
        self.backward = deque(self.backward, maxlen=config.direction_frames)

    @property
    def states(self) -> dict[str, str]:
        """Per enabled detector: ``on``, ``off: why`` or ``inactive: why`` (for diagnostics)."""
        out = {}
        for name in self.config.detectors:
            spec = DETECTORS[name]
            if name in self._off:
                out[name] = f"off: {self._off[name]}"
            elif not math.isfinite(self.thresholds[name]):
                out[name] = "off: no finite threshold (not calibrated; run tcc_model.reference)"
            elif name in ("stillness", "direction", "appearance") and self.profiles is None:
                out[name] = "inactive: the references have no normal profiles (recalibrate)"
            elif spec.needs_pixels and self.profiles is not None and not self.profiles.has_pixels:
                out[name] = "inactive: calibrated without pixels"
            elif spec.needs_pixels and self._saw_pixels is False:
                out[name] = "inactive: no pixels in this stream (pass frames or thumbnails)"
            else:
                out[name] = f"on (threshold {self.thresholds[name]:.4g} {spec.statistic})"
        return out

    def _profile_statistics(
        self, frame_index: int, progress: float, resting: bool, signals: Mapping[str, Any]
    ) -> None:
        """Stillness, direction and appearance statistics against the normal profiles."""
        prof, cfg, stats = self.profiles, self.config, self.statistics
        if prof is None:
            return
        b = prof.bin(progress)
        velocity = signals.get("velocity")
        motion, change = signals.get("motion"), signals.get("change")
        self._saw_pixels = bool(self._saw_pixels) or change is not None
        pixels = motion is not None and prof.has_pixels
        deficits: list[tuple[float, float]] = []
        if velocity is not None:
            speed = float(np.linalg.norm(velocity))
            cos = float(velocity @ prof.direction[b]) / speed if speed > 0 else 0.0
            strength = min(1.0, speed / prof.speed[b]) if prof.speed[b] > 0 else 1.0
            self.backward.append(max(0.0, -cos) * strength)
            stats["direction"] = float(np.mean(self.backward))
            weight = 1.0 - cfg.still_pixel_weight if pixels else 1.0
            deficits.append((weight, _log_deficit(speed, prof.speed[b], prof.speed_floor)))
        if pixels and motion is not None:
            weight = cfg.still_pixel_weight if velocity is not None else 1.0
            deficits.append((weight, _log_deficit(motion, prof.motion[b], prof.motion_floor)))
        if deficits:
            evidence = sum(w * d for w, d in deficits) - cfg.still_drift
            self.still_evidence = 0.0 if resting else max(0.0, self.still_evidence + evidence)
            if self.still_evidence <= 0:
                self.still_since = -1
            elif self.still_since < 0:
                self.still_since = frame_index
            stats["stillness"] = self.still_evidence
        if change is None or not prof.has_pixels:
            return
        self.appearance.append((change - prof.change_center[b]) / prof.change_scale[b])
        stats["appearance"] = _mth_largest(self.appearance, cfg.appearance_m)

    def update(
        self,
        frame_index: int,
        t: float,
        progress: float,
        distance: float,
        phase_id: int,
        jumped: list[int],
        skip_evidence: float,
        previous_phase: int,
        signals: Mapping[str, Any] | None = None,
    ) -> tuple[float, str, str, str, int]:
        """``(score, kind, detector, description, frames since onset)`` of one valid frame."""
        cfg, stats = self.config, self.statistics
        self._last_frame = frame_index
        self.distances.append(distance)
        stats["off_trajectory"] = _mth_largest(self.distances, cfg.off_trajectory_m)
        resting = phase_id in self.rest or progress >= cfg.end_progress
        if (
            resting
            or not math.isfinite(self.anchor_progress)
            or abs(progress - self.anchor_progress) > cfg.stall_min_advance
        ):
            self.anchor_progress, self.anchor_time = progress, t
        stats["progress_stall"] = max(0.0, t - self.anchor_time)
        if math.isfinite(self.peak) and math.isfinite(self._last_t):
            reach = self.peak + cfg.backwards_peak_rate * max(0.0, t - self._last_t)
            self.peak = max(self.peak, min(progress, reach))
        elif math.isfinite(progress):
            self.peak = progress
        self._last_t = t
        stats["progress_backwards"] = self.peak - progress if math.isfinite(self.peak) else 0.0
        if jumped:  # a skip's evidence is held for skip_hold_frames frames
            self.skip_countdown = cfg.skip_hold_frames
            self.skip_evidence = skip_evidence
            names = ", ".join(self._name(p) for p in jumped)
            self.skip_text = (
                f"phase(s) {names} skipped: {self._name(previous_phase)} -> {self._name(phase_id)} "
                f"(peak probability {1.0 - skip_evidence:.2f}, limit "
                f"{1.0 - self.thresholds['phase_skip']:.2f})"
            )
        stats["phase_skip"] = self.skip_evidence if self.skip_countdown > 0 else 0.0
        self.skip_countdown = max(0, self.skip_countdown - 1)
        self._profile_statistics(frame_index, progress, resting, signals or {})
        ratios = {
            name: _ratio(stats[name], self.thresholds[name])
            for name in cfg.detectors
            if name not in self._off
        }
        detector = max(ratios, key=ratios.__getitem__) if ratios else ""
        score = ratios.get(detector, 0.0)
        if score <= ANOMALY_SCORE_THRESHOLD:
            self.onset_frame = -1
            return score, "", "", "", -1
        if self.onset_frame < 0:
            self.onset_frame = frame_index
        description = self._describe(detector, progress, phase_id)
        return (
            score,
            DETECTORS[detector].kind,
            detector,
            description,
            frame_index - self.onset_frame,
        )

    def _describe(self, detector: str, progress: float, phase_id: int) -> str:
        stat, thr, cfg = self.statistics[detector], self.thresholds[detector], self.config
        where = f"at progress {progress:.2f} in phase {self._name(phase_id)}"
        texts = {
            "off_trajectory": f"distance to the reference {stat:.3g} above {thr:.3g} in "
            f"{cfg.off_trajectory_m} of the last {cfg.off_trajectory_n} frames",
            "stillness": f"little or no motion for {self._since(self.still_since)} frames where "
            f"normal runs move (evidence {stat:.1f}, limit {thr:.1f}) {where}",
            "direction": f"moving against the normal direction (backward fraction {stat:.2f}, "
            f"limit {thr:.2f}) {where}",
            "appearance": f"the scene changed since the start more than normal runs do "
            f"(z {stat:.1f}, limit {thr:.1f}) {where}",
            "phase_skip": self.skip_text,
            "progress_stall": f"progress stuck near {progress:.2f} for {stat:.1f} s "
            f"(limit {thr:.1f} s) in phase {self._name(phase_id)}",
            "progress_backwards": f"progress fell from {self.peak:.2f} to {progress:.2f} "
            f"(limit {thr:.2f})",
        }
        return texts[detector]

    def _since(self, start: int) -> str:
        return str(self._last_frame - start + 1) if start >= 0 else "?"

    def _name(self, phase_id: int) -> str:
        if 0 <= phase_id < len(self.phase_names):
            return self.phase_names[phase_id]
        return str(phase_id)
