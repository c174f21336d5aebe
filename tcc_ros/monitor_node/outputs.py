"""The node's output messages built from a monitor result (``tcc_model.stream.FrameResult``).

Per-frame messages carry what changes per frame; what stays fixed while a bundle is loaded
(phase names, reference ids and lengths, the anomaly score threshold) is in ``MonitorInfo``,
published once per bundle on the latched ``info`` topic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from std_msgs.msg import Header

from tcc_ros.msg import Alignment, Anomaly, MonitorInfo, TaskPhase, TaskProgress

#: ``FrameResult.anomaly_kind`` -> ``Anomaly.kind`` constant.
ANOMALY_CODES = {
    "": Anomaly.NONE,
    "off_trajectory": Anomaly.OFF_TRAJECTORY,
    "stalled": Anomaly.STALLED,
    "backwards": Anomaly.BACKWARDS,
    "phase_skipped": Anomaly.PHASE_SKIPPED,
    "appearance_change": Anomaly.APPEARANCE_CHANGE,
}
#: ``Anomaly.kind`` constant -> name (for consoles and logs).
ANOMALY_NAMES = {code: name or "none" for name, code in ANOMALY_CODES.items()}


@dataclass
class BundleInfo:
    """What a loaded bundle tells about itself (the content of ``MonitorInfo``)."""

    bundle_path: str = ""
    bundle_id: str = ""
    backend: str = ""
    phase_names: list[str] = field(default_factory=list)
    reference_ids: list[str] = field(default_factory=list)
    reference_lengths: list[int] = field(default_factory=list)
    anomaly_score_threshold: float = 1.0

    def reference_index(self, reference_id: str) -> int:
        try:
            return self.reference_ids.index(reference_id)
        except ValueError:
            return -1

    def message(self, header: Header) -> MonitorInfo:
        return MonitorInfo(
            header=header,
            bundle_path=self.bundle_path,
            bundle_id=self.bundle_id,
            backend=self.backend,
            phase_names=list(self.phase_names),
            reference_ids=list(self.reference_ids),
            reference_lengths=[int(n) for n in self.reference_lengths],
            anomaly_score_threshold=float(self.anomaly_score_threshold),
        )


def _finite(value: Any, default: float = 0.0) -> float:
    value = float(value)
    return value if math.isfinite(value) else default


def frame_messages(header: Header, r: Any, info: BundleInfo) -> dict[str, Any]:
    """Messages for one result, keyed by output; progress and alignment only for valid frames."""
    valid = bool(getattr(r, "valid", True))
    frame_index = int(r.frame_index)
    out: dict[str, Any] = {}
    if valid:
        out["progress"] = TaskProgress(
            header=header,
            frame_index=frame_index,
            progress=_finite(r.progress),
            progress_std=_finite(r.progress_std),
            phase_progress=_finite(r.phase_progress),
        )
        out["alignment"] = Alignment(
            header=header,
            frame_index=frame_index,
            reference_index=info.reference_index(str(r.reference_id)),
            reference_frame=max(0, int(r.reference_frame)),
            distance=_finite(r.distance, math.inf),
        )
    phase_id = int(r.phase_id) if valid else TaskPhase.UNKNOWN
    probabilities = [float(p) for p in getattr(r, "phase_probabilities", None) or ()]
    out["phase"] = TaskPhase(
        header=header,
        id=phase_id if phase_id >= 0 else TaskPhase.UNKNOWN,
        confidence=_finite(r.phase_confidence) if phase_id >= 0 else 0.0,
        probabilities=probabilities if phase_id >= 0 else [],
    )
    kind = (
        ANOMALY_CODES.get(str(r.anomaly_kind or ""), Anomaly.OTHER) if r.anomaly else Anomaly.NONE
    )
    onset = getattr(r, "frames_since_onset", -1)
    out["anomaly"] = Anomaly(
        header=header,
        kind=kind,
        score=_finite(r.anomaly_score),
        detector=str(getattr(r, "detector", "") or "") if kind != Anomaly.NONE else "",
        description=str(r.anomaly_description or "") if kind != Anomaly.NONE else "",
        frames_since_onset=int(onset) if kind != Anomaly.NONE and onset is not None else -1,
    )
    return out
