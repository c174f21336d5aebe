"""Paired robustness metrics: per-episode statistics of the evaluation protocols and paired errors.

A robustness benchmark compares a control set of episodes with shifted sets in which episode
``i`` is episode ``i`` of the control with one factor changed (:mod:`tcc_model.sim.ranges`).
This module keeps, per episode, the sufficient statistics of each metric so that any resample of
episode indices gives the pooled metric again, and the *same* resample applied to the control and
a shifted set gives the paired difference and its bootstrap standard error.

Metrics (each as :mod:`tcc_model.evaluation` computes it on the whole set):

* ``tau``: Kendall's tau over ordered pairs of distinct episodes (pairs of an episode with
  itself, which a resample can create, are left out);
* ``cls10``: phase classification frame accuracy of an SVC fitted on the first 10% of the
  training videos (:func:`tcc_model.evaluation.phase_classification`);
* ``r2``: phase progression, mean over key events of the pooled R² of one linear regression per
  event fitted on all training videos (:func:`tcc_model.evaluation.phase_progression`);
* stream metrics from per-episode monitor records: ``progress_mae`` and ``phase_acc``
  (frame-weighted) and ``false_alarms`` (per 100 normal episodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tcc_model import evaluation as ev

METRICS: tuple[str, ...] = ("tau", "cls10", "r2", "progress_mae", "phase_acc", "false_alarms")


@dataclass
class SetStats:
    """Per-episode statistics of one evaluation set (all arrays indexed by episode)."""

    names: list[str]
    tau: np.ndarray  # [V, V] Kendall's tau of each ordered pair (NaN on the diagonal)
    cls_hits: np.ndarray  # [V] correctly classified frames
    frames: np.ndarray  # [V] frames
    prog: np.ndarray  # [V, E, 4]: per key event n, sum y, sum y², sum of squared errors
    stream: dict[str, np.ndarray] = field(default_factory=dict)  # abs_err, phase_hits, alarms

    def __len__(self) -> int:
        return len(self.names)


class ProtocolProbes:
    """The supervised probes fitted once on the training videos, applied to any set."""

    def __init__(
        self,
        train_embs: Sequence[np.ndarray],
        train_labels: Sequence[np.ndarray],
        num_phases: int,
        fraction: float = 0.1,
    ) -> None:
        from sklearn.linear_model import LinearRegression

        train_embs = [np.asarray(e, np.float64) for e in train_embs]
        train_labels = [np.asarray(lab) for lab in train_labels]
        n = max(1, int(fraction * len(train_embs)))
        self.num_phases = num_phases
        self.svc = ev._make_svc().fit(
            np.concatenate(train_embs[:n]), np.concatenate(train_labels[:n])
        )
        x = np.concatenate(train_embs)
        y = np.concatenate([ev.progression_targets(lab, num_phases) for lab in train_labels])
        self.regressions = []
        for k in range(num_phases - 1):
            rows = ~np.isnan(y[:, k])
            self.regressions.append(
                LinearRegression().fit(x[rows], y[rows, k]) if rows.sum() >= 2 else None
            )

    def set_stats(
        self,
        names: Sequence[str],
        embs: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        stride: int = 2,
        distance: str = "sqeuclidean",
    ) -> SetStats:
        """Per-episode statistics of one set of normal labelled episodes."""
        embs = [np.asarray(e, np.float64) for e in embs]
        labels = [np.asarray(lab) for lab in labels]
        tau = (
            ev.kendalls_tau_matrix(embs, stride, distance)
            if len(embs) >= 2
            else np.full((len(embs),) * 2, np.nan)
        )
        tau = np.asarray(tau, np.float64).copy()
        np.fill_diagonal(tau, np.nan)
        hits = np.array([int(np.sum(self.svc.predict(e) == lab)) for e, lab in zip(embs, labels)])
        events = self.num_phases - 1
        prog = np.zeros((len(embs), events, 4))
        for v, (e, lab) in enumerate(zip(embs, labels)):
            y = ev.progression_targets(lab, self.num_phases)
            for k, model in enumerate(self.regressions):
                rows = ~np.isnan(y[:, k])
                if model is None or not rows.any():
                    continue
                target = y[rows, k]
                error = target - model.predict(e[rows])
                prog[v, k] = (rows.sum(), target.sum(), (target**2).sum(), (error**2).sum())
        return SetStats(list(names), tau, hits, np.array([len(e) for e in embs], np.float64), prog)


def add_stream_records(stats: SetStats, records: Sequence[dict]) -> None:
    """Attach per-episode monitor records (``bench_stream.replay`` of normal episodes, in order)."""
    if len(records) != len(stats):
        raise ValueError(f"{len(records)} stream records for {len(stats)} episodes")
    frames = np.array([r["frames"] for r in records], np.float64)
    stats.stream = {
        "frames": frames,
        "abs_err": np.array([r["abs_err"] for r in records]) * frames,
        "phase_hits": np.array([r["phase_hits"] for r in records]) * frames,
        "alarms": np.array([float(bool(r["false_alarm"])) for r in records]),
    }


def _tau(matrix: np.ndarray, idx: np.ndarray) -> float:
    sub = matrix[np.ix_(idx, idx)]
    distinct = idx[:, None] != idx[None, :]
    values = sub[distinct]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _r2(prog: np.ndarray) -> float:
    total = prog.sum(axis=0)  # [E, 4]
    n, s, s2, sse = total.T
    sst = s2 - np.where(n > 0, s**2 / np.maximum(n, 1), 0.0)
    valid = (n >= 2) & (sst > 0)
    return float(np.mean(1.0 - sse[valid] / sst[valid])) if valid.any() else float("nan")


def metric_values(stats: SetStats, idx: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of ``stats`` pooled over the episodes ``idx`` (default: all, once each)."""
    idx = np.arange(len(stats)) if idx is None else np.asarray(idx)
    frames = stats.frames[idx].sum()
    out = {
        "tau": _tau(stats.tau, idx),
        "cls10": float(stats.cls_hits[idx].sum() / frames) if frames else float("nan"),
        "r2": _r2(stats.prog[idx]),
    }
    if stats.stream:
        s = stats.stream
        stream_frames = s["frames"][idx].sum()
        out["progress_mae"] = float(s["abs_err"][idx].sum() / stream_frames)
        out["phase_acc"] = float(s["phase_hits"][idx].sum() / stream_frames)
        out["false_alarms"] = float(100.0 * s["alarms"][idx].mean())
    return out


def paired_differences(
    control: SetStats, shifted: SetStats, resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per metric: control and shifted values, their difference and its paired bootstrap SE.

    Both sets must hold the same episodes in the same order (paired sets). Every resample draws
    episode indices with replacement and applies them to both sets.
    """
    if control.names != shifted.names:
        raise ValueError(
            "paired sets must hold the same episodes in the same order; got "
            f"{len(control)} and {len(shifted)} episodes ({control.names[:3]} vs "
            f"{shifted.names[:3]}...)"
        )
    base, moved = metric_values(control), metric_values(shifted)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in base}
    for _ in range(resamples):
        idx = rng.integers(0, len(control), len(control))
        a, b = metric_values(control, idx), metric_values(shifted, idx)
        for key in base:
            samples[key].append(b[key] - a[key])
    return {
        key: {
            "control": base[key],
            "shifted": moved[key],
            "diff": moved[key] - base[key],
            "se": float(np.nanstd(samples[key], ddof=1)) if resamples > 1 else float("nan"),
        }
        for key in base
    }
