"""Export a trained model to a deployment bundle (ONNX, optional int8 and TensorRT).

``python -m tcc_model.export --checkpoint CKPT --out BUNDLE_DIR [--dataset NAME] [--quantize-int8]
[--int8-calib N] [--tensorrt] [--fp16] [--opset 18]``

Writes into ``BUNDLE_DIR`` (atomically: a temporary directory renamed at the end):

* ``encoder.onnx``: ``frames`` ``[N, S, S, 3]`` uint8 RGB → ``features`` ``[N, C, h, w]``
  (normalisation inside the graph), dynamic batch;
* ``head.onnx``: ``context_features`` ``[N, k, C, h, w]`` → ``embeddings`` ``[N, D]``,
  dynamic batch;
* ``model.safetensors``: the PyTorch weights (for the ``torch`` engine backend);
* ``encoder_int8.onnx`` with ``--quantize-int8`` (ONNX Runtime static quantisation, QDQ,
  per-channel int8 weights, uint8 activations; calibrated on real frames with ``--dataset``);
* ``*.plan`` TensorRT engines with ``--tensorrt`` (needs the ``tensorrt`` package and a CUDA GPU);
* ``bundle.yaml`` (see :mod:`tcc_model.bundle`).

Parity check: the ONNX graphs are run with ONNX Runtime (CPU) on check frames (the dataset's val
frames, else deterministic synthetic frames) and compared with PyTorch. The export fails when the
largest absolute embedding difference exceeds ``tolerance_rel`` (default 1e-3) times the largest
absolute PyTorch embedding value.

Modules: :mod:`~tcc_model.export.options` (typed options, constants), ``frames`` (check and
calibration frames), ``onnx_graphs`` (torch → ONNX), ``verify`` (parity), ``int8``, ``tensorrt``,
``writer`` (:func:`export_bundle`), ``cli``. The torch-dependent names are imported lazily, so
``from tcc_model.export import synthetic_frames`` does not import torch.
"""

from __future__ import annotations

from typing import Any

from tcc_model.export.frames import load_dataset_frames, synthetic_frames
from tcc_model.export.options import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE_REL,
    ENCODER_FILE,
    ENCODER_INPUT,
    ENCODER_INT8_FILE,
    ENCODER_OUTPUT,
    EXPORTERS,
    HEAD_FILE,
    HEAD_INPUT,
    HEAD_OUTPUT,
    WEIGHTS_FILE,
    ExportError,
    ExportInputs,
    ExportOptions,
)

_LAZY = {
    "export_bundle": "tcc_model.export.writer",
    "torch_embed_frames": "tcc_model.export.onnx_graphs",
    "export_onnx": "tcc_model.export.onnx_graphs",
    "ort_embed_frames": "tcc_model.export.verify",
    "quantize_encoder_int8": "tcc_model.export.int8",
    "build_tensorrt_engine": "tcc_model.export.tensorrt",
    "TENSORRT_MAX_BATCH": "tcc_model.export.tensorrt",
    "main": "tcc_model.export.cli",
}

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE_REL",
    "ENCODER_FILE",
    "ENCODER_INPUT",
    "ENCODER_INT8_FILE",
    "ENCODER_OUTPUT",
    "EXPORTERS",
    "HEAD_FILE",
    "HEAD_INPUT",
    "HEAD_OUTPUT",
    "WEIGHTS_FILE",
    "ExportError",
    "ExportInputs",
    "ExportOptions",
    "load_dataset_frames",
    "synthetic_frames",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import the torch-dependent parts on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tcc_model.export' has no attribute {name!r}")
