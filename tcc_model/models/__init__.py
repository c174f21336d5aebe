"""Frame encoders, context heads and the :class:`Embedder` that combines them.

Modules: :mod:`~tcc_model.models.config` (:class:`ModelConfig`), :mod:`~tcc_model.models.encoders`,
:mod:`~tcc_model.models.heads`, :mod:`~tcc_model.models.embedder` (:class:`Embedder`,
:func:`build_model`).

Conventions (see ``docs/ARCHITECTURE.md``):

* ``encoder(frames [N, H, W, 3] RGB 0..255, uint8 or float) -> features [N, C, h, w]``; the
  encoder normalises its input with :class:`tcc_model.preprocess.Normalize` first.
* ``head(context_features [N, k, C, h, w]) -> embeddings [N, D]`` (k context frames, oldest first).
* ``Embedder.forward(frames [B, T*k, H, W, 3]) -> [B, T, D]``.

Every module is ONNX-exportable: no data-dependent Python control flow in ``forward``.
"""

from __future__ import annotations

from tcc_model.models.config import ENCODERS, HEADS, STEMS, TRAIN_BASE_MODES, ModelConfig
from tcc_model.models.embedder import Embedder, build_model, distinct_positions
from tcc_model.models.encoders import LightEncoder, ResNet50Conv4cEncoder, VGGMEncoder
from tcc_model.models.heads import LightHead, PaperConv3dHead

__all__ = [
    "ENCODERS",
    "HEADS",
    "STEMS",
    "TRAIN_BASE_MODES",
    "Embedder",
    "LightEncoder",
    "LightHead",
    "ModelConfig",
    "PaperConv3dHead",
    "ResNet50Conv4cEncoder",
    "VGGMEncoder",
    "build_model",
    "distinct_positions",
]
