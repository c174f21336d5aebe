"""Image message <-> RGB frame conversion, with fake message objects (no ROS needed)."""

from __future__ import annotations

import array
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import types
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tcc_model.image_header import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    PNG_SIGNATURE,
    ImageHeaderError,
    read_image_header,
)
from tcc_ros.image_conversion import (
    MAX_DIMENSION,
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed_fields,
    rgb_to_image_fields,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: int = 0, data=None):
    h = pixels.shape[0]
    rows = pixels.reshape(h, -1)
    rows = rows.view(np.uint8) if rows.dtype != np.uint8 else rows
    padded = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return SimpleNamespace(
        height=h,
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=bigendian,
        step=padded.shape[1],
        data=array.array("B", padded.tobytes()) if data is None else data,
    )


@pytest.mark.parametrize("pad", [0, 3])
def test_rgb_bgr_rgba_bgra_are_exact_with_row_padding(pad: int) -> None:
    alpha = np.full(RGB.shape[:2] + (1,), 77, np.uint8)
    cases = {
        "rgb8": RGB,
        "bgr8": RGB[..., ::-1],
        "rgba8": np.concatenate([RGB, alpha], axis=2),
        "bgra8": np.concatenate([RGB[..., ::-1], alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        out = image_to_rgb(_image(np.ascontiguousarray(pixels), encoding, pad=pad))
        assert out.dtype == np.uint8 and out.shape == RGB.shape
        np.testing.assert_array_equal(out, RGB, err_msg=encoding)


def test_mono8_is_replicated_to_three_channels() -> None:
    gray = RGB[..., 0].copy()
    out = image_to_rgb(_image(gray, "mono8", pad=1))
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=2))


@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_honours_endianness(bigendian: int) -> None:
    values = (RGB[..., 0].astype(np.uint16) << 8) | 0x55
    stored = values.astype(">u2" if bigendian else "<u2")
    out = image_to_rgb(_image(stored, "mono16", bigendian=bigendian))
    np.testing.assert_array_equal(out[..., 1], RGB[..., 0])


def test_result_is_a_writable_copy_of_readonly_bytes() -> None:
    msg = _image(RGB, "rgb8", data=RGB.tobytes())
    out = image_to_rgb(msg)
    out[0, 0] = 0  # must not raise, must not touch the message
    assert msg.data[:3] == RGB[0, 0].tobytes()


def test_numpy_and_list_data_are_accepted() -> None:
    np.testing.assert_array_equal(image_to_rgb(_image(RGB, "rgb8", data=RGB.reshape(-1))), RGB)
    np.testing.assert_array_equal(image_to_rgb(_image(RGB, "rgb8", data=list(RGB.tobytes()))), RGB)


@pytest.mark.parametrize(
    "encoding,order",
    [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")],
)
def test_yuv422_byte_orders(encoding: str, order: str) -> None:
    # two gray pixels: Y0 = 60 (dark), Y1 = 200 (bright), neutral chroma
    macro = [128, 60, 128, 200] if order == "uyvy" else [60, 128, 200, 128]
    data = np.tile(np.array(macro, np.uint8), (2, 3))  # 2 rows x 6 pixels
    msg = SimpleNamespace(
        height=2, width=6, encoding=encoding, is_bigendian=0, step=12, data=data.tobytes()
    )
    out = image_to_rgb(msg).astype(int)
    assert out.shape == (2, 6, 3)
    assert np.all(np.abs(out - out[..., :1]) <= 1), "neutral chroma must give gray"
    assert np.all(out[:, 1::2, 0] > out[:, 0::2, 0] + 100)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"encoding": "bayer_rggb8"}, "unsupported encoding"),
        ({"encoding": ""}, "unsupported encoding"),
        ({"step": 20}, "step 20 is smaller"),
        ({"data": RGB.tobytes()[:-5]}, "truncated"),
        ({"data": RGB.tobytes() + b"\0"}, "too long"),
        ({"data": b""}, "truncated"),
        ({"data": None}, "missing"),
        ({"height": 0}, "empty image"),
        ({"width": -3}, "empty image"),
        ({"height": MAX_DIMENSION + 1}, "absurd size"),
    ],
)
def test_malformed_images_raise_a_named_error(change: dict, needle: str) -> None:
    msg = _image(RGB, "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageConversionError, match=needle):
        image_to_rgb(msg)


def test_odd_width_yuv_is_rejected() -> None:
    msg = SimpleNamespace(
        height=1, width=3, encoding="yuv422", is_bigendian=0, step=6, data=bytes(6)
    )
    with pytest.raises(ImageConversionError, match="even width"):
        image_to_rgb(msg)


def test_conversion_error_is_a_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)


