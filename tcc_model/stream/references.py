"""Reference trajectories: embedded nominal demonstrations, saved in the bundle.

``references.npz`` holds the arrays (embeddings, offsets, phase ids, progress, the phase
classifier), ``references.json`` the metadata and the calibration.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.errors import ReferencesError, safe_text, wrap_errors
from tcc_model.stream.profiles import ProgressProfiles
from tcc_model.utils import atomic_path, write_text_atomic

REFERENCES_NPZ = "references.npz"
REFERENCES_JSON = "references.json"
REFERENCES_FORMAT_VERSION = 1


def _progress_from_key_events(num_frames: int, key_events: Mapping[str, int]) -> np.ndarray:
    from tcc_model.data.format import progress_from_key_events

    return np.asarray(progress_from_key_events(num_frames, dict(key_events)), dtype=np.float64)


def _within_phase_progress(phase_ids: np.ndarray) -> np.ndarray:
    """Fraction ``[0, 1]`` of the way through each frame's contiguous phase segment."""
    n = phase_ids.size
    if n == 0:
        return np.zeros(0)
    starts = np.flatnonzero(np.concatenate([[True], phase_ids[1:] != phase_ids[:-1]]))
    ends = np.concatenate([starts[1:], [n]])
    seg = np.repeat(np.arange(starts.size), ends - starts)
    length = (ends - starts)[seg]
    return np.where(length > 1, (np.arange(n) - starts[seg]) / np.maximum(length - 1, 1), 1.0)


