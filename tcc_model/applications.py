"""Applications of aligned embeddings: annotation transfer, fine-grained retrieval, anomaly scores.

Library::

    labels = transfer_labels(src_embs, src_labels, dst_embs, method="dtw")  # any per-frame signal
    hits = retrieve(query_emb, candidate_embs_list, k=5)                    # nearest frames
    scores = anomaly_scores(embs, typical_embs_list)                        # per-frame distance

CLI (embeds a dataset with a checkpoint and measures each application on its val/test split)::

    python -m tcc_model.applications transfer --checkpoint CKPT --dataset sim_pouring [--method dtw]
    python -m tcc_model.applications retrieve --checkpoint CKPT --dataset sim_pouring [--k 5]
    python -m tcc_model.applications anomaly  --checkpoint CKPT --dataset sim_pouring [--split test]

Each command prints a JSON summary and writes it to ``--out`` (default ``applications_out``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.align import ALIGN_METHODS, align_embeddings, squared_distances

_CHUNK_ROWS = 2048


def transfer_labels(
    src_embs: np.ndarray, src_labels: np.ndarray, dst_embs: np.ndarray, method: str = "nn"
) -> np.ndarray:
    """Copy a per-frame signal from a labelled video to an unlabelled one through alignment.

    ``src_labels`` is ``[T_src, ...]`` (phase ids, progress, flags, vectors...). Every destination
    frame takes the value of the source frame it aligns to (``'nn'``: nearest neighbour, ``'dtw'``:
    monotone DTW path). Returns ``[T_dst, ...]``.
    """
    src_labels = np.asarray(src_labels)
    if src_labels.shape[:1] != (len(src_embs),):
        raise ValueError(
            f"src_labels must have one entry per source frame ({len(src_embs)}), "
            f"got shape {src_labels.shape}"
        )
    if method not in ALIGN_METHODS:
        raise ValueError(f"method must be one of {ALIGN_METHODS}, got {method!r}")
    return src_labels[align_embeddings(dst_embs, src_embs, method)]


@dataclass
class RetrievalHits:
    """The ``k`` nearest candidate frames of a query, closest first."""

    video: np.ndarray  # [k] candidate video index
    frame: np.ndarray  # [k] frame index inside that video
    distance: np.ndarray  # [k] Euclidean distance


def retrieve(
    query_emb: np.ndarray, candidate_embs_list: Sequence[np.ndarray], k: int = 5
) -> RetrievalHits:
    """The ``k`` frames nearest to ``query_emb`` ``[D]`` over all candidate videos (Euclidean)."""
    query = np.asarray(query_emb, dtype=np.float64).reshape(1, -1)
    if not candidate_embs_list:
        raise ValueError("candidate_embs_list is empty; pass at least one [T, D] array")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    lengths = np.array([len(c) for c in candidate_embs_list])
    flat = np.concatenate([np.asarray(c, dtype=np.float64) for c in candidate_embs_list])
    d = np.sqrt(squared_distances(query, flat)[0])
    k = min(k, len(d))
    top = np.argpartition(d, k - 1)[:k]
    top = top[np.argsort(d[top], kind="stable")]
    video = np.searchsorted(np.cumsum(lengths), top, side="right")
    frame = top - np.concatenate([[0], np.cumsum(lengths)[:-1]])[video]
    return RetrievalHits(video, frame, d[top])


def retrieval_precision(
    query_embs: Sequence[np.ndarray],
    query_labels: Sequence[np.ndarray],
    candidate_embs: Sequence[np.ndarray],
    candidate_labels: Sequence[np.ndarray],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[int, float]:
    """Mean precision@k of phase labels: fraction of retrieved frames sharing the query's phase.

    Every frame of every query video retrieves from all candidate frames (use disjoint splits).
    """
    cand = np.concatenate([np.asarray(c, dtype=np.float64) for c in candidate_embs])
    cand_y = np.concatenate([np.asarray(y) for y in candidate_labels])
    queries = np.concatenate([np.asarray(q, dtype=np.float64) for q in query_embs])
    query_y = np.concatenate([np.asarray(y) for y in query_labels])
    k_max = min(max(ks), len(cand))
    hits = []
    for start in range(0, len(queries), _CHUNK_ROWS):
        d = squared_distances(queries[start : start + _CHUNK_ROWS], cand)
        top = np.argpartition(d, k_max - 1, axis=1)[:, :k_max]
        order = np.argsort(np.take_along_axis(d, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        hits.append(cand_y[top] == query_y[start : start + _CHUNK_ROWS, None])
    match = np.concatenate(hits)
    return {int(k): float(match[:, : min(k, k_max)].mean()) for k in ks}


def anomaly_scores(embs: np.ndarray, typical_embs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Per-frame anomaly score ``[T]``: Euclidean distance to the nearest frame of any typical run.

    ``typical_embs_list`` holds the embeddings of normal executions (e.g. the training split).
    """
    if not typical_embs_list:
        raise ValueError("typical_embs_list is empty; pass embeddings of normal runs")
    typical = np.concatenate([np.asarray(t, dtype=np.float64) for t in typical_embs_list])
    embs = np.asarray(embs, dtype=np.float64)
    mins = [
        squared_distances(embs[s : s + _CHUNK_ROWS], typical).min(axis=1)
        for s in range(0, len(embs), _CHUNK_ROWS)
    ]
    return np.sqrt(np.concatenate(mins))


