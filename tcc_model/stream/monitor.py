"""What every monitor shares: input checks, timing, phase and anomaly tracking, the frame path."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tcc_model.errors import ConfigError
from tcc_model.preprocess import resize_frames
from tcc_model.stream.config import (
    DEFAULT_DETECTORS,
    DETECTORS,
    RUNTIME_SETTINGS,
    EmbeddingEngine,
    FrameResult,
    MonitorConfig,
    Thresholds,
    config_with,
)
from tcc_model.stream.detectors import AnomalyTracker
from tcc_model.stream.features import FrameFeatureCache
from tcc_model.stream.phase import PhaseTracker, phase_probabilities
from tcc_model.stream.profiles import SignalState, thumbnail
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
        self.config = _with_calibrated_lists(config or MonitorConfig(), references.calibration)
        self.engine = engine
        self.feature_cache: FrameFeatureCache | None = None
        if engine is not None:
            check_bundle_id(references, engine.bundle_id)
            pre = engine.preprocess
            self.feature_cache = FrameFeatureCache(pre.context_frames, pre.context_stride)
        self.thresholds, off = _resolve_thresholds(self.config, references.calibration)
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
        self._anomaly = AnomalyTracker(
            self.thresholds, self.config, references.phase_names, references.profiles, off
        )
        self._signals = SignalState(self.config.motion_lag, self.config.direction_lag)
        self.frame_index = 0
        self.invalid_frames = 0
        unset = {n for n, d in DETECTORS.items() if getattr(self.config, d.threshold) is None}
        _warn_about_detectors(self._anomaly.states, unset)

    # -- public API ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new episode."""
        self.frame_index = 0
        self.invalid_frames = 0
        self._recent.clear()
        self._phase.reset()
        self._anomaly.reset()
        self._signals.reset()
        if self.feature_cache is not None:
            self.feature_cache.reset()
        self._reset_alignment()

    def update_settings(self, **overrides: object) -> MonitorConfig:
        """Change runtime-safe settings (:data:`RUNTIME_SETTINGS`); they apply from the next frame.

        Accepts the detector thresholds (``None``: back to the calibrated value, ``inf``: that
        detector off), ``detectors``, ``rest_phases``, ``temperature``, ``phase_margin``,
        ``evidence_decay``, ``window_back``, ``end_progress``, ``stall_min_advance``,
        ``still_drift``, ``still_pixel_weight``, ``skip_hold_frames``, the m-of-n window sizes
        and ``direction_frames``; strings are converted as in :func:`monitor_config`. The
        episode's state is kept. An unknown key, a setting that needs a new monitor, or a bad
        value raises :class:`ConfigError` and changes nothing. Returns the new config.
        """
        fixed = sorted(k for k in overrides if k in MonitorConfig.__dataclass_fields__)
        fixed = [k for k in fixed if k not in RUNTIME_SETTINGS]
        if fixed:
            raise ConfigError(
                f"monitor setting update: {', '.join(fixed)} cannot change while running "
                f"(build a new monitor); runtime settings: {', '.join(RUNTIME_SETTINGS)}"
            )
        config = config_with(self.config, overrides, "monitor setting update")
        thresholds, off = _resolve_thresholds(config, self.references.calibration)
        self._settings_changed(config)  # may raise ConfigError before anything changed
        self.config, self.thresholds = config, thresholds
        self._phase.margin = config.phase_margin
        self._anomaly.reconfigure(thresholds, config, off)
        return config

    def _settings_changed(self, config: MonitorConfig) -> None:
        """Hook: a monitor's own derived state for ``config`` (raise ConfigError to refuse)."""

    @property
    def statistics(self) -> dict[str, float]:
        """Raw detector statistics of the last valid frame (used by calibration)."""
        return dict(self._anomaly.statistics)

    @property
    def detector_states(self) -> dict[str, str]:
        """Per enabled detector ``on (threshold ...)``, ``off: why`` or ``inactive: why``."""
        return self._anomaly.states

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
        return self.process_embedding(emb, stamp, pixels=thumbnail(frame), _start=start)

    def process_embedding(
        self,
        embedding: np.ndarray,
        stamp: float | None = None,
        pixels: np.ndarray | None = None,
        *,
        _start: float | None = None,
    ) -> FrameResult:
        """Align one embedding ``[D]`` (or ``[1, D]``); invalid input gives ``valid=False``.

        ``pixels``: the frame's :func:`~tcc_model.stream.profiles.thumbnail` (what
        :meth:`process_frame` passes), needed by the stillness and appearance detectors.
        """
        start = time.perf_counter() if _start is None else _start
        index = self.frame_index
        self.frame_index += 1
        t = float(stamp) if stamp is not None else index / self.fps
        emb, reason = self._checked(embedding)
        if reason:
            self.invalid_frames += 1
            return FrameResult(
                frame_index=index,
                valid=False,
                stamp=t,
                invalid_reason=reason,
                latency_s=time.perf_counter() - start,
            )
        return self._estimate(emb, index, t, pixels, start)

    def _estimate(
        self, emb: np.ndarray, index: int, t: float, pixels: np.ndarray | None, start: float
    ) -> FrameResult:
        """The valid frame ``index`` at time ``t``: alignment, phase, anomaly detectors."""
        out = self._align(emb)
        phase_probs = out.pop("phase_probs")
        if self._use_classifier:
            self._recent.append(emb)
            phase_probs = phase_probabilities(self.references, np.stack(self._recent))
        previous = self._phase.current
        phase_id, confidence, jumped, skip_evidence = self._phase.update(phase_probs)
        phase_progress = out.pop("phase_progress_fn")(phase_id)
        signals = self._signals.update(emb, pixels)
        score, kind, detector, description, since = self._anomaly.update(
            index,
            t,
            out["progress"],
            out["distance"],
            phase_id,
            jumped,
            skip_evidence,
            previous,
            signals,
        )
        return FrameResult(
            frame_index=index,
            valid=True,
            phase_id=phase_id,
            phase_name=self.references.phase_names[phase_id] if phase_id >= 0 else "",
            phase_confidence=confidence,
            phase_probabilities=tuple(float(p) for p in phase_probs),
            phase_progress=phase_progress,
            anomaly_score=score,
            anomaly=bool(kind),
            anomaly_kind=kind,
            detector=detector,
            anomaly_description=description,
            frames_since_onset=since,
            latency_s=time.perf_counter() - start,
            stamp=t,
            **out,
        )

    def _checked(self, embedding: np.ndarray) -> tuple[np.ndarray, str]:
        """``(embedding [D] float32, why it is invalid or "")``."""
        emb = np.asarray(embedding, dtype=np.float32)
        if emb.ndim == 2 and emb.shape[0] == 1:
            emb = emb[0]
        if emb.ndim != 1 or emb.shape[0] != self.references.dim:
            return emb, f"embedding shape {tuple(emb.shape)} != ({self.references.dim},)"
        if not np.isfinite(emb).all():
            return emb, "embedding holds NaN/inf"
        return emb, ""

    def run(
        self,
        embeddings: np.ndarray,
        stamps: Sequence[float] | None = None,
        pixels: np.ndarray | None = None,
        statistics: list[dict[str, float]] | None = None,
    ) -> list[FrameResult]:
        """Reset, then feed ``embeddings [N, D]`` one by one (offline replay of an episode).

        ``pixels [N, 768]``: the frames' thumbnails (:func:`~tcc_model.stream.profiles.thumbnails`).
        ``statistics``: a list to append each frame's raw detector statistics to (benchmarks).
        """
        self.reset()
        n = len(embeddings)
        stamps_list = list(stamps) if stamps is not None else [None] * n
        pixel_list = list(pixels) if pixels is not None else [None] * n
        results = []
        for e, s, p in zip(embeddings, stamps_list, pixel_list):
            results.append(self.process_embedding(e, s, p))
            if statistics is not None:
                statistics.append(self.statistics)
        return results

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


