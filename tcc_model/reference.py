"""Reference trajectories in a bundle: embed nominal demonstrations, calibrate anomaly thresholds.

``python -m tcc_model.reference --bundle B --dataset NAME_OR_DIR [--split train] [--max-videos N]
[--classifier-videos M] [--calib-dataset D] [--calib-split val] [--calib-episodes K]
[--false-alarm-rate 0.01] [--calibration-method tail|fused|bonferroni] [--rest-phases P ...]``

Embeds up to N normal (non-anomalous, phase-labelled) episodes of ``--split`` with the bundle's
engine as references, fits the monitor's linear phase classifier on them and the split's other
labelled normal videos (up to M in all; :func:`tcc_model.stream.fit_phase_classifier`),
calibrates the monitor's detectors on the normal episodes of ``--calib-dataset`` /
``--calib-split`` (anomalous ones are left out and counted; too few episodes for the rate stop
with the number needed; see :func:`tcc_model.stream.calibrate`) and writes ``references.npz`` +
``references.json`` into the bundle. The bundle id used is recorded in ``references.json``; the
two files are listed (with their sha256) in the manifest through
:func:`tcc_model.bundle.register_files` unless ``--no-register``.

This module holds the library functions; the command (options, checks, summary) is
:mod:`tcc_model.reference_cli`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.cli import entry_point
from tcc_model.errors import DatasetError
from tcc_model.preprocess import context_indices
from tcc_model.stream import (
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_PHASE_LAGS,
    MonitorConfig,
    ReferenceSet,
    calibrate,
    fit_phase_classifier,
    thumbnails,
)

EMBED_CHUNK = 32


def embed_video(engine: Any, frames: np.ndarray, chunk: int = EMBED_CHUNK) -> np.ndarray:
    """Embeddings ``[N, D]`` float32 of RGB uint8 ``frames [N, H, W, 3]``, each with causal context.

    Uses ``engine.embed_frames`` when the engine has it; otherwise encodes every frame once and
    feeds the head the cached features at :func:`tcc_model.preprocess.context_indices`.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be RGB uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}"
        )
    if hasattr(engine, "embed_frames"):
        return np.asarray(engine.embed_frames(frames), dtype=np.float32)
    features = np.concatenate(
        [
            np.asarray(engine.encode_frames(frames[i : i + chunk]))
            for i in range(0, len(frames), chunk)
        ]
    )
    pre = engine.preprocess
    idx = context_indices(np.arange(len(frames)), pre.context_frames, pre.context_stride)
    return np.concatenate(
        [
            np.asarray(engine.embed(features[idx[i : i + chunk]]), dtype=np.float32)
            for i in range(0, len(frames), chunk)
        ]
    )


def normal_episodes(episodes: Sequence[Any], max_videos: int | None = None) -> list[Any]:
    """Episodes without an anomaly that carry phase labels, at most ``max_videos`` of them."""
    chosen = [e for e in episodes if e.labels.anomaly is None and e.labels.has_phase_labels]
    return chosen[:max_videos] if max_videos else chosen


def split_references(
    labelled: Sequence[Any], max_references: int | None, classifier_videos: int | None
) -> tuple[list[Any], list[Any]]:
    """``(references, extra classifier videos)`` from labelled normal episodes, in order.

    The first ``max_references`` are the references; the phase classifier sees up to
    ``classifier_videos`` videos in all (``None``: every one), the references first.
    """
    references = list(labelled[:max_references] if max_references else labelled)
    total = len(labelled) if classifier_videos is None else max(classifier_videos, len(references))
    return references, list(labelled[len(references) : total])


def load_episodes(dataset: str, split: str) -> list[Any]:
    """Episodes of ``split`` of a dataset folder or a registered dataset name."""
    if Path(dataset).is_dir():
        from tcc_model.data.format import load_split

        return load_split(dataset, split)
    from tcc_model.data.registry import load_dataset_split

    return load_dataset_split(dataset, split)