@dataclass
class ReferenceSet:
    """Reference trajectories (embedded nominal demonstrations) and their calibration.

    ``embeddings[r]`` is float32 ``[L_r, D]``; ``phase_ids[r]`` int ``[L_r]`` (``-1`` when
    unlabelled); ``progress[r]`` float ``[L_r]`` in ``[0, 1]`` (from key events);
    ``calibration`` holds the thresholds written by :func:`calibrate` (``temperature``,
    ``distance_threshold``, ``stall_seconds``, ``backwards_threshold``, method and data summary).
    ``phase_weights [K, D * (1 + len(phase_lags))]`` and ``phase_bias [K]`` (optional, from
    :func:`fit_phase_classifier`) are a linear softmax classifier of the phase from the frame's
    embedding and its differences to the embeddings ``phase_lags`` frames earlier
    (:func:`lagged_features`). ``profiles`` (from :func:`calibrate`) are the normal motion,
    direction and appearance change per progress bin that the image detectors compare with.
    """

    embeddings: list[np.ndarray]
    phase_ids: list[np.ndarray]
    phase_names: list[str]
    progress: list[np.ndarray]
    reference_ids: list[str]
    bundle_id: str
    key_events: list[dict[str, int]] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    phase_weights: np.ndarray | None = None
    phase_bias: np.ndarray | None = None
    phase_lags: tuple[int, ...] = ()
    profiles: ProgressProfiles | None = None

    def __post_init__(self) -> None:
        if not self.embeddings:
            raise ReferencesError(
                "references: no reference trajectory given; embed at least one episode"
            )
        n = len(self.embeddings)
        self.embeddings = [np.asarray(e, dtype=np.float32) for e in self.embeddings]
        dim = self.embeddings[0].shape[-1] if self.embeddings[0].ndim == 2 else -1
        for r, emb in enumerate(self.embeddings):
            if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] != dim or dim <= 0:
                raise ReferencesError(
                    f"references: embeddings[{r}] has shape {emb.shape}; every reference must be a "
                    f"non-empty [L, D] array with the same D ({dim})"
                )
            if not np.isfinite(emb).all():
                raise ReferencesError(
                    f"references: embeddings[{r}] holds NaN/inf values; re-embed it"
                )
        self.phase_ids = [np.asarray(p, dtype=np.int64).reshape(-1) for p in self.phase_ids]
        self.progress = [np.asarray(p, dtype=np.float64).reshape(-1) for p in self.progress]
        if not self.reference_ids:
            self.reference_ids = [f"ref{r:03d}" for r in range(n)]
        if not self.key_events:
            self.key_events = [{} for _ in range(n)]
        if not self.fps:
            self.fps = [float("nan")] * n
        for name, values in (
            ("phase_ids", self.phase_ids),
            ("progress", self.progress),
            ("reference_ids", self.reference_ids),
            ("key_events", self.key_events),
            ("fps", self.fps),
        ):
            if len(values) != n:
                raise ReferencesError(
                    f"references: {name} has {len(values)} entries for {n} references"
                )
        for r in range(n):
            length = self.embeddings[r].shape[0]
            if self.phase_ids[r].size != length or self.progress[r].size != length:
                raise ReferencesError(
                    f"references: reference {self.reference_ids[r]!r} has {length} embeddings but "
                    f"{self.phase_ids[r].size} phase ids and {self.progress[r].size} progress"
                )
            if self.phase_ids[r].size and self.phase_ids[r].max() >= len(self.phase_names):
                raise ReferencesError(
                    f"references: reference {self.reference_ids[r]!r} uses phase id "
                    f"{self.phase_ids[r].max()} but only {len(self.phase_names)} phase_names exist"
                )
        if len(set(self.reference_ids)) != n:
            raise ReferencesError("references: reference_ids must be unique")
        if (self.phase_weights is None) != (self.phase_bias is None):
            raise ReferencesError("references: phase_weights and phase_bias go together")
        self.phase_lags = tuple(int(lag) for lag in np.asarray(self.phase_lags).reshape(-1))
        if any(lag < 1 for lag in self.phase_lags):
            raise ReferencesError(
                f"references: phase_lags must be >= 1 frames, got {self.phase_lags}"
            )
        self._check_classifier()

    def _check_classifier(self) -> None:
        """Shape of the optional phase classifier against the phases, D and lags."""
        if self.phase_weights is not None:
            k = len(self.phase_names)
            d = self.embeddings[0].shape[1] * (1 + len(self.phase_lags))
            self.phase_weights = np.asarray(self.phase_weights, dtype=np.float64)
            self.phase_bias = np.asarray(self.phase_bias, dtype=np.float64).reshape(-1)
            if self.phase_weights.shape != (k, d) or self.phase_bias.shape != (k,):
                raise ReferencesError(
                    f"references: phase classifier of shape {self.phase_weights.shape} + "
                    f"{self.phase_bias.shape} does not match {k} phases x {d} features (D x "
                    f"{1 + len(self.phase_lags)} for lags {list(self.phase_lags)}); refit it with "
                    "`python -m tcc_model.reference`"
                )

    @classmethod
    def from_episodes(
        cls,
        embeddings: Sequence[np.ndarray],
        phase_ids: Sequence[Sequence[int] | np.ndarray],
        phase_names: Sequence[str],
        key_events: Sequence[Mapping[str, int]],
        bundle_id: str,
        reference_ids: Sequence[str] | None = None,
        fps: Sequence[float] | float | None = None,
    ) -> ReferenceSet:
        """Build a set from embedded episodes; progress comes from each episode's key events."""
        n = len(embeddings)
        if isinstance(fps, int | float):
            fps = [float(fps)] * n
        progress = [_progress_from_key_events(len(e), k) for e, k in zip(embeddings, key_events)]
        return cls(
            embeddings=list(embeddings),
            phase_ids=[np.asarray(p) for p in phase_ids],
            phase_names=[str(p) for p in phase_names],
            progress=progress,
            reference_ids=list(reference_ids) if reference_ids else [],
            bundle_id=str(bundle_id),
            key_events=[{str(k): int(v) for k, v in ev.items()} for ev in key_events],
            fps=[float(f) for f in fps] if fps is not None else [],
        )

    # -- properties -----------------------------------------------------------------------------
    @property
    def num_references(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return int(self.embeddings[0].shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.array([e.shape[0] for e in self.embeddings], dtype=np.int64)

    @property
    def frame_rate(self) -> float:
        """Median frame rate of the references (``nan`` when unknown)."""
        finite = [f for f in self.fps if math.isfinite(f) and f > 0]
        return float(np.median(finite)) if finite else float("nan")

    # -- persistence ----------------------------------------------------------------------------
    def save(self, bundle_dir: str | Path) -> tuple[Path, Path]:
        """Write ``references.npz`` (arrays) and ``references.json`` (metadata) atomically."""
        bundle_dir = Path(bundle_dir)
        bundle_dir.mkdir(parents=True, exist_ok=True)
        offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        npz_path, json_path = bundle_dir / REFERENCES_NPZ, bundle_dir / REFERENCES_JSON
        with atomic_path(npz_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    embeddings=np.concatenate(self.embeddings).astype(np.float32),
                    offsets=offsets,
                    phase_ids=np.concatenate(self.phase_ids).astype(np.int64),
                    progress=np.concatenate(self.progress).astype(np.float64),
                    **(
                        {
                            "phase_weights": self.phase_weights,
                            "phase_bias": self.phase_bias,
                            "phase_lags": np.asarray(self.phase_lags, dtype=np.int64),
                        }
                        if self.phase_weights is not None
                        else {}
                    ),
                    **(self.profiles.to_arrays() if self.profiles is not None else {}),
                )
        meta = {
            "format_version": REFERENCES_FORMAT_VERSION,
            "bundle_id": self.bundle_id,
            "dim": self.dim,
            "reference_ids": list(self.reference_ids),
            "lengths": self.lengths.tolist(),
            "fps": [None if not math.isfinite(f) else f for f in self.fps],
            "phase_names": list(self.phase_names),
            "key_events": self.key_events,
            "calibration": self.calibration,
        }
        write_text_atomic(json_path, json.dumps(meta, indent=2, default=_json_default) + "\n")
        return npz_path, json_path

    @classmethod
    def load(cls, bundle_dir: str | Path, bundle_id: str | None = None) -> ReferenceSet:
        """Read the set saved in ``bundle_dir``; ``bundle_id`` (if given) must match.

        A missing, truncated or inconsistent ``references.npz`` / ``references.json`` raises
        :class:`~tcc_model.errors.ReferencesError` naming the file and the fix.
        """
        bundle_dir = Path(bundle_dir)
        npz_path, json_path = bundle_dir / REFERENCES_NPZ, bundle_dir / REFERENCES_JSON
        fix = _rebuild_fix(bundle_dir)
        for path in (npz_path, json_path):
            if not path.is_file():
                raise ReferencesError(f"{path}: not found; {fix.replace('rebuild', 'build')}")
        meta = _read_meta(json_path, fix)
        with wrap_errors(ReferencesError, npz_path, fix, extra=(zipfile.BadZipFile,)):
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in _NPZ_ARRAYS}
                classifier = {k: np.asarray(data[k]) for k in _NPZ_CLASSIFIER if k in data.files}
                profiles = ProgressProfiles.from_arrays(
                    {k: np.asarray(data[k]) for k in data.files if k.startswith("profile_")}
                )
            offsets = arrays["offsets"]
            emb = arrays["embeddings"]
            if (
                offsets.ndim != 1
                or offsets.dtype.kind not in "iu"
                or len(offsets) != len(meta["reference_ids"]) + 1
                or offsets[0] != 0
                or offsets[-1] != len(emb)
                or (np.diff(offsets) <= 0).any()
            ):
                raise ReferencesError(
                    f"{npz_path}: offsets do not match the embeddings and the "
                    f"{len(meta['reference_ids'])} reference_ids of {json_path.name}; {fix}"
                )
            spans = list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
            try:
                refs = cls(
                    embeddings=[emb[a:b] for a, b in spans],
                    phase_ids=[arrays["phase_ids"][a:b] for a, b in spans],
                    phase_names=[str(p) for p in meta["phase_names"]],
                    progress=[arrays["progress"][a:b] for a, b in spans],
                    reference_ids=[str(r) for r in meta["reference_ids"]],
                    bundle_id=str(meta["bundle_id"]),
                    key_events=[
                        {str(k): int(v) for k, v in dict(ev).items()}
                        for ev in meta.get("key_events", [])
                    ],
                    fps=[float("nan") if f is None else float(f) for f in meta.get("fps", [])],
                    calibration=dict(meta.get("calibration", {})),
                    profiles=profiles,
                    **classifier,
                )
            except ReferencesError as exc:
                raise ReferencesError(f"{npz_path}: {exc}; {fix}") from exc
        if bundle_id is not None:
            check_bundle_id(refs, bundle_id)
        return refs


_NPZ_ARRAYS = ("embeddings", "offsets", "phase_ids", "progress")
_NPZ_CLASSIFIER = ("phase_weights", "phase_bias", "phase_lags")
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "bundle_id": str,
    "reference_ids": list,
    "phase_names": list,
    "key_events": list,
    "fps": list,
    "calibration": dict,
}


