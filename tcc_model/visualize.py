"""Visual reports of embeddings: similarity matrices, 2-D projections, progress curves, playback.

Plots use matplotlib's Agg backend (no display needed); videos are H.264 MP4 via
:func:`tcc_model.data.format.write_video`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tcc_model.align import align_embeddings, squared_distances


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    from tcc_model.utils import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    _pyplot().close(fig)
    return path


def plot_similarity_matrices(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    titles: Sequence[str] | None = None,
) -> Path:
    """One panel per video pair: negative squared-L2 similarity with the nearest-neighbour path."""
    plt = _pyplot()
    if not pairs:
        raise ValueError("pairs is empty; pass at least one (embs_a, embs_b) pair")
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 4), squeeze=False)
    for n, (a, b) in enumerate(pairs):
        ax = axes[0, n]
        sim = -squared_distances(a, b)
        ax.imshow(sim, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.plot(np.argmin(-sim, axis=1), np.arange(len(a)), "r.", ms=2, label="nearest neighbour")
        ax.set_xlabel("frame of video B")
        ax.set_ylabel("frame of video A")
        ax.set_title(titles[n] if titles else f"pair {n}")
    axes[0, 0].legend(loc="lower left", fontsize=7)
    fig.suptitle("similarity = -||a - b||^2")
    return _save(fig, path)


def project_2d(embs: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``[N, 2]`` projection of ``[N, D]`` embeddings by PCA (SVD) or t-SNE (sklearn)."""
    embs = np.asarray(embs, dtype=np.float64)
    if method == "pca":
        centred = embs - embs.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[:2].T
        return np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, len(embs) // 4)))
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embs)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_embeddings_2d(
    embs_list: Sequence[np.ndarray],
    path: str | Path,
    phase_ids: Sequence[np.ndarray] | None = None,
    phase_names: Sequence[str] | None = None,
    method: str = "pca",
) -> Path:
    """Scatter of all frames projected to 2-D, coloured by phase (or by normalised time)."""
    plt = _pyplot()
    proj = project_2d(np.concatenate(embs_list), method)
    fig, ax = plt.subplots(figsize=(6, 5))
    if phase_ids is not None:
        colours = np.concatenate([np.asarray(p) for p in phase_ids])
        cmap = plt.get_cmap("tab10", max(int(colours.max()) + 1, 1))
        sc = ax.scatter(proj[:, 0], proj[:, 1], c=colours, cmap=cmap, s=4)
        cbar = fig.colorbar(sc, ax=ax, ticks=np.unique(colours))
        if phase_names:
            cbar.ax.set_yticklabels([phase_names[i] for i in np.unique(colours)])
        cbar.set_label("phase")
    else:
        colours = np.concatenate([np.linspace(0, 1, len(e)) for e in embs_list])
        sc = ax.scatter(proj[:, 0], proj[:, 1], c=colours, cmap="viridis", s=4)
        fig.colorbar(sc, ax=ax).set_label("normalised time")
    # One trajectory outline per video helps reading the temporal order.
    start = 0
    for e in embs_list:
        ax.plot(proj[start : start + len(e), 0], proj[start : start + len(e), 1], "k-", lw=0.2)
        start += len(e)
    ax.set_title(f"{len(embs_list)} videos, {method.upper()}")
    return _save(fig, path)


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
) -> Path:
    """Aligned progress vs normalised time per video (dashed: ground-truth progress if given)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("tab10")
    for n, embs in enumerate(embs_list):
        t = np.linspace(0, 1, len(embs))
        colour = cmap(n % 10)
        label = names[n] if names else f"video {n}"
        ax.plot(t, aligned_progress(embs, reference, method), color=colour, lw=1, label=label)
        if true_progress is not None:
            ax.plot(t, true_progress[n], color=colour, lw=0.8, ls="--")
    ax.set_xlabel("normalised time")
    ax.set_ylabel("aligned progress in reference")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(
        f"progress by {method.upper()} alignment to the reference"
        + (" (dashed: ground truth)" if true_progress is not None else "")
    )
    return _save(fig, path)


def synchronized_grid(
    reference_frames: np.ndarray,
    reference_embs: np.ndarray,
    others: Sequence[tuple[np.ndarray, np.ndarray]],
    method: str = "nn",
    columns: int | None = None,
) -> np.ndarray:
    """Frames ``[T_ref, H*rows, W*cols, 3]``: the reference and every other video, time-aligned.

    ``others`` holds ``(frames, embs)`` per video; at reference time ``t`` each tile shows the
    frame of that video aligned to reference frame ``t`` (its nearest neighbour, or DTW). All
    videos must share the reference's frame size. Tile 0 is the reference.
    """
    h, w = reference_frames.shape[1:3]
    tiles = [reference_frames]
    for n, (frames, embs) in enumerate(others):
        if frames.shape[1:3] != (h, w):
            raise ValueError(
                f"others[{n}] frames are {frames.shape[1:3]}, expected {(h, w)} like the reference"
            )
        tiles.append(frames[align_embeddings(reference_embs, embs, method)])
    cols = columns or int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    blank = np.zeros_like(reference_frames)
    tiles += [blank] * (rows * cols - len(tiles))
    tiles[0] = _border(tiles[0])
    grid = np.stack(tiles).reshape(rows, cols, *reference_frames.shape)
    # [rows, cols, T, h, w, 3] -> [T, rows*h, cols*w, 3]
    grid = grid.transpose(2, 0, 3, 1, 4, 5).reshape(len(reference_frames), rows * h, cols * w, 3)
    return grid[:, : grid.shape[1] // 2 * 2, : grid.shape[2] // 2 * 2]


def _border(frames: np.ndarray, width: int = 2) -> np.ndarray:
    out = frames.copy()
    red = np.array([255, 0, 0], dtype=frames.dtype)
    out[:, :width], out[:, -width:], out[:, :, :width], out[:, :, -width:] = red, red, red, red
    return out


def write_synchronized_grid(
    path: str | Path,
    reference_frames: np.ndarray,
    reference_embs: np.ndarray,
    others: Sequence[tuple[np.ndarray, np.ndarray]],
    fps: float,
    method: str = "nn",
) -> Path:
    """Write :func:`synchronized_grid` as an MP4 at ``fps`` (the reference's frame rate)."""
    from tcc_model.data.format import write_video

    path = Path(path)
    write_video(path, synchronized_grid(reference_frames, reference_embs, others, method), fps)
    return path
