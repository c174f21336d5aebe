"""Phase: a linear classifier on the embedding and its recent differences, and the committed phase.

:func:`fit_phase_classifier` fits a multinomial logistic regression of the phase on
:func:`lagged_features` (stored in the references); :class:`PhaseTracker` commits the argmax of the
phase probabilities with hysteresis and reports phases jumped over (the skip detector's evidence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tcc_model.stream.references import ReferenceSet

PHASE_SOURCES = ("auto", "classifier", "alignment")
"""Where the phase comes from: the references' linear phase classifier applied to the frame's
embedding and its recent differences (``classifier``), the posterior mass of the aligned
reference frames' labels (``alignment``), or the source the calibration chose
(``auto``: :func:`choose_phase_source`; the classifier when the references have one but no
recorded choice)."""

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


class PhaseTracker:
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
