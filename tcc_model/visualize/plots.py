"""Plots of embeddings: similarity matrices, 2-D projections and aligned progress curves."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.align import align_embeddings, squared_distances
from tcc_model.reporting import pyplot, save_figure

#: Videos of a 2-D projection whose trajectories are named (more would hide the points).
MAX_NAMED_TRAJECTORIES = 10


def _wrap(text: str, width: int = 32) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def plot_similarity_matrices(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    titles: Sequence[str] | None = None,
) -> Path:
    """One panel per video pair: negative squared-L2 similarity, nearest neighbours marked.

    Every panel has its own colourbar (the scales differ between pairs).
    """
    if not pairs:
        raise ValueError("pairs is empty; pass at least one (embs_a, embs_b) pair")
    plt = pyplot()
    n = len(pairs)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.4), squeeze=False, layout="constrained")
    for i, (a, b) in enumerate(pairs):
        ax = axes[0, i]
        sim = -squared_distances(a, b)
        image = ax.imshow(sim, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.plot(np.argmax(sim, axis=1), np.arange(len(a)), "r.", ms=2.5, label="nearest in B")
        ax.set_xlabel("frame of video B")
        ax.set_ylabel("frame of video A")
        ax.set_title(_wrap(titles[i] if titles else f"pair {i}"))
        ax.grid(False)
        fig.colorbar(image, ax=ax, shrink=0.85, label="similarity  −‖a − b‖²")
    axes[0, 0].legend(loc="lower left", markerscale=4, framealpha=0.8)
    return save_figure(fig, path)


def project_2d(embs: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``[N, 2]`` projection of ``[N, D]`` embeddings by PCA (SVD) or t-SNE (sklearn)."""
    return _project(embs, method, seed)[0]


