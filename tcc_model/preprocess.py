"""The single definition of frame preprocessing, shared by training, export, engines and nodes.

Frames outside the network are RGB uint8 ``[N, H, W, 3]``. The network takes ``[N, S, S, 3]``
(uint8, or float32 in 0..255) and normalises inside the graph with :class:`Normalize`, so every
backend and the ROS nodes feed exactly what training saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw RGB frames become network input."""

    image_size: int = 112
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color_order: str = "rgb"
    context_frames: int = 2
    context_stride: int = 15
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def context_span(context_frames: int, context_stride: int) -> int:
    """Frames one embedding's context spans: ``(k - 1) * stride + 1`` (16 for the default)."""
    return (int(context_frames) - 1) * int(context_stride) + 1


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize RGB uint8 frames ``[N, H, W, 3]`` (or one ``[H, W, 3]``) to ``size × size``.

    ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when growing; no crop. Frames already at
    ``size`` are returned unchanged (no copy).
    """
    frames = np.asarray(frames)
    single = frames.ndim == 3
    if single:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be RGB [N, H, W, 3] or [H, W, 3], got shape {tuple(frames.shape)}; "
            "convert grayscale/RGBA to RGB first"
        )
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    h, w = frames.shape[1:3]
    if (h, w) != (size, size):
        interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])
    return frames[0] if single else frames


def _define_normalize() -> type:
    """Build the torch ``Normalize`` module class (torch is imported only when it is needed)."""
    import torch
    from torch import nn

    class Normalize(nn.Module):
        """``[N, H, W, 3]`` RGB in 0..255 (uint8 or float) → normalised float ``[N, 3, H, W]``."""

        scale: torch.Tensor  # buffers, declared for the type checker
        shift: torch.Tensor

        def __init__(
            self,
            mean: tuple[float, ...] = (0.5, 0.5, 0.5),
            std: tuple[float, ...] = (0.5, 0.5, 0.5),
        ) -> None:
            super().__init__()
            scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
            shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
            self.register_buffer("scale", scale, persistent=False)
            self.register_buffer("shift", shift, persistent=False)

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            x = frames.to(self.scale.dtype).permute(0, 3, 1, 2)
            return x * self.scale - self.shift

    Normalize.__module__ = __name__
    Normalize.__qualname__ = "Normalize"
    return Normalize


def __getattr__(name: str) -> Any:
    # ``Normalize`` is a torch module; resolving it lazily keeps torch out of processes that only
    # resize frames (the ONNX Runtime engine and the ROS nodes).
    if name == "Normalize":
        cls = _define_normalize()
        globals()["Normalize"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def context_indices(t: int | np.ndarray, k: int, stride: int) -> np.ndarray:
    """Causal context indices of main frame(s) ``t``: ``[t - stride*(k-1), ..., t]``, clamped at 0.

    Returns shape ``[k]`` for a scalar ``t`` or ``[len(t), k]`` for an array (oldest first).
    """
    t_arr = np.asarray(t, dtype=np.int64)
    offsets = stride * np.arange(k - 1, -1, -1, dtype=np.int64)
    out = np.maximum(t_arr[..., None] - offsets, 0)
    return out
