"""Calibration on normal episodes: temperature, phase source and anomaly thresholds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tcc_model.stream.config import FrameResult, MonitorConfig
from tcc_model.stream.hmm import ProgressMonitor
from tcc_model.stream.monitor import default_temperature
from tcc_model.stream.phase import choose_phase_source
from tcc_model.stream.references import ReferenceSet


def conformal_upper(
    scores: Sequence[float], alpha: float, margin: float = 1.2
) -> tuple[float, str]:
    """Split-conformal upper bound: P(new score > bound) <= alpha for exchangeable scores.

    The bound is the ``ceil((n + 1)(1 - alpha))``-th smallest score. With too few scores for
    that rank, the maximum times ``margin`` is returned (method ``max_times_margin``).
    """
    values = np.sort(np.asarray(scores, dtype=np.float64))
    if values.size == 0:
        raise ValueError("conformal_upper: no calibration scores")
    rank = math.ceil((values.size + 1) * (1.0 - alpha))
    if rank <= values.size:
        return float(values[rank - 1]), "conformal"
    return float(values[-1] * margin), "max_times_margin"


TEMPERATURE_FACTORS = (1.0, 0.5, 0.25, 0.125)
DEFAULT_TEMPERATURE_FACTOR = 0.5
PHASE_ERROR_WEIGHT = 0.1


def calibrate(
    references: ReferenceSet,
    episodes: Sequence[np.ndarray],
    false_alarm_rate: float = 0.01,
    config: MonitorConfig | None = None,
    stamps: Sequence[Sequence[float]] | None = None,
    margin: float = 1.2,
    min_stall_seconds: float = 1.0,
    min_backwards: float = 0.03,
    min_skip_evidence: float = 0.5,
    progress: Sequence[np.ndarray] | None = None,
    phase_ids: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Calibrate temperature and anomaly thresholds on held-out NORMAL episodes (embeddings).

    1. scale = median aligned distance over all frames (first pass, default temperature);
       temperature = scale x factor. With ground-truth ``progress`` (and ``phase_ids``) per
       episode the factor is chosen from :data:`TEMPERATURE_FACTORS` by the lowest
       progress MAE + ``PHASE_ERROR_WEIGHT`` x phase error rate; else
       :data:`DEFAULT_TEMPERATURE_FACTOR`. ``config.temperature`` overrides both.
    2. phase source: with ``phase_ids`` and ``phase_source='auto'``, the classifier (when the
       references have one) is recorded as ``phase_source`` if its per-episode accuracy gain over
       the alignment is clearly positive (:func:`choose_phase_source`), else the alignment; both
       accuracies are recorded in ``phase_accuracy``.
    3. final pass: per-episode maxima of the off-trajectory statistic (m-th largest distance of
       the last n frames), stall duration, backward fall and phase-skip evidence; each threshold
       is the split-conformal quantile at ``false_alarm_rate / 4`` (Bonferroni over the four
       detectors), so a nominal episode raises any alarm with probability <= ``false_alarm_rate``.
       The ``min_*`` floors keep a detector from firing on any tiny value when the calibration
       episodes never showed one; a skip threshold >= 1 switches that detector off (normal runs
       skip phases as confidently as anomalies would).

    Returns the calibration dict (also stored in ``references.calibration``).
    """
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    if not episodes:
        raise ValueError("calibrate: no calibration episodes; pass held-out normal episodes")
    for name, values in (("progress", progress), ("phase_ids", phase_ids)):
        if values is not None and [len(v) for v in values] != [len(e) for e in episodes]:
            raise ValueError(f"calibrate: {name} must give one value per frame of every episode")
    base = config or MonitorConfig()
    has_classifier = references.phase_weights is not None
    source = base.phase_source
    if source == "auto":
        source = "classifier" if has_classifier else "alignment"
    free = replace(
        base,
        distance_threshold=math.inf,
        stall_seconds=math.inf,
        backwards_threshold=math.inf,
        skip_threshold=math.inf,
        phase_source=source,
    )
    stamp_list = list(stamps) if stamps is not None else [None] * len(episodes)

    def replay(temperature: float, phase_source: str = source) -> list[list[FrameResult]]:
        config = replace(free, temperature=temperature, phase_source=phase_source)
        monitor = ProgressMonitor(references, config)
        return [monitor.run(e, s) for e, s in zip(episodes, stamp_list)]

    first = replay(base.temperature or default_temperature(references))
    distances = np.array([r.distance for run in first for r in run if r.valid])
    scale = float(max(np.median(distances), 1e-6))
    selection: dict[str, float] = {}
    if base.temperature:
        temperature, factor = base.temperature, float("nan")
    elif progress is not None:
        for f in TEMPERATURE_FACTORS:
            runs = replay(scale * f)
            abs_err = np.concatenate(
                [np.abs(np.array([r.progress for r in run]) - p) for run, p in zip(runs, progress)]
            )
            score = float(np.nanmean(abs_err))
            if phase_ids is not None:
                wrong = np.concatenate(
                    [np.array([r.phase_id for r in run]) != p for run, p in zip(runs, phase_ids)]
                )
                score += PHASE_ERROR_WEIGHT * float(np.mean(wrong))
            selection[str(f)] = score
        factor = float(min(selection, key=selection.get))
        temperature = scale * factor
    else:
        factor = DEFAULT_TEMPERATURE_FACTOR
        temperature = scale * factor
    phase_accuracy: dict[str, float] = {}
    if phase_ids is not None:
        sources = ("classifier", "alignment") if has_classifier else ("alignment",)
        episode_accuracy: dict[str, np.ndarray] = {}
        for candidate in sources:
            runs = replay(temperature, candidate)
            hits = [np.array([r.phase_id for r in run]) == p for run, p in zip(runs, phase_ids)]
            phase_accuracy[candidate] = float(np.mean(np.concatenate(hits)))
            episode_accuracy[candidate] = np.array([h.mean() for h in hits if h.size])
        if base.phase_source == "auto":
            source = (
                choose_phase_source(episode_accuracy["classifier"], episode_accuracy["alignment"])
                if has_classifier
                else "alignment"
            )
    free = replace(free, phase_source=source)
    monitor = ProgressMonitor(references, replace(free, temperature=temperature))
    per_episode: dict[str, list[float]] = {
        "distance": [],
        "stall_seconds": [],
        "backwards": [],
        "skip": [],
    }
    frames = 0
    for emb, st in zip(episodes, stamp_list):
        monitor.reset()
        peaks = dict.fromkeys(per_episode, 0.0)
        stamps_iter = st if st is not None else [None] * len(emb)
        for e, s in zip(emb, stamps_iter):
            if monitor.process_embedding(e, s).valid:
                frames += 1
                for key, value in monitor.statistics.items():
                    peaks[key] = max(peaks[key], value)
        for key in per_episode:
            per_episode[key].append(peaks[key])
    alpha = false_alarm_rate / 4.0
    dist_thr, method = conformal_upper(per_episode["distance"], alpha, margin)
    stall_thr, _ = conformal_upper(per_episode["stall_seconds"], alpha, margin)
    back_thr, _ = conformal_upper(per_episode["backwards"], alpha, margin)
    skip_thr, _ = conformal_upper(per_episode["skip"], alpha, margin)
    calibration = {
        "method": method,
        "description": "per-episode maxima of detector statistics on held-out normal episodes; "
        "split-conformal quantile at false_alarm_rate/4 per detector (max x margin when too few "
        "episodes)",
        "false_alarm_rate": false_alarm_rate,
        "episodes_needed_for_conformal": math.ceil((1 - alpha) / alpha),
        "margin": margin,
        "num_episodes": len(episodes),
        "num_frames": frames,
        "temperature": temperature,
        "temperature_factor": factor,
        "temperature_selection": selection,
        "median_aligned_distance": scale,
        "phase_source": source,
        "phase_accuracy": phase_accuracy,
        "distance_threshold": dist_thr,
        "stall_seconds": max(stall_thr, min_stall_seconds),
        "backwards_threshold": max(back_thr, min_backwards),
        "skip_threshold": max(skip_thr, min_skip_evidence),
        "rest_phases": list(base.rest_phases),
        "off_trajectory_m": base.off_trajectory_m,
        "off_trajectory_n": base.off_trajectory_n,
        "aligned_distance_quantiles": {
            q: float(np.quantile(distances, float(q))) for q in ("0.5", "0.9", "0.99")
        },
        "episode_maxima": {k: [float(v) for v in vals] for k, vals in per_episode.items()},
    }
    references.calibration = calibration
    return calibration
