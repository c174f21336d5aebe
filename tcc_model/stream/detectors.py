"""Anomaly detectors: per-frame statistics, each divided by its calibrated threshold."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from tcc_model.stream.config import ANOMALY_SCORE_THRESHOLD, MonitorConfig, Thresholds


class AnomalyTracker:
    """Stateful anomaly rules fed with (time, progress, distance, phase) per valid frame."""

    def __init__(
        self, thresholds: Thresholds, config: MonitorConfig, phase_names: Sequence[str]
    ) -> None:
        self.thresholds, self.config, self.phase_names = thresholds, config, list(phase_names)
        self.rest = {i for i, n in enumerate(phase_names) if n in set(config.rest_phases)}
        self.reset()

    def reset(self) -> None:
        self.distances: deque[float] = deque(maxlen=self.config.off_trajectory_n)
        self.anchor_progress = float("nan")
        self.anchor_time = 0.0
        self.peak = -math.inf
        self.skip_countdown = 0
        self.skip_evidence = 0.0
        self.skip_text = ""
        self.onset_frame = -1
        self.statistics = {"distance": 0.0, "stall_seconds": 0.0, "backwards": 0.0, "skip": 0.0}

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
    ) -> tuple[float, str, str, int]:
        cfg, thr = self.config, self.thresholds
        # off_trajectory: the m-th largest of the last n distances.
        self.distances.append(distance)
        m = cfg.off_trajectory_m
        dist_stat = sorted(self.distances)[-m] if len(self.distances) >= m else 0.0
        # stalled: time since progress last moved by stall_min_advance.
        resting = phase_id in self.rest or progress >= cfg.end_progress
        if (
            resting
            or not math.isfinite(self.anchor_progress)
            or abs(progress - self.anchor_progress) > cfg.stall_min_advance
        ):
            self.anchor_progress, self.anchor_time = progress, t
        stall_s = max(0.0, t - self.anchor_time)
        # backwards: fall from the running peak.
        self.peak = max(self.peak, progress)
        back = self.peak - progress
        if jumped:  # a skip's evidence is held for skip_hold_frames frames
            self.skip_countdown = cfg.skip_hold_frames
            self.skip_evidence = skip_evidence
            names = ", ".join(self._name(p) for p in jumped)
            self.skip_text = (
                f"phase(s) {names} skipped: {self._name(previous_phase)} -> {self._name(phase_id)} "
                f"(peak probability {1.0 - skip_evidence:.2f}, limit {1.0 - thr.skip:.2f})"
            )
        skip = self.skip_evidence if self.skip_countdown > 0 else 0.0
        self.statistics = {
            "distance": dist_stat,
            "stall_seconds": stall_s,
            "backwards": back,
            "skip": skip,
        }

        ratios = {
            "off_trajectory": _ratio(dist_stat, thr.distance),
            "stalled": _ratio(stall_s, thr.stall_seconds),
            "backwards": _ratio(back, thr.backwards),
            "phase_skipped": _ratio(skip, thr.skip),
        }
        self.skip_countdown = max(0, self.skip_countdown - 1)
        kind = max(ratios, key=ratios.get)
        score = ratios[kind]
        if score <= ANOMALY_SCORE_THRESHOLD:
            self.onset_frame = -1
            return score, "", "", -1
        if self.onset_frame < 0:
            self.onset_frame = frame_index
        descriptions = {
            "off_trajectory": f"distance to the reference {dist_stat:.3g} above {thr.distance:.3g} "
            f"in {m} of the last {cfg.off_trajectory_n} frames",
            "stalled": f"progress stuck near {progress:.2f} for {stall_s:.1f} s "
            f"(limit {thr.stall_seconds:.1f} s) in phase {self._name(phase_id)}",
            "backwards": f"progress fell from {self.peak:.2f} to {progress:.2f} "
            f"(limit {thr.backwards:.2f})",
            "phase_skipped": self.skip_text,
        }
        return score, kind, descriptions[kind], frame_index - self.onset_frame

    def _name(self, phase_id: int) -> str:
        if 0 <= phase_id < len(self.phase_names):
            return self.phase_names[phase_id]
        return str(phase_id)


def _ratio(value: float, threshold: float) -> float:
    if not math.isfinite(threshold):
        return 0.0
    return value / threshold if threshold > 0 else (math.inf if value > 0 else 0.0)