def transfer_accuracy(
    src_embs: Sequence[np.ndarray],
    src_labels: Sequence[np.ndarray],
    dst_embs: Sequence[np.ndarray],
    dst_labels: Sequence[np.ndarray],
    method: str = "dtw",
) -> dict:
    """Phase-label transfer accuracy: every (source, destination) pair, frames pooled per pair."""
    accs = np.array(
        [
            np.mean(transfer_labels(se, np.asarray(sl), de, method) == np.asarray(dl))
            for se, sl in zip(src_embs, src_labels)
            for de, dl in zip(dst_embs, dst_labels)
        ]
    )
    return {
        "method": method,
        "num_pairs": int(accs.size),
        "mean_accuracy": float(accs.mean()),
        "min_accuracy": float(accs.min()),
        "median_accuracy": float(np.median(accs)),
    }


def anomaly_auroc(
    typical_embs: Sequence[np.ndarray],
    test_embs: Sequence[np.ndarray],
    test_masks: Sequence[np.ndarray | None],
    test_types: Sequence[str | None],
) -> dict:
    """AUROC of :func:`anomaly_scores` for anomalous frames (mask = 1) vs every other frame.

    Frames of normal test runs count as negatives (mask ``None`` = all zeros). Also reports the
    per-run AUROC of the max score (anomalous vs normal runs) and per-anomaly-type frame AUROC.
    """
    from sklearn.metrics import roc_auc_score

    scores = [anomaly_scores(e, typical_embs) for e in test_embs]
    masks = [
        np.zeros(len(s), dtype=np.int64) if m is None else np.asarray(m, dtype=np.int64)
        for s, m in zip(scores, test_masks)
    ]
    y, s = np.concatenate(masks), np.concatenate(scores)
    out: dict = {"num_runs": len(scores), "num_frames": int(y.size)}
    out["frame_auroc"] = float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else None
    run_y = np.array([t is not None for t in test_types], dtype=np.int64)
    run_s = np.array([sc.max() for sc in scores])
    out["run_auroc"] = float(roc_auc_score(run_y, run_s)) if 0 < run_y.sum() < run_y.size else None
    normal = [i for i, t in enumerate(test_types) if t is None]
    per_type = {}
    for kind in sorted({t for t in test_types if t is not None}):
        idx = normal + [i for i, t in enumerate(test_types) if t == kind]
        ty = np.concatenate([masks[i] for i in idx])
        ts = np.concatenate([scores[i] for i in idx])
        per_type[kind] = {
            "runs": sum(t == kind for t in test_types),
            "frame_auroc": float(roc_auc_score(ty, ts)) if 0 < ty.sum() < ty.size else None,
        }
    out["per_type"] = per_type
    return out


