"""Validate a dataset directory: ``python -m tcc_model.data.check DIR [--no-decode]``.

Accepts everything ``--dataset folder:DIR`` accepts: the dataset format (split folders with
label JSON files and a manifest), split folders of unlabelled videos, or a flat folder of videos.
Prints one line per problem, naming the file (missing label, label without video, truncated JSON,
inconsistent labels, unreadable video, frame-count mismatch, a video shorter than the model's
context window, a split folder the manifest does not list, ...) and warnings for what works but
deserves a word (unlabelled videos, training that would validate on its own training videos).
Exits 0 with a summary when the dataset is clean, 1 otherwise (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tcc_model.data.format import (
    IMAGE_EXTENSIONS,
    MANIFEST_NAME,
    VIDEO_EXTENSIONS,
    DatasetError,
    EpisodeLabels,
    read_manifest,
    read_video,
)

#: Context of the default model (2 frames 15 apart, the reference's): frames a video needs.
DEFAULT_CONTEXT = (2, 15)
#: Name under which a flat folder's videos are counted.
FLAT_SPLIT = "(flat)"


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`: problems make it fail, warnings do not."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    episodes: dict[str, int] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        splits = ", ".join(f"{s} {n}" for s, n in self.episodes.items())
        return (
            f"{len(self.episodes)} split(s) ({splits}), {sum(self.episodes.values())} episodes, "
            f"{sum(self.frames.values())} frames"
        )


@dataclass(frozen=True)
class _Options:
    decode: bool
    min_frames: int
    manifest_phases: list[str] | None = None


def _is_video_entry(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _split_dirs(root: Path) -> list[Path]:
    """Sub-folders that look like splits: they hold label JSON files or videos."""
    dirs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _is_video_entry(d):
            continue  # a frame folder of a flat dataset, not a split
        if any(d.glob("*.json")) or any(_is_video_entry(p) for p in d.iterdir()):
            dirs.append(d)
    return dirs


def _check_length(what: Path, num_frames: int, options: _Options, report: CheckReport) -> None:
    if 0 < num_frames < options.min_frames:
        report.problems.append(
            f"{what}: {num_frames} frames, shorter than the model's context window of "
            f"{options.min_frames} frames: every frame's context would reach back before the "
            f"video starts, training clips repeat frames and Kendall's tau is undefined (nan) "
            f"for it; record longer episodes or drop it (--min-frames sets the window)"
        )


def _check_episode(
    label_path: Path, options: _Options, report: CheckReport
) -> tuple[str | None, int]:
    """Check one label file and its video; return (video entry name or None, frame count)."""
    try:
        labels = EpisodeLabels.load(label_path)
    except DatasetError as exc:
        report.problems.append(str(exc))
        return None, 0
    for problem in labels.validate():
        report.problems.append(f"{label_path}: {problem}")
    phases = options.manifest_phases
    if phases is not None and labels.phase_ids is not None and labels.phase_names != phases:
        report.problems.append(
            f"{label_path}: phase_names {labels.phase_names} differ from the manifest's {phases}"
        )
    video_path = label_path.parent / labels.video
    if not video_path.exists():
        report.problems.append(f"{label_path}: label without video ({video_path} not found)")
        return labels.video, 0
    if options.decode:
        try:
            num_decoded = len(read_video(video_path))
        except DatasetError as exc:
            report.problems.append(str(exc))
            return labels.video, 0
        if num_decoded != labels.num_frames:
            report.problems.append(
                f"{label_path}: frame-count mismatch: num_frames is {labels.num_frames} but "
                f"{video_path.name} decodes to {num_decoded} frames"
            )
    _check_length(label_path, labels.num_frames, options, report)
    return labels.video, labels.num_frames


def _check_unlabelled(entries: list[Path], options: _Options, report: CheckReport) -> int:
    """Decode (or probe) videos without labels; returns their total frame count."""
    from tcc_model.data.registry import probe_video

    total = 0
    for entry in entries:
        try:
            count = len(read_video(entry)) if options.decode else probe_video(entry)[0]
        except DatasetError as exc:
            report.problems.append(str(exc))
            continue
        _check_length(entry, count, options, report)
        total += count
    return total


def _check_split(split_dir: Path, options: _Options, report: CheckReport) -> None:
    """One split folder: labelled (every video has a label) or unlabelled (no label at all)."""
    entries = [p for p in sorted(split_dir.iterdir()) if _is_video_entry(p)]
    label_paths = sorted(split_dir.glob("*.json"))
    if not label_paths:
        report.warnings.append(
            f"{split_dir}: {len(entries)} unlabelled videos (no <episode>.json): fine for "
            "training; phase metrics and the monitor's references need phase labels"
        )
        report.frames[split_dir.name] = _check_unlabelled(entries, options, report)
        report.episodes[split_dir.name] = len(entries)
        return
    referenced: set[str] = set()
    frames = 0
    for label_path in label_paths:
        video, num_frames = _check_episode(label_path, options, report)
        if video is not None:
            referenced.add(video)
        frames += num_frames
    for entry in entries:
        if entry.name not in referenced:
            report.problems.append(f"{entry}: missing label (no JSON names this video)")
    report.episodes[split_dir.name] = len(label_paths)
    report.frames[split_dir.name] = frames


def _check_flat(root: Path, entries: list[Path], options: _Options, report: CheckReport) -> None:
    report.warnings.append(
        f"{root}: a flat folder of {len(entries)} unlabelled videos without train/ val/ splits: "
        f"`--dataset folder:{root}` trains and validates on the same videos, so validation "
        "scores measure training videos; move held-out videos into val/ (the rest into train/) "
        "to validate on unseen ones"
    )
    report.frames[FLAT_SPLIT] = _check_unlabelled(entries, options, report)
    report.episodes[FLAT_SPLIT] = len(entries)


def _check_manifest_splits(
    root: Path, listed: dict[str, Any], split_dirs: list[Path], report: CheckReport
) -> None:
    """Split folders the manifest does not list (a failed or foreign write) and listed ones gone."""
    manifest = root / MANIFEST_NAME
    present = {d.name for d in split_dirs}
    for name in sorted(present - set(listed)):
        report.problems.append(
            f"{root / name}: split folder not listed in {manifest} (splits: "
            f"{', '.join(sorted(listed)) or 'none'}); an interrupted or foreign conversion? "
            "remove the folder, or convert it again so the manifest lists it"
        )
    for name in sorted(set(listed) - present):
        report.problems.append(
            f"{manifest}: lists split {name!r} ({listed[name]} episodes) but {root / name} "
            "holds none; restore the folder or convert that split again"
        )


def check_dataset(
    root: str | Path, decode: bool = True, min_frames: int | None = None
) -> CheckReport:
    """Validate the dataset at ``root``; ``decode=False`` skips decoding videos.

    ``min_frames``: the shortest video the model can use, its context window (default: the
    default model's, 2 context frames 15 apart = 16 frames).
    """
    from tcc_model.preprocess import context_span

    root = Path(root)
    report = CheckReport()
    if not root.is_dir():
        report.problems.append(f"{root}: not a directory")
        return report
    window = context_span(*DEFAULT_CONTEXT) if min_frames is None else min_frames
    options = _Options(decode, window)
    manifest_splits: dict[str, Any] | None = None
    if (root / MANIFEST_NAME).exists():
        try:
            manifest = read_manifest(root)
            if manifest.get("phase_names"):
                phases = [str(n) for n in manifest["phase_names"]]
                options = replace(options, manifest_phases=phases)
            manifest_splits = dict(manifest.get("splits") or {})
        except DatasetError as exc:
            report.problems.append(str(exc))
    split_dirs = _split_dirs(root)
    flat = [p for p in sorted(root.iterdir()) if _is_video_entry(p)]
    if not split_dirs and flat:
        _check_flat(root, flat, options, report)
        return report
    if not split_dirs:
        report.problems.append(
            f"{root}: no split folders (train/ val/ test/) with episodes and no videos "
            f"({'/'.join(VIDEO_EXTENSIONS)}) or frame folders"
        )
        return report
    if manifest_splits is None:
        report.warnings.append(f"{root / MANIFEST_NAME}: no manifest (optional for user data)")
    else:
        _check_manifest_splits(root, manifest_splits, split_dirs, report)
    for split_dir in split_dirs:
        _check_split(split_dir, options, report)
        expected = (manifest_splits or {}).get(split_dir.name)
        found = report.episodes[split_dir.name]
        if expected is not None and expected != found:
            report.warnings.append(
                f"{root / MANIFEST_NAME}: manifest lists {expected} {split_dir.name} episodes, "
                f"found {found}"
            )
    if "train" in report.episodes and "val" not in report.episodes:
        report.warnings.append(
            f"{root}: no val/ split: training runs without validation (no held-out scores)"
        )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Check a dataset folder; print problems and warnings, then a summary."""
    from tcc_model.errors import DatasetError as _Error

    parser = argparse.ArgumentParser(
        prog="python -m tcc_model.data.check", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("root", type=Path, help="dataset root (with manifest.json, train/, ...)")
    parser.add_argument(
        "--no-decode", action="store_true", help="skip decoding videos (faster, fewer checks)"
    )
    parser.add_argument(
        "--min-frames",
        type=int,
        default=None,
        help="shortest usable video: the model's context window, (context_frames - 1) x "
        "context_stride + 1 (default 16: 2 context frames 15 apart)",
    )
    args = parser.parse_args(argv)
    if args.min_frames is not None and args.min_frames < 1:
        raise _Error(f"--min-frames must be >= 1, got {args.min_frames}")
    report = check_dataset(args.root, decode=not args.no_decode, min_frames=args.min_frames)
    for line in report.warnings:
        print(f"warning: {line}")
    for line in report.problems:
        print(line)
    if report.ok:
        print(f"ok: {report.summary()}")
        return 0
    print(f"error: {len(report.problems)} problem(s) in {args.root}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
