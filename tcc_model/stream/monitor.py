"""What every monitor shares: input checks, timing, phase and anomaly tracking, the frame path."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import astuple, replace
from typing import Any

import numpy as np

from tcc_model.preprocess import resize_frames
from tcc_model.stream.config import (
    CALIBRATED_THRESHOLDS,
    EmbeddingEngine,
    FrameResult,
    MonitorConfig,
    Thresholds,
)
from tcc_model.stream.detectors import AnomalyTracker
from tcc_model.stream.features import FrameFeatureCache
from tcc_model.stream.phase import PhaseTracker, phase_probabilities
from tcc_model.stream.references import ReferenceSet, check_bundle_id

_LOG = logging.getLogger("tcc_model.stream")


def default_temperature(references: ReferenceSet) -> float:
    """Emission scale from the references alone: RMS step between consecutive frames x 2.

    Replaced by the calibrated value (median aligned distance on nominal runs) when present.
    """
    steps = np.concatenate(
        [np.sum(np.diff(e, axis=0) ** 2, axis=1) for e in references.embeddings if len(e) > 1]
        or [np.ones(1)]
    )
    return float(max(2.0 * np.sqrt(np.median(steps)), 1e-6))


class MonitorBase:
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
        rest = references.calibration.get("rest_phases")
        if rest and not self.config.rest_phases:  # the phases calibrated as rest
            self.config = replace(self.config, rest_phases=tuple(str(p) for p in rest))
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
        self._phase = PhaseTracker(self.num_phases, self.config.phase_margin)
        self._anomaly = AnomalyTracker(self.thresholds, self.config, references.phase_names)
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
