"""Convert official TCC TFRecords (``tf.train.SequenceExample``) to the dataset format, without TF.

    python -m tcc_model.data.tfrecord --input 'pouring_train-*.tfrecord' --out DIR --split train

Each record holds context ``name`` (bytes), ``len`` and ``label`` (int64) and the feature lists
``video`` (one JPEG per frame) and ``frame_labels`` (one int64 phase id per frame). The TFRecord
framing (``uint64 length, uint32 masked crc32c(length), data, uint32 masked crc32c(data)``) and the
protobuf wire format are parsed here directly. By default the JPEG bytes are copied unchanged into
a frame folder per episode (lossless); ``--video-format mp4`` re-encodes, ``--size`` resizes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tcc_model.data.format import (
    MANIFEST_NAME,
    DatasetError,
    EpisodeLabels,
    key_events_from_phase_ids,
    list_splits,
    read_manifest,
    write_episode,
    write_manifest,
)
from tcc_model.utils import write_text_atomic

# --------------------------------------------------------------------------- CRC32C (Castagnoli)

_CRC32C_POLY = 0x82F63B78


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (uses the ``crc32c`` package when installed, else pure Python)."""
    try:
        import crc32c as fast  # optional accelerator

        return fast.crc32c(data)
    except ImportError:
        pass
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_tfrecord(path: str | os.PathLike, verify_data_crc: bool = False) -> Iterator[bytes]:
    """Yield the payload of each record of a TFRecord file (uncompressed).

    The length checksum is always verified; ``verify_data_crc`` also checks each payload (slow in
    pure Python for large files). Truncation or a bad checksum raises :class:`DatasetError`.
    """
    path = Path(path)
    with open(path, "rb") as f:
        index = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise DatasetError(f"{path}: record {index} is truncated (incomplete header)")
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc32c(length_bytes) != length_crc:
                raise DatasetError(
                    f"{path}: record {index} has a bad length checksum; not an uncompressed "
                    "TFRecord file (or corrupt)"
                )
            (length,) = struct.unpack("<Q", length_bytes)
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise DatasetError(f"{path}: record {index} is truncated")
            if verify_data_crc and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise DatasetError(f"{path}: record {index} has a bad data checksum (corrupt)")
            yield data
            index += 1


