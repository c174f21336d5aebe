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
:func:`calibrate` measured it clearly more accurate on the calibration episodes.

Anomalies (:data:`DETECTORS`, switched by ``MonitorConfig.detectors``; the result names the
detector that fired): ``off_trajectory`` (distance to the aligned band), ``stillness`` (feature and
image motion far below the normal motion at that progress, accumulated: a stall),
``appearance`` (the scene changed since the episode's first frame more than normal runs at that
progress: drops, misses, spills) and ``progress_backwards`` (the aligned progress fell from its
peak) by default; ``direction`` (the embedding moves against the normal direction at that
progress), ``phase_skip`` (the committed phase jumped over a phase whose probability stayed low)
and ``progress_stall`` on request. The image detectors compare with per-progress normal profiles
(:mod:`~tcc_model.stream.profiles`) fitted by :func:`calibrate`; thresholds come from the
per-episode maxima of normal episodes (:mod:`~tcc_model.stream.thresholds`: a robust tail per
detector by default), and a detector calibration cannot support is reported off with the reason
(``ProgressMonitor.detector_states``), never dropped silently. A running monitor takes new
runtime settings with ``update_settings`` (:data:`RUNTIME_SETTINGS`).

Modules: :mod:`~tcc_model.stream.references` (reference I/O), :mod:`~tcc_model.stream.phase`
(phase classifier and tracker), :mod:`~tcc_model.stream.features` (feature cache),
:mod:`~tcc_model.stream.config` (settings and results; :func:`monitor_config` is the one source
of settings), :mod:`~tcc_model.stream.profiles` (per-frame signals, normal profiles),
:mod:`~tcc_model.stream.detectors` (anomaly rules), :mod:`~tcc_model.stream.monitor` (shared frame
path), :mod:`~tcc_model.stream.hmm` and :mod:`~tcc_model.stream.nearest` (the two monitors),
:mod:`~tcc_model.stream.calibration` and :mod:`~tcc_model.stream.thresholds`.
"""

from tcc_model.stream.calibration import (
    DEFAULT_TEMPERATURE_FACTOR,
    PHASE_ERROR_WEIGHT,
    TEMPERATURE_FACTORS,
    calibrate,
)
from tcc_model.stream.config import (
    ANOMALY_KINDS,
    ANOMALY_SCORE_THRESHOLD,
    CALIBRATED_SETTINGS,
    CALIBRATED_THRESHOLDS,
    DEFAULT_DETECTORS,
    DETECTORS,
    RUNTIME_SETTINGS,
    DetectorSpec,
    EmbeddingEngine,
    FrameResult,
    MonitorConfig,
    Thresholds,
    config_with,
    monitor_config,
)
from tcc_model.stream.detectors import AnomalyTracker
from tcc_model.stream.features import FrameFeatureCache
from tcc_model.stream.hmm import ProgressMonitor
from tcc_model.stream.monitor import MonitorBase, default_temperature
from tcc_model.stream.nearest import NearestNeighborMonitor
from tcc_model.stream.phase import (
    DEFAULT_PHASE_LAGS,
    DEFAULT_PHASE_REGULARIZATION,
    PHASE_SOURCES,
    PhaseTracker,
    choose_phase_source,
    fit_phase_classifier,
    lagged_features,
    phase_probabilities,
)
from tcc_model.stream.profiles import (
    ProgressProfiles,
    SignalState,
    episode_signals,
    fit_profiles,
    thumbnail,
    thumbnails,
)
from tcc_model.stream.references import (
    REFERENCES_FORMAT_VERSION,
    REFERENCES_JSON,
    REFERENCES_NPZ,
    ReferenceSet,
    check_bundle_id,
    reference_metadata,
)
from tcc_model.stream.thresholds import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    allowed_exceedances,
    conformal_guard,
    conformal_upper,
    episodes_needed,
    tail_upper,
    thresholds_from_maxima,
)

__all__ = [
    "ANOMALY_KINDS",
    "ANOMALY_SCORE_THRESHOLD",
    "CALIBRATED_SETTINGS",
    "CALIBRATED_THRESHOLDS",
    "CALIBRATION_METHODS",
    "DEFAULT_CALIBRATION_METHOD",
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "DetectorSpec",
    "ProgressProfiles",
    "SignalState",
    "episode_signals",
    "episodes_needed",
    "fit_profiles",
    "tail_upper",
    "thresholds_from_maxima",
    "thumbnail",
    "thumbnails",
    "DEFAULT_PHASE_LAGS",
    "DEFAULT_PHASE_REGULARIZATION",
    "DEFAULT_TEMPERATURE_FACTOR",
    "PHASE_ERROR_WEIGHT",
    "PHASE_SOURCES",
    "REFERENCES_FORMAT_VERSION",
    "REFERENCES_JSON",
    "REFERENCES_NPZ",
    "RUNTIME_SETTINGS",
    "TEMPERATURE_FACTORS",
    "AnomalyTracker",
    "EmbeddingEngine",
    "FrameFeatureCache",
    "FrameResult",
    "MonitorBase",
    "MonitorConfig",
    "NearestNeighborMonitor",
    "PhaseTracker",
    "ProgressMonitor",
    "ReferenceSet",
    "Thresholds",
    "calibrate",
    "check_bundle_id",
    "choose_phase_source",
    "allowed_exceedances",
    "conformal_guard",
    "conformal_upper",
    "config_with",
    "default_temperature",
    "fit_phase_classifier",
    "lagged_features",
    "monitor_config",
    "phase_probabilities",
    "reference_metadata",
]
