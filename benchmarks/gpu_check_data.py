"""Make the small frame-folder dataset that ``benchmarks/gpu_check.py`` trains on.

The GPU machine has no PyAV and no MuJoCo, so the check carries its data with the tree as JPEG
frame folders (the dataset format reads them with OpenCV alone). This converts a generated
dataset (mp4 + labels) into that form, keeping every label::

    python -m tcc_model.data.sim_pouring --out /tmp/sim8 --episodes 8 --size 112 \\
        --anomaly-rate 0 --seed 19 --workers 1 --split-fractions 0.75,0.25,0
    python benchmarks/gpu_check_data.py /tmp/sim8 test/data/gpu_check_frames

The frames stay at 112²: training resizes them on load to the model's size (224² for the paper
model, 64² for the light one), so one small dataset serves both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tcc_model.errors import DatasetError  # noqa: E402


def convert(src: Path, dst: Path, quality: int = 90) -> dict[str, int]:
    """Write every split of dataset ``src`` to ``dst`` as JPEG frame folders; return the counts."""
    import cv2

    from tcc_model.data.format import list_splits, load_split, read_manifest, write_manifest
    from tcc_model.utils import write_text_atomic

    if dst.exists():
        raise DatasetError(f"{dst} already exists; remove it or choose another output folder")
    manifest = read_manifest(src)
    counts: dict[str, int] = {}
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for split in list_splits(src):
            episodes = load_split(src, split)
            (tmp / split).mkdir(parents=True)
            for episode in episodes:
                frames = episode.load_frames()
                folder = tmp / split / episode.name
                folder.mkdir()
                for i, rgb in enumerate(frames):
                    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                    if not cv2.imwrite(
                        str(folder / f"{i:06d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]
                    ):
                        raise DatasetError(f"{folder}: could not write frame {i}")
                labels = dataclasses.replace(
                    episode.labels, video=episode.name, num_frames=len(frames)
                )
                write_text_atomic(tmp / split / f"{episode.name}.json", labels.to_json())
            counts[split] = len(episodes)
        manifest["splits"] = counts
        manifest["frames"] = {"format": "jpg", "quality": quality, "converted_from": "mp4"}
        write_manifest(tmp, manifest)
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="dataset folder (mp4 or frames + label JSON)")
    p.add_argument("dst", type=Path, help="new folder for the JPEG frame-folder copy")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    args = p.parse_args(argv)
    counts = convert(args.src, args.dst, args.quality)
    size = sum(f.stat().st_size for f in args.dst.rglob("*") if f.is_file())
    print(f"wrote {args.dst}: {json.dumps(counts)}, {size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