# --------------------------------------------------------------------------- protobuf wire format


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise DatasetError("protobuf: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DatasetError("protobuf: varint longer than 10 bytes")


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)`` of a serialised message.

    Varints come back as ``int``; length-delimited, 64-bit and 32-bit fields as ``bytes``.
    """
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire_type == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise DatasetError(f"protobuf: unsupported wire type {wire_type} (field {number})")
        if pos > end:
            raise DatasetError("protobuf: truncated message")
        yield number, wire_type, value


def _to_int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _read_varint(buf, pos)
        out.append(_to_int64(value))
    return out


def parse_feature(buf: bytes) -> list:
    """``tf.train.Feature`` → list of ``bytes``, ``float`` or ``int`` values."""
    values: list = []
    for number, _, payload in iter_fields(buf):
        assert isinstance(payload, bytes)
        for inner_number, inner_wire, value in iter_fields(payload):
            if inner_number != 1:
                continue
            if number == 1:  # BytesList
                values.append(bytes(value))
            elif number == 2:  # FloatList: packed (wire 2) or one fixed32 each (wire 5)
                values.extend(struct.unpack(f"<{len(value) // 4}f", value))
            elif number == 3:  # Int64List: packed (wire 2) or one varint each (wire 0)
                if inner_wire == 2:
                    values.extend(_packed_varints(value))
                else:
                    values.append(_to_int64(int(value)))
    return values


def _parse_map(buf: bytes, entry_field: int) -> Iterator[tuple[str, bytes]]:
    for number, _, entry in iter_fields(buf):
        if number != entry_field:
            continue
        key, value = "", b""
        for entry_number, _, entry_value in iter_fields(entry):
            if entry_number == 1:
                key = bytes(entry_value).decode("utf-8")
            elif entry_number == 2:
                value = bytes(entry_value)
        yield key, value


@dataclass
class SequenceExample:
    """A parsed ``tf.train.SequenceExample`` (or ``tf.train.Example``: context only)."""

    context: dict[str, list] = field(default_factory=dict)
    feature_lists: dict[str, list[list]] = field(default_factory=dict)


def parse_sequence_example(buf: bytes) -> SequenceExample:
    """Parse a serialised ``SequenceExample`` (context = 1, feature_lists = 2)."""
    example = SequenceExample()
    for number, _, payload in iter_fields(buf):
        if number == 1:  # Features {map<string, Feature> feature = 1}
            for key, value in _parse_map(payload, 1):
                example.context[key] = parse_feature(value)
        elif number == 2:  # FeatureLists {map<string, FeatureList> feature_list = 1}
            for key, value in _parse_map(payload, 1):
                example.feature_lists[key] = [
                    parse_feature(f) for n, _, f in iter_fields(value) if n == 1
                ]
    return example


# --------------------------------------------------------------------------- conversion


@dataclass
class TccRecord:
    """The fields of one official TCC video record."""

    name: str
    jpegs: list[bytes]
    frame_labels: list[int] | None
    video_label: int | None
    phase_names: list[str] | None
    source: str


def read_tcc_records(path: str | os.PathLike, verify_data_crc: bool = False) -> Iterator[TccRecord]:
    """Yield the videos of one TCC TFRecord file."""
    for index, data in enumerate(iter_tfrecord(path, verify_data_crc)):
        where = f"{path} record {index}"
        try:
            example = parse_sequence_example(data)
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from exc
        if "video" not in example.feature_lists:
            raise DatasetError(f"{where}: no 'video' feature list; not a TCC SequenceExample")
        jpegs = [f[0] for f in example.feature_lists["video"] if f]
        labels = example.feature_lists.get("frame_labels")
        frame_labels = [int(f[0]) for f in labels] if labels else None
        if frame_labels is not None and len(frame_labels) != len(jpegs):
            raise DatasetError(f"{where}: {len(frame_labels)} frame_labels for {len(jpegs)} frames")
        name_values = example.context.get("name") or [f"video_{index:05d}".encode()]
        label_values = example.context.get("label")
        names_string = example.context.get("framelabels_string")
        yield TccRecord(
            name=name_values[0].decode("utf-8", "replace"),
            jpegs=jpegs,
            frame_labels=frame_labels,
            video_label=int(label_values[0]) if label_values else None,
            phase_names=(names_string[0].decode("utf-8").split(",") if names_string else None),
            source=where,
        )


def _safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem or name).strip("._") or "video"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def _write_jpeg_folder(folder: Path, jpegs: list[bytes]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for i, data in enumerate(jpegs):
            (tmp / f"{i:06d}.jpg").write_bytes(data)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _decode_jpegs(jpegs: list[bytes], where: str) -> np.ndarray:
    import cv2

    frames = []
    for i, data in enumerate(jpegs):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"{where}: frame {i} is not a decodable image")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def convert_tfrecords(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    split: str,
    phase_names: list[str] | None = None,
    fps: float = 30.0,
    dataset_name: str | None = None,
    video_format: str = "jpg",
    size: int | None = None,
    verify_data_crc: bool = False,
) -> int:
    """Convert TCC TFRecord files into split ``split`` of the dataset at ``out``; return #videos.

    Phase names: ``phase_names``, else the existing manifest's, else the records'
    ``framelabels_string``, else ``phase_0..phase_{K-1}`` with K = 1 + the largest label seen.
    """
    from tcc_model.preprocess import resize_frames

    if video_format not in ("jpg", "mp4", "png"):
        raise DatasetError(f"video_format must be jpg, mp4 or png, got {video_format!r}")
    if video_format == "jpg" and size is not None:
        raise DatasetError("--size needs --video-format mp4 or png (jpg copies the frames as-is)")
    out = Path(out)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise DatasetError("no input TFRecord files")
    for p in paths:
        if not p.is_file():
            raise DatasetError(f"{p}: TFRecord file not found")
    manifest = read_manifest(out) if (out / MANIFEST_NAME).is_file() else {}
    if phase_names is None and manifest.get("phase_names"):
        phase_names = list(manifest["phase_names"])
    if phase_names is None:  # first pass: labels only
        max_label, from_records = -1, None
        for p in paths:
            for record in read_tcc_records(p, verify_data_crc):
                from_records = from_records or record.phase_names
                if record.frame_labels:
                    max_label = max(max_label, max(record.frame_labels))
        phase_names = from_records or [f"phase_{k}" for k in range(max_label + 1)]
    split_dir = out / split
    taken = {p.stem for p in split_dir.glob("*.json")} if split_dir.is_dir() else set()
    count = 0
    for p in paths:
        for record in read_tcc_records(p, verify_data_crc):
            name = _safe_name(record.name, taken)
            labelled = record.frame_labels is not None and bool(phase_names)
            ids = record.frame_labels if labelled else None
            labels = EpisodeLabels(
                video=name,
                fps=fps,
                num_frames=len(record.jpegs),
                phase_names=list(phase_names) if labelled else [],
                phase_ids=ids,
                key_events=key_events_from_phase_ids(ids, phase_names) if labelled else {},
                metadata={
                    "source": record.source,
                    "source_name": record.name,
                    "video_label": record.video_label,
                },
            )
            if video_format == "jpg":
                problems = labels.validate()
                if problems:
                    raise DatasetError(f"{record.source}: " + "; ".join(problems))
                _write_jpeg_folder(split_dir / name, record.jpegs)
                write_text_atomic(split_dir / f"{name}.json", labels.to_json())
            else:
                frames = _decode_jpegs(record.jpegs, record.source)
                if size is not None:
                    frames = resize_frames(frames, size)
                write_episode(split_dir, name, frames, labels, video_format=video_format)
            count += 1
    splits = {s: len(list((out / s).glob("*.json"))) for s in list_splits(out)}
    manifest.update(
        name=manifest.get("name") or dataset_name or out.name,
        phase_names=list(phase_names),
        splits=splits,
        generator={
            "tool": "tcc_model.data.tfrecord",
            "fps": fps,
            "video_format": video_format,
            "size": size,
        },
    )
    write_manifest(out, manifest)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tcc_model.data.tfrecord",
        description="Convert official TCC TFRecords to the tcc_ros dataset format (no TF needed).",
    )
    parser.add_argument("--input", required=True, nargs="+", help="TFRecord files or glob patterns")
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write into")
    parser.add_argument("--split", required=True, help="split name, e.g. train, val, test")
    parser.add_argument("--phase-names", help="comma-separated phase names (default phase_0, ...)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate (not in TFRecords)")
    parser.add_argument("--name", help="dataset name in the manifest (default: --out folder name)")
    parser.add_argument(
        "--video-format",
        choices=("jpg", "mp4", "png"),
        default="jpg",
        help="jpg: copy the JPEG frames losslessly (default); mp4/png: re-encode",
    )
    parser.add_argument("--size", type=int, help="resize frames to SIZE x SIZE (mp4/png only)")
    parser.add_argument(
        "--verify-crc",
        action="store_true",
        help="also verify each record's data checksum (slow without crc32c)",
    )
    args = parser.parse_args(argv)
    paths: list[str] = []
    for pattern in args.input:
        matches = sorted(glob.glob(pattern))
        if not matches and not glob.has_magic(pattern):
            matches = [pattern]
        if not matches:
            print(f"error: --input {pattern!r} matches no files", file=sys.stderr)
            return 2
        paths.extend(matches)
    names = [n.strip() for n in args.phase_names.split(",")] if args.phase_names else None
    try:
        count = convert_tfrecords(
            paths,
            args.out,
            args.split,
            names,
            args.fps,
            args.name,
            args.video_format,
            args.size,
            args.verify_crc,
        )
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"split": args.split, "videos": count, "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