def _with_calibrated_lists(config: MonitorConfig, calibration: Mapping[str, Any]) -> MonitorConfig:
    """Rest phases and detectors from the calibration where the config keeps the defaults."""
    changes: dict[str, Any] = {}
    if calibration.get("rest_phases") and not config.rest_phases:
        changes["rest_phases"] = tuple(str(p) for p in calibration["rest_phases"])
    if calibration.get("detectors") and config.detectors == DEFAULT_DETECTORS:
        changes["detectors"] = tuple(str(d) for d in calibration["detectors"])
    return replace(config, **changes) if changes else config


def _resolve_thresholds(
    config: MonitorConfig, calibration: Mapping[str, Any]
) -> tuple[Thresholds, dict[str, str]]:
    """Threshold per detector (config, else calibration, else inf) and why detectors are off."""
    values = {
        name: _pick(getattr(config, spec.threshold), calibration.get(spec.threshold), math.inf)
        for name, spec in DETECTORS.items()
    }
    off = {
        name: str(entry.get("reason", "calibration switched it off"))
        for name, entry in dict(calibration.get("detector_states", {})).items()
        if isinstance(entry, Mapping)
        and entry.get("state") == "off"
        and getattr(config, DETECTORS[name].threshold) is None
    }
    return Thresholds(values), off


def _warn_about_detectors(states: Mapping[str, str], unset: set[str]) -> None:
    """Log every enabled detector left without a threshold (never switched off silently).

    Detectors whose threshold the config sets (``inf`` included) are the caller's choice.
    """
    silent = {
        k: v for k, v in states.items() if k in unset and not v.startswith(("on", "inactive"))
    }
    if not silent:
        return
    if all(not v.startswith(("on", "inactive")) for v in states.values()):
        _LOG.warning(
            "anomaly detection is off: %s; run `python -m tcc_model.reference` or set the "
            "MonitorConfig thresholds",
            "; ".join(f"{k} {v}" for k, v in silent.items()),
        )
    else:
        _LOG.warning(
            "anomaly detectors that cannot fire: %s",
            "; ".join(f"{k} {v}" for k, v in silent.items()),
        )
