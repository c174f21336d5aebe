"""TFRecord files of the official TCC datasets, read without TensorFlow.

The TFRecord framing (``uint64 length, uint32 masked crc32c(length), data, uint32 masked
crc32c(data)``), the protobuf wire format and ``tf.train.SequenceExample`` are parsed here
directly; :func:`read_tcc_records` yields the videos of the TCC schema (context ``name``, ``len``,
``label``; feature lists ``video`` (one JPEG per frame) and ``frame_labels``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tcc_model.errors import DatasetError, wrap_errors

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


def _crc32c_python(data: bytes) -> int:
    """Table-driven CRC-32C in pure Python (a few MB/s; used only without the crc32c package)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # hardware CRC instructions (SSE4.2 / ARMv8), GB/s: a runtime requirement
    from crc32c import crc32c as _crc32c_fast
except ImportError:  # pragma: no cover - the requirement is missing
    _crc32c_fast = None


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: the ``crc32c`` package, else pure Python (slow)."""
    if _crc32c_fast is not None:
        return _crc32c_fast(data)
    return _crc32c_python(data)


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_tfrecord(path: str | os.PathLike, verify_data_crc: bool = True) -> Iterator[bytes]:
    """Yield the payload of each record of a TFRecord file (uncompressed).

    Both checksums (length and payload) are verified, as TensorFlow does; ``verify_data_crc=False``
    skips the payload's. Truncation or a bad checksum raises :class:`DatasetError`.
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
        if not isinstance(payload, bytes):
            raise DatasetError(f"protobuf: Feature field {number} is not length-delimited")
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
    declared_len: int | None = None  # the record's context "len" (may disagree with the frames)


def read_tcc_records(path: str | os.PathLike, verify_data_crc: bool = True) -> Iterator[TccRecord]:
    """Yield the videos of one TCC TFRecord file (record checksums verified by default)."""
    for index, data in enumerate(iter_tfrecord(path, verify_data_crc)):
        where = f"{path} record {index}"
        fix = "the record is damaged or not a tf.train.SequenceExample"
        try:
            with wrap_errors(DatasetError, where, fix, extra=(struct.error,)):
                example = parse_sequence_example(data)
        except DatasetError as exc:
            if str(exc).startswith(where):
                raise
            raise DatasetError(f"{where}: {exc}; {fix}") from exc
        if "video" not in example.feature_lists:
            raise DatasetError(f"{where}: no 'video' feature list; not a TCC SequenceExample")
        jpegs = [f[0] for f in example.feature_lists["video"] if f]
        labels = example.feature_lists.get("frame_labels")
        frame_labels = [f[0] for f in labels] if labels else None
        name_values = example.context.get("name") or [f"video_{index:05d}".encode()]
        label_values = example.context.get("label")
        names_string = example.context.get("framelabels_string")
        declared = example.context.get("len")
        typed = (
            all(isinstance(j, bytes) for j in jpegs)
            and all(isinstance(v, int) for v in frame_labels or [])
            and all(isinstance(v[0], bytes) for v in (name_values, names_string) if v)
            and all(isinstance(v[0], int) for v in (label_values, declared) if v)
        )
        if not typed:
            raise DatasetError(f"{where}: a feature has the wrong type for the TCC schema; {fix}")
        if frame_labels is not None and len(frame_labels) != len(jpegs):
            raise DatasetError(f"{where}: {len(frame_labels)} frame_labels for {len(jpegs)} frames")
        yield TccRecord(
            name=bytes(name_values[0]).decode("utf-8", "replace"),
            jpegs=jpegs,
            frame_labels=frame_labels,
            video_label=int(label_values[0]) if label_values else None,
            phase_names=(
                bytes(names_string[0]).decode("utf-8", "replace").split(",")
                if names_string
                else None
            ),
            source=where,
            declared_len=int(declared[0]) if declared else None,
        )
