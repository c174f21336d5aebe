"""Align two videos through their embeddings: nearest neighbours or dynamic time warping.

Library::

    mapping = align_embeddings(query_embs, reference_embs, method="dtw")  # [T_query] ref indices
    cost, path = dtw(query_embs, reference_embs)                           # path: [L, 2]

CLI (writes ``side_by_side.mp4``, ``mapping.json`` and ``mapping.csv`` into ``--out``)::

    python -m tcc_model.align A.mp4 B.mp4 --checkpoint CKPT [--method nn|dtw] [--out DIR]

Frame ``t`` of video A is shown next to the frame of B it aligns to, at A's frame rate.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ALIGN_METHODS = ("nn", "dtw")


def _as_embs(embs: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(embs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [num_frames, dim] array, got {arr.shape}")
    return arr


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 distances ``[len(a), len(b)]`` (clamped at 0)."""
    a = _as_embs(a, "a")
    b = _as_embs(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding dims differ: {a.shape[1]} vs {b.shape[1]}")
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def dtw(query: np.ndarray, reference: np.ndarray) -> tuple[float, np.ndarray]:
    """Dynamic time warping with squared-L2 frame cost and steps (1,0), (0,1), (1,1).

    Returns ``(total_cost, path)``; ``path`` is ``[L, 2]`` int64 ``(query_index, reference_index)``
    pairs from ``(0, 0)`` to ``(n-1, m-1)``, monotone in both indices. The accumulated-cost table
    is filled one anti-diagonal at a time (each diagonal is a vectorised numpy step).
    """
    cost = squared_distances(query, reference)
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    # acc[i, j] (1-based) = cost[i-1, j-1] + min(acc[i-1, j], acc[i, j-1], acc[i-1, j-1]);
    # all cells of the anti-diagonal i + j = d depend only on diagonals d-1 and d-2.
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        best = np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    path = _backtrack(acc)
    return float(acc[n, m]), path


def _backtrack(acc: np.ndarray) -> np.ndarray:
    i, j = acc.shape[0] - 1, acc.shape[1] - 1
    steps = [(i - 1, j - 1)]
    while (i, j) != (1, 1):
        if i == 1:
            j -= 1
        elif j == 1:
            i -= 1
        else:
            # Prefer the diagonal on ties so equal-cost paths stay as short as possible.
            options = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
            move = int(np.argmin(options))
            i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
        steps.append((i - 1, j - 1))
    return np.asarray(steps[::-1], dtype=np.int64)


def nn_alignment(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Index of the nearest (squared L2) reference frame for every query frame, ``[T_query]``."""
    return np.argmin(squared_distances(query, reference), axis=1)


def dtw_alignment(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """One reference index per query frame from the DTW path, ``[T_query]`` (non-decreasing).

    A query frame matched to several reference frames takes the cheapest of them (the first on
    ties).
    """
    _, path = dtw(query, reference)
    cost = squared_distances(query, reference)[path[:, 0], path[:, 1]]
    # Sort path cells by (query index, cost): the first cell of each query index is its cheapest.
    order = np.lexsort((cost, path[:, 0]))
    q_sorted = path[order, 0]
    first = np.flatnonzero(np.r_[True, q_sorted[1:] != q_sorted[:-1]])
    return path[order[first], 1]


def align_embeddings(query: np.ndarray, reference: np.ndarray, method: str = "dtw") -> np.ndarray:
    """Reference frame index for every query frame, by ``method`` ``'nn'`` or ``'dtw'``."""
    if method == "nn":
        return nn_alignment(query, reference)
    if method == "dtw":
        return dtw_alignment(query, reference)
    raise ValueError(f"method must be one of {ALIGN_METHODS}, got {method!r}")


# --------------------------------------------------------------------------------------------
# Outputs


def mapping_records(mapping: np.ndarray, fps_a: float, fps_b: float) -> list[dict]:
    """Rows ``{frame_a, frame_b, time_a, time_b}`` of a frame mapping A → B."""
    frames_a = np.arange(len(mapping))
    return [
        {
            "frame_a": int(a),
            "frame_b": int(b),
            "time_a": round(float(a) / fps_a, 6),
            "time_b": round(float(b) / fps_b, 6),
        }
        for a, b in zip(frames_a, mapping)
    ]


def write_mapping(out_dir: Path, records: list[dict], meta: dict) -> tuple[Path, Path]:
    """Write ``mapping.json`` (``meta`` + rows) and ``mapping.csv``; returns both paths."""
    from tcc_model.utils import write_text_atomic

    json_path, csv_path = out_dir / "mapping.json", out_dir / "mapping.csv"
    write_text_atomic(json_path, json.dumps({**meta, "mapping": records}, indent=1) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["frame_a", "frame_b", "time_a", "time_b"])
    writer.writeheader()
    writer.writerows(records)
    write_text_atomic(csv_path, buf.getvalue())
    return json_path, csv_path


def side_by_side(
    frames_a: np.ndarray,
    frames_b: np.ndarray,
    mapping: np.ndarray,
    names: tuple[str, str] | None = None,
    phases: tuple[np.ndarray | None, np.ndarray | None] | None = None,
    phase_names: Sequence[str] | None = None,
) -> np.ndarray:
    """``[T_a, H, W_a + W_b, 3]``: frame ``t`` of A next to frame ``mapping[t]`` of B.

    B is resized to A's height (widths are kept even for H.264). Each half is captioned with
    its video's name (``names``) and frame index, and, with ``phases`` (per-frame phase ids of
    A and B), its phase at the bottom.
    """
    from tcc_model.visualize.videos import annotate_frames, phase_text

    h = frames_a.shape[1]
    b = frames_b
    if b.shape[1] != h:
        import cv2

        w = max(2, int(round(b.shape[2] * h / b.shape[1])) // 2 * 2)
        b = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in b])
    titles = names or ("A", "B")
    ids = phases or (None, None)
    halves = []
    for title, frames, index, phase_ids in (
        (titles[0], frames_a, np.arange(len(frames_a)), ids[0]),
        (titles[1], b[mapping], np.asarray(mapping), ids[1]),
    ):
        captions = [f"{title}\nframe {int(t)}" for t in index]
        footers = [phase_text(phase_ids, phase_names, int(t)) for t in index]
        halves.append(annotate_frames(frames, captions, footers))
    return _even(np.concatenate(halves, axis=2))


def _even(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:3]
    return frames[:, : h - h % 2, : w - w % 2]


# --------------------------------------------------------------------------------------------
# CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from tcc_model.cli import add_checkpoint_arg, add_device_arg

    p = argparse.ArgumentParser(
        prog="python -m tcc_model.align",
        description="Align video A to video B with a trained embedder; write a side-by-side "
        "synchronized video (captioned with frame and, when a label file sits next to a video, "
        "phase) and the frame mapping (JSON and CSV).",
    )
    p.add_argument("video_a", help="query video (file or frame folder); drives the timeline")
    p.add_argument("video_b", help="reference video aligned to A")
    add_checkpoint_arg(p)
    p.add_argument("--method", choices=ALIGN_METHODS, default="dtw", help="default: dtw")
    p.add_argument("--out", default="align_out", help="output folder (default: align_out)")
    p.add_argument("--fps", type=float, default=None, help="fps of both videos (default: probed)")
    add_device_arg(p)
    return p.parse_args(argv)


def _probe_fps(path: Path, default: float = 30.0) -> float:
    if path.is_dir():
        return default
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else default


def _labels_next_to(video: Path, num_frames: int) -> tuple[np.ndarray | None, list[str]]:
    """Phase ids and names from ``<video stem>.json`` beside the video, when it matches."""
    from tcc_model.data.format import EpisodeLabels

    label_path = (
        video.with_suffix(".json") if video.is_file() else video.parent / f"{video.name}.json"
    )
    if not label_path.is_file():
        return None, []
    labels = EpisodeLabels.load(label_path)
    if labels.phase_ids is None or len(labels.phase_ids) != num_frames:
        return None, []
    return np.asarray(labels.phase_ids), list(labels.phase_names)


def embed_video(model: Any, frames: np.ndarray) -> np.ndarray:
    """Embeddings ``[N, D]`` of RGB frames, resized to the model's input size."""
    from tcc_model.embed import embed_frames
    from tcc_model.preprocess import resize_frames

    return np.asarray(embed_frames(model, resize_frames(frames, model.cfg.image_size)))


def main(argv: Sequence[str] | None = None) -> int:
    """Align two videos and write the side-by-side video and the mapping files."""
    args = _parse_args(argv)
    from tcc_model.checkpoint import load_model
    from tcc_model.cli import check_checkpoint, check_device, print_written, stage
    from tcc_model.data.format import read_video, write_video
    from tcc_model.errors import DatasetError
    from tcc_model.utils import pick_device

    paths = [Path(args.video_a), Path(args.video_b)]
    for path in paths:
        if not path.exists():
            raise DatasetError(f"{path}: video not found; pass a video file or a frame folder")
    check_checkpoint(args.checkpoint)
    device = pick_device(check_device(args.device))
    with stage("loading the model and decoding the videos"):
        model, _ = load_model(args.checkpoint, device=device)
        frames_a, frames_b = read_video(paths[0]), read_video(paths[1])
    with stage(f"embedding {len(frames_a)} + {len(frames_b)} frames"):
        embs_a, embs_b = embed_video(model, frames_a), embed_video(model, frames_b)
    mapping = align_embeddings(embs_a, embs_b, args.method)
    fps_a = args.fps or _probe_fps(paths[0])
    fps_b = args.fps or _probe_fps(paths[1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "video_a": str(paths[0]),
        "video_b": str(paths[1]),
        "checkpoint": str(args.checkpoint),
        "method": args.method,
        "num_frames_a": len(frames_a),
        "num_frames_b": len(frames_b),
    }
    json_path, csv_path = write_mapping(out, mapping_records(mapping, fps_a, fps_b), meta)
    (phases_a, names_a), (phases_b, names_b) = (
        _labels_next_to(paths[0], len(frames_a)),
        _labels_next_to(paths[1], len(frames_b)),
    )
    video_path = out / "side_by_side.mp4"
    with stage("writing the side-by-side video"):
        frames = side_by_side(
            frames_a,
            frames_b,
            mapping,
            names=(paths[0].stem, paths[1].stem),
            phases=(phases_a, phases_b),
            phase_names=names_a or names_b,
        )
        write_video(video_path, frames, fps_a)
    print_written({"video": video_path, "mapping": json_path, "csv": csv_path})
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
