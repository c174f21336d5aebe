"""Video files and frame folders: decode to RGB uint8 ``[N, H, W, 3]`` and encode atomically.

Part of the dataset format (:mod:`tcc_model.data.format` re-exports every name). Missing or
corrupt input raises :class:`~tcc_model.errors.DatasetError` naming the file; writers go through
a temporary name, so an interrupted write leaves nothing under the final name.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from tcc_model.errors import DatasetError
from tcc_model.utils import atomic_path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _read_frame_folder(folder: Path) -> np.ndarray:
    import cv2

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f"{folder}: frame folder holds no {'/'.join(IMAGE_EXTENSIONS)} images")
    frames = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"{f}: unreadable image; replace or delete the frame")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    shapes = {fr.shape for fr in frames}
    if len(shapes) != 1:
        raise DatasetError(f"{folder}: frames have different sizes {sorted(shapes)}")
    return np.stack(frames)


def _read_video_file(path: Path) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path}: file has no video stream")
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except DatasetError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable or corrupt video ({exc})") from exc
    if not frames:
        raise DatasetError(f"{path}: video decodes to zero frames (corrupt or empty file)")
    return np.stack(frames)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode a video file (mp4, ... via PyAV) or a folder of png/jpg frames (sorted by name).

    Returns RGB uint8 ``[N, H, W, 3]``. Missing/corrupt input raises :class:`DatasetError`.
    """
    path = Path(path)
    if path.is_dir():
        return _read_frame_folder(path)
    if not path.is_file():
        raise DatasetError(f"{path}: video not found (expected a video file or a frame folder)")
    return _read_video_file(path)


def validate_frames(frames: np.ndarray, what: str) -> np.ndarray:
    """``frames`` as an array if it is RGB uint8 ``[N, H, W, 3]`` with N > 0, else DatasetError."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DatasetError(
            f"{what}: frames must be RGB uint8 [N, H, W, 3], got {frames.dtype} "
            f"{tuple(frames.shape)}"
        )
    if len(frames) == 0:
        raise DatasetError(f"{what}: no frames to write")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """Encode RGB uint8 ``[N, H, W, 3]`` frames as H.264 mp4 (yuv420p), atomically.

    Settings are deterministic (single-threaded x264, fixed preset/crf, frame timestamps from
    the frame index), so the same frames give the same bytes. Height and width must be even.
    """
    import av
    import cv2

    path = Path(path)
    frames = validate_frames(frames, str(path))
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise DatasetError(
            f"{path}: H.264/yuv420p needs even height and width, got {height}x{width}; "
            "resize the frames or store them as a frame folder (video_format='png')"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise DatasetError(f"{path}: fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.thread_count = 1
            stream.options = {
                "crf": str(crf),
                "preset": "veryfast",
                # Byte-identical output for identical frames: one x264 thread and no SIMD
                # (x264's asm paths were seen to give run-to-run differences on this CPU, and
                # differ between CPUs anyway). Encoding stays far cheaper than rendering.
                "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:asm=0",
            }
            time_base = 1 / rate
            for index, frame in enumerate(frames):
                # RGB -> I420 here rather than in swscale, whose output buffers carry
                # uninitialised padding that made x264's output vary between runs
                yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
                video_frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                # explicit timestamps: without them x264's output varies from run to run
                video_frame.pts, video_frame.time_base = index, time_base
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())


def write_frame_folder(folder: str | os.PathLike, frames: np.ndarray) -> None:
    """Write frames losslessly as ``folder/000000.png ...`` (replaced atomically as a whole)."""
    import shutil
    import tempfile

    import cv2

    folder = Path(folder)
    frames = validate_frames(frames, str(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for i, frame in enumerate(frames):
            if not cv2.imwrite(str(tmp / f"{i:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
                raise DatasetError(f"{folder}: cannot write frame {i}")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
