"""Evaluation protocols of TCC (Dwibedi et al. 2019) on per-frame embeddings.

Pure numpy/scipy/sklearn. Every function takes one embedding array ``[T_i, D]`` per video (and,
for the supervised probes, one integer phase-label array ``[T_i]`` per video) and follows the
reference implementation's protocol exactly:

* :func:`kendalls_tau`: all ordered pairs ``i != j``, strided nearest neighbours, scipy tau-b, NaN
  pairs dropped, mean.
* :func:`phase_classification`: ``SVC(decision_function_shape='ovo')`` with sklearn defaults,
  trained on the *first* ``max(1, int(f * N))`` training videos; frame accuracy on all val frames.
* :func:`few_shot_classification`: the same SVC on ``k`` random training videos, 50 episodes per
  ``k``, one ``RandomState(42)`` permutation stream (identical to ``np.random.seed(42)``).
* :func:`phase_progression` (:mod:`tcc_model.progression`): per key event an OLS regression of
  ``(t - t_k) / L`` (``t_k`` = last frame of phase ``k``), mean R² over events on the validation
  frames.

Where the reference crashes (a phase missing from a video, a one-class training set, too few
videos) these functions skip explicitly and report what was skipped and why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist

from tcc_model.evaluation_inputs import _check_embs_list, _check_labels_list, _first_n_videos
from tcc_model.progression import (  # re-exported: one module for every protocol
    ProgressionResult,  # noqa: F401
    phase_progression,  # noqa: F401
    progression_targets,  # noqa: F401
)

DISTANCES = ("sqeuclidean", "cosine")
CLASSIFICATION_FRACTIONS = (0.1, 0.5, 1.0)
FEW_SHOT_NUM_LABELED = tuple(range(1, 11))
FEW_SHOT_EPISODES = 50
FEW_SHOT_SEED = 42


# --------------------------------------------------------------------------------------------
# Kendall's tau


def kendalls_tau_matrix(
    embs_list: Sequence[np.ndarray], stride: int = 2, distance: str = "sqeuclidean"
) -> np.ndarray:
    """Kendall's tau-b of every ordered video pair ``[N, N]``; NaN on the diagonal / if undefined.

    Entry ``(i, j)``: query = ``embs_list[i][::stride]``, candidates = ``embs_list[j][::stride]``,
    ``nns = argmin(cdist(query, candidates, distance), axis=1)``, and
    ``scipy.stats.kendalltau(arange(len(nns)), nns)`` (NaN when ``nns`` is constant or < 2 long).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    embs_list = _check_embs_list(embs_list, "embs_list")
    strided = [e[::stride] for e in embs_list]
    lengths = np.array([len(e) for e in strided])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    queries = np.concatenate(strided) if strided else np.zeros((0, 1))
    n = len(strided)
    taus = np.full((n, n), np.nan)
    for j, candidates in enumerate(strided):
        # Nearest neighbours in video j of the strided frames of every video at once.
        nns_all = np.argmin(cdist(queries, candidates, distance), axis=1)
        for i in range(n):
            if i == j or lengths[i] < 2:
                continue
            nns = nns_all[starts[i] : starts[i] + lengths[i]]
            taus[i, j] = stats.kendalltau(np.arange(len(nns)), nns).statistic
    return taus


def kendalls_tau(
    embs_list: Sequence[np.ndarray], stride: int = 2, distance: str = "sqeuclidean"
) -> float:
    """Mean Kendall's tau over all ordered pairs ``i != j`` (NaN pairs dropped), as the reference.

    Needs at least 2 videos; returns NaN when every pair is undefined.
    """
    if len(embs_list) < 2:
        raise ValueError(f"kendalls_tau needs at least 2 videos, got {len(embs_list)}")
    taus = kendalls_tau_matrix(embs_list, stride=stride, distance=distance)
    valid = taus[~np.eye(len(taus), dtype=bool)]
    valid = valid[~np.isnan(valid)]
    return float(valid.mean()) if valid.size else float("nan")


# --------------------------------------------------------------------------------------------
# Phase classification (SVC probe)