def _project(embs: np.ndarray, method: str, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The projection and its two axis labels (PCA labels carry the explained variance)."""
    embs = np.asarray(embs, dtype=np.float64)
    if method == "pca":
        centred = embs - embs.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        proj = np.pad(centred @ vt[:2].T, ((0, 0), (0, max(0, 2 - min(2, vt.shape[0])))))
        var = s**2 / max(float((s**2).sum()), 1e-12)
        labels = [
            f"PC {k + 1} ({100 * var[k]:.0f}% of variance)" if k < var.size else f"PC {k + 1}"
            for k in range(2)
        ]
        return proj, labels
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, len(embs) // 4)))
        proj = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embs)
        return proj, ["t-SNE 1", "t-SNE 2"]
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_embeddings_2d(
    embs_list: Sequence[np.ndarray],
    path: str | Path,
    phase_ids: Sequence[np.ndarray] | None = None,
    phase_names: Sequence[str] | None = None,
    method: str = "pca",
    names: Sequence[str] | None = None,
) -> Path:
    """Scatter of all frames projected to 2-D, coloured by phase (or by normalised time).

    One faint line per video shows its temporal order; with ``names`` (and at most
    :data:`MAX_NAMED_TRAJECTORIES` videos) each line's first frame is marked with its name.
    """
    plt = pyplot()
    proj, axis_labels = _project(np.concatenate(embs_list), method)
    fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
    if phase_ids is not None:
        colours = np.concatenate([np.asarray(p) for p in phase_ids])
        present = np.unique(colours)
        cmap = plt.get_cmap("tab10")
        for k in present:
            sel = colours == k
            name = phase_names[k] if phase_names and 0 <= k < len(phase_names) else f"phase {k}"
            ax.scatter(proj[sel, 0], proj[sel, 1], s=5, color=cmap(int(k) % 10), label=name)
        ax.legend(title="phase", markerscale=3, loc="best", framealpha=0.8)
    else:
        colours = np.concatenate([np.linspace(0, 1, len(e)) for e in embs_list])
        sc = ax.scatter(proj[:, 0], proj[:, 1], c=colours, cmap="viridis", s=5)
        fig.colorbar(sc, ax=ax).set_label("normalised time in the video")
    starts = np.cumsum([0] + [len(e) for e in embs_list[:-1]])
    for start, e in zip(starts, embs_list):
        ax.plot(proj[start : start + len(e), 0], proj[start : start + len(e), 1], "k-", lw=0.3)
    named = names is not None and len(embs_list) <= MAX_NAMED_TRAJECTORIES
    if named and names is not None:
        _name_starts(ax, proj[starts], names)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    start_note = ", named at its first frame" if named else ""
    ax.set_title(
        f"embeddings of {len(embs_list)} videos ({method.upper()}), one line per video{start_note}"
    )
    return save_figure(fig, path)


def _name_starts(ax: Any, points: np.ndarray, names: Sequence[str]) -> None:
    """Mark every trajectory's first point and name it beside the point (left of it near the
    right edge); a name that would cover another name or first point moves down, joined to its
    point by a line."""
    ax.figure.canvas.draw()  # final layout, so data -> points is known
    to_pt = 72.0 / ax.figure.dpi
    at = ax.transData.transform(points) * to_pt  # positions in points
    right = ax.get_window_extent().x1 * to_pt
    placed: list[tuple[float, float, float]] = []  # (left, y, width) of names placed, in points
    for n in np.argsort(-at[:, 1], kind="stable"):  # top to bottom
        x, y = at[n]
        width = 5.0 * len(names[n]) + 4.0
        dx = 4.0 if x + 4.0 + width < right else -4.0 - width
        ty = y + 3.0
        others = np.delete(at, n, axis=0)
        while any(
            abs(py - ty) < 10.0 and x + dx < px + pw and px < x + dx + width
            for px, py, pw in placed
        ) or np.any(
            (others[:, 0] > x + dx - 3.0)
            & (others[:, 0] < x + dx + width)
            & (others[:, 1] > ty - 3.0)
            & (others[:, 1] < ty + 11.0)
        ):
            ty -= 10.0
        placed.append((x + dx, ty, width))
        ax.plot(*points[n], "ko", ms=3.5)
        text = ax.annotate(
            names[n],
            points[n],
            xytext=(dx, ty - y),
            textcoords="offset points",
            fontsize=8,
            va="bottom",
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
            arrowprops=None if ty == y + 3.0 else {"arrowstyle": "-", "color": "0.4", "lw": 0.6},
        )
        text.set_in_layout(False)


def aligned_progress(embs: np.ndarray, reference: np.ndarray, method: str = "nn") -> np.ndarray:
    """Progress ``[T]`` in [0, 1] per frame: aligned reference index / (reference length - 1)."""
    mapping = align_embeddings(embs, reference, method)
    return mapping / max(len(reference) - 1, 1)


def plot_progress_curves(
    embs_list: Sequence[np.ndarray],
    reference: np.ndarray,
    path: str | Path,
    names: Sequence[str] | None = None,
    true_progress: Sequence[np.ndarray] | None = None,
    method: str = "nn",
    reference_name: str | None = None,
) -> Path:
    """Aligned progress vs normalised time per video (dashed: ground-truth progress if given).

    A video of ``embs_list`` that *is* ``reference`` (the same array) is drawn in black and
    labelled as the reference; ``reference_name`` names it in the title.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8), layout="constrained")
    cmap = plt.get_cmap("tab10")
    ref_label = reference_name or "the reference"
    for n, embs in enumerate(embs_list):
        t = np.linspace(0, 1, len(embs))
        is_ref = embs is reference
        colour = "black" if is_ref else cmap(n % 10)
        label = names[n] if names else f"video {n}"
        if is_ref:
            ref_label = reference_name or label
            label = f"{label} (reference)"
        progress = aligned_progress(embs, reference, method)
        ax.plot(t, progress, color=colour, lw=2 if is_ref else 1.2, label=label)
        if true_progress is not None:
            ax.plot(t, true_progress[n], color=colour, lw=0.9, ls="--")
    if true_progress is not None:
        ax.plot([], [], color="grey", ls="--", lw=0.9, label="ground truth (dashed)")
    ax.set_xlabel("normalised time in the video")
    ax.set_ylabel(f"aligned progress in {ref_label}")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(f"progress by {method.upper()} alignment to {ref_label}")
    return save_figure(fig, path)
