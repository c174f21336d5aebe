"""Write simulated (or dataset) pouring episodes into a ROS 2 bag with images and ground truth.

    python -m tcc_ros.record_sim_bag --out BAG --episodes N [--storage mcap|sqlite3]

Each episode starts with a marker on ``/tcc/episode`` (std_msgs/String, the episode name); every
frame goes to the image topic (sensor_msgs/Image, rgb8) with a ``tcc_ros/GroundTruth`` of the same
stamp on ``/tcc/ground_truth``. Episodes are separated by a 2 s gap in stamps, so all three
episode-splitting modes of ``evaluate_bag`` apply. Needs no ROS installation.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tcc_ros.bag_io import BagError, BagWriter
from tcc_ros.ground_truth import ground_truth_fields

EPISODE_GAP_NS = 2_000_000_000


def _episode_source(args: argparse.Namespace) -> Iterator[tuple[str, Any, Any]]:
    """Yield ``(name, frames, labels)`` from the simulator or a dataset split."""
    from tcc_model.data.format import EpisodeLabels

    if args.dataset:
        from tcc_model.data.registry import load_dataset_split

        episodes = load_dataset_split(args.dataset, args.split, data_root=args.data_root)
        for episode in episodes[: args.episodes]:
            yield episode.name, episode.load_frames(), episode.labels
        return
    import numpy as np

    from tcc_model.data.sim_pouring import render_episode

    rng = np.random.default_rng(args.seed)
    kinds = ["drop", "miss", "stall", "reversed"]
    for i in range(args.episodes):
        anomaly = str(rng.choice(kinds)) if rng.random() < args.anomaly_rate else None
        frames, label_dict = render_episode(
            args.seed * 100_003 + i, anomaly, args.size, variation=args.variation
        )
        yield f"sim{i:04d}", frames, EpisodeLabels.from_dict(label_dict)


def record(args: argparse.Namespace) -> int:
    """Write the bag; returns the number of frames written.

    The bag is written under its final name inside a hidden ``.<name>.partial/`` folder next to
    it and moved into place when complete, so the storage file inside is named after the bag
    (``sim.bag/sim.bag.mcap``) and an interrupted run leaves nothing under the final name.
    """
    out = Path(args.out)
    if out.exists():
        raise BagError(f"{out} exists; choose a new --out (bags are never overwritten)")
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    stamp = args.start_ns
    period = int(1e9 / args.fps)
    written = 0
    try:
        with BagWriter(staging / out.name, storage=args.storage, image_topic=args.image_topic) as w:
            for name, frames, labels in tqdm(
                _episode_source(args), total=args.episodes, desc="episodes", unit="ep"
            ):
                w.write_marker(stamp, name)
                for frame, truth in zip(frames, ground_truth_fields(labels, name)):
                    w.write_frame(stamp, frame, truth)
                    stamp += period
                    written += 1
                stamp += EPISODE_GAP_NS
        (staging / out.name).rename(out)  # a bag under the final name is always complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name if __spec__ else __name__}",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--image-topic", default="/camera/image_raw")
    p.add_argument("--fps", type=float, default=12.0, help="stamp spacing of frames")
    p.add_argument("--size", type=int, default=112, help="simulator image size")
    p.add_argument(
        "--variation",
        choices=["full", "station"],
        default="station",
        help="simulator scene variation: one fixed robot cell (station) or everything randomised",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--anomaly-rate", type=float, default=0.0)
    p.add_argument("--dataset", help="take episodes from a dataset (e.g. sim_pouring) instead")
    p.add_argument("--split", default="test")
    p.add_argument("--data-root", default=None)
    p.add_argument("--start-ns", type=int, default=1_700_000_000_000_000_000)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Record the bag and print where it went."""
    from tcc_model.cli import print_written
    from tcc_model.errors import safe_text

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if not args.fps > 0:
        parser.error(f"--fps must be > 0, got {args.fps}")
    if not 0.0 <= args.anomaly_rate <= 1.0:
        parser.error(f"--anomaly-rate must be in [0, 1], got {args.anomaly_rate}")
    try:
        n = record(args)
    except OSError as exc:
        raise BagError(
            f"cannot write the bag --out {args.out}: {safe_text(exc, 240)}; choose a writable path"
        ) from exc
    print_written({"bag": f"{args.out} ({n} frames)"})
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