@dataclass
class ProbeResult:
    """One probe score with the data it used; ``skipped`` names why no score exists."""

    value: float | None
    num_train_videos: int
    num_train_frames: int
    num_eval_frames: int
    skipped: str | None = None
    #: misclassified frames within BOUNDARY_WINDOW frames of a phase change, per phase change
    errors_per_boundary: float | None = None
    #: accuracy on the frames farther than BOUNDARY_WINDOW frames from every phase change
    interior_accuracy: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


#: frames on each side of a phase change that :func:`boundary_breakdown` counts as its boundary
BOUNDARY_WINDOW = 3


def boundary_breakdown(
    predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray], window: int = BOUNDARY_WINDOW
) -> tuple[float | None, float | None]:
    """``(errors per phase change, interior accuracy)`` of per-frame phase predictions.

    Frame accuracy mixes two things: how precisely the embedding places each phase change, and
    how many frames a video has per change (a faster motion has fewer, so the same precision
    reads as a lower accuracy). This separates them: the errors on the ``window`` frames on each
    side of every change, per change (``None`` without a change), and the accuracy on the frames
    farther than ``window`` from every change (``None`` without such frames).
    """
    near_errors, changes, far_right, far_total = 0, 0, 0, 0
    for pred, label in zip(predictions, labels):
        label = np.asarray(label)
        wrong = np.asarray(pred) != label
        edges = np.flatnonzero(np.diff(label)) + 0.5  # between frame i and i + 1
        changes += edges.size
        if edges.size:
            distance = np.min(np.abs(np.arange(label.size)[:, None] - edges[None]), axis=1) + 0.5
            near = distance <= window
        else:
            near = np.zeros(label.size, dtype=bool)
        near_errors += int(wrong[near].sum())
        far_right += int((~wrong[~near]).sum())
        far_total += int((~near).sum())
    return (
        near_errors / changes if changes else None,
        far_right / far_total if far_total else None,
    )


def _make_svc():
    from sklearn.svm import SVC

    return SVC(decision_function_shape="ovo")


def _fit_svc_predict(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray
) -> tuple[np.ndarray | None, str | None]:
    classes = np.unique(train_y)
    if classes.size < 2:
        return None, f"training frames hold a single phase ({int(classes[0])}); SVC needs >= 2"
    model = _make_svc()
    model.fit(train_x, train_y)
    return model.predict(val_x), None


def _fit_svc_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray
) -> tuple[float | None, str | None]:
    predicted, skipped = _fit_svc_predict(train_x, train_y, val_x)
    if predicted is None:
        return None, skipped
    return float(np.mean(predicted == val_y)), None


def phase_classification(
    train_embs: Sequence[np.ndarray],
    train_labels: Sequence[np.ndarray],
    val_embs: Sequence[np.ndarray],
    val_labels: Sequence[np.ndarray],
    fractions: Sequence[float] = CLASSIFICATION_FRACTIONS,
) -> dict[float, ProbeResult]:
    """Per-frame phase classification accuracy on the validation frames, per training fraction.

    For each fraction ``f`` an ``SVC(decision_function_shape='ovo')`` (sklearn defaults, no feature
    scaling) is trained on all frames of the **first** ``max(1, int(f * N_train))`` training videos.
    A training subset with a single phase is reported as skipped (``value=None``). Each result
    also holds :func:`boundary_breakdown` of the predictions (errors per phase change, accuracy
    away from the changes).
    """
    train_embs = _check_embs_list(train_embs, "train_embs")
    val_embs = _check_embs_list(val_embs, "val_embs")
    train_labels = _check_labels_list(train_labels, train_embs, "train_labels")
    val_labels = _check_labels_list(val_labels, val_embs, "val_labels")
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fractions must lie in (0, 1], got {f}")
    results: dict[float, ProbeResult] = {}
    num_val_frames = int(sum(len(e) for e in val_embs))
    for f in fractions:
        if not train_embs or not val_embs:
            split = "train" if not train_embs else "val"
            results[f] = ProbeResult(None, 0, 0, num_val_frames, f"empty {split} split")
            continue
        n = _first_n_videos(len(train_embs), f)
        train_x = np.concatenate(train_embs[:n])
        train_y = np.concatenate(train_labels[:n])
        predicted, skipped = _fit_svc_predict(train_x, train_y, np.concatenate(val_embs))
        if predicted is None:
            results[f] = ProbeResult(None, n, len(train_x), num_val_frames, skipped)
            continue
        value = float(np.mean(predicted == np.concatenate(val_labels)))
        per_video = np.split(predicted, np.cumsum([len(e) for e in val_embs])[:-1])
        errors, interior = boundary_breakdown(per_video, val_labels)
        results[f] = ProbeResult(value, n, len(train_x), num_val_frames, None, errors, interior)
    return results


