"""Convert official TCC TFRecords (``tf.train.SequenceExample``) to the dataset format, without TF.

    python -m tcc_model.data.tfrecord --input 'pouring_train-*.tfrecord' --out DIR --split train

Reading (framing, checksums, protobuf) lives in :mod:`tcc_model.data.tfrecord_io`. By default
the JPEG bytes are copied unchanged into a frame folder per episode (lossless); ``--video-format
mp4`` re-encodes, ``--size`` resizes.

The conversion is all-or-nothing and verified: every record's checksums are checked (at disk
speed, with the ``crc32c`` package), the split is written into a hidden staging folder inside
the dataset root and renamed into place only when complete, an existing split is refused unless
``--overwrite`` replaces it, files and folders get the usual modes (umask), episode names keep
every character the dataset format allows (others become ``_``), and a record whose ``len``
disagrees with its frames is converted with a warning.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tcc_model.data.format import (
    MANIFEST_NAME,
    EpisodeLabels,
    key_events_from_phase_ids,
    list_splits,
    read_manifest,
    write_episode,
    write_manifest,
)
from tcc_model.data.tfrecord_io import (  # noqa: F401  (re-exported)
    SequenceExample,
    TccRecord,
    crc32c,
    iter_fields,
    iter_tfrecord,
    masked_crc32c,
    parse_feature,
    parse_sequence_example,
    read_tcc_records,
)
from tcc_model.errors import DatasetError, safe_text
from tcc_model.utils import write_text_atomic

#: Video file extensions dropped from record names (the official names are file names).
_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class ConvertOptions:
    """How records become episodes."""

    phase_names: Sequence[str] | None = None  # default: manifest's, records', phase_0..K-1
    fps: float = 30.0  # frame rate (not stored in TFRecords)
    dataset_name: str | None = None  # manifest name (default: the --out folder name)
    video_format: str = "jpg"  # jpg: copy the JPEGs losslessly; mp4/png: re-encode
    size: int | None = None  # resize to size x size (mp4/png only)
    verify_data_crc: bool = True  # check every record's payload checksum
    overwrite: bool = False  # replace an existing split instead of refusing


def episode_name(name: str, taken: set[str]) -> str:
    """A dataset episode name for a record name: last path part, video suffix dropped, sanitised.

    Characters outside ``[A-Za-z0-9._-]`` become ``_``; nothing else is cut (``pour_1.5ml``
    stays). A name already in ``taken`` gets ``_2``, ``_3`` ... The result is added to ``taken``.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if base.lower().endswith(_VIDEO_SUFFIXES):
        base = base[: base.rfind(".")]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "video"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def _decode_jpegs(jpegs: list[bytes], where: str) -> np.ndarray:
    import cv2

    frames = []
    for i, data in enumerate(jpegs):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"{where}: frame {i} is not a decodable image")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def _phase_names(paths: list[Path], manifest: dict, options: ConvertOptions) -> list[str]:
    """``options.phase_names``, else the manifest's, the records', or phase_0..K-1."""
    if options.phase_names is not None:
        return list(options.phase_names)
    if manifest.get("phase_names"):
        return list(manifest["phase_names"])
    max_label, from_records = -1, None
    for p in paths:  # a first pass over the labels only
        for record in read_tcc_records(p, options.verify_data_crc):
            from_records = from_records or record.phase_names
            if record.frame_labels:
                max_label = max(max_label, max(record.frame_labels))
    return from_records or [f"phase_{k}" for k in range(max_label + 1)]


def _write_record(
    split_dir: Path, name: str, record: TccRecord, phases: list[str], options: ConvertOptions
) -> None:
    labelled = record.frame_labels is not None and bool(phases)
    ids = record.frame_labels if labelled else None
    labels = EpisodeLabels(
        video=name,
        fps=options.fps,
        num_frames=len(record.jpegs),
        phase_names=list(phases) if labelled else [],
        phase_ids=ids,
        key_events=key_events_from_phase_ids(ids, phases) if labelled else {},
        metadata={
            "source": record.source,
            "source_name": record.name,
            "video_label": record.video_label,
        },
    )
    if options.video_format == "jpg":
        problems = labels.validate()
        if problems:
            raise DatasetError(f"{record.source}: " + "; ".join(problems))
        folder = split_dir / name
        folder.mkdir()
        for i, data in enumerate(record.jpegs):
            (folder / f"{i:06d}.jpg").write_bytes(data)
        write_text_atomic(split_dir / f"{name}.json", labels.to_json())
    else:
        from tcc_model.preprocess import resize_frames

        frames = _decode_jpegs(record.jpegs, record.source)
        if options.size is not None:
            frames = resize_frames(frames, options.size)
        write_episode(split_dir, name, frames, labels, video_format=options.video_format)


