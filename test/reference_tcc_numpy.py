"""Float64 numpy reference of the TCC / TCN formulas, written with plain loops (tests only).

Deliberately independent of ``tcc_model.losses``: one pair, one row, one cycle at a time,
directly from the formulas of the official implementation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def _similarity_row(query: np.ndarray, keys: np.ndarray, similarity_type: str, temperature: float):
    """Similarity of one query ``[D]`` to each key ``[M, D]`` -> ``[M]``."""
    dim = query.shape[0]
    out = np.zeros(keys.shape[0])
    for m in range(keys.shape[0]):
        if similarity_type == "l2":
            distance = query @ query + keys[m] @ keys[m] - 2.0 * (query @ keys[m])
            out[m] = -max(distance, 0.0)
        else:
            out[m] = query @ keys[m]
    return out / dim / temperature


def _row_loss(
    logits: np.ndarray,
    target: int,
    positions: np.ndarray,
    loss_type: str,
    label_smoothing: float,
    variance_lambda: float,
    huber_delta: float,
) -> float:
    num_classes = logits.shape[0]
    if loss_type == "classification":
        labels = np.full(num_classes, label_smoothing / num_classes)
        labels[target] += 1.0 - label_smoothing
        return float(-(labels * _log_softmax(logits)).sum())
    beta = _softmax(logits)
    true_time = positions[target]
    pred_time = float((beta * positions).sum())
    error = true_time - pred_time
    if loss_type == "regression_mse":
        return error**2
    if loss_type == "regression_mse_var":
        variance = float((beta * (positions - pred_time) ** 2).sum())
        return error**2 / variance + variance_lambda * np.log(variance)
    if loss_type == "regression_huber":
        if abs(error) <= huber_delta:
            return 0.5 * error**2
        return huber_delta * abs(error) - 0.5 * huber_delta**2
    raise ValueError(loss_type)


def _positions(steps: np.ndarray, seq_lens: np.ndarray, video: int, normalize: bool) -> np.ndarray:
    pos = steps[video].astype(np.float64)
    return pos / float(seq_lens[video]) if normalize else pos


def _maybe_normalize(embs: np.ndarray, normalize_embeddings: bool) -> np.ndarray:
    if not normalize_embeddings:
        return embs
    return embs / np.sqrt((embs**2).sum(-1, keepdims=True))


def alignment_loss(
    embs: np.ndarray,
    steps: np.ndarray,
    seq_lens: np.ndarray,
    loss_type: str = "classification",
    similarity_type: str = "l2",
    temperature: float = 0.1,
    label_smoothing: float = 0.1,
    variance_lambda: float = 0.001,
    huber_delta: float = 0.1,
    normalize_indices: bool = True,
    normalize_embeddings: bool = False,
) -> float:
    """Deterministic TCC loss: mean over all ordered pairs i != j and all frames t."""
    embs = _maybe_normalize(np.asarray(embs, np.float64), normalize_embeddings)
    num_videos, num_steps, _ = embs.shape
    losses = []
    for i in range(num_videos):
        positions = _positions(steps, seq_lens, i, normalize_indices)
        for j in range(num_videos):
            if i == j:
                continue
            for t in range(num_steps):
                alpha = _softmax(_similarity_row(embs[i, t], embs[j], similarity_type, temperature))
                neighbour = alpha @ embs[j]
                logits = _similarity_row(neighbour, embs[i], similarity_type, temperature)
                losses.append(
                    _row_loss(
                        logits,
                        t,
                        positions,
                        loss_type,
                        label_smoothing,
                        variance_lambda,
                        huber_delta,
                    )
                )
    return float(np.mean(losses))


def stochastic_alignment_loss(
    embs: np.ndarray,
    cycles: np.ndarray,
    start_frames: np.ndarray,
    steps: np.ndarray,
    seq_lens: np.ndarray,
    loss_type: str = "classification",
    similarity_type: str = "l2",
    temperature: float = 0.1,
    label_smoothing: float = 0.1,
    variance_lambda: float = 0.001,
    huber_delta: float = 0.1,
    normalize_indices: bool = True,
) -> float:
    """TCC loss of the given cycles ``[N, L+1]`` starting at ``start_frames [N]``."""
    embs = np.asarray(embs, np.float64)
    losses = []
    for cycle, frame in zip(cycles, start_frames):
        query = embs[cycle[0], frame]
        logits = None
        for video in cycle[1:]:
            logits = _similarity_row(query, embs[video], similarity_type, temperature)
            query = _softmax(logits) @ embs[video]
        positions = _positions(steps, seq_lens, cycle[0], normalize_indices)
        losses.append(
            _row_loss(
                logits,
                int(frame),
                positions,
                loss_type,
                label_smoothing,
                variance_lambda,
                huber_delta,
            )
        )
    return float(np.mean(losses))


def tcn_npairs_loss(embs: np.ndarray, reg_lambda: float = 0.002) -> float:
    """TCN n-pairs loss of interleaved ``[p0, s0, p1, s1, ...]`` embeddings ``[B, 2T, D]``."""
    embs = np.asarray(embs, np.float64)
    per_video = []
    for video in embs:
        anchors, positives = video[0::2], video[1::2]
        rows = []
        for t in range(anchors.shape[0]):
            logits = np.array([anchors[t] @ p for p in positives])
            rows.append(-_log_softmax(logits)[t])
        reg = 0.25 * reg_lambda * (np.mean((anchors**2).sum(1)) + np.mean((positives**2).sum(1)))
        per_video.append(np.mean(rows) + reg)
    return float(np.mean(per_video))


def numerical_gradient(fn: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6):
    """Central finite-difference gradient of scalar ``fn`` at ``x`` (float64)."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for k in range(flat_x.size):
        original = flat_x[k]
        flat_x[k] = original + eps
        upper = fn(x)
        flat_x[k] = original - eps
        lower = fn(x)
        flat_x[k] = original
        flat_grad[k] = (upper - lower) / (2.0 * eps)
    return grad
