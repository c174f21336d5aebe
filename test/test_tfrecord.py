"""TFRecord conversion is verified and all-or-nothing (the official TCC schema, built here)."""

from __future__ import annotations

import os
import stat
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tcc_model.data.format import list_splits, load_split, read_manifest
from tcc_model.data.tfrecord import (
    ConvertOptions,
    convert_tfrecords,
    episode_name,
    iter_tfrecord,
    main,
    masked_crc32c,
)
from tcc_model.errors import DatasetError

# --------------------------------------------------------------------------- a tiny writer


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))


def _int_feature(*values: int) -> bytes:
    return _field(3, _field(1, b"".join(_varint(v) for v in values)))


def _features(entries: dict[str, bytes]) -> bytes:
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in entries.items())


def tcc_record(name: str, labels: list[int], declared_len: int | None = None) -> bytes:
    """A ``SequenceExample`` of the official TCC schema with small JPEG frames."""
    jpegs = [
        cv2.imencode(".jpg", np.full((8, 8, 3), 10 + 20 * t, np.uint8))[1].tobytes()
        for t in range(len(labels))
    ]
    context = {
        "name": _bytes_feature(name.encode()),
        "len": _int_feature(len(labels) if declared_len is None else declared_len),
        "label": _int_feature(0),
    }
    lists = {
        "video": b"".join(_field(1, _bytes_feature(j)) for j in jpegs),
        "frame_labels": b"".join(_field(1, _int_feature(k)) for k in labels),
    }
    return _field(1, _features(context)) + _field(2, _features(lists))


def tfrecord(records: list[bytes]) -> bytes:
    out = b""
    for data in records:
        length = struct.pack("<Q", len(data))
        out += length + struct.pack("<I", masked_crc32c(length))
        out += data + struct.pack("<I", masked_crc32c(data))
    return out


@pytest.fixture()
def shards(tmp_path: Path) -> list[Path]:
    a = tmp_path / "pour-0.tfrecord"
    b = tmp_path / "pour-1.tfrecord"
    a.write_bytes(tfrecord([tcc_record("pour_a.mp4", [0, 0, 1, 1]), tcc_record("v1.5ml", [0, 1])]))
    b.write_bytes(tfrecord([tcc_record("dir/pour b", [0, 1, 1, 2])]))
    return [a, b]


def _state(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (to show that nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- tests


def test_names_are_sanitised_not_truncated() -> None:
    taken: set[str] = set()
    names = ["pour_1.5ml", "a/b/clip 7.mp4", "..hidden", "x$y", "pour_1.5ml", ""]
    assert [episode_name(n, taken) for n in names] == [
        "pour_1.5ml",
        "clip_7",
        "hidden",
        "x_y",
        "pour_1.5ml_2",
        "video",
    ]


def test_conversion_keeps_frames_names_labels(shards, tmp_path) -> None:
    out = tmp_path / "ds"
    assert convert_tfrecords(shards, out, "train") == 3
    episodes = {e.name: e for e in load_split(out, "train")}
    assert sorted(episodes) == ["pour_a", "pour_b", "v1.5ml"]
    assert episodes["pour_b"].labels.phase_ids == [0, 1, 1, 2]
    assert read_manifest(out)["splits"] == {"train": 3}
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_usual_file_modes(shards, tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        convert_tfrecords(shards, tmp_path / "ds", "train")
    finally:
        os.umask(umask)
    split = tmp_path / "ds" / "train"
    for path in [split, *split.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), f"{path}: {oct(mode)}"


def test_flipped_byte_is_caught_by_default(shards, tmp_path) -> None:
    data = bytearray(shards[1].read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a JPEG of the only record
    shards[1].write_bytes(bytes(data))
    out = tmp_path / "ds"
    with pytest.raises(DatasetError, match=r"pour-1.tfrecord: record 0 has a bad data checksum"):
        convert_tfrecords(shards, out, "train")
    assert list_splits(out) == [] and not (out / "train").exists()
    # skipping the check is possible, and then the damage goes through unnoticed
    assert convert_tfrecords(shards, out, "train", ConvertOptions(verify_data_crc=False)) == 3


def test_failure_midway_leaves_the_dataset_as_it_was(shards, tmp_path) -> None:
    out = tmp_path / "ds"
    convert_tfrecords(shards[:1], out, "train")
    before = _state(out)
    shards[1].write_bytes(shards[1].read_bytes()[:-10])  # truncated last record
    with pytest.raises(DatasetError, match="truncated"):
        convert_tfrecords(shards, out, "train", ConvertOptions(overwrite=True))
    assert _state(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train"]


def test_existing_split_is_refused_or_replaced(shards, tmp_path) -> None:
    out = tmp_path / "ds"
    convert_tfrecords(shards, out, "train")
    with pytest.raises(DatasetError, match="already exists; pass --overwrite"):
        convert_tfrecords(shards, out, "train")
    assert convert_tfrecords(shards[1:], out, "train", ConvertOptions(overwrite=True)) == 1
    assert [e.name for e in load_split(out, "train")] == ["pour_b"]
    assert read_manifest(out)["splits"] == {"train": 1}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train"]


def test_len_mismatch_is_converted_with_a_warning(tmp_path) -> None:
    shard = tmp_path / "x.tfrecord"
    shard.write_bytes(tfrecord([tcc_record("v", [0, 1, 1], declared_len=5)]))
    warnings: list[str] = []
    assert convert_tfrecords([shard], tmp_path / "ds", "val", warn=warnings.append) == 1
    assert len(warnings) == 1 and "len 5 but 3 frames" in warnings[0]


@pytest.mark.parametrize(
    "damage,needle",
    [
        (lambda d: d[:5], "truncated"),
        (lambda d: b"garbage!" * 4, "bad length checksum"),
        (lambda d: tfrecord([b"\x0a\x05hello"]), "record 0"),
        (lambda d: tfrecord([_field(1, _features({"name": _int_feature(3)}))]), "record 0"),
    ],
)
def test_cli_damaged_records_give_one_error_line(tmp_path, capsys, damage, needle) -> None:
    shard = tmp_path / "x.tfrecord"
    shard.write_bytes(damage(tfrecord([tcc_record("v", [0, 1])])))
    argv = ["--input", str(shard), "--out", str(tmp_path / "ds"), "--split", "train"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0] and "x.tfrecord" in errors[0], err
    assert not (tmp_path / "ds" / "train").exists()


def test_checksums_run_at_disk_speed(tmp_path) -> None:
    """Verifying every payload costs little next to reading the file (crc32c in hardware/C)."""
    shard = tmp_path / "big.tfrecord"
    payload = np.random.default_rng(0).integers(0, 256, 1 << 20, np.uint8).tobytes()
    shard.write_bytes(tfrecord([payload] * 32))  # 32 MiB

    def read_time(verify: bool) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            assert sum(len(r) for r in iter_tfrecord(shard, verify_data_crc=verify)) == 32 << 20
            best = min(best, time.perf_counter() - start)
        return best

    plain, verified = read_time(False), read_time(True)
    assert 32 / verified > 200, f"{32 / verified:.0f} MiB/s"  # pure Python managed ~7 MB/s
    assert verified < 3 * plain + 0.05, (plain, verified)
