"""Input checks shared by the evaluation protocols (:mod:`tcc_model.evaluation`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_embs_list(embs_list: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    out = []
    dim = None
    for i, embs in enumerate(embs_list):
        arr = np.asarray(embs)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(
                f"{name}[{i}] must be a non-empty [num_frames, dim] array, got shape {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        if dim is None:
            dim = arr.shape[1]
        elif arr.shape[1] != dim:
            raise ValueError(
                f"{name}[{i}] has embedding dim {arr.shape[1]}, expected {dim} like {name}[0]"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}[{i}] contains NaN/inf; check the model that produced it")
        out.append(arr)
    return out


def _check_labels_list(
    labels_list: Sequence[np.ndarray], embs_list: Sequence[np.ndarray], name: str
) -> list[np.ndarray]:
    if len(labels_list) != len(embs_list):
        raise ValueError(
            f"{name} has {len(labels_list)} videos but the embeddings have {len(embs_list)}"
        )
    out = []
    for i, (labels, embs) in enumerate(zip(labels_list, embs_list)):
        arr = np.asarray(labels)
        if arr.ndim != 1 or arr.shape[0] != embs.shape[0]:
            raise ValueError(
                f"{name}[{i}] must be a [num_frames] array of {embs.shape[0]} phase ids, "
                f"got shape {arr.shape}"
            )
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0):
            raise ValueError(f"{name}[{i}] must hold non-negative integer phase ids")
        out.append(arr.astype(np.int64))
    return out


def _first_n_videos(num_videos: int, fraction: float) -> int:
    return max(1, int(fraction * num_videos))
