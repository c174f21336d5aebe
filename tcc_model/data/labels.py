"""Per-episode labels of the dataset format (``<episode>.json``) and the label arithmetic.

:class:`EpisodeLabels` is re-exported by :mod:`tcc_model.data.format`, which reads and writes
whole datasets.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.errors import DatasetError
from tcc_model.reporting import jsonable as _jsonable

#: version of the dataset format (labels files and manifests)
FORMAT_VERSION = 1


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