def build_references(
    engine: Any,
    episodes: Sequence[Any],
    log: Callable[[str], Any] | None = None,
    classifier_episodes: Sequence[Any] = (),
    phase_lags: Sequence[int] = DEFAULT_PHASE_LAGS,
    embed: Callable[[Any], np.ndarray] | None = None,
) -> ReferenceSet:
    """Embed normal labelled ``episodes`` into a :class:`ReferenceSet` tagged with the bundle id.

    The phase classifier is fitted on the references plus ``classifier_episodes`` (more labelled
    normal videos, embedded for the fit only) with ``phase_lags``. ``embed(episode)`` gives an
    episode's embeddings (a cache); default: :func:`embed_video` of its frames.
    """
    if embed is None:
        embed = lambda e: embed_video(engine, e.load_frames())  # noqa: E731
    if not episodes:
        raise DatasetError(
            "no normal phase-labelled episodes to use as references: the monitor needs "
            "demonstrations with per-frame phase labels (phase_names + phase_ids in the label "
            "JSON, docs/DATASET_FORMAT.md); label some normal videos or pick a --split with them"
        )
    phase_names = list(episodes[0].labels.phase_names)
    for episode in [*episodes, *classifier_episodes]:
        if list(episode.labels.phase_names) != phase_names:
            raise DatasetError(
                f"{episode.label_path}: phase_names {episode.labels.phase_names} differ from "
                f"{phase_names}; references must share one phase vocabulary"
            )
    embeddings, phase_ids, key_events, names, fps = [], [], [], [], []
    for episode in episodes:
        start = time.perf_counter()
        embeddings.append(embed(episode))
        phase_ids.append(episode.labels.phase_id_array())
        key_events.append(dict(episode.labels.key_events))
        names.append(f"{episode.split}/{episode.name}")
        fps.append(float(episode.labels.fps))
        if log:
            log(
                f"  reference {names[-1]}: {len(embeddings[-1])} frames "
                f"({time.perf_counter() - start:.1f} s)"
            )
    references = ReferenceSet.from_episodes(
        embeddings, phase_ids, phase_names, key_events, engine.bundle_id, names, fps
    )
    start = time.perf_counter()
    extra = [(embed(e), e.labels.phase_id_array()) for e in classifier_episodes]
    try:
        accuracy = fit_phase_classifier(references, lags=phase_lags, extra_episodes=extra)
    except ValueError as exc:  # a phase without labelled frames: phase from alignment only
        if log:
            log(f"  no phase classifier: {exc}")
    else:
        if log:
            log(
                f"  phase classifier (logistic regression on the embedding and its differences "
                f"{list(references.phase_lags)} frames back): {len(episodes) + len(extra)} videos, "
                f"{accuracy:.1%} on their frames, fitted in {time.perf_counter() - start:.1f} s"
            )
    return references


@dataclass
class EmbeddedEpisode:
    """One episode as the monitor sees it, with its ground truth (calibration, benchmarks)."""

    name: str
    embeddings: np.ndarray  # [N, D]
    pixels: np.ndarray  # [N, 768] thumbnails of the frames the engine saw
    stamps: np.ndarray  # [N] seconds
    progress: np.ndarray  # [N] from the key events
    phase_ids: np.ndarray  # [N]
    fps: float
    anomaly: str | None = None
    onset: int = -1  # first anomalous frame, -1 if none


def embed_episode(engine: Any, episode: Any) -> EmbeddedEpisode:
    """Embed an episode's frames and keep the thumbnails the monitor's image detectors use."""
    frames = episode.load_frames()
    pixels = thumbnails(frames, engine.preprocess.image_size)
    return embedded_episode(episode, embed_video(engine, frames), pixels)


def embedded_episode(episode: Any, emb: np.ndarray, pixels: np.ndarray) -> EmbeddedEpisode:
    """An :class:`EmbeddedEpisode` from an episode's labels, embeddings and thumbnails."""
    from tcc_model.data.format import progress_from_key_events

    labels = episode.labels
    mask = np.asarray(labels.anomaly_mask or [], dtype=bool)
    return EmbeddedEpisode(
        name=f"{episode.split}/{episode.name}",
        embeddings=emb,
        pixels=pixels,
        stamps=np.arange(len(emb)) / float(labels.fps),
        progress=np.asarray(progress_from_key_events(len(emb), labels.key_events)),
        phase_ids=labels.phase_id_array(),
        fps=float(labels.fps),
        anomaly=labels.anomaly,
        onset=int(np.argmax(mask)) if mask.any() else -1,
    )


def calibrate_references(
    references: ReferenceSet,
    episodes: Sequence[EmbeddedEpisode],
    false_alarm_rate: float,
    config: MonitorConfig | None = None,
    margin: float = 1.2,
    method: str = DEFAULT_CALIBRATION_METHOD,
    strict: bool = True,
    monitor_class: type | None = None,
) -> dict[str, Any]:
    """Calibrate ``references`` (in place) on embedded normal ``episodes``.

    The one calibration the bundle and the benchmark share. Episodes with an anomaly label are
    refused (left out and counted); ``strict``: too few episodes for the rate raise ConfigError
    with the number needed.
    """
    normal = [e for e in episodes if e.anomaly is None]
    if not normal:
        raise DatasetError(
            "no normal phase-labelled episodes to calibrate on; choose a --calib-dataset / "
            "--calib-split with labelled normal episodes"
        )
    calibration = calibrate(
        references,
        [e.embeddings for e in normal],
        false_alarm_rate,
        config,
        [e.stamps for e in normal],
        margin,
        progress=[e.progress for e in normal],
        phase_ids=[e.phase_ids for e in normal],
        pixels=[e.pixels for e in normal],
        method=method,
        strict=strict,
        **({"monitor_class": monitor_class} if monitor_class else {}),
    )
    calibration["episodes"] = [e.name for e in normal]
    calibration["excluded_episodes"] = [normal[i].name for i in calibration["excluded_episodes"]]
    calibration["refused_anomalous_episodes"] = [e.name for e in episodes if e.anomaly]
    return calibration


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 with one ``error:`` line on bad input).

    The command lives in :mod:`tcc_model.reference_cli` (imported here on use).
    """
    from tcc_model.reference_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    from tcc_model.reference_cli import run

    entry_point(run)
