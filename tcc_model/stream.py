"""Streaming monitor: live progress, phase, alignment and anomalies from one frame at a time.

The core the robot runs (no ROS): every camera frame is encoded once, its causal context comes
from :class:`FrameFeatureCache`, and the embedding is aligned online to stored reference
trajectories (:class:`ReferenceSet`, saved in the bundle as ``references.npz`` +
``references.json``).

Alignment (:class:`ProgressMonitor`) is an HMM forward filter over reference frames, one per
reference, vectorised over references:

* states = reference frames; a left-to-right transition kernel (stay / advance / short skips,
  small backward steps);
* emission ``exp(-d^2 / (2 tau^2))`` from the squared embedding distance, ``tau`` calibrated on
  nominal data;
* the posterior lives in a band of ``window`` frames re-centred on its mode every frame, so the
  cost per frame is ``O(R * window * D)``, independent of the reference length;
* references are mixed by their (exponentially forgotten) evidence.

Progress is the posterior mean of the reference progress (ground truth piecewise linear between key
events), its uncertainty the posterior std. The phase is the argmax, with hysteresis, of the
references' linear phase classifier applied to the frame's embedding and its differences to a few
earlier frames (:func:`lagged_features`; fitted on labelled normal videos by
:func:`fit_phase_classifier`) or of the posterior mass per phase: the classifier when
:func:`calibrate` measured it clearly more accurate on the calibration episodes. Anomalies:
``off_trajectory`` (distance to the aligned band above a conformal threshold for m of the last n
frames), ``stalled`` (no progress for longer than any nominal run stalled, outside rest phases),
``backwards`` (progress fell back from its peak by more than any nominal run did),
``phase_skipped`` (the committed phase jumped over a phase whose posterior probability stayed low:
the evidence is one minus that phase's peak probability since the last phase change, thresholded
like the other statistics).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tcc_model.preprocess import context_indices, resize_frames
from tcc_model.utils import atomic_path, write_text_atomic

REFERENCES_NPZ = "references.npz"
REFERENCES_JSON = "references.json"
REFERENCES_FORMAT_VERSION = 1
CALIBRATED_THRESHOLDS = (
    "distance_threshold",
    "stall_seconds",
    "backwards_threshold",
    "skip_threshold",
)  # the calibration keys read by the monitors, in MonitorConfig order
PHASE_SOURCES = ("auto", "classifier", "alignment")
"""Where the phase comes from: the references' linear phase classifier applied to the frame's
embedding and its recent differences (``classifier``), the posterior mass of the aligned
reference frames' labels (``alignment``), or the source the calibration chose
(``auto``: :func:`choose_phase_source`; the classifier when the references have one but no
recorded choice)."""
ANOMALY_KINDS = ("off_trajectory", "stalled", "backwards", "phase_skipped")
_LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Reference trajectories
# --------------------------------------------------------------------------------------------
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
    (:func:`lagged_features`).
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

    def __post_init__(self) -> None:
        if not self.embeddings:
            raise ValueError(
                "references: no reference trajectory given; embed at least one episode"
            )
        n = len(self.embeddings)
        self.embeddings = [np.asarray(e, dtype=np.float32) for e in self.embeddings]
        dim = self.embeddings[0].shape[-1] if self.embeddings[0].ndim == 2 else -1
        for r, emb in enumerate(self.embeddings):
            if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] != dim or dim <= 0:
                raise ValueError(
                    f"references: embeddings[{r}] has shape {emb.shape}; every reference must be a "
                    f"non-empty [L, D] array with the same D ({dim})"
                )
            if not np.isfinite(emb).all():
                raise ValueError(f"references: embeddings[{r}] holds NaN/inf values; re-embed it")
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
                raise ValueError(f"references: {name} has {len(values)} entries for {n} references")
        for r in range(n):
            length = self.embeddings[r].shape[0]
            if self.phase_ids[r].size != length or self.progress[r].size != length:
                raise ValueError(
                    f"references: reference {self.reference_ids[r]!r} has {length} embeddings but "
                    f"{self.phase_ids[r].size} phase ids and {self.progress[r].size} progress"
                )
            if self.phase_ids[r].size and self.phase_ids[r].max() >= len(self.phase_names):
                raise ValueError(
                    f"references: reference {self.reference_ids[r]!r} uses phase id "
                    f"{self.phase_ids[r].max()} but only {len(self.phase_names)} phase_names exist"
                )
        if len(set(self.reference_ids)) != n:
            raise ValueError("references: reference_ids must be unique")
        if (self.phase_weights is None) != (self.phase_bias is None):
            raise ValueError("references: phase_weights and phase_bias go together")
        self.phase_lags = tuple(int(lag) for lag in np.asarray(self.phase_lags).reshape(-1))
        if any(lag < 1 for lag in self.phase_lags):
            raise ValueError(f"references: phase_lags must be >= 1 frames, got {self.phase_lags}")
        if self.phase_weights is not None:
            k = len(self.phase_names)
            d = self.embeddings[0].shape[1] * (1 + len(self.phase_lags))
            self.phase_weights = np.asarray(self.phase_weights, dtype=np.float64)
            self.phase_bias = np.asarray(self.phase_bias, dtype=np.float64).reshape(-1)
            if self.phase_weights.shape != (k, d) or self.phase_bias.shape != (k,):
                raise ValueError(
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
        """Read the set saved in ``bundle_dir``; ``bundle_id`` (if given) must match."""
        bundle_dir = Path(bundle_dir)
        npz_path, json_path = bundle_dir / REFERENCES_NPZ, bundle_dir / REFERENCES_JSON
        for path in (npz_path, json_path):
            if not path.is_file():
                raise ValueError(
                    f"{path}: not found; build references with "
                    f"`python -m tcc_model.reference --bundle {bundle_dir} --dataset NAME`"
                )
        try:
            meta = json.loads(json_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{json_path}: invalid JSON ({exc}); rebuild the references") from exc
        if meta.get("format_version") != REFERENCES_FORMAT_VERSION:
            raise ValueError(
                f"{json_path}: format_version {meta.get('format_version')!r} is not "
                f"{REFERENCES_FORMAT_VERSION}; rebuild the references"
            )
        with np.load(npz_path, allow_pickle=False) as data:
            emb, offsets = data["embeddings"], data["offsets"]
            phase_ids, progress = data["phase_ids"], data["progress"]
            classifier = {
                k: data[k] for k in ("phase_weights", "phase_bias", "phase_lags") if k in data.files
            }
        if offsets[-1] != emb.shape[0] or len(offsets) != len(meta["reference_ids"]) + 1:
            raise ValueError(f"{npz_path}: offsets do not match the embeddings; rebuild them")
        spans = list(zip(offsets[:-1], offsets[1:]))
        refs = cls(
            embeddings=[emb[a:b] for a, b in spans],
            phase_ids=[phase_ids[a:b] for a, b in spans],
            phase_names=list(meta["phase_names"]),
            progress=[progress[a:b] for a, b in spans],
            reference_ids=list(meta["reference_ids"]),
            bundle_id=str(meta["bundle_id"]),
            key_events=[dict(k) for k in meta.get("key_events", [])],
            fps=[float("nan") if f is None else float(f) for f in meta.get("fps", [])],
            calibration=dict(meta.get("calibration", {})),
            **classifier,
        )
        if bundle_id is not None:
            check_bundle_id(refs, bundle_id)
        return refs


DEFAULT_PHASE_LAGS = (1, 3, 6, 10)
"""Frames back of the embedding differences the phase classifier sees (which way the arm moves)."""
DEFAULT_PHASE_REGULARIZATION = 0.1


def lagged_features(embeddings: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """``[N, D * (1 + len(lags))]``: each embedding and its differences to ``lag`` frames earlier.

    ``embeddings [N, D]`` are consecutive frames, oldest first; before the first frame the first
    embedding stands in (an episode's start), so a stream's last row depends only on the last
    ``max(lags) + 1`` frames.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim == 1:
        emb = emb[None]
    parts = [emb]
    for lag in lags:
        earlier = np.concatenate([np.repeat(emb[:1], min(lag, len(emb)), 0), emb[:-lag]])
        parts.append(emb - earlier[: len(emb)])
    return np.concatenate(parts, axis=1)


def fit_phase_classifier(
    references: ReferenceSet,
    regularization: float = DEFAULT_PHASE_REGULARIZATION,
    lags: Sequence[int] = DEFAULT_PHASE_LAGS,
    extra_episodes: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> float:
    """Fit a multinomial logistic regression of the phase on :func:`lagged_features`.

    Trained on the reference frames plus ``extra_episodes`` (``(embeddings [N, D], phase_ids
    [N])`` of more labelled normal videos: the classifier gains from more labels than the
    alignment needs references). Stores ``phase_weights`` / ``phase_bias`` / ``phase_lags`` in
    ``references`` (plain arrays, saved with the set) and returns its accuracy on the training
    frames. ``regularization`` is sklearn's ``C``. Frames without a label (``-1``) are left out;
    every phase needs labelled frames.
    """
    from sklearn.linear_model import LogisticRegression

    lags = tuple(int(lag) for lag in lags)
    if any(lag < 1 for lag in lags):
        raise ValueError(f"fit_phase_classifier: lags must be >= 1 frames, got {lags}")
    videos = list(zip(references.embeddings, references.phase_ids)) + list(extra_episodes)
    for emb, ids in videos:
        if np.shape(emb) != (len(ids), references.dim):
            raise ValueError(
                f"fit_phase_classifier: an episode of embeddings {np.shape(emb)} with {len(ids)} "
                f"phase ids; need [N, {references.dim}] and N ids"
            )
    x = np.concatenate([lagged_features(e, lags) for e, _ in videos])
    y = np.concatenate([np.asarray(ids, dtype=np.int64) for _, ids in videos])
    x, y = x[y >= 0], y[y >= 0]
    k = len(references.phase_names)
    missing = sorted(set(range(k)) - set(np.unique(y).tolist()))
    if missing:
        names = ", ".join(references.phase_names[i] for i in missing)
        raise ValueError(
            f"fit_phase_classifier: no labelled reference frame of phase(s) {names}; add "
            "reference episodes that show every phase"
        )
    if k == 1:  # one phase: probability 1 whatever the frame
        weights, bias = np.zeros((1, x.shape[1])), np.zeros(1)
    else:
        model = LogisticRegression(C=regularization, max_iter=4000).fit(x, y)
        weights, bias = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
        if k == 2:  # sklearn's binary model: logit of class 1 against class 0
            weights, bias = np.vstack([np.zeros_like(weights), weights]), np.r_[0.0, bias]
    references.phase_weights, references.phase_bias = weights, bias
    references.phase_lags = lags
    return float(np.mean(np.argmax(x @ weights.T + bias, 1) == y))


def phase_probabilities(references: ReferenceSet, recent: np.ndarray) -> np.ndarray:
    """Softmax phase probabilities ``[K]`` of the latest frame under the references' classifier.

    ``recent [T, D]``: the episode's latest embeddings, oldest first (the last
    ``max(phase_lags) + 1`` suffice; fewer at the start of an episode); ``[D]`` is one frame.
    """
    if references.phase_weights is None or references.phase_bias is None:
        raise ValueError("the references have no phase classifier (fit_phase_classifier)")
    recent = np.asarray(recent, dtype=np.float64)
    recent = recent.reshape(-1, recent.shape[-1])
    last = recent[-1]
    if references.phase_lags:  # the last row of lagged_features(recent), without the others
        earlier = recent[np.maximum(len(recent) - 1 - np.asarray(references.phase_lags), 0)]
        last = np.concatenate([last, (last - earlier).ravel()])
    logits = references.phase_weights @ last + references.phase_bias
    logits -= logits.max()
    probs = np.exp(logits)
    return probs / probs.sum()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def check_bundle_id(references: ReferenceSet, bundle_id: str) -> None:
    """Raise ``ValueError`` when ``references`` were embedded with another bundle."""
    if str(references.bundle_id) != str(bundle_id):
        raise ValueError(
            f"references were built with bundle {references.bundle_id!r} but the engine is bundle "
            f"{bundle_id!r}; rebuild them with `python -m tcc_model.reference --bundle ...`"
        )


# --------------------------------------------------------------------------------------------
# Per-frame feature cache (causal context)
# --------------------------------------------------------------------------------------------
class FrameFeatureCache:
    """Ring buffer of the last ``context_stride * (k - 1) + 1`` per-frame features.

    Every camera frame is encoded once; :meth:`context` returns the ``k`` features the head needs
    for the newest frame (``context_indices`` semantics: oldest first, clamped at frame 0).
    """

    def __init__(self, context_frames: int, context_stride: int) -> None:
        if context_frames < 1 or context_stride < 1:
            raise ValueError(
                f"context_frames ({context_frames}) and context_stride ({context_stride}) "
                "must be >= 1"
            )
        self.context_frames = int(context_frames)
        self.context_stride = int(context_stride)
        self.capacity = self.context_stride * (self.context_frames - 1) + 1
        self._buffer: np.ndarray | None = None
        self.frames_seen = 0

    def reset(self) -> None:
        """Forget all frames (new episode); the buffer memory is kept."""
        self.frames_seen = 0

    def __len__(self) -> int:
        return min(self.frames_seen, self.capacity)

    def push(self, features: np.ndarray) -> None:
        """Append the features ``[C, h, w]`` (any shape) of the newest frame."""
        features = np.asarray(features)
        if self._buffer is None or self._buffer.shape[1:] != features.shape:
            if self.frames_seen and self._buffer is not None:
                raise ValueError(
                    f"features shape {features.shape} differs from the cached "
                    f"{self._buffer.shape[1:]}; call reset() when the encoder changes"
                )
            self._buffer = np.empty((self.capacity, *features.shape), dtype=features.dtype)
        self._buffer[self.frames_seen % self.capacity] = features
        self.frames_seen += 1

    def context(self) -> np.ndarray:
        """Features ``[k, ...]`` of the newest frame's causal context (oldest first)."""
        if self.frames_seen == 0 or self._buffer is None:
            raise ValueError("FrameFeatureCache.context(): push() a frame first")
        t = self.frames_seen - 1
        idx = context_indices(t, self.context_frames, self.context_stride)
        return self._buffer[idx % self.capacity]


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------
# Anomaly scores are each detector's statistic divided by its calibrated threshold (the largest
# ratio wins), so one fixed threshold applies to every kind.
ANOMALY_SCORE_THRESHOLD = 1.0


@dataclass(frozen=True)
class MonitorConfig:
    """Settings of the streaming monitor. ``None`` thresholds come from the calibration."""

    window: int = 64
    window_back: int = 16
    transition: tuple[float, ...] = (0.005, 0.02, 0.30, 0.45, 0.15, 0.05, 0.025)
    transition_min_offset: int = -2
    start: str = "beginning"
    start_frames: int = 4
    evidence_decay: float = 0.95
    temperature: float | None = None
    phase_margin: float = 0.1
    phase_source: str = "auto"
    distance_threshold: float | None = None
    off_trajectory_m: int = 3
    off_trajectory_n: int = 5
    stall_seconds: float | None = None
    stall_min_advance: float = 0.01
    rest_phases: tuple[str, ...] = ()
    end_progress: float = 0.97
    backwards_threshold: float | None = None
    skip_threshold: float | None = None
    skip_hold_frames: int = 5
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.window < 4 or not 0 <= self.window_back < self.window:
            raise ValueError(
                f"MonitorConfig: need window >= 4 and 0 <= window_back < window, got "
                f"window={self.window}, window_back={self.window_back}"
            )
        kernel = np.asarray(self.transition, dtype=np.float64)
        if kernel.ndim != 1 or kernel.size == 0 or (kernel < 0).any() or kernel.sum() <= 0:
            raise ValueError("MonitorConfig.transition must be non-negative probabilities")
        if not self.transition_min_offset <= 0 < self.transition_min_offset + kernel.size:
            raise ValueError("MonitorConfig.transition must include the 'stay' offset 0")
        if self.start not in ("beginning", "anywhere"):
            raise ValueError(
                f"MonitorConfig.start must be 'beginning' or 'anywhere', got {self.start!r}"
            )
        if not 1 <= self.off_trajectory_m <= self.off_trajectory_n:
            raise ValueError("MonitorConfig: need 1 <= off_trajectory_m <= off_trajectory_n")
        if not 0 < self.evidence_decay <= 1:
            raise ValueError("MonitorConfig.evidence_decay must be in (0, 1]")
        if self.phase_source not in PHASE_SOURCES:
            raise ValueError(
                f"MonitorConfig.phase_source must be one of {PHASE_SOURCES}, "
                f"got {self.phase_source!r}"
            )


@dataclass
class FrameResult:
    """What the monitor says about one frame (``nan`` / ``-1`` fields when ``valid`` is False)."""

    frame_index: int
    valid: bool
    progress: float = float("nan")
    progress_std: float = float("nan")
    reference_id: str = ""
    reference_frame: int = -1
    reference_length: int = 0
    phase_id: int = -1
    phase_name: str = ""
    phase_confidence: float = float("nan")
    phase_progress: float = float("nan")
    distance: float = float("nan")
    anomaly_score: float = float("nan")
    anomaly: bool = False
    anomaly_kind: str = ""
    anomaly_description: str = ""
    frames_since_onset: int = -1
    latency_s: float = 0.0
    stamp: float = float("nan")
    invalid_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """Resolved anomaly thresholds (``inf`` disables a detector)."""

    distance: float
    stall_seconds: float
    backwards: float
    skip: float


class EmbeddingEngine(Protocol):
    """The part of an inference engine the monitor uses."""

    bundle_id: str
    preprocess: Any

    def encode_frames(self, frames: np.ndarray) -> Any: ...

    def embed(self, context_features: np.ndarray) -> Any: ...


# --------------------------------------------------------------------------------------------
# Shared trackers: phase with hysteresis, anomaly rules
# --------------------------------------------------------------------------------------------
class _PhaseTracker:
    """Argmax of phase probabilities with hysteresis; reports the phases jumped over.

    When the committed phase jumps over phases, the skip evidence is ``1 - peak``, the largest
    over the jumped phases, where ``peak`` is a phase's highest probability since the last change.
    """

    def __init__(self, num_phases: int, margin: float) -> None:
        self.num_phases, self.margin = num_phases, margin
        self.reset()

    def reset(self) -> None:
        self.current = -1
        self.peak = np.zeros(self.num_phases)

    def update(self, probs: np.ndarray) -> tuple[int, float, list[int], float]:
        """``(phase, confidence, jumped-over phases, skip evidence in [0, 1])``."""
        if self.num_phases == 0:
            return -1, float("nan"), [], 0.0
        best = int(np.argmax(probs))
        np.maximum(self.peak, probs, out=self.peak)
        jumped: list[int] = []
        evidence = 0.0
        if self.current < 0:
            self.current = best
        elif best != self.current and probs[best] >= probs[self.current] + self.margin:
            jumped = list(range(self.current + 1, best))
            if jumped:
                evidence = float(np.max(1.0 - self.peak[jumped]))
            self.current = best
            self.peak[:] = probs
        return self.current, float(probs[self.current]), jumped, evidence


class _AnomalyTracker:
    """Stateful anomaly rules fed with (time, progress, distance, phase) per valid frame."""

    def __init__(
        self, thresholds: Thresholds, config: MonitorConfig, phase_names: Sequence[str]
    ) -> None:
        self.thresholds, self.config, self.phase_names = thresholds, config, list(phase_names)
        self.rest = {i for i, n in enumerate(phase_names) if n in set(config.rest_phases)}
        self.reset()

    def reset(self) -> None:
        self.distances: deque[float] = deque(maxlen=self.config.off_trajectory_n)
        self.anchor_progress = float("nan")
        self.anchor_time = 0.0
        self.peak = -math.inf
        self.skip_countdown = 0
        self.skip_evidence = 0.0
        self.skip_text = ""
        self.onset_frame = -1
        self.statistics = {"distance": 0.0, "stall_seconds": 0.0, "backwards": 0.0, "skip": 0.0}

    def update(
        self,
        frame_index: int,
        t: float,
        progress: float,
        distance: float,
        phase_id: int,
        jumped: list[int],
        skip_evidence: float,
        previous_phase: int,
    ) -> tuple[float, str, str, int]:
        cfg, thr = self.config, self.thresholds
        # off_trajectory: the m-th largest of the last n distances.
        self.distances.append(distance)
        m = cfg.off_trajectory_m
        dist_stat = sorted(self.distances)[-m] if len(self.distances) >= m else 0.0
        # stalled: time since progress last moved by stall_min_advance.
        resting = phase_id in self.rest or progress >= cfg.end_progress
        if (
            resting
            or not math.isfinite(self.anchor_progress)
            or abs(progress - self.anchor_progress) > cfg.stall_min_advance
        ):
            self.anchor_progress, self.anchor_time = progress, t
        stall_s = max(0.0, t - self.anchor_time)
        # backwards: fall from the running peak.
        self.peak = max(self.peak, progress)
        back = self.peak - progress
        if jumped:  # a skip's evidence is held for skip_hold_frames frames
            self.skip_countdown = cfg.skip_hold_frames
            self.skip_evidence = skip_evidence
            names = ", ".join(self._name(p) for p in jumped)
            self.skip_text = (
                f"phase(s) {names} skipped: {self._name(previous_phase)} -> {self._name(phase_id)} "
                f"(peak probability {1.0 - skip_evidence:.2f}, limit {1.0 - thr.skip:.2f})"
            )
        skip = self.skip_evidence if self.skip_countdown > 0 else 0.0
        self.statistics = {
            "distance": dist_stat,
            "stall_seconds": stall_s,
            "backwards": back,
            "skip": skip,
        }

        ratios = {
            "off_trajectory": _ratio(dist_stat, thr.distance),
            "stalled": _ratio(stall_s, thr.stall_seconds),
            "backwards": _ratio(back, thr.backwards),
            "phase_skipped": _ratio(skip, thr.skip),
        }
        self.skip_countdown = max(0, self.skip_countdown - 1)
        kind = max(ratios, key=ratios.get)
        score = ratios[kind]
        if score <= ANOMALY_SCORE_THRESHOLD:
            self.onset_frame = -1
            return score, "", "", -1
        if self.onset_frame < 0:
            self.onset_frame = frame_index
        descriptions = {
            "off_trajectory": f"distance to the reference {dist_stat:.3g} above {thr.distance:.3g} "
            f"in {m} of the last {cfg.off_trajectory_n} frames",
            "stalled": f"progress stuck near {progress:.2f} for {stall_s:.1f} s "
            f"(limit {thr.stall_seconds:.1f} s) in phase {self._name(phase_id)}",
            "backwards": f"progress fell from {self.peak:.2f} to {progress:.2f} "
            f"(limit {thr.backwards:.2f})",
            "phase_skipped": self.skip_text,
        }
        return score, kind, descriptions[kind], frame_index - self.onset_frame

    def _name(self, phase_id: int) -> str:
        if 0 <= phase_id < len(self.phase_names):
            return self.phase_names[phase_id]
        return str(phase_id)


def _ratio(value: float, threshold: float) -> float:
    if not math.isfinite(threshold):
        return 0.0
    return value / threshold if threshold > 0 else (math.inf if value > 0 else 0.0)


# --------------------------------------------------------------------------------------------
# Monitors
# --------------------------------------------------------------------------------------------
def default_temperature(references: ReferenceSet) -> float:
    """Emission scale from the references alone: RMS step between consecutive frames x 2.

    Replaced by the calibrated value (median aligned distance on nominal runs) when present.
    """
    steps = np.concatenate(
        [np.sum(np.diff(e, axis=0) ** 2, axis=1) for e in references.embeddings if len(e) > 1]
        or [np.ones(1)]
    )
    return float(max(2.0 * np.sqrt(np.median(steps)), 1e-6))


class _MonitorBase:
    """Input validation, timing, phase and anomaly tracking shared by the monitors."""

    def __init__(
        self,
        references: ReferenceSet,
        config: MonitorConfig | None = None,
        engine: EmbeddingEngine | None = None,
    ) -> None:
        if not isinstance(references, ReferenceSet):
            raise ValueError(f"references must be a ReferenceSet, got {type(references).__name__}")
        self.references = references
        self.config = config or MonitorConfig()
        self.engine = engine
        self.feature_cache: FrameFeatureCache | None = None
        if engine is not None:
            check_bundle_id(references, engine.bundle_id)
            pre = engine.preprocess
            self.feature_cache = FrameFeatureCache(pre.context_frames, pre.context_stride)
        cal = references.calibration
        inf = math.inf
        self.thresholds = Thresholds(
            distance=_pick(self.config.distance_threshold, cal.get("distance_threshold"), inf),
            stall_seconds=_pick(self.config.stall_seconds, cal.get("stall_seconds"), inf),
            backwards=_pick(self.config.backwards_threshold, cal.get("backwards_threshold"), inf),
            skip=_pick(self.config.skip_threshold, cal.get("skip_threshold"), inf),
        )
        configured = (
            self.config.distance_threshold,
            self.config.stall_seconds,
            self.config.backwards_threshold,
            self.config.skip_threshold,
        )
        if all(v is None for v in configured) and not any(
            map(math.isfinite, astuple(self.thresholds))
        ):
            _LOG.warning(
                "references are not calibrated and no thresholds are configured: anomaly "
                "detection is off; run `python -m tcc_model.reference` or set MonitorConfig"
            )
        missing = [
            key
            for key, value in zip(CALIBRATED_THRESHOLDS, configured)
            if cal and value is None and key not in cal
        ]
        if missing:
            _LOG.warning(
                "the references' calibration has no %s (made by an older version): those "
                "detectors are off; run `python -m tcc_model.reference` again to calibrate them",
                ", ".join(missing),
            )
        fps = self.config.fps or references.frame_rate
        self.fps = fps if math.isfinite(fps) and fps > 0 else 10.0
        self.num_phases = len(references.phase_names)
        source = self.config.phase_source
        if source == "classifier" and references.phase_weights is None:
            raise ValueError(
                "MonitorConfig.phase_source='classifier' but the references have no phase "
                "classifier; rebuild them with `python -m tcc_model.reference` or use 'auto'"
            )
        if source == "auto":  # the calibration's measured choice, else the classifier if any
            source = references.calibration.get("phase_source", "classifier")
        self._use_classifier = source == "classifier" and references.phase_weights is not None
        # The classifier's input window: this frame and the lagged ones (valid frames only).
        self._recent: deque[np.ndarray] = deque(maxlen=1 + max(references.phase_lags, default=0))
        self._phase = _PhaseTracker(self.num_phases, self.config.phase_margin)
        self._anomaly = _AnomalyTracker(self.thresholds, self.config, references.phase_names)
        self.frame_index = 0
        self.invalid_frames = 0

    # -- public API ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new episode."""
        self.frame_index = 0
        self.invalid_frames = 0
        self._recent.clear()
        self._phase.reset()
        self._anomaly.reset()
        if self.feature_cache is not None:
            self.feature_cache.reset()
        self._reset_alignment()

    @property
    def statistics(self) -> dict[str, float]:
        """Raw detector statistics of the last valid frame (used by calibration)."""
        return dict(self._anomaly.statistics)

    def process_frame(self, frame: np.ndarray, stamp: float | None = None) -> FrameResult:
        """Encode one RGB uint8 ``[H, W, 3]`` frame (once), embed it with its cached context."""
        if self.engine is None or self.feature_cache is None:
            raise ValueError("process_frame needs an engine: pass engine=load_bundle(...)")
        start = time.perf_counter()
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be RGB uint8 [H, W, 3], got {frame.dtype} {tuple(frame.shape)}"
            )
        frame = resize_frames(frame, self.engine.preprocess.image_size)
        features = _to_numpy(self.engine.encode_frames(frame[None]))[0]
        self.feature_cache.push(features)
        emb = _to_numpy(self.engine.embed(self.feature_cache.context()[None]))[0]
        return self.process_embedding(emb, stamp, _start=start)

    def process_embedding(
        self, embedding: np.ndarray, stamp: float | None = None, *, _start: float | None = None
    ) -> FrameResult:
        """Align one embedding ``[D]`` (or ``[1, D]``); invalid input gives ``valid=False``."""
        start = time.perf_counter() if _start is None else _start
        index = self.frame_index
        self.frame_index += 1
        t = float(stamp) if stamp is not None else index / self.fps
        emb = np.asarray(embedding, dtype=np.float32)
        if emb.ndim == 2 and emb.shape[0] == 1:
            emb = emb[0]
        reason = ""
        if emb.ndim != 1 or emb.shape[0] != self.references.dim:
            reason = f"embedding shape {tuple(emb.shape)} != ({self.references.dim},)"
        elif not np.isfinite(emb).all():
            reason = "embedding holds NaN/inf"
        if reason:
            self.invalid_frames += 1
            return FrameResult(
                frame_index=index,
                valid=False,
                stamp=t,
                invalid_reason=reason,
                latency_s=time.perf_counter() - start,
            )
        out = self._align(emb)
        phase_probs = out.pop("phase_probs")
        if self._use_classifier:
            self._recent.append(emb)
            phase_probs = phase_probabilities(self.references, np.stack(self._recent))
        previous = self._phase.current
        phase_id, confidence, jumped, skip_evidence = self._phase.update(phase_probs)
        phase_progress = out.pop("phase_progress_fn")(phase_id)
        score, kind, description, since = self._anomaly.update(
            index, t, out["progress"], out["distance"], phase_id, jumped, skip_evidence, previous
        )
        return FrameResult(
            frame_index=index,
            valid=True,
            phase_id=phase_id,
            phase_name=self.references.phase_names[phase_id] if phase_id >= 0 else "",
            phase_confidence=confidence,
            phase_progress=phase_progress,
            anomaly_score=score,
            anomaly=bool(kind),
            anomaly_kind=kind,
            anomaly_description=description,
            frames_since_onset=since,
            latency_s=time.perf_counter() - start,
            stamp=t,
            **out,
        )

    def run(
        self, embeddings: np.ndarray, stamps: Sequence[float] | None = None
    ) -> list[FrameResult]:
        """Reset, then feed ``embeddings [N, D]`` one by one (offline replay of an episode)."""
        self.reset()
        stamps_list = list(stamps) if stamps is not None else [None] * len(embeddings)
        return [self.process_embedding(e, s) for e, s in zip(embeddings, stamps_list)]

    # -- to implement ---------------------------------------------------------------------------
    def _reset_alignment(self) -> None:
        raise NotImplementedError

    def _align(self, emb: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError


def _pick(*values: float | None) -> float:
    for v in values:
        if v is not None:
            return float(v)
    return math.inf


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class ProgressMonitor(_MonitorBase):
    """Causal HMM alignment of a live stream to the references, ``O(window)`` per frame.

    See the module docstring for the model. ``process_embedding`` / ``process_frame`` return a
    :class:`FrameResult`; ``reset()`` starts a new episode.
    """

    def __init__(
        self,
        references: ReferenceSet,
        config: MonitorConfig | None = None,
        engine: EmbeddingEngine | None = None,
    ) -> None:
        super().__init__(references, config, engine)
        cfg = self.config
        refs = references
        self.temperature = _pick(cfg.temperature, refs.calibration.get("temperature"), None)
        if not math.isfinite(self.temperature):
            self.temperature = default_temperature(refs)
        self._inv_two_tau2 = 0.5 / self.temperature**2
        num = refs.num_references
        self._lengths = refs.lengths
        # Each reference is followed by `window` padding rows (zero embedding, infinite squared
        # norm => zero emission), so a band never needs clipping or a validity mask.
        pad = cfg.window
        blocks = self._lengths + pad
        self._offsets = np.concatenate([[0], np.cumsum(blocks)[:-1]]).astype(np.int64)

        def padded(arrays: Sequence[np.ndarray], fill: Any) -> np.ndarray:
            return np.concatenate(
                [
                    np.concatenate([a, np.repeat(a[-1:] if fill is None else fill, pad, 0)])
                    for a in arrays
                ]
            )

        # Distances use |e|^2 - 2 e.x + |x|^2 on embeddings centred on the reference mean
        # (translation-invariant; float32 resolution of a distance ~3e-4 x the centred norm).
        dim = refs.dim
        self._center = np.mean([e.mean(axis=0, dtype=np.float64) for e in refs.embeddings], axis=0)
        centred = [(e - self._center).astype(np.float32) for e in refs.embeddings]
        self._emb = padded(centred, np.zeros((1, dim), np.float32))
        sqnorm = [np.einsum("nd,nd->n", e, e, dtype=np.float64) for e in centred]
        self._sqnorm = padded(sqnorm, np.array([np.inf]))
        self._progress = padded(refs.progress, None)
        phase_bins = [np.where(p < 0, len(refs.phase_names), p) for p in refs.phase_ids]
        self._phase_bins = padded(phase_bins, None)
        self._phase_frac = padded([_within_phase_progress(p) for p in refs.phase_ids], None)
        self._window = cfg.window
        self._arange = np.arange(cfg.window)
        kernel = np.asarray(cfg.transition, dtype=np.float64)
        self._kernel = kernel / kernel.sum()
        self._kernel_offsets = cfg.transition_min_offset + np.arange(kernel.size)
        self._max_start = np.maximum(self._lengths - cfg.window, 0)
        self._rows = np.arange(num)
        # Banded transition matrix from band position i to extended position i + o - min_offset.
        span = kernel.size
        self._transition = np.zeros((cfg.window, cfg.window + span - 1))
        for o_index in range(span):
            self._transition[self._arange, self._arange + o_index] = self._kernel[o_index]
        self._spread = np.zeros((num, 3 * cfg.window + span - 1))
        self._reset_alignment()

    def _reset_alignment(self) -> None:
        num = self.references.num_references
        self._start = np.zeros(num, dtype=np.int64)
        self._alpha = np.zeros((num, self._window))
        self._alpha[:, : max(1, self.config.start_frames)] = 1.0
        self._alpha *= self._valid_mask(self._start)
        self._alpha /= self._alpha.sum(axis=1, keepdims=True)
        self._evidence = np.zeros(num)
        self._started = False

    def _valid_mask(self, start: np.ndarray) -> np.ndarray:
        return (start[:, None] + self._arange[None, :]) < self._lengths[:, None]

    def _relocalise(self, emb: np.ndarray) -> None:
        """Centre every band on the global nearest neighbour (``start='anywhere'``, first frame)."""
        x = (emb - self._center).astype(np.float32)
        d2 = self._sqnorm - 2.0 * (self._emb @ x)
        for r in range(self.references.num_references):
            a, n = self._offsets[r], self._lengths[r]
            best = int(np.argmin(d2[a : a + n]))
            self._start[r] = min(max(best - self._window // 2, 0), self._max_start[r])
        self._alpha = self._valid_mask(self._start).astype(np.float64)
        self._alpha /= self._alpha.sum(axis=1, keepdims=True)

    def _predict(self) -> None:
        """Apply the transition kernel and move each band to its posterior mode."""
        mode = self._start + np.argmax(self._alpha, axis=1)
        new_start = np.minimum(np.maximum(mode - self.config.window_back, 0), self._max_start)
        shift = new_start - self._start  # |shift| < window
        # Convolve in old band coordinates (one small GEMM), then read the new band out of a
        # zero-padded buffer: pred[r, i] = sum_o k[o] * alpha[r, i + shift_r - o].
        width = self._transition.shape[1]
        self._spread[:, self._window : self._window + width] = self._alpha @ self._transition
        first = shift - self.config.transition_min_offset + self._window
        self._alpha = self._spread[self._rows[:, None], first[:, None] + self._arange[None, :]]
        self._start = new_start

    def _align(self, emb: np.ndarray) -> dict[str, Any]:
        if not self._started and self.config.start == "anywhere":
            self._relocalise(emb)
        if self._started:
            self._predict()
        self._started = True
        local = self._start[:, None] + self._arange[None, :]
        gidx = self._offsets[:, None] + local  # [R, W] rows of the padded references
        x = (emb - self._center).astype(np.float32)
        dots = (self._emb[gidx] @ x).astype(np.float64)
        d2 = np.maximum(self._sqnorm[gidx] - 2.0 * dots + float(x @ x), 0.0)
        loglik = d2 * -self._inv_two_tau2
        peak = loglik.max(axis=1, keepdims=True)
        post = (self._alpha + 1e-9 / self._window) * np.exp(loglik - peak)
        mass = post.sum(axis=1, keepdims=True)
        post /= mass
        self._alpha = post
        decay = self.config.evidence_decay
        self._evidence = decay * self._evidence + (np.log(mass[:, 0]) + peak[:, 0])
        weights = np.exp(self._evidence - self._evidence.max())
        weights /= weights.sum()

        prog = self._progress[gidx]
        mean_r = np.sum(post * prog, axis=1)
        second_r = np.sum(post * prog**2, axis=1)
        progress = float(weights @ mean_r)
        variance = float(weights @ second_r) - progress**2
        best = int(np.argmax(weights))
        mode = int(np.argmax(post[best]))
        joint = post * weights[:, None]
        phases = self._phase_bins[gidx]
        phase_probs = np.bincount(
            phases.ravel(), weights=joint.ravel(), minlength=self.num_phases + 1
        )[: self.num_phases]
        phase_probs /= max(phase_probs.sum(), 1e-12)
        frac = self._phase_frac[gidx]

        def phase_progress(phase_id: int) -> float:
            if phase_id < 0:
                return float("nan")
            in_phase = joint * (phases == phase_id)
            total = in_phase.sum()
            return float(np.sum(in_phase * frac) / total) if total > 0 else float("nan")

        return {
            "progress": min(max(progress, 0.0), 1.0),
            "progress_std": float(math.sqrt(max(variance, 0.0))),
            "reference_id": self.references.reference_ids[best],
            "reference_frame": int(local[best, mode]),
            "reference_length": int(self._lengths[best]),
            "distance": float(np.sqrt(d2.min())),
            "phase_probs": phase_probs,
            "phase_progress_fn": phase_progress,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Filter state (band starts, posteriors, evidence) as arrays."""
        return {
            "start": self._start.copy(),
            "alpha": self._alpha.copy(),
            "evidence": self._evidence.copy(),
            "started": np.array(self._started),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` (same references and config)."""
        if np.shape(state["alpha"]) != self._alpha.shape:
            raise ValueError(
                f"state alpha shape {np.shape(state['alpha'])} != {self._alpha.shape}: "
                "the state was saved with other references or another window"
            )
        self._start = np.asarray(state["start"], dtype=np.int64).copy()
        self._alpha = np.asarray(state["alpha"], dtype=np.float64).copy()
        self._evidence = np.asarray(state["evidence"], dtype=np.float64).copy()
        self._started = bool(state["started"])


# Public alias: the aligner is the monitor.
StreamingAligner = ProgressMonitor


class NearestNeighborMonitor(_MonitorBase):
    """Baseline: per-frame nearest neighbour over all reference frames, no temporal model.

    Same interface and anomaly rules as :class:`ProgressMonitor`; cost ``O(sum L_r * D)``.
    """

    def __init__(
        self,
        references: ReferenceSet,
        config: MonitorConfig | None = None,
        engine: EmbeddingEngine | None = None,
    ) -> None:
        super().__init__(references, config, engine)
        self._emb = np.concatenate(references.embeddings).astype(np.float32)
        self._sqnorm = np.einsum("nd,nd->n", self._emb, self._emb)
        self._progress = np.concatenate(references.progress)
        self._phase_ids = np.concatenate(references.phase_ids)
        self._phase_frac = np.concatenate([_within_phase_progress(p) for p in references.phase_ids])
        owner = np.repeat(np.arange(references.num_references), references.lengths)
        self._owner = owner
        self._local = (
            np.arange(owner.size) - np.concatenate([[0], np.cumsum(references.lengths)])[owner]
        )

    def _reset_alignment(self) -> None:
        pass

    def _align(self, emb: np.ndarray) -> dict[str, Any]:
        d2 = self._sqnorm - 2.0 * (self._emb @ emb) + emb @ emb
        i = int(np.argmin(d2))
        r = int(self._owner[i])
        probs = np.zeros(self.num_phases)
        if self.num_phases and self._phase_ids[i] >= 0:
            probs[self._phase_ids[i]] = 1.0
        frac = float(self._phase_frac[i])
        return {
            "progress": float(self._progress[i]),
            "progress_std": 0.0,
            "reference_id": self.references.reference_ids[r],
            "reference_frame": int(self._local[i]),
            "reference_length": int(self.references.lengths[r]),
            "distance": float(np.sqrt(max(d2[i], 0.0))),
            "phase_probs": probs,
            "phase_progress_fn": lambda phase_id: frac if phase_id >= 0 else float("nan"),
        }


# --------------------------------------------------------------------------------------------
# Calibration on nominal runs
# --------------------------------------------------------------------------------------------
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


def choose_phase_source(classifier: Sequence[float], alignment: Sequence[float]) -> str:
    """``'classifier'`` when its per-episode phase accuracy gain over the alignment is more than
    one standard error above zero, else ``'alignment'`` (whose phase agrees with the progress).

    ``classifier[i]`` / ``alignment[i]``: the two sources' accuracies on calibration episode i.
    """
    gain = np.asarray(classifier, dtype=np.float64) - np.asarray(alignment, dtype=np.float64)
    if gain.size < 2:
        return "classifier" if gain.size and gain[0] > 0 else "alignment"
    stderr = float(gain.std(ddof=1)) / math.sqrt(gain.size)
    return "classifier" if float(gain.mean()) > stderr else "alignment"


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
        "off_trajectory_m": base.off_trajectory_m,
        "off_trajectory_n": base.off_trajectory_n,
        "aligned_distance_quantiles": {
            q: float(np.quantile(distances, float(q))) for q in ("0.5", "0.9", "0.99")
        },
        "episode_maxima": {k: [float(v) for v in vals] for k, vals in per_episode.items()},
    }
    references.calibration = calibration
    return calibration
