"""Scores of a causal monitor against per-frame ground truth (offline replay, bags, live demo)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class EpisodeScore:
    """How the monitor did on one episode."""

    name: str
    num_frames: int
    anomalous: bool  # ground truth: the episode contains an anomaly
    progress_mae: float
    phase_accuracy: float  # over frames with a ground-truth phase (nan if none)
    flagged: bool  # the monitor raised an alarm at some frame
    first_alarm: int  # frame index of the first alarm, -1 if none
    onset: int  # first ground-truth anomalous frame, -1 if none
    detection_delay: int  # first alarm raised at/after onset - onset (caught), -1 otherwise
    max_score: float  # highest anomaly score over the episode (for AUROC)
    false_alarm: bool = False  # an alarm on a normal episode, or raised before the onset

    def to_dict(self) -> dict:
        return asdict(self)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``values`` where ``mask`` holds; NaN when it holds nowhere."""
    return float(np.mean(values[mask])) if mask.any() else float("nan")


def score_episode(
    name: str,
    *,
    pred_progress: Sequence[float],
    pred_phase: Sequence[int],
    pred_alarm: Sequence[bool],
    pred_score: Sequence[float],
    gt_progress: Sequence[float],
    gt_phase: Sequence[int],
    gt_anomaly_mask: Sequence[bool] | None,
    anomalous: bool,
) -> EpisodeScore:
    """Score one episode; all sequences are per frame and of equal length.

    An anomaly is caught by an alarm *raised* (the first frame of a run of alarm frames) at or
    after the ground-truth onset (anywhere when the episode has no per-frame mask); an alarm
    raised before the onset is a false alarm (even when it lasts past the onset), as is any
    alarm on a normal episode. See :func:`alarm_outcome`.
    """
    pred_progress = np.asarray(pred_progress, dtype=np.float64)
    n = pred_progress.size
    arrays = {
        "pred_phase": np.asarray(pred_phase, dtype=np.int64),
        "pred_alarm": np.asarray(pred_alarm, dtype=bool),
        "pred_score": np.asarray(pred_score, dtype=np.float64),
        "gt_progress": np.asarray(gt_progress, dtype=np.float64),
        "gt_phase": np.asarray(gt_phase, dtype=np.int64),
    }
    for key, arr in arrays.items():
        if arr.size != n:
            raise ValueError(f"{key} has {arr.size} frames, pred_progress has {n}")
    valid = np.isfinite(pred_progress)
    mae = _masked_mean(np.abs(pred_progress - arrays["gt_progress"]), valid)
    labelled = (arrays["gt_phase"] >= 0) & valid
    phase_acc = _masked_mean(arrays["pred_phase"] == arrays["gt_phase"], labelled)
    alarms = np.flatnonzero(arrays["pred_alarm"])
    mask = np.asarray(gt_anomaly_mask, dtype=bool) if gt_anomaly_mask is not None else None
    onset = int(np.flatnonzero(mask)[0]) if mask is not None and mask.any() else -1
    first_alarm = int(alarms[0]) if alarms.size else -1
    delay, false_alarm = alarm_outcome(arrays["pred_alarm"], onset if anomalous else None)
    scores = arrays["pred_score"][np.isfinite(arrays["pred_score"])]
    return EpisodeScore(
        name=name,
        num_frames=n,
        anomalous=bool(anomalous),
        progress_mae=mae,
        phase_accuracy=phase_acc,
        flagged=bool(alarms.size),
        first_alarm=first_alarm,
        onset=onset,
        detection_delay=delay,
        max_score=float(scores.max()) if scores.size else float("nan"),
        false_alarm=false_alarm,
    )


def alarm_outcome(alarm: Sequence[bool] | np.ndarray, onset: int | None) -> tuple[int, bool]:
    """``(detection delay or -1, false alarm?)`` of an episode's per-frame alarm flags.

    ``onset``: the first anomalous frame (``-1``: anomalous without a frame mask, any alarm
    catches it at delay 0 counted from the start); ``None``: a normal episode. An alarm is raised
    at the first frame of each run of alarm frames; one raised before the onset is a false alarm
    and does not catch the anomaly even if it lasts past the onset.
    """
    flags = np.asarray(alarm, dtype=bool)
    raised = np.flatnonzero(flags & ~np.concatenate([[False], flags[:-1]]))
    if onset is None:
        return -1, bool(raised.size)
    start = max(onset, 0)
    after = raised[raised >= start]
    return (int(after[0] - start) if after.size else -1), bool((raised < start).any())


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); nan without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def summarize(scores: Sequence[EpisodeScore]) -> dict:
    """Aggregate episode scores: frame-weighted progress MAE and phase accuracy, detection stats."""
    if not scores:
        return {"episodes": 0}
    frames = np.array([s.num_frames for s in scores], dtype=np.float64)

    def weighted(values: list[float]) -> float:
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v)
        return float(np.average(v[ok], weights=frames[ok])) if ok.any() else float("nan")

    anomalous = [s for s in scores if s.anomalous]
    normal = [s for s in scores if not s.anomalous]
    caught = [s for s in anomalous if s.detection_delay >= 0]
    delays = [s.detection_delay for s in caught]
    return {
        "episodes": len(scores),
        "normal_episodes": len(normal),
        "anomalous_episodes": len(anomalous),
        "progress_mae": weighted([s.progress_mae for s in scores]),
        "phase_accuracy": weighted([s.phase_accuracy for s in scores]),
        "anomalies_caught": len(caught),
        "anomalies_missed": len(anomalous) - len(caught),
        "false_alarm_episodes": sum(s.flagged for s in normal),
        "false_alarms_per_normal_episode": (
            sum(s.flagged for s in normal) / len(normal) if normal else float("nan")
        ),
        "pre_onset_false_alarms": sum(s.false_alarm for s in anomalous),
        "median_detection_delay": float(np.median(delays)) if delays else float("nan"),
        "episode_auroc": auroc([s.max_score for s in scores], [s.anomalous for s in scores]),
    }


def threshold_ceiling(
    normal_maxima: np.ndarray, anomaly_maxima: np.ndarray, allowed_false_alarms: int = 0
) -> int:
    """Anomalies any per-detector thresholds could catch on these very episodes.

    ``normal_maxima [N, D]``: each normal episode's largest statistic per detector;
    ``anomaly_maxima [A, D]``: each anomalous episode's largest statistic at or after its onset.
    Thresholds are set on the evaluated episodes themselves: each detector just above its
    largest normal maximum once the ``allowed_false_alarms`` normal episodes that block the most
    catches are given up (exhaustive for 0 and 1, greedy beyond). No calibration on other
    episodes can do better with these statistics, so this bounds what calibration can recover;
    it ignores delays and alarms raised before an onset.
    """
    normal = np.asarray(normal_maxima, dtype=np.float64)
    anomalous = np.asarray(anomaly_maxima, dtype=np.float64)
    if anomalous.size == 0:
        return 0
    if normal.size == 0:
        return int(len(anomalous))

    def caught(keep: np.ndarray) -> int:
        if not keep.any():
            return int(len(anomalous))
        limit = normal[keep].max(axis=0)
        return int((anomalous > limit[None, :]).any(axis=1).sum())

    keep = np.ones(len(normal), dtype=bool)
    best = caught(keep)
    for _ in range(min(allowed_false_alarms, len(normal))):
        trials = []
        for i in np.flatnonzero(keep):
            keep[i] = False
            trials.append((caught(keep), -int(i)))
            keep[i] = True
        gain, drop = max(trials)
        keep[-drop] = False
        best = max(best, gain)
    return best