def _check_request(paths: list[Path], out: Path, split: str, options: ConvertOptions) -> None:
    if options.video_format not in ("jpg", "mp4", "png"):
        raise DatasetError(f"video_format must be jpg, mp4 or png, got {options.video_format!r}")
    if options.video_format == "jpg" and options.size is not None:
        raise DatasetError("--size needs --video-format mp4 or png (jpg copies the frames as-is)")
    if not _SPLIT_NAME.fullmatch(split):
        raise DatasetError(f"--split {safe_text(split)!r}: use a plain name such as train or val")
    if not paths:
        raise DatasetError("no input TFRecord files")
    for p in paths:
        if not p.is_file():
            raise DatasetError(f"{p}: TFRecord file not found")
    if (out / split).exists() and not options.overwrite:
        raise DatasetError(
            f"{out / split}: split {split!r} already exists; pass --overwrite to replace it "
            "(converting twice would duplicate every video)"
        )


def _replace_split(staged: Path, split_dir: Path, trash: Path) -> None:
    """Rename ``staged`` to ``split_dir``; an existing split is moved to ``trash`` first."""
    if split_dir.exists():
        os.replace(split_dir, trash)
        try:
            os.replace(staged, split_dir)
        except OSError:
            os.replace(trash, split_dir)
            raise
    else:
        os.replace(staged, split_dir)


def convert_tfrecords(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    split: str,
    options: ConvertOptions | None = None,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Convert TCC TFRecord files into split ``split`` of the dataset at ``out``; return #videos.

    All or nothing: on any error the dataset is left as it was. ``warn`` receives warnings
    (``len`` mismatches, repeated names; default: print to stderr).
    """
    options = options or ConvertOptions()
    warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
    out, paths = Path(out), [Path(p) for p in inputs]
    _check_request(paths, out, split, options)
    manifest = read_manifest(out) if (out / MANIFEST_NAME).is_file() else {}
    phases = _phase_names(paths, manifest, options)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{split}.partial-", dir=out))
    try:
        staged = staging / split
        staged.mkdir()  # usual mode (umask); only the hidden staging folder is owner-only
        taken: set[str] = set()
        count = 0
        for p in paths:
            for record in read_tcc_records(p, options.verify_data_crc):
                name = episode_name(record.name, taken)
                if name != re.sub(r"[^A-Za-z0-9._-]+", "_", record.name).lstrip("."):
                    warn(f"{record.source}: name {safe_text(record.name)!r} stored as {name!r}")
                if record.declared_len is not None and record.declared_len != len(record.jpegs):
                    warn(
                        f"{record.source}: len {record.declared_len} but {len(record.jpegs)} "
                        "frames; the frames are kept"
                    )
                _write_record(staged, name, record, phases, options)
                count += 1
        _replace_split(staged, out / split, staging / "previous")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest.update(
        name=manifest.get("name") or options.dataset_name or out.name,
        phase_names=list(phases),
        splits={s: len(list((out / s).glob("*.json"))) for s in list_splits(out)},
        generator={
            "tool": "tcc_model.data.tfrecord",
            "fps": options.fps,
            "video_format": options.video_format,
            "size": options.size,
        },
    )
    write_manifest(out, manifest)
    return count


def _parser() -> argparse.ArgumentParser:
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
        "--overwrite", action="store_true", help="replace the split if it exists already"
    )
    parser.add_argument(
        "--skip-data-crc",
        action="store_true",
        help="do not verify the records' payload checksums (verified by default, as TF does)",
    )
    return parser


def _run(argv: Sequence[str] | None = None) -> int:
    """The command; user errors are raised (see :func:`main`)."""
    args = _parser().parse_args(argv)
    paths: list[str] = []
    for pattern in args.input:
        matches = sorted(glob.glob(pattern))
        if not matches and not glob.has_magic(pattern):
            matches = [pattern]
        if not matches:
            raise DatasetError(f"--input {safe_text(pattern)!r} matches no files")
        paths.extend(matches)
    names = [n.strip() for n in args.phase_names.split(",")] if args.phase_names else None
    options = ConvertOptions(
        phase_names=names,
        fps=args.fps,
        dataset_name=args.name,
        video_format=args.video_format,
        size=args.size,
        verify_data_crc=not args.skip_data_crc,
        overwrite=args.overwrite,
    )
    from tcc_model.cli import print_written, stage

    with stage(f"converting {len(paths)} TFRecord file(s) into {args.out / args.split}"):
        count = convert_tfrecords(paths, args.out, args.split, options)
    print(f"{count} videos in split {args.split}")
    print_written({"split": args.out / args.split, "manifest": args.out / MANIFEST_NAME})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 with one ``error:`` line on bad input)."""
    from tcc_model.cli import run_main

    return run_main(_run, argv)


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(_run)
