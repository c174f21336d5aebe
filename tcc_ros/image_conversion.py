"""Conversions between ROS image messages and RGB uint8 numpy frames.

Pure numpy (plus cv2 for YUV and compressed images); rclpy is not imported, so the functions work
on any object with the fields of ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (rclpy
messages, rosbags messages, ``types.SimpleNamespace``).

The common encodings are converted exactly with numpy. Others are handed to ``cv_bridge`` when it
is importable. Every malformed input raises :class:`ImageConversionError` naming the problem (the
input echoed in it is escaped and length-capped), so a caller counts it as a *rejected* frame.

Compressed frames are JPEG or PNG only. Their dimensions are read from the header
(:mod:`tcc_model.image_header`) and checked against ``max_pixels`` before anything is decoded: a
few-kilobyte "decompression bomb" claiming 30000 x 30000 pixels costs microseconds, not gigabytes.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from tcc_model.errors import safe_text
from tcc_model.image_header import ImageHeaderError, read_image_header

MAX_DIMENSION = 8192
"""Largest accepted image height or width; anything bigger is treated as corrupt."""

MAX_COMPRESSED_PIXELS = 1920 * 1200
"""Default limit on the pixels of a compressed frame (WUXGA; 1080p cameras fit).

Decoding costs about 3 bytes and, for PNG, about 20 ms per megapixel on one core, so a frame at
this limit stays well under 50 MiB and near 50 ms; raise it (``max_pixels``) for bigger cameras.
"""


class ImageConversionError(ValueError):
    """An image message that cannot be turned into an RGB frame (the message says why)."""


@dataclass(frozen=True)
class _Layout:
    channels: int
    bytes_per_channel: int
    to_rgb: str  # "rgb", "bgr", "rgba", "bgra", "mono", or a cv2 YUV conversion name


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, "rgb"),
    "bgr8": _Layout(3, 1, "bgr"),
    "rgba8": _Layout(4, 1, "rgba"),
    "bgra8": _Layout(4, 1, "bgra"),
    "mono8": _Layout(1, 1, "mono"),
    "8UC1": _Layout(1, 1, "mono"),
    "8UC3": _Layout(3, 1, "bgr"),  # OpenCV convention
    "rgb16": _Layout(3, 2, "rgb"),
    "bgr16": _Layout(3, 2, "bgr"),
    "mono16": _Layout(1, 2, "mono"),
    "yuv422": _Layout(2, 1, "COLOR_YUV2RGB_UYVY"),
    "uyvy": _Layout(2, 1, "COLOR_YUV2RGB_UYVY"),
    "yuv422_yuy2": _Layout(2, 1, "COLOR_YUV2RGB_YUY2"),
    "yuyv": _Layout(2, 1, "COLOR_YUV2RGB_YUY2"),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)


def _buffer_bytes(data: Any, what: str) -> np.ndarray:
    """View ``data`` (bytes, array.array, numpy array, list of ints) as flat uint8."""
    if data is None:
        raise ImageConversionError(f"{what}: data is missing")
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageConversionError(f"{what}: data must be uint8 bytes, got dtype {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageConversionError(f"{what}: data is not a byte buffer ({exc})") from exc


def _check_dimensions(height: int, width: int, what: str) -> None:
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"{what}: empty image ({height}x{width})")
    if height > MAX_DIMENSION or width > MAX_DIMENSION:
        raise ImageConversionError(
            f"{what}: absurd size {height}x{width} (max {MAX_DIMENSION} per side); "
            "the message is corrupt or not a camera image"
        )


def _int_field(msg: Any, name: str) -> int:
    """An integer field of a message (0 when absent); anything else is a conversion error."""
    value = getattr(msg, name, 0)
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageConversionError(f"image: {name} {safe_text(value)!r} is not an integer") from exc


def _cv_bridge() -> Any | None:
    """The ROS 2 ``cv_bridge.CvBridge`` instance when importable, else None."""
    try:
        from cv_bridge import CvBridge  # type: ignore[import-not-found]
    except ImportError:
        return None
    return CvBridge()


def image_to_rgb(msg: Any) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` to a fresh RGB uint8 ``[H, W, 3]`` array.

    Honours ``step`` (row padding) and ``is_bigendian`` (16-bit encodings, which are scaled to
    8 bit). Supported exactly: :data:`SUPPORTED_ENCODINGS`; other encodings go through
    ``cv_bridge`` when it is importable.
    """
    encoding = str(getattr(msg, "encoding", "") or "")
    height, width, step = (_int_field(msg, name) for name in ("height", "width", "step"))
    what = f"image {height}x{width} {safe_text(encoding)!r}"
    _check_dimensions(height, width, what)
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        return _image_to_rgb_with_cv_bridge(msg, what)
    row_bytes = width * layout.channels * layout.bytes_per_channel
    if step < row_bytes:
        raise ImageConversionError(
            f"{what}: step {step} is smaller than width * bytes per pixel = {row_bytes}"
        )
    if step % layout.bytes_per_channel:
        raise ImageConversionError(f"{what}: step {step} is not a multiple of the sample size")
    if layout.to_rgb.startswith("COLOR_") and width % 2:
        raise ImageConversionError(f"{what}: YUV 4:2:2 needs an even width")
    data = _buffer_bytes(getattr(msg, "data", None), what)
    expected = step * height
    if data.size != expected:
        problem = "truncated" if data.size < expected else "too long"
        raise ImageConversionError(
            f"{what}: data is {problem}: {data.size} bytes, expected step * height = {expected}"
        )
    rows = data.reshape(height, step)[:, :row_bytes]
    if layout.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if getattr(msg, "is_bigendian", 0) else "<u2")
        pixels = (
            np.ascontiguousarray(rows).view(dtype).reshape(height, width, layout.channels) >> 8
        ).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, layout.channels)
    return _pixels_to_rgb(pixels, layout.to_rgb)


