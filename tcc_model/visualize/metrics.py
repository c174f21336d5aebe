"""Plots of scores: the phase confusion matrix and the training loss curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tcc_model.reporting import pyplot, save_figure

#: Column of frames the monitor gave no phase for (predicted id < 0).
NO_PHASE = "none"

Curve = tuple[Sequence[float], Sequence[float]]


def phase_confusion(true_phase: np.ndarray, pred_phase: np.ndarray, num_phases: int) -> np.ndarray:
    """Frame counts ``[K, K + 1]``: row = true phase, column = predicted phase, last = no phase.

    Frames without a true phase (id < 0) are left out; predicted ids outside ``0..K-1`` count as
    "no phase".
    """
    true = np.asarray(true_phase, dtype=np.int64).ravel()
    pred = np.asarray(pred_phase, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"true_phase has {true.size} frames, pred_phase {pred.size}")
    keep = (true >= 0) & (true < num_phases)
    pred = np.where((pred >= 0) & (pred < num_phases), pred, num_phases)[keep]
    flat = true[keep] * (num_phases + 1) + pred
    counts = np.bincount(flat, minlength=num_phases * (num_phases + 1))
    return counts.reshape(num_phases, num_phases + 1)


def plot_phase_confusion(
    true_phase: np.ndarray,
    pred_phase: np.ndarray,
    phase_names: Sequence[str],
    path: str | Path,
    title: str = "phase confusion",
) -> Path:
    """Row-normalised confusion matrix (share of each true phase's frames) with frame counts.

    The "none" column appears only when some frame got no phase.
    """
    k = len(phase_names)
    if k == 0:
        raise ValueError("phase_names is empty; the confusion matrix needs the phase names")
    counts = phase_confusion(true_phase, pred_phase, k)
    if not counts[:, k].any():
        counts = counts[:, :k]
    rows = counts.sum(axis=1, keepdims=True)
    share = counts / np.maximum(rows, 1)
    plt = pyplot()
    size = 1.0 + 0.9 * counts.shape[1]
    fig, ax = plt.subplots(figsize=(size + 1.5, 0.9 * k + 1.6), layout="constrained")
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(counts.shape[1]):
            colour = "white" if share[i, j] > 0.55 else "black"
            text = f"{100 * share[i, j]:.0f}%\n{counts[i, j]}"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    columns = list(phase_names) + ([NO_PHASE] if counts.shape[1] > k else [])
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=30, ha="right")
    ax.set_yticks(range(k))
    ax.set_yticklabels(phase_names)
    ax.set_xlabel("predicted phase")
    ax.set_ylabel("true phase")
    ax.grid(False)
    accuracy = np.trace(counts[:, :k]) / max(int(counts.sum()), 1)
    ax.set_title(f"{title}: {100 * accuracy:.1f}% of {int(counts.sum())} frames")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true phase's frames")
    return save_figure(fig, path)


def _smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average (bias-corrected, as TensorBoard's smoothing)."""
    out = np.empty_like(values)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(values):
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def plot_loss_curve(
    train: Mapping[str, Curve],
    path: str | Path,
    val: Mapping[str, Curve] | None = None,
    title: str = "training",
    smoothing: float = 0.8,
    columns: int = 3,
) -> Path:
    """Every training loss and validation metric over the steps, one panel each (own scale).

    ``train`` and ``val`` map a name (``"loss"``, ``"tcc"``, ``"kendalls_tau"``, ...) to
    ``(steps, values)``. Curves of 50 points or more are drawn faint with a smoothed line on top
    (exponential moving average, ``smoothing`` as TensorBoard's); a panel's axis is logarithmic
    when its values are positive and span more than a factor of 20.
    """
    if not train:
        raise ValueError("train is empty; pass at least one (steps, values) curve")
    curves = [(f"train {k}", v) for k, v in train.items()]
    curves += [(f"val {k}", v) for k, v in (val or {}).items()]
    plt = pyplot()
    cols = min(columns, len(curves))
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(4.2 * cols, 3.0 * rows),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for ax, (name, (steps, values)) in zip(axes.flat, curves):
        v = np.asarray(values, dtype=np.float64)
        s = np.asarray(steps, dtype=np.float64)
        ok = np.isfinite(v)
        s, v = s[ok], v[ok]
        colour = "tab:green" if name.startswith("val") else "tab:blue"
        if v.size >= 50:
            ax.plot(s, v, color=colour, lw=0.7, alpha=0.3)
            ax.plot(s, _smooth(v, smoothing), color=colour, lw=1.6)
        else:
            ax.plot(s, v, "o-" if v.size < 20 else "-", color=colour, ms=3, lw=1.4)
        if v.size and v.min() > 0 and v.max() / v.min() > 20:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.tick_params(labelbottom=True)
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.supxlabel("training step")
    return save_figure(fig, path)


def curves_from_tensorboard(tb_dir: str | Path) -> tuple[dict[str, Curve], dict[str, Curve]]:
    """``(train, val)`` curves for :func:`plot_loss_curve` from a run's TensorBoard folder.

    Scalars tagged ``train/<name>`` go to ``train`` (rates such as ``clips_per_s`` left out),
    ``val/<name>`` to ``val``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not Path(tb_dir).is_dir():
        raise FileNotFoundError(f"{tb_dir}: no TensorBoard folder (the run's tb/)")
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    train: dict[str, Curve] = {}
    val: dict[str, Curve] = {}
    for tag in events.Tags().get("scalars", []):
        group, _, name = tag.partition("/")
        if group not in ("train", "val") or name.endswith("_per_s") or name == "lr":
            continue
        points = events.Scalars(tag)
        curve = ([p.step for p in points], [p.value for p in points])
        (train if group == "train" else val)[name] = curve
    return train, val