def test_unknown_encoding_uses_cv_bridge_when_importable(monkeypatch) -> None:
    calls = []

    class FakeBridge:
        def imgmsg_to_cv2(self, msg, desired_encoding):
            calls.append(desired_encoding)
            return RGB

    monkeypatch.setitem(sys.modules, "cv_bridge", types.SimpleNamespace(CvBridge=FakeBridge))
    out = image_to_rgb(_image(RGB, "bayer_rggb8"))
    assert calls == ["rgb8"]
    np.testing.assert_array_equal(out, RGB)


def test_png_round_trip_is_exact_and_jpeg_is_close() -> None:
    frame = np.ascontiguousarray(np.repeat(np.repeat(RGB, 8, axis=0), 8, axis=1))
    png = SimpleNamespace(**rgb_to_compressed_fields(frame, "png"))
    np.testing.assert_array_equal(compressed_to_rgb(png), frame)
    jpeg = SimpleNamespace(**rgb_to_compressed_fields(frame, "jpeg", quality=95))
    decoded = compressed_to_rgb(jpeg)
    assert decoded.shape == frame.shape
    assert np.abs(decoded.astype(int) - frame).mean() < 12


def test_compressed_accepts_a_bgr_encoded_jpeg_from_opencv() -> None:
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR order
    ok, enc = cv2.imencode(".png", bgr)
    out = compressed_to_rgb(SimpleNamespace(format="png", data=array.array("B", enc.tobytes())))
    assert out[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    "msg,needle",
    [
        (SimpleNamespace(format="jpeg", data=b""), "empty"),
        (SimpleNamespace(format="jpeg", data=b"\xff\xd8not a jpeg at all"), "JPEG header"),
        (SimpleNamespace(format="16UC1; compressedDepth png", data=b"\x89PNG"), "depth"),
    ],
)
def test_bad_compressed_images_raise(msg, needle: str) -> None:
    with pytest.raises(ImageConversionError, match=needle):
        compressed_to_rgb(msg)


def test_truncated_jpeg_is_rejected_or_decoded_without_crash() -> None:
    frame = np.ascontiguousarray(np.repeat(np.repeat(RGB, 8, axis=0), 8, axis=1))
    data = rgb_to_compressed_fields(frame, "jpeg")["data"]
    with pytest.raises(ImageConversionError):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=data[:20]))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_image_fields_round_trip(encoding: str) -> None:
    fields = rgb_to_image_fields(RGB, encoding)
    assert fields["step"] == RGB.shape[1] * 3 and fields["encoding"] == encoding
    np.testing.assert_array_equal(image_to_rgb(SimpleNamespace(**fields)), RGB)


def test_image_fields_reject_non_rgb() -> None:
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_image_fields(RGB[..., 0])
    with pytest.raises(ValueError, match="encoding"):
        rgb_to_image_fields(RGB, "mono8")


# ------------------------------------------------------------------------------------------------
# Hostile compressed frames: sizes come from the header, before any decoding