def _pixels_to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    if order == "rgb":
        return np.array(pixels, dtype=np.uint8, order="C")
    if order == "bgr":
        return np.ascontiguousarray(pixels[..., ::-1])
    if order == "rgba":
        return np.ascontiguousarray(pixels[..., :3])
    if order == "bgra":
        return np.ascontiguousarray(pixels[..., 2::-1])
    if order == "mono":
        return np.repeat(pixels, 3, axis=2)
    try:
        return cv2.cvtColor(np.ascontiguousarray(pixels), getattr(cv2, order))
    except cv2.error as exc:
        raise ImageConversionError(
            f"{order}: OpenCV could not convert it ({_cv_reason(exc)})"
        ) from exc


def _image_to_rgb_with_cv_bridge(msg: Any, what: str) -> np.ndarray:
    bridge = _cv_bridge()
    if bridge is None:
        raise ImageConversionError(
            f"{what}: unsupported encoding; supported: {', '.join(SUPPORTED_ENCODINGS)} "
            "(install cv_bridge for others)"
        )
    try:
        rgb = np.asarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except Exception as exc:  # cv_bridge raises its own error types
        raise ImageConversionError(
            f"{what}: cv_bridge could not convert it ({safe_text(exc)})"
        ) from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageConversionError(f"{what}: cv_bridge returned shape {rgb.shape} {rgb.dtype}")
    return np.array(rgb, order="C")


def compressed_to_rgb(msg: Any, max_pixels: int = MAX_COMPRESSED_PIXELS) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) to RGB uint8 ``[H, W, 3]``.

    The format is taken from the data's magic bytes (drivers fill ``format`` loosely). Frames
    whose header claims more than ``max_pixels`` pixels (or more than :data:`MAX_DIMENSION` per
    side) are refused before decoding; other formats, broken headers and data OpenCV cannot
    decode raise :class:`ImageConversionError` too.
    """
    fmt = str(getattr(msg, "format", "") or "")
    what = f"compressed image {safe_text(fmt)!r}"
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(f"{what}: depth images are not camera frames")
    data = _buffer_bytes(getattr(msg, "data", None), what)
    if data.size == 0:
        raise ImageConversionError(f"{what}: data is empty")
    try:
        header = read_image_header(data)
    except ImageHeaderError as exc:
        raise ImageConversionError(f"{what}: {data.size} bytes: {exc}") from exc
    what = f"{what} ({header.format} {header.height}x{header.width})"
    _check_dimensions(header.height, header.width, what)
    if header.pixels > max_pixels:
        raise ImageConversionError(
            f"{what}: {header.pixels} pixels exceed the limit of {max_pixels} "
            "(refused before decoding; raise the limit for a bigger camera)"
        )
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageConversionError(
            f"{what}: OpenCV could not decode it ({_cv_reason(exc)})"
        ) from exc
    if bgr is None:
        raise ImageConversionError(
            f"{what}: {data.size} bytes could not be decoded (corrupt or truncated)"
        )
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise ImageConversionError(f"{what}: decoded to an unexpected shape {bgr.shape}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)


def _cv_reason(exc: Exception) -> str:
    """The one-line reason of a ``cv2.error`` (its text spans several lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return safe_text(lines[-1] if lines else type(exc).__name__)


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict[str, Any]:
    """Fields of a ``sensor_msgs/Image`` holding ``rgb`` (``[H, W, 3]`` uint8) as rgb8 or bgr8.

    Use as ``Image(header=header, **rgb_to_image_fields(frame))``.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 [H, W, 3], got {rgb.shape} {rgb.dtype}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"encoding must be 'rgb8' or 'bgr8', got {encoding!r}")
    _check_dimensions(rgb.shape[0], rgb.shape[1], "rgb")
    pixels = rgb if encoding == "rgb8" else rgb[..., ::-1]
    height, width = rgb.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * 3,
        "data": np.ascontiguousarray(pixels).tobytes(),
    }


def rgb_to_compressed_fields(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> dict:
    """Fields of a ``sensor_msgs/CompressedImage`` holding ``rgb`` encoded as JPEG or PNG."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 [H, W, 3], got {rgb.shape} {rgb.dtype}")
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", rgb[..., ::-1], params)
    if not ok:
        raise ValueError(f"cv2 could not encode a {rgb.shape} frame as {fmt}")
    return {"format": f"rgb8; {fmt} compressed bgr8", "data": encoded.tobytes()}
