"""The ``overlay`` image: the camera frame with phase, progress bar and alarm drawn on it.

Frames smaller than :data:`MIN_SIDE` pixels are enlarged (nearest neighbour, whole factors) before
drawing, so the text stays legible on a 112 x 112 camera as on 640 x 480.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Shorter side (px) below which the frame is enlarged before text is drawn.
MIN_SIDE = 240


def _label(out: np.ndarray, text: str, row: int, scale: float, colour: tuple) -> int:
    """Draw ``text`` on a dark box at ``row`` (top y); returns the next free row."""
    import cv2

    thickness = max(1, int(round(1.6 * scale)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, int(4 * scale))
    cv2.rectangle(out, (0, row), (tw + 2 * pad, row + th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(
        out,
        text,
        (pad, row + pad + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        colour,
        thickness,
        cv2.LINE_AA,
    )
    return row + th + base + 2 * pad


def draw_overlay(frame: np.ndarray, result: Any) -> np.ndarray:
    """Copy of RGB ``frame`` (enlarged if small) with phase, progress and anomaly drawn on it."""
    import cv2

    h, w = frame.shape[:2]
    factor = max(1, math.ceil(MIN_SIDE / max(1, min(h, w))))
    out = (
        cv2.resize(frame, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST)
        if factor > 1
        else frame.copy()
    )
    h, w = out.shape[:2]
    scale = max(0.45, min(h, w) / 560.0)
    bar_h = max(6, int(14 * scale))
    progress = float(getattr(result, "progress", 0.0))
    progress = float(np.clip(progress, 0.0, 1.0)) if math.isfinite(progress) else 0.0
    cv2.rectangle(out, (0, h - bar_h), (w - 1, h - 1), (40, 40, 40), -1)
    cv2.rectangle(out, (0, h - bar_h), (int(progress * (w - 1)), h - 1), (60, 200, 60), -1)
    phase = str(getattr(result, "phase_name", "") or "?")
    row = _label(out, f"{phase} {100 * progress:.0f}%", 0, scale, (255, 255, 255))
    if getattr(result, "anomaly", False):
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), (255, 0, 0), max(2, int(5 * scale)))
        kind = str(getattr(result, "anomaly_kind", "") or "anomaly")
        _label(out, f"ANOMALY: {kind}", row, scale, (255, 90, 90))
    return out
