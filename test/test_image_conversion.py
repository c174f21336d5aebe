"""Image message <-> RGB frame conversion, with fake message objects (no ROS needed)."""

from __future__ import annotations

import array
import sys
import types
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

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
        (SimpleNamespace(format="jpeg", data=b"\xff\xd8not a jpeg at all"), "could not be decoded"),
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
