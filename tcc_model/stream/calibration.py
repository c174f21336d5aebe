"""Calibration on normal episodes: temperature, phase source, normal profiles and thresholds."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tcc_model.stream.config import DETECTORS, FrameResult, MonitorConfig
from tcc_model.stream.hmm import ProgressMonitor
from tcc_model.stream.monitor import default_temperature
from tcc_model.stream.phase import choose_phase_source
from tcc_model.stream.profiles import ProgressProfiles, episode_signals, fit_profiles
from tcc_model.stream.references import ReferenceSet
from tcc_model.stream.thresholds import (
    DEFAULT_CALIBRATION_METHOD,
    conformal_upper,
    detector_states,
    thresholds_from_maxima,
)

__all__ = ["calibrate", "conformal_upper"]

TEMPERATURE_FACTORS = (1.0, 0.5, 0.25, 0.125)
DEFAULT_TEMPERATURE_FACTOR = 0.5
PHASE_ERROR_WEIGHT = 0.1


class _Replay:
    """Replays the calibration episodes through a monitor with every detector unbounded."""

    def __init__(
        self,
        references: ReferenceSet,
        episodes: Sequence[np.ndarray],
        stamps: Sequence[Any],
        pixels: Sequence[Any],
        base: MonitorConfig,
        monitor_class: type = ProgressMonitor,
    ) -> None:
        self.references, self.episodes, self.stamps, self.pixels = (
            references,
            episodes,
            stamps,
            pixels,
        )
        self.free = replace(base, **{d.threshold: math.inf for d in DETECTORS.values()})
        self.monitor_class = monitor_class

    def runs(self, temperature: float, source: str) -> list[list[FrameResult]]:
        monitor = self.monitor_class(
            self.references, replace(self.free, temperature=temperature, phase_source=source)
        )
        return [monitor.run(*args) for args in zip(self.episodes, self.stamps, self.pixels)]

    def maxima(
        self,
        temperature: float,
        source: str,
        profiles: ProgressProfiles | None,
        which: Sequence[int],
    ) -> np.ndarray:
        """``[len(which), detectors]`` per-episode maxima of each detector statistic."""
        refs = copy.copy(self.references)
        refs.profiles = profiles
        config = replace(self.free, temperature=temperature, phase_source=source)
        monitor = self.monitor_class(refs, config)
        out = np.zeros((len(which), len(config.detectors)))
        for row, i in enumerate(which):
            stats: list[dict[str, float]] = []
            results = monitor.run(self.episodes[i], self.stamps[i], self.pixels[i], stats)
            for frame, result in zip(stats, results):
                if result.valid:
                    out[row] = np.maximum(out[row], [frame[d] for d in config.detectors])
        return out


def _choose_temperature(
    replay: _Replay,
    base: MonitorConfig,
    source: str,
    progress: Sequence[np.ndarray] | None,
    phase_ids: Sequence[np.ndarray] | None,
) -> tuple[float, float, dict[str, float], float, np.ndarray]:
    """``(temperature, factor, selection scores, median distance, all distances)``."""
    first = replay.runs(base.temperature or default_temperature(replay.references), source)
    distances = np.array([r.distance for run in first for r in run if r.valid])
    scale = float(max(np.median(distances), 1e-6))
    selection: dict[str, float] = {}
    if base.temperature:
        return base.temperature, float("nan"), selection, scale, distances
    if progress is None:
        return scale * DEFAULT_TEMPERATURE_FACTOR, DEFAULT_TEMPERATURE_FACTOR, {}, scale, distances
    for f in TEMPERATURE_FACTORS:
        runs = replay.runs(scale * f, source)
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
    factor = float(min(selection, key=selection.__getitem__))
    return scale * factor, factor, selection, scale, distances


def _choose_phase_source(
    replay: _Replay,
    temperature: float,
    base: MonitorConfig,
    source: str,
    phase_ids: Sequence[np.ndarray] | None,
) -> tuple[str, dict[str, float], list[list[FrameResult]]]:
    """``(phase source, accuracy per source, the replay with the chosen source)``."""
    has_classifier = replay.references.phase_weights is not None
    accuracy: dict[str, float] = {}
    runs_by_source: dict[str, list[list[FrameResult]]] = {}
    if phase_ids is not None:
        per_episode: dict[str, np.ndarray] = {}
        for candidate in ("classifier", "alignment") if has_classifier else ("alignment",):
            runs = runs_by_source[candidate] = replay.runs(temperature, candidate)
            hits = [np.array([r.phase_id for r in run]) == p for run, p in zip(runs, phase_ids)]
            accuracy[candidate] = float(np.mean(np.concatenate(hits)))
            per_episode[candidate] = np.array([h.mean() for h in hits if h.size])
        if base.phase_source == "auto":
            source = (
                choose_phase_source(per_episode["classifier"], per_episode["alignment"])
                if has_classifier
                else "alignment"
            )
    runs = runs_by_source.get(source) or replay.runs(temperature, source)
    return source, accuracy, runs


def _cross_fitted_maxima(
    replay: _Replay,
    temperature: float,
    source: str,
    progress: list[np.ndarray],
    signals: list[dict[str, np.ndarray]],
) -> tuple[np.ndarray, ProgressProfiles]:
    """Detector maxima of every episode with profiles fitted on the OTHER half of the episodes.

    Returns the maxima and the profiles fitted on all episodes (what the bundle keeps). With
    fewer than 4 episodes the profiles are fitted and scored on the same episodes.
    """
    n = len(progress)
    full = fit_profiles(progress, signals)
    if n < 4:
        return replay.maxima(temperature, source, full, range(n)), full
    halves = [np.arange(0, n, 2), np.arange(1, n, 2)]
    maxima = np.zeros((n, len(replay.free.detectors)))
    for fit_on, score_on in (halves, halves[::-1]):
        profiles = fit_profiles([progress[i] for i in fit_on], [signals[i] for i in fit_on])
        maxima[score_on] = replay.maxima(temperature, source, profiles, score_on)
    return maxima, full


def _record(
    fitted: dict[str, Any],
    maxima: np.ndarray,
    names: list[str],
    has_pixels: bool,
    base: MonitorConfig,
    **values: Any,
) -> dict[str, Any]:
    """The calibration dict stored in ``references.json`` (thresholds, states, data summary)."""
    distances = values.pop("distances")
    n = len(maxima)
    calibration: dict[str, Any] = {
        "method": fitted["method"],
        "description": "per-episode maxima of the detector statistics on held-out normal "
        "episodes (profiles cross-fitted on the other half); outliers excluded; thresholds at "
        f"the false-alarm rate ({values['method']}: see tcc_model.stream.thresholds)",
        "false_alarm_rate": values.pop("false_alarm_rate"),
        "episodes_needed": fitted["episodes_needed"],
        "achieved_false_alarm_rate": fitted["achieved_rate"],
        "raised_by_guard": fitted["raised_by_guard"],
        "num_episodes": n - len(fitted["excluded"]),
        "num_excluded": len(fitted["excluded"]),
        "excluded_episodes": fitted["excluded"],
        **values,
        "detectors": names,
        "detector_states": detector_states(fitted["thresholds"], maxima, names, has_pixels),
        "rest_phases": list(base.rest_phases),
        "off_trajectory_m": base.off_trajectory_m,
        "off_trajectory_n": base.off_trajectory_n,
        "aligned_distance_quantiles": {
            q: float(np.quantile(distances, float(q))) for q in ("0.5", "0.9", "0.99")
        },
        "episode_maxima": {k: maxima[:, i].tolist() for i, k in enumerate(names)},
    }
    calibration["method"] = fitted["method"]
    for name, spec in DETECTORS.items():
        calibration[spec.threshold] = fitted["thresholds"].get(name, math.inf)
    return calibration


def calibrate(
    references: ReferenceSet,
    episodes: Sequence[np.ndarray],
    false_alarm_rate: float = 0.01,
    config: MonitorConfig | None = None,
    stamps: Sequence[Sequence[float]] | None = None,
    margin: float = 1.2,
    progress: Sequence[np.ndarray] | None = None,
    phase_ids: Sequence[np.ndarray] | None = None,
    pixels: Sequence[np.ndarray] | None = None,
    method: str = DEFAULT_CALIBRATION_METHOD,
    strict: bool = False,
    monitor_class: type = ProgressMonitor,
) -> dict[str, Any]:
    """Calibrate the monitor on held-out NORMAL episodes (embeddings ``[N, D]`` each).

    1. temperature = median aligned distance x a factor chosen from :data:`TEMPERATURE_FACTORS`
       by progress MAE + ``PHASE_ERROR_WEIGHT`` x phase error (with ground-truth ``progress`` /
       ``phase_ids``; else :data:`DEFAULT_TEMPERATURE_FACTOR`); ``config.temperature`` wins.
    2. phase source (``phase_source='auto'`` with ``phase_ids``): the classifier when its
       per-episode gain over the alignment is clearly positive (:func:`choose_phase_source`).
    3. normal profiles per progress bin (:func:`~tcc_model.stream.profiles.fit_profiles`) from
       the episodes' aligned progress, embeddings and ``pixels`` (thumbnails ``[N, 768]``, needed
       by the stillness and appearance detectors); each episode's detector maxima are measured
       with profiles fitted on the other half (cross-fitting: no episode scores itself).
    4. thresholds (:func:`~tcc_model.stream.thresholds.thresholds_from_maxima`, ``method``
       ``tail`` (default), ``fused`` or ``bonferroni``): outlying episodes excluded and counted,
       thresholds at ``false_alarm_rate`` per episode; too few episodes for the rate raise
       (``strict``) or are recorded as such. Each detector's state (on / off and why) is recorded.

    ``monitor_class``: the monitor replayed (the nearest-neighbour baseline is calibrated on its
    own replay). Returns the calibration dict (also stored in ``references.calibration``; the
    profiles in ``references.profiles``).
    """
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    if not episodes:
        raise ValueError("calibrate: no calibration episodes; pass held-out normal episodes")
    for name, values in (("progress", progress), ("phase_ids", phase_ids), ("pixels", pixels)):
        if values is not None and [len(v) for v in values] != [len(e) for e in episodes]:
            raise ValueError(f"calibrate: {name} must give one value per frame of every episode")
    base = config or MonitorConfig()
    source = base.phase_source
    if source == "auto":
        source = "classifier" if references.phase_weights is not None else "alignment"
    n = len(episodes)
    replay = _Replay(
        references,
        episodes,
        list(stamps) if stamps is not None else [None] * n,
        list(pixels) if pixels is not None else [None] * n,
        base,
        monitor_class,
    )
    temperature, factor, selection, scale, distances = _choose_temperature(
        replay, base, source, progress, phase_ids
    )
    source, accuracy, runs = _choose_phase_source(replay, temperature, base, source, phase_ids)
    aligned = [np.array([r.progress for r in run], dtype=np.float64) for run in runs]
    signals = [
        episode_signals(e, p, base.motion_lag, base.direction_lag)
        for e, p in zip(episodes, replay.pixels)
    ]
    maxima, profiles = _cross_fitted_maxima(replay, temperature, source, aligned, signals)
    names = list(base.detectors)
    fitted = thresholds_from_maxima(maxima, names, false_alarm_rate, method, strict, margin)
    calibration = _record(
        fitted,
        maxima,
        names,
        pixels is not None,
        base,
        false_alarm_rate=false_alarm_rate,
        method=method,
        margin=margin,
        num_frames=int(sum(len(e) for e in episodes)),
        temperature=temperature,
        temperature_factor=factor,
        temperature_selection=selection,
        median_aligned_distance=scale,
        phase_source=source,
        phase_accuracy=accuracy,
        distances=distances,
    )
    references.calibration = calibration
    references.profiles = profiles
    return calibration
