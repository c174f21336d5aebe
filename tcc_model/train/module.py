"""The training step's module: embedder + algorithm loss, with the speed levers.

* ``amp``: the embedder runs under ``torch.autocast`` in bfloat16 on CUDA and on CPUs with
  native bf16 (AVX512-BF16 / AMX); float16 with loss scaling on CUDA devices without bf16; plain
  float32 on other CPUs (emulated bf16 is far slower there; the trainer says so). The loss, the
  L2 term, the weights and the optimizer stay float32 (``embs.float()`` before the loss).
* ``distinct_frames``: each distinct frame of a clip is encoded once and its features gathered
  for every context window / TCN positive that uses it (``Embedder.forward(frames, frame_ids)``).
  The embeddings are those of the plain path; in training mode BatchNorm's batch statistics come
  from the distinct frames instead of the repeated ones.
* ``compile``: :func:`compile_embedder` compiles encoder and head with inductor's
  ``fallback_random`` so that dropout draws the same numbers as eager.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tcc_model.algos import TrainingAlgo, l2_regularization
from tcc_model.models import Embedder


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA with bf16; AVX512-BF16/AMX CPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def amp_dtype_for(device: torch.device, amp: bool) -> torch.dtype | None:
    """Autocast dtype of ``--amp`` on ``device``.

    bfloat16 where the hardware has it; float16 (with loss scaling) on CUDA devices without
    bf16; None (float32) on a CPU without native bf16, where emulated bf16 runs many times
    slower than float32 (measured by ``benchmarks/bench_train.py``).
    """
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.bfloat16 if native_bf16(device) else None


def frame_ids(steps: torch.Tensor, context_frames: int, context_stride: int) -> torch.Tensor:
    """Video frame index of every frame of a batch: ``steps [B, S]`` → ``[B, S*k]``.

    The torch twin of ``tcc_model.preprocess.context_indices`` (the sampler's gather order).
    """
    offsets = context_stride * torch.arange(context_frames - 1, -1, -1, device=steps.device)
    ids = (steps.long().unsqueeze(-1) - offsets).clamp_min(0)
    return ids.reshape(steps.shape[0], -1)


class TrainModule(nn.Module):
    """Embedder + algorithm loss in one module (one DDP wrapper syncs both)."""

    def __init__(
        self,
        model: Embedder,
        algo: TrainingAlgo,
        l2_weight: float,
        amp_dtype: torch.dtype | None = None,
        distinct_frames: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.algo = algo
        self.l2_weight = l2_weight
        self.amp_dtype = amp_dtype
        self.distinct_frames = distinct_frames
        regularised: list[nn.Module] = [model.head]
        if model.cfg.encoder != "resnet50_conv4c":  # trained from scratch
            regularised.append(model.encoder)
        self._regularised = regularised

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings ``[B, S, D]`` (float32) of a batch's frames."""
        frames = batch["frames"]
        ids = None
        if self.distinct_frames:
            cfg = self.model.cfg
            ids = frame_ids(
                batch["steps"].to(frames.device), cfg.context_frames, cfg.context_stride
            )
        with torch.autocast(
            frames.device.type,
            dtype=self.amp_dtype or torch.bfloat16,
            enabled=self.amp_dtype is not None,
        ):
            embs = self.model(frames, ids)
        return embs.float()

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        embs = self.embed(batch)
        loss, parts = self.algo(embs, batch, generator)
        reg = l2_regularization(self._regularised, self.l2_weight).to(loss.device)
        parts["l2"] = float(reg.detach())
        return loss + reg, parts


def compile_embedder(model: Embedder, **options: Any) -> None:
    """``torch.compile`` encoder and head in place (state_dict keys unchanged).

    Inductor's ``fallback_random`` makes dropout draw from the eager RNG stream, so a compiled
    step reproduces the eager one within float tolerance (checked in the tests).
    """
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    model.encoder.compile(**options)
    model.head.compile(**options)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP / ``torch.compile`` wrappers."""
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)