# --------------------------------------------------------------------------------------------
# CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from tcc_model.cli import add_checkpoint_arg, add_device_arg

    p = argparse.ArgumentParser(
        prog="python -m tcc_model.applications",
        description="Measure annotation transfer, retrieval or anomaly scoring on a dataset.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("transfer", "transfer phase labels from train videos to val videos; report accuracy"),
        ("retrieve", "retrieve train frames for val frames; report phase precision@k"),
        ("anomaly", "score frames by distance to normal train runs; report AUROC"),
    ):
        s = sub.add_parser(name, help=help_text)
        add_checkpoint_arg(s)
        s.add_argument("--dataset", required=True, help="sim_pouring, pouring, folder:PATH ...")
        s.add_argument("--data-root", default=None)
        s.add_argument(
            "--split", default=None, help="evaluated split (default: val; anomaly: test)"
        )
        s.add_argument("--out", default="applications_out")
        add_device_arg(s)
        s.add_argument("--max-videos", type=int, default=None, help="cap videos per split")
        s.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "transfer":
            s.add_argument("--method", choices=ALIGN_METHODS, default="dtw")
            s.add_argument("--sources", type=int, default=5, help="labelled train videos used")
        if name == "retrieve":
            s.add_argument("--k", type=int, nargs="+", default=[1, 5, 10])
    return p.parse_args(argv)


def _embed_split(model: Any, ckpt: dict, args: argparse.Namespace, split: str) -> list[Any]:
    from tcc_model.evaluate import dataset_kwargs_from_checkpoint, embed_split

    return embed_split(
        model,
        args.dataset,
        split,
        args.data_root,
        args.max_videos,
        progress=not args.quiet,
        dataset_kwargs=dataset_kwargs_from_checkpoint(ckpt),
    )


def _measure(args: argparse.Namespace, train: list[Any], evald: list[Any], split: str) -> dict:
    """The chosen application's scores on the embedded splits."""
    from tcc_model.errors import DatasetError

    normal_train = [v for v in train if v.anomaly is None]
    if args.command in ("transfer", "retrieve"):
        src = [v for v in normal_train if v.phase_ids is not None]
        dst = [v for v in evald if v.anomaly is None and v.phase_ids is not None]
        if not src or not dst:
            raise DatasetError(
                f"{args.dataset}: {args.command} needs phase-labelled normal videos in train and "
                f"{split} (found {len(src)} and {len(dst)}); label them (docs/DATASET_FORMAT.md)"
            )
        if args.command == "transfer":
            src = src[: args.sources]
            out = transfer_accuracy(
                [v.embs for v in src],
                [v.phase_ids for v in src],
                [v.embs for v in dst],
                [v.phase_ids for v in dst],
                args.method,
            )
            return {"transfer": {**out, "num_sources": len(src)}}
        precision = retrieval_precision(
            [v.embs for v in dst],
            [v.phase_ids for v in dst],
            [v.embs for v in src],
            [v.phase_ids for v in src],
            args.k,
        )
        return {"precision_at_k": precision}
    if not any(v.anomaly is not None for v in evald):
        raise DatasetError(
            f"split {split!r} of {args.dataset} has no anomalous episodes; pick another "
            "--split or generate the dataset with anomalies"
        )
    scores = anomaly_auroc(
        [v.embs for v in normal_train],
        [v.embs for v in evald],
        [v.anomaly_mask for v in evald],
        [v.anomaly for v in evald],
    )
    return {"anomaly": scores}


def main(argv: Sequence[str] | None = None) -> int:
    """Embed train and the evaluated split, measure one application, write its JSON."""
    args = _parse_args(argv)
    from tcc_model.checkpoint import load_model
    from tcc_model.cli import check_checkpoint, check_device, print_written, stage
    from tcc_model.reporting import strict_json
    from tcc_model.utils import pick_device, write_text_atomic

    check_checkpoint(args.checkpoint)
    device = pick_device(check_device(args.device))
    with stage(f"loading {args.checkpoint}"):
        model, ckpt = load_model(args.checkpoint, device=device)
    split = args.split or ("test" if args.command == "anomaly" else "val")
    train = _embed_split(model, ckpt, args, "train")
    evald = _embed_split(model, ckpt, args, split)
    result: dict = {
        "command": args.command,
        "checkpoint": str(args.checkpoint),
        "dataset": args.dataset,
        "split": split,
        **_measure(args, train, evald, split),
    }
    path = Path(args.out) / f"{args.command}.json"
    text = strict_json(result, indent=1)
    write_text_atomic(path, text)
    print(text, end="")
    print_written({args.command: path})
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
