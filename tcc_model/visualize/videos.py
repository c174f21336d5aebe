"""Videos that people read: captions on frames and the synchronized playback grid.

Videos are H.264 MP4 via :func:`tcc_model.data.format.write_video`; frames are RGB uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Caption font height relative to the frame height (clamped to a legible minimum).
_FONT_PER_PIXEL = 1.0 / 300.0
_MIN_FONT_SCALE = 0.33
#: Frames shorter than this get no caption (the text would cover them).
MIN_CAPTION_HEIGHT = 32


def phase_text(phase_ids: np.ndarray | None, phase_names: Sequence[str] | None, t: int) -> str:
    """``"phase <name>"`` of frame ``t`` (empty without labels; ``phase <id>`` without names)."""
    if phase_ids is None or not 0 <= t < len(phase_ids):
        return ""
    k = int(phase_ids[t])
    if k < 0:
        return "phase -"
    name = phase_names[k] if phase_names is not None and k < len(phase_names) else str(k)
    return f"phase {name}"


def annotate_frames(
    frames: np.ndarray, captions: Sequence[str], footers: Sequence[str] | None = None
) -> np.ndarray:
    """Copy of ``frames [N, H, W, 3]`` with ``captions[i]`` on top of frame i, ``footers[i]`` below.

    Text (lines split on newlines) is white on a dark band, scaled with the frame height so it
    stays legible from 112 px frames upwards; frames under ``MIN_CAPTION_HEIGHT`` px stay as
    they are.
    """
    frames = np.ascontiguousarray(frames, dtype=np.uint8).copy()
    for texts, what in ((captions, "captions"), (footers, "footers")):
        if texts is not None and len(texts) != len(frames):
            raise ValueError(f"{len(texts)} {what} for {len(frames)} frames")
    if frames.shape[1] < MIN_CAPTION_HEIGHT:
        return frames
    for i, frame in enumerate(frames):
        _draw_band(frame, captions[i], top=True)
        if footers is not None:
            _draw_band(frame, footers[i], top=False)
    return frames


def _draw_band(frame: np.ndarray, text: str, top: bool) -> None:
    """Draw ``text`` in place on a darkened band at the top or bottom of ``frame``."""
    import cv2

    lines = [line for line in text.split("\n") if line]
    if not lines:
        return
    h = frame.shape[0]
    scale = max(_MIN_FONT_SCALE, h * _FONT_PER_PIXEL)
    thickness = 1 if scale < 0.8 else 2
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, text_h), baseline = cv2.getTextSize("Ag", font, scale, thickness)
    line_h = text_h + baseline + 2
    band = min(h, line_h * len(lines) + 2)
    rows = slice(0, band) if top else slice(h - band, h)
    frame[rows] = (frame[rows].astype(np.uint16) * 2 // 7).astype(np.uint8)
    offset = 0 if top else h - band
    for i, line in enumerate(lines):
        y = offset + (i + 1) * line_h - baseline
        cv2.putText(frame, line, (3, y), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def synchronized_grid(
    reference_frames: np.ndarray,
    reference_embs: np.ndarray,
    others: Sequence[tuple[np.ndarray, np.ndarray]],
    method: str = "nn",
    columns: int | None = None,
    names: Sequence[str] | None = None,
    phases: Sequence[np.ndarray | None] | None = None,
    phase_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Frames ``[T_ref, H*rows, W*cols, 3]``: the reference and every other video, time-aligned.

    ``others`` holds ``(frames, embs)`` per video; at reference time ``t`` each tile shows the
    frame of that video aligned to reference frame ``t`` (its nearest neighbour, or DTW). All
    videos must share the reference's frame size. Tile 0 is the reference (red border). Every
    tile is captioned with its video's name (``names``: reference first) and frame index, and,
    with ``phases`` (per-frame phase ids per video, reference first), its phase at the bottom.
    """
    from tcc_model.align import align_embeddings

    h, w = reference_frames.shape[1:3]
    count = len(others) + 1
    if names is not None and len(names) != count:
        raise ValueError(f"names has {len(names)} entries for {count} videos (reference first)")
    if phases is not None and len(phases) != count:
        raise ValueError(f"phases has {len(phases)} entries for {count} videos (reference first)")
    steps = np.arange(len(reference_frames))
    mappings = [steps]
    tiles_src = [reference_frames]
    for n, (frames, embs) in enumerate(others):
        if frames.shape[1:3] != (h, w):
            raise ValueError(
                f"others[{n}] frames are {frames.shape[1:3]}, expected {(h, w)} like the reference"
            )
        mappings.append(align_embeddings(reference_embs, embs, method))
        tiles_src.append(frames)
    tiles = []
    for n, (frames, mapping) in enumerate(zip(tiles_src, mappings)):
        title = names[n] if names is not None else ("reference" if n == 0 else f"video {n}")
        ids = phases[n] if phases is not None else None
        captions = ["\n".join(filter(None, [title, f"frame {int(m)}"])) for m in mapping]
        footers = [phase_text(ids, phase_names, int(m)) for m in mapping]
        tiles.append(annotate_frames(frames[mapping], captions, footers))
    cols = columns or int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    tiles += [np.zeros_like(reference_frames)] * (rows * cols - len(tiles))
    tiles[0] = _border(tiles[0])
    grid = np.stack(tiles).reshape(rows, cols, *reference_frames.shape)
    # [rows, cols, T, h, w, 3] -> [T, rows*h, cols*w, 3]
    grid = grid.transpose(2, 0, 3, 1, 4, 5).reshape(len(reference_frames), rows * h, cols * w, 3)
    return grid[:, : grid.shape[1] // 2 * 2, : grid.shape[2] // 2 * 2]


def _border(frames: np.ndarray, width: int = 2) -> np.ndarray:
    out = frames.copy()
    red = np.array([255, 0, 0], dtype=frames.dtype)
    out[:, :width], out[:, -width:], out[:, :, :width], out[:, :, -width:] = red, red, red, red
    return out


def write_synchronized_grid(
    path: str | Path,
    reference_frames: np.ndarray,
    reference_embs: np.ndarray,
    others: Sequence[tuple[np.ndarray, np.ndarray]],
    fps: float,
    method: str = "nn",
    names: Sequence[str] | None = None,
    phases: Sequence[np.ndarray | None] | None = None,
    phase_names: Sequence[str] | None = None,
) -> Path:
    """Write :func:`synchronized_grid` as an MP4 at ``fps`` (the reference's frame rate)."""
    from tcc_model.data.format import write_video

    path = Path(path)
    grid = synchronized_grid(
        reference_frames,
        reference_embs,
        others,
        method,
        names=names,
        phases=phases,
        phase_names=phase_names,
    )
    write_video(path, grid, fps)
    return path
