"""Per-frame feature cache: every camera frame is encoded once; the head gets its causal context."""

from __future__ import annotations

import numpy as np

from tcc_model.preprocess import context_indices


class FrameFeatureCache:
    """Ring buffer of the last ``context_stride * (k - 1) + 1`` per-frame features.

    Every camera frame is encoded once; :meth:`context` returns the ``k`` features the head needs
    for the newest frame (``context_indices`` semantics: oldest first, clamped at frame 0).
    """

    def __init__(self, context_frames: int, context_stride: int) -> None:
        if context_frames < 1 or context_stride < 1:
            raise ValueError(
                f"context_frames ({context_frames}) and context_stride ({context_stride}) "
                "must be >= 1"
            )
        self.context_frames = int(context_frames)
        self.context_stride = int(context_stride)
        self.capacity = self.context_stride * (self.context_frames - 1) + 1
        self._buffer: np.ndarray | None = None
        self.frames_seen = 0

    def reset(self) -> None:
        """Forget all frames (new episode); the buffer memory is kept."""
        self.frames_seen = 0

    def __len__(self) -> int:
        return min(self.frames_seen, self.capacity)

    def push(self, features: np.ndarray) -> None:
        """Append the features ``[C, h, w]`` (any shape) of the newest frame."""
        features = np.asarray(features)
        if self._buffer is None or self._buffer.shape[1:] != features.shape:
            if self.frames_seen and self._buffer is not None:
                raise ValueError(
                    f"features shape {features.shape} differs from the cached "
                    f"{self._buffer.shape[1:]}; call reset() when the encoder changes"
                )
            self._buffer = np.empty((self.capacity, *features.shape), dtype=features.dtype)
        self._buffer[self.frames_seen % self.capacity] = features
        self.frames_seen += 1

    def context(self) -> np.ndarray:
        """Features ``[k, ...]`` of the newest frame's causal context (oldest first)."""
        if self.frames_seen == 0 or self._buffer is None:
            raise ValueError("FrameFeatureCache.context(): push() a frame first")
        t = self.frames_seen - 1
        idx = context_indices(t, self.context_frames, self.context_stride)
        return self._buffer[idx % self.capacity]


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------
# Anomaly scores are each detector's statistic divided by its calibrated threshold (the largest
