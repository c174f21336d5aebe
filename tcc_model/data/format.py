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
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

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

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")
ANOMALY_TYPES = ("drop", "miss", "stall", "reversed")


from tcc_model.errors import DatasetError  # noqa: E402  (re-exported)


def _dump_json(obj: Mapping[str, Any]) -> str:
    """One top-level key per line, each value compact: readable and diff-friendly."""
    lines = [f"  {json.dumps(k)}: {json.dumps(_jsonable(v))}" for k, v in obj.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass
class EpisodeLabels:
    """Labels of one episode, stored as ``<episode>.json`` next to its video.

    ``phase_ids`` is ``None`` for unlabelled videos (then ``phase_names`` and ``key_events`` are
    empty); consumers check :attr:`has_phase_labels`. ``key_events`` maps an event name to the first
    frame of each phase after the first, in phase order (a phase never reached has no event).
    """

    video: str
    fps: float
    num_frames: int
    phase_names: list[str] = field(default_factory=list)
    phase_ids: list[int] | None = None
    key_events: dict[str, int] = field(default_factory=dict)
    anomaly: str | None = None
    anomaly_mask: list[int] | None = None
    metadata: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def has_phase_labels(self) -> bool:
        """Whether per-frame phase labels are present."""
        return self.phase_ids is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict in the documented key order."""
        return {
            "format_version": int(self.format_version),
            "video": self.video,
            "fps": float(self.fps),
            "num_frames": int(self.num_frames),
            "phase_names": list(self.phase_names),
            "phase_ids": None if self.phase_ids is None else [int(p) for p in self.phase_ids],
            "key_events": {str(k): int(v) for k, v in self.key_events.items()},
            "anomaly": self.anomaly,
            "anomaly_mask": (
                None if self.anomaly_mask is None else [int(m) for m in self.anomaly_mask]
            ),
            "metadata": _jsonable(self.metadata),
        }

    def to_json(self) -> str:
        """Serialise to the label JSON text."""
        return _dump_json(self.to_dict())

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: str | os.PathLike = "<labels>"
    ) -> EpisodeLabels:
        """Build from a parsed label dict; missing or mistyped keys raise :class:`DatasetError`."""
        if not isinstance(data, Mapping):
            raise DatasetError(f"{source}: label JSON must be an object, got {type(data).__name__}")
        missing = [k for k in ("video", "fps", "num_frames") if k not in data]
        if missing:
            raise DatasetError(
                f"{source}: label JSON lacks required key(s) {missing}; "
                "see docs/DATASET_FORMAT.md for the schema"
            )
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise DatasetError(
                f"{source}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            fps = float(data["fps"])
            num_frames = data["num_frames"]
            if not _is_int(num_frames):
                raise TypeError("num_frames must be an integer")
            phase_ids = data.get("phase_ids")
            anomaly_mask = data.get("anomaly_mask")
            key_events = data.get("key_events") or {}
            if not isinstance(key_events, Mapping):
                raise TypeError("key_events must be an object {name: frame}")
            labels = cls(
                video=str(data["video"]),
                fps=fps,
                num_frames=int(num_frames),
                phase_names=[str(n) for n in (data.get("phase_names") or [])],
                phase_ids=None if phase_ids is None else list(phase_ids),
                key_events=dict(key_events),
                anomaly=data.get("anomaly"),
                anomaly_mask=None if anomaly_mask is None else list(anomaly_mask),
                metadata=dict(data.get("metadata") or {}),
                format_version=int(version),
            )
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{source}: malformed label JSON ({exc})") from exc
        return labels

    @classmethod
    def from_json(cls, text: str, source: str | os.PathLike = "<labels>") -> EpisodeLabels:
        """Parse label JSON text; invalid/truncated JSON raises :class:`DatasetError` naming it."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{source}: invalid or truncated JSON ({exc.msg} at line {exc.lineno}); "
                "regenerate or fix the file"
            ) from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EpisodeLabels:
        """Read and parse a label file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read label file ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{path}: not a UTF-8 text file (byte {exc.start}); a label file is JSON, "
                "rewrite or delete it"
            ) from exc
        return cls.from_json(text, source=path)

    def validate(self) -> list[str]:
        """Internal consistency problems (empty when valid); the video itself is not opened."""
        problems: list[str] = []
        n = self.num_frames
        if n < 1:
            problems.append(f"num_frames must be >= 1, got {n}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            problems.append(f"fps must be a positive number, got {self.fps}")
        if not self.video or Path(self.video).name != self.video:
            problems.append(
                f"video must be a file/folder name next to the JSON, got {self.video!r}"
            )
        if len(set(self.phase_names)) != len(self.phase_names):
            problems.append(f"phase_names has duplicates: {self.phase_names}")
        if self.phase_ids is not None:
            if not self.phase_names:
                problems.append("phase_ids given but phase_names is empty")
            if len(self.phase_ids) != n:
                problems.append(
                    f"phase_ids has {len(self.phase_ids)} entries but num_frames is {n}"
                )
            num_phases = len(self.phase_names)
            bad = sorted(
                {p for p in self.phase_ids if not _is_int(p) or not 0 <= p < num_phases}, key=str
            )
            if bad:
                problems.append(
                    f"unknown phase id(s) {bad[:5]}: valid ids are 0..{len(self.phase_names) - 1} "
                    f"({len(self.phase_names)} phase_names)"
                )
        for name, frame in self.key_events.items():
            if not _is_int(frame) or not 0 <= frame < n:
                problems.append(f"key event {name!r} at frame {frame} is outside 0..{n - 1}")
        if self.anomaly is not None and not isinstance(self.anomaly, str):
            problems.append(f"anomaly must be null or a string, got {self.anomaly!r}")
        if self.anomaly_mask is not None:
            if len(self.anomaly_mask) != n:
                problems.append(
                    f"anomaly_mask has {len(self.anomaly_mask)} entries but num_frames is {n}"
                )
            if any(m not in (0, 1) for m in self.anomaly_mask):
                problems.append("anomaly_mask entries must be 0 or 1")
        if not isinstance(self.metadata, Mapping):
            problems.append("metadata must be an object")
        return problems

    def phase_id_array(self) -> np.ndarray:
        """Phase ids as int64 ``[num_frames]``; ``-1`` everywhere when unlabelled."""
        if self.phase_ids is None:
            return np.full(self.num_frames, -1, dtype=np.int64)
        return np.asarray(self.phase_ids, dtype=np.int64)


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


def key_events_from_phase_ids(
    phase_ids: Sequence[int] | np.ndarray, phase_names: Sequence[str]
) -> dict[str, int]:
    """Key events = first frame of each phase after the first, named after the phase it starts.

    Phases that never occur get no event; the result is ordered as the phases.
    """
    ids = np.asarray(phase_ids, dtype=np.int64)
    events: dict[str, int] = {}
    for k, name in enumerate(phase_names):
        if k == 0:
            continue
        hits = np.flatnonzero(ids == k)
        if hits.size:
            events[str(name)] = int(hits[0])
    return events


def progress_from_key_events(
    num_frames: int, key_event_frames: Sequence[int] | Mapping[str, int] | np.ndarray
) -> np.ndarray:
    """Ground-truth progress in [0, 1] per frame, float64 ``[num_frames]``.

    Piecewise linear through ``(0, 0)``, ``(e_k, k / K)`` for the ``K - 1`` key events ``e_k`` and
    ``(num_frames - 1, 1)``: key events are equally spaced in progress units. Key events must be
    non-decreasing and inside ``0..num_frames-1``. A one-frame video has progress ``[0]``.
    """
    if isinstance(key_event_frames, Mapping):
        key_event_frames = list(key_event_frames.values())
    events = np.asarray(key_event_frames, dtype=np.int64).reshape(-1)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames == 1:
        return np.zeros(1)
    if events.size and (events.min() < 0 or events.max() > num_frames - 1):
        raise ValueError(
            f"key_event_frames {events.tolist()} must lie in 0..{num_frames - 1} (num_frames - 1)"
        )
    if np.any(np.diff(events) < 0):
        raise ValueError(f"key_event_frames {events.tolist()} must be non-decreasing")
    knots_x = np.concatenate([[0], events, [num_frames - 1]]).astype(np.float64)
    knots_y = np.linspace(0.0, 1.0, events.size + 2)
    t = np.arange(num_frames, dtype=np.float64)
    # Segment of each frame: the last knot at or before it (ties resolve to the later knot).
    seg = np.clip(np.searchsorted(knots_x, t, side="right") - 1, 0, knots_x.size - 2)
    x0, x1 = knots_x[seg], knots_x[seg + 1]
    y0, y1 = knots_y[seg], knots_y[seg + 1]
    width = x1 - x0
    frac = np.divide(t - x0, width, out=np.zeros_like(t), where=width > 0)
    progress = np.clip(np.where(width > 0, y0 + frac * (y1 - y0), y1), 0.0, 1.0)
    progress[0], progress[-1] = 0.0, 1.0  # the contract, also when an event sits on an end frame
    return progress