def _read_meta(json_path: Path, fix: str) -> dict[str, Any]:
    """``references.json`` as a dict with its keys type-checked (ReferencesError otherwise)."""
    with wrap_errors(ReferencesError, json_path, fix):
        meta = json.loads(json_path.read_bytes().decode("utf-8"))
    if not isinstance(meta, dict):
        raise ReferencesError(f"{json_path}: not a JSON object; {fix}")
    if meta.get("format_version") != REFERENCES_FORMAT_VERSION:
        raise ReferencesError(
            f"{json_path}: format_version {safe_text(meta.get('format_version'))} is not "
            f"{REFERENCES_FORMAT_VERSION}; {fix}"
        )
    for key, kind in _META_TYPES.items():
        required = key in ("bundle_id", "reference_ids", "phase_names")
        if key not in meta and not required:
            continue
        if key not in meta:
            raise ReferencesError(f"{json_path}: missing key {key!r}; {fix}")
        if not isinstance(meta[key], kind):
            raise ReferencesError(
                f"{json_path}: {key!r} is a {type(meta[key]).__name__}, expected a "
                f"{kind.__name__ if isinstance(kind, type) else kind}; {fix}"
            )
    return meta


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def check_bundle_id(references: ReferenceSet, bundle_id: str) -> None:
    """Raise ``ValueError`` when ``references`` were embedded with another bundle."""
    if str(references.bundle_id) != str(bundle_id):
        raise ReferencesError(
            f"references were built with bundle {references.bundle_id!r} but the engine is bundle "
            f"{bundle_id!r}; rebuild them with `python -m tcc_model.reference --bundle ...`"
        )


def reference_metadata(bundle_dir: str | Path) -> dict[str, Any]:
    """The checked metadata of ``bundle_dir/references.json`` (calibration included)."""
    json_path = Path(bundle_dir) / REFERENCES_JSON
    fix = _rebuild_fix(bundle_dir)
    if not json_path.is_file():
        raise ReferencesError(f"{json_path}: not found; {fix.replace('rebuild', 'build')}")
    return _read_meta(json_path, fix)


def _rebuild_fix(bundle_dir: str | Path) -> str:
    return f"rebuild them with `python -m tcc_model.reference --bundle {bundle_dir} --dataset NAME`"