# --------------------------------------------------------------------------------------------
# Few-shot classification


@dataclass
class FewShotResult:
    """Few-shot accuracy for ``num_labeled`` training videos over random episodes."""

    num_labeled: int
    mean: float | None
    ci95_low: float | None
    ci95_high: float | None
    num_episodes: int
    num_skipped_episodes: int
    skipped: str | None = None
    accuracies: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _mean_t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    mean = float(values.mean())
    if values.size < 2:
        return mean, mean, mean
    sem = float(values.std(ddof=1) / math.sqrt(values.size))
    if sem == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, values.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def _few_shot_accuracies(
    rng: np.random.RandomState,
    k: int,
    episodes: int,
    train_embs: list[np.ndarray],
    train_labels: list[np.ndarray],
    val_x: np.ndarray,
    val_y: np.ndarray,
) -> list[float]:
    """Validation accuracy of each episode on ``k`` random training videos (single-phase
    episodes are left out)."""
    accuracies = []
    for _ in range(episodes):
        chosen = rng.permutation(len(train_embs))[:k]
        acc, _reason = _fit_svc_accuracy(
            np.concatenate([train_embs[c] for c in chosen]),
            np.concatenate([train_labels[c] for c in chosen]),
            val_x,
            val_y,
        )
        if acc is not None:
            accuracies.append(acc)
    return accuracies


def few_shot_classification(
    train_embs: Sequence[np.ndarray],
    train_labels: Sequence[np.ndarray],
    val_embs: Sequence[np.ndarray],
    val_labels: Sequence[np.ndarray],
    num_labeled: Sequence[int] = FEW_SHOT_NUM_LABELED,
    episodes: int = FEW_SHOT_EPISODES,
    seed: int = FEW_SHOT_SEED,
) -> dict[int, FewShotResult]:
    """Validation frame accuracy of the SVC trained on ``k`` random labelled training videos.

    One ``np.random.RandomState(seed)`` drives every episode in order (``k`` ascending, then
    episodes), each drawing ``permutation(N_train)[:k]``: the same videos as the reference's
    ``np.random.seed(42)`` stream. Episodes whose videos hold a single phase are skipped and
    counted; ``k > N_train`` is skipped. Reports the mean and a 95% Student-t interval.
    """
    train_embs = _check_embs_list(train_embs, "train_embs")
    val_embs = _check_embs_list(val_embs, "val_embs")
    train_labels = _check_labels_list(train_labels, train_embs, "train_labels")
    val_labels = _check_labels_list(val_labels, val_embs, "val_labels")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if any(k < 1 for k in num_labeled):
        raise ValueError(f"num_labeled must hold positive video counts, got {list(num_labeled)}")
    rng = np.random.RandomState(seed)
    num_train = len(train_embs)
    results: dict[int, FewShotResult] = {}
    if not val_embs or not train_embs:
        split = "train" if not train_embs else "val"
        return {
            k: FewShotResult(k, None, None, None, 0, episodes, f"empty {split} split")
            for k in num_labeled
        }
    val_x, val_y = np.concatenate(val_embs), np.concatenate(val_labels)
    for k in sorted(num_labeled):
        if k > num_train:
            results[k] = FewShotResult(
                k, None, None, None, 0, episodes, f"only {num_train} training videos (< {k})"
            )
            continue
        accuracies = _few_shot_accuracies(rng, k, episodes, train_embs, train_labels, val_x, val_y)
        skipped = episodes - len(accuracies)
        if not accuracies:
            results[k] = FewShotResult(
                k, None, None, None, 0, skipped, "every episode had a single training phase"
            )
            continue
        mean, low, high = _mean_t_interval(np.asarray(accuracies))
        results[k] = FewShotResult(k, mean, low, high, len(accuracies), skipped, None, accuracies)
    return results
