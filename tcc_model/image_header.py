"""Dimensions of a JPEG or PNG read from its header, before any pixel is decoded.

A compressed image can claim any size in a few bytes (a 4 KiB JPEG saying 30000 x 30000 makes a
decoder allocate gigabytes); :func:`read_image_header` reads what the file claims so that a
caller can refuse it before decoding. Only JPEG and PNG are recognised, by their magic bytes.

Pure Python on the first bytes of the buffer (plus one vectorised count of JPEG scans): the cost
is independent of the claimed size. Every problem raises :class:`ImageHeaderError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"

#: JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic ...):
#: 0xC0-0xCF except DHT (0xC4), JPG (0xC8) and DAC (0xCC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field: TEM and the restart markers RST0-RST7.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9
#: Bytes searched for the frame header (APPn segments are at most 64 KiB each).
HEADER_BYTES = 1 << 20
#: Most header segments read before the frame header; real files have a handful (APPn, DQT ...).
MAX_JPEG_SEGMENTS = 1024
#: Most scans a progressive JPEG may have: each scan passes over the whole image, so thousands of
#: tiny scans make a "scan bomb" (common encoders write at most ~20).
MAX_JPEG_SCANS = 100


class ImageHeaderError(ValueError):
    """The buffer is not a JPEG or PNG with a readable header (the message says why)."""


@dataclass(frozen=True)
class ImageHeader:
    """What a compressed image's header claims."""

    format: str  # "jpeg" or "png"
    height: int
    width: int
    channels: int  # JPEG components, or PNG channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)

    @property
    def pixels(self) -> int:
        """``height * width``."""
        return self.height * self.width


def image_format(data: bytes | bytearray | memoryview) -> str | None:
    """``"jpeg"``, ``"png"`` or None, from the magic bytes."""
    head = bytes(data[:8])
    if head == PNG_SIGNATURE:
        return "png"
    if head[:2] == JPEG_SOI:
        return "jpeg"
    return None


def read_image_header(data: bytes | bytearray | memoryview | np.ndarray) -> ImageHeader:
    """The format and claimed dimensions of a JPEG or PNG buffer; never decodes pixels."""
    arr = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    buf = arr[:HEADER_BYTES].tobytes()
    kind = image_format(buf)
    if kind == "png":
        return _png_header(buf)
    if kind == "jpeg":
        header = _jpeg_header(buf)
        _check_scans(arr)
        return header
    magic = buf[:8].hex(" ") if buf else "nothing"
    raise ImageHeaderError(f"not a JPEG or PNG (starts with {magic})")


def _png_header(buf: bytes) -> ImageHeader:
    # signature (8), then the IHDR chunk: length (4) = 13, type (4), width, height (4 each),
    # bit depth, colour type, compression, filter, interlace (1 each), CRC (4)
    if len(buf) < 8 + 8 + 13:
        raise ImageHeaderError(f"PNG truncated inside its header ({len(buf)} bytes)")
    length, kind = struct.unpack(">I4s", buf[8:16])
    if kind != b"IHDR" or length != 13:
        raise ImageHeaderError("PNG does not start with an IHDR chunk")
    width, height, depth, colour = struct.unpack(">IIBB", buf[16:26])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16):
        raise ImageHeaderError(f"PNG has an invalid colour type {colour} / bit depth {depth}")
    return ImageHeader("png", height, width, channels)


def _jpeg_header(buf: bytes) -> ImageHeader:
    """Walk the marker segments after SOI up to the first start-of-frame (SOF) segment."""
    pos, end = 2, len(buf)
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos >= end or buf[pos] != 0xFF:
            raise ImageHeaderError(f"JPEG header is truncated or corrupt at byte {pos}")
        while pos < end and buf[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= end:
            break
        marker = buf[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (_JPEG_SOS, _JPEG_EOI):
            raise ImageHeaderError("JPEG has no frame header before its image data")
        if pos + 2 > end:
            break
        (length,) = struct.unpack(">H", buf[pos : pos + 2])
        if length < 2:
            raise ImageHeaderError(f"JPEG segment 0x{marker:02X} has an invalid length {length}")
        if marker in _JPEG_SOF:
            if pos + 8 > end:
                break
            height, width, components = struct.unpack(">HHB", buf[pos + 3 : pos + 8])
            if height == 0:
                raise ImageHeaderError("JPEG leaves its height to a DNL marker (unsupported)")
            return ImageHeader("jpeg", height, width, components)
        pos += length
    else:
        raise ImageHeaderError(f"JPEG has more than {MAX_JPEG_SEGMENTS} segments before its frame")
    raise ImageHeaderError(f"JPEG truncated inside its header ({len(buf)} bytes)")


def _check_scans(arr: np.ndarray) -> None:
    """Refuse JPEGs with more than :data:`MAX_JPEG_SCANS` start-of-scan markers.

    In entropy-coded data a 0xFF byte is always followed by 0x00 or a marker, so counting the
    byte pair FF DA counts the scans (vectorised; 0xFF bytes are rare, so the index is small).
    """
    ff = np.flatnonzero(arr[:-1] == 0xFF)
    scans = int(np.count_nonzero(arr[ff + 1] == _JPEG_SOS))
    if scans > MAX_JPEG_SCANS:
        raise ImageHeaderError(f"JPEG has {scans} scans (at most {MAX_JPEG_SCANS} accepted)")
