"""Validate a dataset directory: ``python -m tcc_model.data.check DIR [--no-decode]``.

Prints one line per problem, naming the file (missing label, label without video, truncated JSON,
inconsistent labels, unreadable video, frame-count mismatch, ...). Exits 0 with a summary when the
dataset is clean, 1 otherwise (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tcc_model.data.format import (
    IMAGE_EXTENSIONS,
    MANIFEST_NAME,
    VIDEO_EXTENSIONS,
    DatasetError,
    EpisodeLabels,
    read_manifest,
    read_video,
)


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


def _is_video_entry(path: Path) -> bool:
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _split_dirs(root: Path) -> list[Path]:
    """Sub-folders that look like splits: they hold label JSON files or videos."""
    dirs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if any(d.glob("*.json")) or any(_is_video_entry(p) for p in d.iterdir()):
            dirs.append(d)
    return dirs


def _check_episode(
    label_path: Path, manifest_phases: list[str] | None, decode: bool, report: CheckReport
) -> tuple[str | None, int]:
    """Check one label file and its video; return (video entry name or None, frame count)."""
    try:
        labels = EpisodeLabels.load(label_path)
    except DatasetError as exc:
        report.problems.append(str(exc))
        return None, 0
    for problem in labels.validate():
        report.problems.append(f"{label_path}: {problem}")
    if manifest_phases is not None and labels.phase_ids is not None:
        if labels.phase_names != manifest_phases:
            report.problems.append(
                f"{label_path}: phase_names {labels.phase_names} differ from the manifest's "
                f"{manifest_phases}"
            )
    video_path = label_path.parent / labels.video
    if not video_path.exists():
        report.problems.append(f"{label_path}: label without video ({video_path} not found)")
        return labels.video, 0
    if decode:
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
    return labels.video, labels.num_frames


def check_dataset(root: str | Path, decode: bool = True) -> CheckReport:
    """Validate every split of the dataset at ``root``; ``decode=False`` skips decoding videos."""
    root = Path(root)
    report = CheckReport()
    if not root.is_dir():
        report.problems.append(f"{root}: not a directory")
        return report
    manifest_phases: list[str] | None = None
    manifest_splits: dict = {}
    if (root / MANIFEST_NAME).exists():
        try:
            manifest = read_manifest(root)
            if manifest.get("phase_names"):
                manifest_phases = [str(n) for n in manifest["phase_names"]]
            manifest_splits = dict(manifest.get("splits") or {})
        except DatasetError as exc:
            report.problems.append(str(exc))
    else:
        report.warnings.append(f"{root / MANIFEST_NAME}: no manifest (optional for user data)")
    split_dirs = _split_dirs(root)
    if not split_dirs:
        report.problems.append(f"{root}: no split folders (train/ val/ test/) with episodes")
        return report
    for split_dir in split_dirs:
        split = split_dir.name
        referenced: set[str] = set()
        label_paths = sorted(split_dir.glob("*.json"))
        frames = 0
        for label_path in label_paths:
            video, num_frames = _check_episode(label_path, manifest_phases, decode, report)
            if video is not None:
                referenced.add(video)
            frames += num_frames
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith(".") or entry.suffix == ".json":
                continue
            if _is_video_entry(entry) and entry.name not in referenced:
                report.problems.append(f"{entry}: missing label (no JSON names this video)")
        report.episodes[split] = len(label_paths)
        report.frames[split] = frames
        expected = manifest_splits.get(split)
        if expected is not None and expected != len(label_paths):
            report.warnings.append(
                f"{root / MANIFEST_NAME}: manifest lists {expected} {split} episodes, "
                f"found {len(label_paths)}"
            )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tcc_model.data.check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("root", type=Path, help="dataset root (with manifest.json, train/, ...)")
    parser.add_argument(
        "--no-decode", action="store_true", help="skip decoding videos (faster, fewer checks)"
    )
    args = parser.parse_args(argv)
    report = check_dataset(args.root, decode=not args.no_decode)
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
    sys.exit(main())
