"""Episodes cut from bags: decoding and embedding, the monitor replayed over them, scoring.

Used by :mod:`tcc_ros.evaluate_bag`; frames come from :mod:`tcc_ros.bag_io`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tcc_model.monitor_metrics import EpisodeScore, score_episode
from tcc_model.stream.profiles import thumbnails
from tcc_ros.bag_io import iter_episode_slices, read_bag, resolve_episode_mode


@dataclass
class BagEpisode:
    """One episode cut from a bag, with its embeddings and (optional) ground truth."""

    name: str
    stamps_ns: np.ndarray
    embeddings: np.ndarray
    ground_truth: list[Any] | None  # GroundTruth messages per frame, when every frame has one
    recorded: dict[str, list[Any | None]] = field(default_factory=dict)  # /tcc/* per frame
    split: str = "per-bag"  # how the bag was cut (the mode ``auto`` resolved to)
    pixels: np.ndarray | None = None  # [N, 768] thumbnails for the image detectors (live: same)


def load_episodes(
    bags: list[Path],
    engine: Any,
    image_topic: str,
    mode: str,
    gap_s: float,
) -> tuple[list[BagEpisode], dict[str, float]]:
    """Read, decode and embed every episode of ``bags``; returns episodes and timing counters.

    ``mode`` is one of :data:`~tcc_ros.bag_io.EPISODE_MODES` (``auto`` is decided per bag).
    """
    episodes: list[BagEpisode] = []
    counters = {"frames": 0, "rejected_frames": 0, "read_s": 0.0, "embed_s": 0.0}
    for bag in tqdm(bags, desc="bags", unit="bag", disable=len(bags) < 2):
        t0 = time.perf_counter()
        contents = read_bag(bag, image_topic)
        counters["read_s"] += time.perf_counter() - t0
        counters["rejected_frames"] += contents.rejected_images
        split = resolve_episode_mode(contents, mode)
        for name, sl in tqdm(
            list(iter_episode_slices(contents, split, gap_s)), desc=f"embed {bag.name}", unit="ep"
        ):
            images = contents.images[sl]
            frames = np.stack([im.frame for im in images])
            stamps = np.array([im.stamp_ns for im in images], dtype=np.int64)
            t0 = time.perf_counter()
            embeddings = np.asarray(engine.embed_frames(frames), dtype=np.float32)
            pixels = thumbnails(frames, engine.preprocess.image_size)
            counters["embed_s"] += time.perf_counter() - t0
            counters["frames"] += len(images)
            truth = [contents.ground_truth.get(int(s)) for s in stamps]
            recorded = {
                topic: [msgs.get(int(s)) for s in stamps]
                for topic, msgs in contents.monitor_outputs.items()
            }
            episodes.append(
                BagEpisode(
                    name=name,
                    stamps_ns=stamps,
                    embeddings=embeddings,
                    ground_truth=truth if all(t is not None for t in truth) else None,
                    recorded=recorded,
                    split=split,
                    pixels=pixels,
                )
            )
    return episodes, counters


def ground_truth_arrays(truth: list[Any]) -> dict[str, np.ndarray]:
    """Per-frame ground truth (progress, phase, anomaly mask, anomalous episode) as arrays."""
    return {
        "progress": np.array([t.progress for t in truth], dtype=np.float64),
        "phase": np.array([t.phase_id for t in truth], dtype=np.int64),
        "anomaly": np.array([t.anomaly for t in truth], dtype=bool),
        "anomalous": np.array([bool(t.anomaly_kind) for t in truth], dtype=bool),
    }


def replay_monitor(episode: BagEpisode, references: Any, config: Any) -> dict[str, np.ndarray]:
    """Run the streaming monitor over an episode's embeddings, frame by frame (causal)."""
    from tcc_model.stream import ProgressMonitor

    monitor = ProgressMonitor(references, config=config)
    pixels = episode.pixels if episode.pixels is not None else [None] * len(episode.embeddings)
    results = [monitor.process_embedding(e, None, p) for e, p in zip(episode.embeddings, pixels)]
    return {
        "progress": np.array([r.progress if r.valid else np.nan for r in results]),
        "phase": np.array([r.phase_id for r in results], dtype=np.int64),
        "alarm": np.array([r.anomaly for r in results], dtype=bool),
        "score": np.array([r.anomaly_score for r in results], dtype=np.float64),
    }


def recorded_outputs(episode: BagEpisode) -> dict[str, np.ndarray] | None:
    """The monitor's own recorded outputs per frame, or None when the bag has none."""
    progress = episode.recorded.get("/tcc/progress")
    phase = episode.recorded.get("/tcc/phase")
    anomaly = episode.recorded.get("/tcc/anomaly")
    if not progress or not phase or all(p is None for p in progress):
        return None
    return {
        "progress": np.array([p.progress if p is not None else np.nan for p in progress]),
        "phase": np.array([p.id if p is not None else -2 for p in phase], dtype=np.int64),
        "alarm": np.array(
            [
                a.kind != 0 if a is not None else False  # Anomaly.NONE
                for a in (anomaly or [None] * len(progress))
            ]
        ),
        "score": np.array(
            [a.score if a is not None else np.nan for a in (anomaly or [None] * len(progress))]
        ),
    }


def score_against_truth(episode: BagEpisode, pred: dict[str, np.ndarray]) -> EpisodeScore:
    """Score per-frame monitor outputs ``pred`` against the episode's ground truth."""
    gt = ground_truth_arrays(episode.ground_truth or [])
    return score_episode(
        episode.name,
        pred_progress=pred["progress"],
        pred_phase=pred["phase"],
        pred_alarm=pred["alarm"],
        pred_score=pred["score"],
        gt_progress=gt["progress"],
        gt_phase=gt["phase"],
        gt_anomaly_mask=gt["anomaly"],
        anomalous=bool(gt["anomalous"].any()),
    )


def episode_timeline(
    episode: BagEpisode, pred: dict[str, np.ndarray], phase_names: Sequence[str]
) -> Any:
    """The episode's :class:`~tcc_model.visualize.EpisodeTimeline` (time axis from the stamps)."""
    from tcc_model.stream import ANOMALY_SCORE_THRESHOLD
    from tcc_model.visualize import EpisodeTimeline

    gt = ground_truth_arrays(episode.ground_truth or [])
    steps = np.diff(episode.stamps_ns)
    fps = 1e9 / float(np.median(steps)) if steps.size and np.median(steps) > 0 else None
    return EpisodeTimeline(
        episode.name,
        progress=pred["progress"],
        phase=pred["phase"],
        true_progress=gt["progress"],
        true_phase=gt["phase"],
        score=pred["score"],
        alarm=pred["alarm"],
        anomaly_mask=gt["anomaly"],
        threshold=ANOMALY_SCORE_THRESHOLD,
        phase_names=list(phase_names),
        fps=fps,
    )
