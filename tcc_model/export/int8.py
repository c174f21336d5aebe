"""int8 encoder: ONNX Runtime static quantisation (QDQ, per-channel int8 weights) and its cost."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.export import verify
from tcc_model.export.options import ENCODER_INPUT


def quantize_encoder_int8(
    encoder_path: Path, out_path: Path, calibration_frames: np.ndarray, batch_size: int = 8
) -> None:
    """Static int8 quantisation of the encoder graph (QDQ, per-channel weights) with ORT."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                np.array_split(
                    calibration_frames, max(1, math.ceil(len(calibration_frames) / batch_size))
                )
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {ENCODER_INPUT: np.ascontiguousarray(batch)}

    quantize_static(
        str(encoder_path),
        str(out_path),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


def _kendalls_tau(embeddings: list[np.ndarray]) -> float | None:
    try:
        from tcc_model.evaluation import kendalls_tau
    except ImportError:
        return None
    return float(kendalls_tau(embeddings)) if len(embeddings) >= 2 else None


def int8_accuracy(
    graphs: tuple[Path, Path, Path],
    reference: tuple[np.ndarray, np.ndarray],
    check_frames: np.ndarray,
    context: tuple[int, int],
    source: str,
    calibration_count: int,
    val_videos: Sequence[np.ndarray] | None,
) -> dict[str, Any]:
    """What int8 costs: feature/embedding differences on the check frames, val Kendall's tau.

    ``graphs`` = (fp32 encoder, int8 encoder, head); ``reference`` = PyTorch (features,
    embeddings) of ``check_frames``; ``context`` = (frames, stride).
    """
    fp32_encoder, int8_encoder, head = graphs
    k, stride = context
    ref_feats, ref_emb = reference
    q_feats, q_emb = verify.ort_embed_frames(int8_encoder, head, check_frames, k, stride)
    accuracy: dict[str, Any] = {
        "frames": source,
        "calibration_frames": calibration_count,
        "max_abs_diff_features_rel": float(
            np.abs(q_feats - ref_feats).max() / max(float(np.abs(ref_feats).max()), 1e-12)
        ),
        "max_abs_diff_embeddings": float(np.abs(q_emb - ref_emb).max()),
        "rel_rms_diff_embeddings": float(
            np.sqrt(np.mean((q_emb - ref_emb) ** 2)) / max(np.sqrt(np.mean(ref_emb**2)), 1e-12)
        ),
    }
    if val_videos:
        fp32 = [verify.ort_embed_frames(fp32_encoder, head, v, k, stride)[1] for v in val_videos]
        int8 = [verify.ort_embed_frames(int8_encoder, head, v, k, stride)[1] for v in val_videos]
        accuracy["kendalls_tau_val_fp32"] = _kendalls_tau(fp32)
        accuracy["kendalls_tau_val_int8"] = _kendalls_tau(int8)
        accuracy["val_videos"] = len(val_videos)
    return accuracy