def _jpeg(height: int = 16, width: int = 24, progressive: bool = False) -> bytes:
    frame = np.zeros((height, width, 3), np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, 50, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    return cv2.imencode(".jpg", frame, params)[1].tobytes()


def _jpeg_claiming(height: int, width: int) -> bytes:
    """A small valid JPEG whose frame header is patched to claim ``height`` x ``width``."""
    data = bytearray(_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_bomb(height: int, width: int, rows: int | None = None) -> bytes:
    """A 1-bit grey PNG of zeros: a few KB on the wire, ``3 * height * width`` bytes decoded.

    ``rows`` < ``height`` writes only that many rows (the header still claims ``height``).
    """
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    rows = height if rows is None else rows
    rows_per_chunk = max(1, (1 << 22) // len(row))
    body = b"".join(
        packer.compress(row * min(rows_per_chunk, rows - r)) for r in range(0, rows, rows_per_chunk)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body + packer.flush())
        + _png_chunk(b"IEND", b"")
    )


def _progressive_scan_bomb(scans: int) -> bytes:
    """A progressive JPEG with its last scan repeated until it has ``scans`` scans."""
    data = _jpeg(progressive=True)
    last_sos = data.rindex(b"\xff\xda")
    body = data[last_sos:-2]
    return data[:-2] + body * (scans - data.count(b"\xff\xda")) + data[-2:]


@pytest.mark.parametrize(
    "data,expected",
    [
        (_jpeg(16, 24), ("jpeg", 16, 24, 3)),
        (_jpeg(33, 17, progressive=True), ("jpeg", 33, 17, 3)),
        (cv2.imencode(".png", np.zeros((9, 5), np.uint8))[1].tobytes(), ("png", 9, 5, 1)),
        (cv2.imencode(".png", np.zeros((4, 6, 4), np.uint8))[1].tobytes(), ("png", 4, 6, 4)),
        (_jpeg_claiming(30000, 30000), ("jpeg", 30000, 30000, 3)),
        (_png_bomb(40000, 40000, rows=1), ("png", 40000, 40000, 1)),
    ],
)
def test_header_parser_reads_the_claimed_size(data: bytes, expected: tuple) -> None:
    header = read_image_header(data)
    assert (header.format, header.height, header.width, header.channels) == expected


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"", "not a JPEG or PNG"),
        (b"GIF89a\x01\x00\x01\x00", "not a JPEG or PNG"),
        (b"BM" + bytes(60), "not a JPEG or PNG"),
        (PNG_SIGNATURE + b"\0\0\0\x0dIDAT" + bytes(17), "IHDR"),
        (PNG_SIGNATURE + bytes(4), "truncated"),
        (_jpeg()[:10], "truncated"),
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(8), "no frame header"),
        (b"\xff\xd8\xff\xe0\x00\x01", "invalid length"),
        (_jpeg_claiming(0, 64), "DNL"),
        (b"\xff\xd8" + b"\xff\x01" * (MAX_JPEG_SEGMENTS + 1), "segments"),
        (_progressive_scan_bomb(MAX_JPEG_SCANS + 50), "scans"),
    ],
)
def test_header_parser_rejects_broken_headers(data: bytes, needle: str) -> None:
    with pytest.raises(ImageHeaderError, match=needle):
        read_image_header(data)


BOMBS = {
    "jpeg 16384^2": _jpeg_claiming(16384, 16384),
    "jpeg 30000^2": _jpeg_claiming(30000, 30000),
    "jpeg 65500^2 (OpenCV's own limit)": _jpeg_claiming(65500, 65500),
    "jpeg 8000 x 8000": _jpeg_claiming(8000, 8000),
    "png 16384^2": _png_bomb(16384, 16384),
    "png 65535^2 (first rows only)": _png_bomb(65535, 65535, rows=64),
    "png 3000 x 3000": _png_bomb(3000, 3000),
    "progressive jpeg scan bomb": _progressive_scan_bomb(5000),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bombs_are_rejected_from_the_header_without_decoding(name: str, monkeypatch) -> None:
    def no_decode(*args, **kwargs):
        raise AssertionError("cv2.imdecode must not run on an over-limit frame")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    msg = SimpleNamespace(format="jpeg", data=BOMBS[name])
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageConversionError, match="exceed|absurd|scans"):
        compressed_to_rgb(msg)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.05, f"{name}: {elapsed * 1e3:.1f} ms"
    assert peak < 50 * 2**20, f"{name}: {peak / 2**20:.1f} MiB"


_RSS_PROBE = """
import resource, sys, time, types
import numpy as np
from tcc_ros.image_conversion import ImageConversionError, compressed_to_rgb
from tcc_model.image_header import read_image_header
payloads = [open(p, "rb").read() for p in sys.argv[1:]]
compressed_to_rgb(types.SimpleNamespace(format="png", data=payloads[0]))  # warm up the decoders
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
worst = 0.0
for _ in range(3):
    for data in payloads[1:]:
        start = time.perf_counter()
        try:
            compressed_to_rgb(types.SimpleNamespace(format="jpeg", data=data))
        except ImageConversionError:
            pass
        worst = max(worst, time.perf_counter() - start)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, worst * 1e3)
"""


