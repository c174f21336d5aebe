"""Per-frame ground truth of a labelled episode, as published next to the demo camera's frames."""

from __future__ import annotations

import numpy as np

from tcc_model.data.format import EpisodeLabels, progress_from_key_events


def ground_truth_fields(labels: EpisodeLabels, episode: str) -> list[dict]:
    """One dict per frame with the fields of ``tcc_ros/msg/GroundTruth`` (header excluded).

    Progress is derived from the key events (``progress_from_key_events``); episodes without phase
    labels get ``phase_id = -1`` and a linear progress ramp.
    """
    n = int(labels.num_frames)
    if labels.phase_ids is not None:
        phase_ids = np.asarray(labels.phase_ids, dtype=np.int64)
        progress = progress_from_key_events(n, list(labels.key_events.values()))
    else:
        phase_ids = np.full(n, -1, dtype=np.int64)
        progress = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    names = list(labels.phase_names or [])
    mask = (
        np.asarray(labels.anomaly_mask, dtype=bool)
        if labels.anomaly_mask is not None
        else np.zeros(n, dtype=bool)
    )
    return [
        {
            "episode": episode,
            "frame_index": i,
            "num_frames": n,
            "phase_id": int(phase_ids[i]),
            "phase_name": names[phase_ids[i]] if 0 <= phase_ids[i] < len(names) else "",
            "progress": float(progress[i]),
            "anomaly": bool(mask[i]),
            "anomaly_kind": labels.anomaly or "",
        }
        for i in range(n)
    ]
