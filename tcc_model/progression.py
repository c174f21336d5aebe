"""Phase progression (TCC, Dwibedi et al. 2019): linear regression of time to each key event.

Part of the evaluation protocols of :mod:`tcc_model.evaluation` (which re-exports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tcc_model.evaluation_inputs import _check_embs_list, _check_labels_list, _first_n_videos


def progression_targets(labels: np.ndarray, num_phases: int) -> np.ndarray:
    """Per-frame regression targets ``[T, num_phases - 1]``: ``(t - t_k) / T`` for key event ``k``.

    ``t_k`` is the last frame labelled ``k`` (the reference's definition). Columns of events
    whose phase does not occur in the video are NaN.
    """
    labels = np.asarray(labels)
    length = len(labels)
    num_events = num_phases - 1
    frames = np.arange(length)
    # Last frame of each phase, vectorised: max frame index over the frames with that label.
    last = np.full(max(num_phases, 1), -1, dtype=np.int64)
    np.maximum.at(last, labels[labels < num_phases], frames[labels < num_phases])
    t_k = last[:num_events].astype(np.float64)
    t_k[t_k < 0] = np.nan
    return (frames[:, None] - t_k[None, :]) / float(length)


@dataclass
class ProgressionResult:
    """Mean R² over key events; per-event R² and the (video, event) pairs that were skipped."""

    value: float | None
    per_event_r2: list[float | None]
    num_train_videos: int
    skipped_train: list[tuple[int, int]]
    skipped_val: list[tuple[int, int]]
    skipped: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skipped_train"] = [list(p) for p in self.skipped_train]
        d["skipped_val"] = [list(p) for p in self.skipped_val]
        return d


def _stack_event_data(
    embs_list: list[np.ndarray], labels_list: list[np.ndarray], num_phases: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    x = np.concatenate(embs_list)
    y = np.concatenate([progression_targets(lab, num_phases) for lab in labels_list])
    missing = [
        (v, k)
        for v, lab in enumerate(labels_list)
        for k in range(num_phases - 1)
        if not np.any(lab == k)
    ]
    return x, y, missing


def _event_r2(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray
) -> list[float | None]:
    """Validation R² of one linear regression per key event (column of ``y``); None for an event
    with fewer than 2 train or val frames."""
    from sklearn.linear_model import LinearRegression

    per_event: list[float | None] = []
    for k in range(train_y.shape[1]):
        train_rows = ~np.isnan(train_y[:, k])
        val_rows = ~np.isnan(val_y[:, k])
        if train_rows.sum() < 2 or val_rows.sum() < 2:
            per_event.append(None)
            continue
        model = LinearRegression().fit(train_x[train_rows], train_y[train_rows, k])
        per_event.append(float(model.score(val_x[val_rows], val_y[val_rows, k])))
    return per_event


def phase_progression(
    train_embs: Sequence[np.ndarray],
    train_labels: Sequence[np.ndarray],
    val_embs: Sequence[np.ndarray],
    val_labels: Sequence[np.ndarray],
    num_phases: int | None = None,
    fractions: Sequence[float] = (1.0,),
) -> dict[float, ProgressionResult]:
    """Phase-progression R² per training fraction (the reference reports ``f = 1.0``).

    With ``K = num_phases`` (default: the largest label + 1 over both splits) there are ``K - 1``
    key events. One ``LinearRegression`` per event maps a frame embedding to ``(t - t_k) / L``;
    the score is the mean over events of sklearn's R² on the concatenated validation frames. A
    video missing phase ``k`` is left out of event ``k`` only (listed in ``skipped_train`` /
    ``skipped_val`` as ``(video_index, event)``); an event with no train or val data is left out of
    the mean (``per_event_r2`` holds None).
    """
    train_embs = _check_embs_list(train_embs, "train_embs")
    val_embs = _check_embs_list(val_embs, "val_embs")
    train_labels = _check_labels_list(train_labels, train_embs, "train_labels")
    val_labels = _check_labels_list(val_labels, val_embs, "val_labels")
    if num_phases is None:
        all_labels = [lab for lab in (*train_labels, *val_labels) if lab.size]
        num_phases = int(max((lab.max() for lab in all_labels), default=0)) + 1
    results: dict[float, ProgressionResult] = {}
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fractions must lie in (0, 1], got {f}")
        if num_phases < 2 or not train_embs or not val_embs:
            reason = (
                f"need >= 2 phases for a key event, got {num_phases}"
                if num_phases < 2
                else f"empty {'train' if not train_embs else 'val'} split"
            )
            results[f] = ProgressionResult(None, [], 0, [], [], reason)
            continue
        n = _first_n_videos(len(train_embs), f)
        train_x, train_y, skipped_train = _stack_event_data(
            train_embs[:n], train_labels[:n], num_phases
        )
        val_x, val_y, skipped_val = _stack_event_data(val_embs, val_labels, num_phases)
        per_event = _event_r2(train_x, train_y, val_x, val_y)
        scored = [r for r in per_event if r is not None]
        results[f] = ProgressionResult(
            float(np.mean(scored)) if scored else None,
            per_event,
            n,
            skipped_train,
            skipped_val,
            None if scored else "no key event had both train and val frames",
        )
    return results