def test_bombs_cost_the_process_little_memory_and_time(tmp_path) -> None:
    """Real decoders in a fresh process: peak RSS grows by < 50 MiB over all bombs, each < 50 ms.

    The last payload is a PNG of zeros exactly at the default limit: it is decoded, and its
    memory is bounded by the limit.
    """
    payloads = [
        rgb_to_compressed_fields(np.zeros((8, 8, 3), np.uint8), "png")["data"],
        *BOMBS.values(),
        _png_bomb(1200, 1920),
    ]
    paths = []
    for i, data in enumerate(payloads):
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    grown_mib, worst_ms = map(float, proc.stdout.split())
    assert grown_mib < 50, f"peak RSS grew by {grown_mib:.1f} MiB"
    assert worst_ms < 500, f"slowest frame {worst_ms:.0f} ms"  # the at-limit PNG; bombs < 1 ms


def test_frame_at_the_limit_decodes_and_one_pixel_more_is_refused() -> None:
    frame = np.zeros((30, 40, 3), np.uint8)
    msg = SimpleNamespace(**rgb_to_compressed_fields(frame, "png"))
    assert compressed_to_rgb(msg, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageConversionError, match="1200 pixels exceed the limit of 1199"):
        compressed_to_rgb(msg, max_pixels=1199)


def test_opencv_errors_become_rejections(monkeypatch) -> None:
    def failing(*args, **kwargs):
        raise cv2.error("OpenCV(5.0.0) imdecode_:\n  error: (-215:Assertion failed) size.width>0")

    monkeypatch.setattr(cv2, "imdecode", failing)
    msg = SimpleNamespace(**rgb_to_compressed_fields(RGB, "png"))
    with pytest.raises(ImageConversionError, match="OpenCV could not decode it.*size.width>0"):
        compressed_to_rgb(msg)


def test_unsupported_formats_are_rejected_before_decoding() -> None:
    for ext in (".bmp", ".tiff", ".webp"):
        ok, data = cv2.imencode(ext, RGB)
        if not ok:
            continue
        with pytest.raises(ImageConversionError, match="not a JPEG or PNG"):
            compressed_to_rgb(SimpleNamespace(format=ext[1:], data=data.tobytes()))


def test_damaged_compressed_frames_never_raise_anything_else() -> None:
    """Byte flips and truncations of valid JPEG/PNG frames: a frame or a rejection, nothing else."""
    rng = np.random.default_rng(7)
    frame = np.ascontiguousarray(np.repeat(np.repeat(RGB, 6, axis=0), 6, axis=1))
    outcomes = {"decoded": 0, "rejected": 0}
    for fmt in ("jpeg", "png"):
        good = np.frombuffer(rgb_to_compressed_fields(frame, fmt)["data"], np.uint8)
        for trial in range(150):
            data = good.copy()
            if trial % 3 == 0:
                data = data[: rng.integers(1, len(data))]
            else:
                where = rng.integers(0, len(data), size=rng.integers(1, 8))
                data[where] = rng.integers(0, 256, size=len(where))
            try:
                out = compressed_to_rgb(SimpleNamespace(format=fmt, data=data.tobytes()))
            except ImageConversionError:
                outcomes["rejected"] += 1
            else:
                assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
                outcomes["decoded"] += 1
    assert outcomes["rejected"] > 0 and outcomes["decoded"] > 0, outcomes


@pytest.mark.parametrize(
    "msg",
    [
        SimpleNamespace(height="tall", width=4, encoding="rgb8", step=12, data=bytes(48)),
        SimpleNamespace(height=4, width=None, encoding="rgb8", step=12, data=bytes(48)),
        SimpleNamespace(height=2**70, width=4, encoding="rgb8", step=12, data=bytes(48)),
        SimpleNamespace(height=4, width=4, encoding="rgb8", step=12, data=[300] * 48),
    ],
)
def test_raw_images_with_wrong_field_types_are_rejected(msg) -> None:
    with pytest.raises(ImageConversionError):
        image_to_rgb(msg)


def test_echoed_input_is_escaped_and_capped() -> None:
    long_encoding = "x" * 100_000 + "\n\x1b[31m"
    msg = _image(RGB, "rgb8")
    msg.encoding = long_encoding
    with pytest.raises(ImageConversionError) as info:
        image_to_rgb(msg)
    text = str(info.value)
    assert len(text) < 1000 and "\n" not in text and "\x1b" not in text
    bad = SimpleNamespace(format="jpeg\n" * 50_000, data=b"\0\0\0")
    with pytest.raises(ImageConversionError) as info:
        compressed_to_rgb(bad)
    assert len(str(info.value)) < 1000 and "\n" not in str(info.value)
