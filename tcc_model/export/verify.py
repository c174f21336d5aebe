"""Parity of the exported graphs with PyTorch, run with ONNX Runtime on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.export.options import (
    ENCODER_INPUT,
    ENCODER_OUTPUT,
    HEAD_INPUT,
    HEAD_OUTPUT,
    ExportError,
)
from tcc_model.preprocess import context_indices

LOG = logging.getLogger(__name__)


def ort_embed_frames(
    encoder_path: Path, head_path: Path, frames: np.ndarray, k: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime features and causal-context embeddings of a frame sequence."""
    from tcc_model.engine import make_ort_session

    encoder = make_ort_session(encoder_path, threads=1, providers=["CPUExecutionProvider"])
    head = make_ort_session(head_path, threads=1, providers=["CPUExecutionProvider"])
    feats = encoder.run([ENCODER_OUTPUT], {ENCODER_INPUT: frames})[0]
    idx = context_indices(np.arange(len(frames)), k, stride)
    emb = head.run([HEAD_OUTPUT], {HEAD_INPUT: np.ascontiguousarray(feats[idx])})[0]
    return feats, emb


def parity_report(
    reference: tuple[np.ndarray, np.ndarray],
    onnx: tuple[np.ndarray, np.ndarray],
    tolerance_rel: float,
    source: str,
) -> dict[str, Any]:
    """The manifest's ``verification`` section; raises :class:`ExportError` when it fails.

    ``reference`` and ``onnx`` are ``(features, embeddings)``. The check fails when the largest
    absolute embedding difference exceeds ``tolerance_rel`` times the largest PyTorch value.
    """
    ref_feats, ref_emb = reference
    onnx_feats, onnx_emb = onnx
    scale = float(np.abs(ref_emb).max())
    max_diff = float(np.abs(onnx_emb - ref_emb).max())
    tolerance = tolerance_rel * max(scale, 1e-6)
    if not max_diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"ONNX and PyTorch embeddings differ by {max_diff:.3g} > tolerance {tolerance:.3g} "
            f"({tolerance_rel:g} x max |embedding| {scale:.3g}); check the model for "
            "export-unsafe operations or try another --opset"
        )
    LOG.info("ONNX parity: max |diff| %.3g (tolerance %.3g)", max_diff, tolerance)
    return {
        "frames": source,
        "num_frames": len(ref_emb),
        "max_abs_diff_embeddings": max_diff,
        "max_abs_diff_features": float(np.abs(onnx_feats - ref_feats).max()),
        "embedding_scale_max_abs": scale,
        "tolerance_rel": tolerance_rel,
        "tolerance_abs": tolerance,
        "passed": True,
    }
