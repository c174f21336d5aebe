"""Episode sources of :mod:`tcc_ros.camera_source`: a dataset split, the live simulator, a video
or a rosbag, each yielding :class:`SourceEpisode` (frames plus per-frame ground truth)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.errors import ConfigError, DatasetError, safe_text

ANOMALY_KINDS = ("drop", "miss", "stall", "reversed")


@dataclass
class SourceEpisode:
    """Frames of one episode plus its per-frame ground truth (``truth is None`` when unlabelled)."""

    name: str
    frames: np.ndarray  # [N, H, W, 3] RGB uint8
    truth: list[dict[str, Any]] | None = None  # GroundTruth fields per frame (ground_truth_fields)

    @classmethod
    def from_labels(cls, name: str, frames: np.ndarray, labels: Any) -> SourceEpisode:
        """Build from frames and an ``EpisodeLabels`` (or its dict form)."""
        from tcc_model.data.format import EpisodeLabels
        from tcc_ros.ground_truth import ground_truth_fields

        if isinstance(labels, dict):
            labels = EpisodeLabels.from_dict(labels)
        if len(frames) != labels.num_frames:
            raise DatasetError(
                f"episode {safe_text(name)}: {len(frames)} frames but its labels say "
                f"{labels.num_frames}"
            )
        return cls(name=name, frames=frames, truth=ground_truth_fields(labels, name))

    @property
    def anomaly_kind(self) -> str:
        """The episode's anomaly type, or ``""``."""
        return self.truth[0]["anomaly_kind"] if self.truth else ""


def _resize(frames: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return frames
    from tcc_model.preprocess import resize_frames

    return resize_frames(frames, size)


def dataset_episodes(
    name: str, split: str, limit: int | None, size: int | None
) -> Iterator[SourceEpisode]:
    """Episodes of a registered dataset split (``tcc_model.data.registry`` names)."""
    from tcc_model.data.registry import load_dataset_split

    episodes = load_dataset_split(name, split)
    if not episodes:
        raise DatasetError(
            f"--dataset {safe_text(name)} --split {safe_text(split)}: the split holds no episodes"
        )
    for episode in episodes[:limit]:
        frames = _resize(episode.load_frames(), size)
        if episode.labels.has_phase_labels:
            yield SourceEpisode.from_labels(episode.name, frames, episode.labels)
        else:
            yield SourceEpisode(episode.name, frames)


def sim_episodes(
    count: int, seed: int, anomaly: str | None, size: int | None, variation: str = "station"
) -> Iterator[SourceEpisode]:
    """Episodes rendered live by the pouring simulator (``anomaly`` applies to every episode)."""
    from tcc_model.data.sim_pouring import render_episode

    for i in range(count):
        frames, labels = (
            render_episode(seed + i, anomaly, size, variation=variation)
            if size
            else render_episode(seed + i, anomaly, variation=variation)
        )
        yield SourceEpisode.from_labels(f"sim_{seed + i:05d}", np.asarray(frames), labels)


def video_episode(path: str, size: int | None) -> Iterator[SourceEpisode]:
    """One unlabelled episode from a video file or frame folder."""
    from tcc_model.data.format import read_video

    if not Path(path).exists():
        raise ConfigError(f"--video {safe_text(path)}: no such file or folder")
    yield SourceEpisode(Path(path).stem, _resize(read_video(path), size))


def bag_episode(path: str, topic: str, size: int | None) -> Iterator[SourceEpisode]:
    """Episodes from the image topic of a rosbag2 (sqlite3 or mcap), read with ``bag_io``.

    A bag with episode markers (as ``record_sim_bag`` writes them) is split at the markers; one
    with ``/tcc/ground_truth`` for every frame of an episode replays that ground truth too.
    """
    from tcc_ros.bag_io import iter_episode_slices, read_bag

    contents = read_bag(path, topic)
    mode = "marker-topic" if contents.markers else "per-bag"
    for name, frames_slice in iter_episode_slices(contents, mode):
        images = contents.images[frames_slice]
        truth_msgs = [contents.ground_truth.get(im.stamp_ns) for im in images]
        truth = (
            None
            if any(t is None for t in truth_msgs)
            else [{key: getattr(t, key) for key in _TRUTH_FIELDS} for t in truth_msgs]
        )
        frames = _resize(np.stack([im.frame for im in images]), size)
        yield SourceEpisode(name, frames, truth)


_TRUTH_FIELDS = (
    "episode",
    "frame_index",
    "num_frames",
    "phase_id",
    "phase_name",
    "progress",
    "anomaly",
    "anomaly_kind",
)
