"""The on-disk dataset format: per-episode videos with JSON labels, split folders and a manifest.

Layout (see ``docs/DATASET_FORMAT.md``)::

    ROOT/
      manifest.json   {"name", "format_version": 1, "phase_names", "splits", "generator"}
      train/ <episode>.mp4 <episode>.json   (or <episode>/ 000000.png ... + <episode>.json)
      val/   ...
      test/  ...

Frames are RGB uint8 ``[N, H, W, 3]``. Every user-facing problem raises :class:`DatasetError`
(a ``ValueError``) naming the file and the fix. Files are written to a temporary name and renamed,
so an interrupted writer never leaves a half-written episode under its final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.data.labels import (  # EpisodeLabels and the label functions: re-exported
    FORMAT_VERSION,
    EpisodeLabels,
    key_events_from_phase_ids,  # noqa: F401
    progress_from_key_events,  # noqa: F401
)
from tcc_model.data.video import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS  # re-exported
from tcc_model.data.video import VIDEO_EXTENSIONS as VIDEO_EXTENSIONS  # re-exported
from tcc_model.data.video import (
    read_video,
    validate_frames,
    write_frame_folder,
    write_video,
)
from tcc_model.reporting import jsonable as _jsonable
from tcc_model.utils import write_text_atomic

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")
ANOMALY_TYPES = ("drop", "miss", "stall", "reversed")

from tcc_model.errors import DatasetError  # noqa: E402  (re-exported)


@dataclass
class Episode:
    """One episode on disk: its name, split, label file and parsed labels."""

    name: str
    split: str
    label_path: Path
    labels: EpisodeLabels

    @property
    def video_path(self) -> Path:
        """The video file or frame folder named by the labels, next to the label file."""
        return Path(self.label_path).parent / self.labels.video

    @property
    def num_frames(self) -> int:
        return self.labels.num_frames

    def load_frames(self) -> np.ndarray:
        """Decode the episode's video to RGB uint8 ``[N, H, W, 3]``."""
        return read_video(self.video_path)


def write_episode(
    split_dir: str | os.PathLike,
    name: str,
    frames: np.ndarray,
    labels: EpisodeLabels,
    video_format: str = "mp4",
) -> Path:
    """Write ``<name>.mp4`` (or a ``<name>/`` png folder) and ``<name>.json``; return the JSON path.

    ``labels.video`` and ``labels.num_frames`` are set from ``name``/``frames``; the labels are
    validated first. The JSON is written last, so an episode exists only once it is complete.
    """
    split_dir = Path(split_dir)
    if not name or Path(name).name != name or name.startswith("."):
        raise DatasetError(f"episode name {name!r} must be a plain file name")
    frames = validate_frames(frames, f"{split_dir / name}")
    if video_format not in ("mp4", "png"):
        raise DatasetError(f"video_format must be 'mp4' or 'png', got {video_format!r}")
    video = f"{name}.mp4" if video_format == "mp4" else name
    labels = replace(labels, video=video, num_frames=len(frames))
    problems = labels.validate()
    if problems:
        where = split_dir / f"{name}.json"
        raise DatasetError(f"{where}: invalid labels: " + "; ".join(problems))
    if video_format == "mp4":
        write_video(split_dir / video, frames, labels.fps)
    else:
        write_frame_folder(split_dir / video, frames)
    label_path = split_dir / f"{name}.json"
    write_text_atomic(label_path, labels.to_json())
    return label_path


def write_manifest(root: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write ``ROOT/manifest.json`` atomically (``format_version`` filled in); return its path."""
    data = {"format_version": FORMAT_VERSION, **_jsonable(dict(manifest))}
    if "name" not in data:
        raise DatasetError(f"{root}: manifest needs a 'name'")
    path = Path(root) / MANIFEST_NAME
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    return path


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Read ``ROOT/manifest.json``; a missing or broken manifest raises :class:`DatasetError`."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(
            f"{path}: manifest not found; is {root} a dataset root (with train/ val/ test/)?"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid or truncated JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: manifest must be a JSON object")
    return data


def list_splits(root: str | os.PathLike) -> list[str]:
    """Split folders under ``root`` that hold at least one label JSON (train/val/test first)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        d.name
        for d in root.iterdir()
        if d.is_dir() and any(p.name != MANIFEST_NAME for p in d.glob("*.json"))
    ]
    order = {s: i for i, s in enumerate(SPLITS)}
    return sorted(found, key=lambda s: (order.get(s, len(order)), s))


def load_split(root: str | os.PathLike, split: str) -> list[Episode]:
    """Episodes of ``ROOT/<split>/`` sorted by name (labels parsed, videos not decoded).

    A missing split folder, an empty split, a broken label file or a label whose video is missing
    raises :class:`DatasetError`.
    """
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        available = list_splits(root)
        raise DatasetError(
            f"{split_dir}: split {split!r} not found; available splits: {available or 'none'}"
        )
    episodes = []
    for label_path in sorted(split_dir.glob("*.json")):
        labels = EpisodeLabels.load(label_path)
        problems = labels.validate()
        if problems:
            raise DatasetError(
                f"{label_path}: "
                + "; ".join(problems)
                + f" (run `python -m tcc_model.data.check {root}`)"
            )
        episode = Episode(label_path.stem, split, label_path, labels)
        if not episode.video_path.exists():
            raise DatasetError(f"{label_path}: video {episode.video_path} not found")
        episodes.append(episode)
    if not episodes:
        raise DatasetError(f"{split_dir}: split {split!r} holds no <episode>.json label files")
    return episodes
