"""``python -m tcc_model.data.sim_pouring``: the arguments, the sampling ranges, the run."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tcc_model.data.sim_pouring.episode import STATION_SEED
from tcc_model.data.sim_pouring.plan import DEFAULT_SPLIT_FRACTIONS


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(
            f"expected three comma-separated numbers (train,val,test), got {text!r}"
        )
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments: the dataset's size and splits, then its sampling variation."""
    parser = argparse.ArgumentParser(
        prog="python -m tcc_model.data.sim_pouring",
        description="Generate the synthetic MuJoCo robot-pouring dataset (mp4 + JSON labels).",
    )
    _add_dataset_args(parser)
    _add_variation_args(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """Output, episode count and splits, frame size, rate and length."""
    parser.add_argument("--out", required=True, type=Path, help="new dataset folder")
    parser.add_argument("--episodes", required=True, type=int, help="number of episodes")
    parser.add_argument("--size", type=int, default=112, help="frame size in pixels (even)")
    parser.add_argument(
        "--anomaly-rate", type=float, default=0.0, help="share of anomalous episodes per split"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="global seed (output is a function of it)"
    )
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--fps", type=float, default=12.0, help="video frame rate")
    parser.add_argument(
        "--split-fractions",
        type=_fractions,
        default=DEFAULT_SPLIT_FRACTIONS,
        help="train,val,test fractions (default 0.7,0.15,0.15)",
    )
    parser.add_argument(
        "--min-frames",
        type=int,
        default=None,
        help="clamp shorter episodes to N frames by slowing time (default: no clamp; recorded "
        "per episode as metadata.motion.time_scale)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="clamp longer episodes to N frames by speeding time up (default: no clamp)",
    )


def _add_variation_args(parser: argparse.ArgumentParser) -> None:
    """What varies between episodes: station, sampling ranges, widening, shifts."""
    parser.add_argument(
        "--variation",
        choices=["full", "station"],
        default="full",
        help="full: randomise camera, room and robot per episode; station: one fixed camera "
        "and room (a robot cell), objects, layout and lighting still vary",
    )
    parser.add_argument(
        "--station",
        type=int,
        default=STATION_SEED,
        help=f"seed of the station's room, robot and camera (--variation station; default "
        f"{STATION_SEED})",
    )
    parser.add_argument(
        "--ranges",
        type=Path,
        default=None,
        help="JSON/YAML file of sampling ranges replacing the defaults (see tcc_model.sim.ranges)",
    )
    parser.add_argument(
        "--widen",
        type=float,
        default=0.0,
        help="extend every sampling range by SIZE x its width / 2 on both sides (0: off)",
    )
    parser.add_argument(
        "--shift",
        default=None,
        help="move these factors' ranges outside the defaults: comma-separated of "
        "objects, lighting, motion, distractors, liquid, camera, or all",
    )
    parser.add_argument(
        "--shift-size", type=float, default=1.0, help="how far --shift moves (1: about one width)"
    )


def sampling_ranges(
    ranges_file: Path | None = None,
    widen: float = 0.0,
    shift: str | None = None,
    shift_size: float = 1.0,
) -> tuple[Any, dict[str, Any] | None]:
    """The ``SamplingRanges`` of the CLI options and the shift record for the manifest."""
    from tcc_model.errors import ConfigError, wrap_errors
    from tcc_model.sim.ranges import SHIFT_FACTORS, SamplingRanges, shifted, widened

    ranges = SamplingRanges()
    if ranges_file is not None:
        import yaml

        fix = "pass a JSON or YAML mapping of ranges"
        with wrap_errors(ConfigError, ranges_file, fix, extra=(yaml.YAMLError,)):
            data = yaml.safe_load(Path(ranges_file).read_text())
        ranges = SamplingRanges.from_dict(data or {}, source=str(ranges_file))
    if widen < 0:
        raise ConfigError(f"--widen must be >= 0, got {widen}")
    if widen > 0:
        ranges = widened(widen, ranges)
    if not shift:
        return ranges, None
    factors = [f.strip() for f in shift.split(",") if f.strip()]
    factors = list(SHIFT_FACTORS) if factors == ["all"] else factors
    for name in factors:
        if name not in SHIFT_FACTORS:
            raise ConfigError(
                f"--shift {name!r}: unknown factor; expected all or some of "
                f"{', '.join(SHIFT_FACTORS)}"
            )
    return shifted(factors, shift_size, ranges), {"factors": factors, "size": float(shift_size)}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for bad arguments or an unwritable --out)."""
    args = build_parser().parse_args(argv)
    from tcc_model.data.sim_pouring.dataset import generate_dataset

    start = time.perf_counter()
    ranges, shift = sampling_ranges(args.ranges, args.widen, args.shift, args.shift_size)
    try:
        out = generate_dataset(
            args.out,
            args.episodes,
            size=args.size,
            anomaly_rate=args.anomaly_rate,
            seed=args.seed,
            workers=args.workers,
            fps=args.fps,
            progress=not args.no_progress,
            split_fractions=args.split_fractions,
            min_frames=args.min_frames,
            max_frames=args.max_frames,
            variation=args.variation,
            station=args.station,
            ranges=ranges,
            shift=shift,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: generation failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    from tcc_model.cli import print_written
    from tcc_model.data.format import MANIFEST_NAME, read_manifest

    generator = read_manifest(out)
    frames = generator["num_frames"]
    scaled = generator["generator"]["time_scaled_episodes"]
    if scaled:
        print(
            f"note: {scaled} of {args.episodes} episodes were clamped to "
            f"--min-frames/--max-frames: their video speed differs from the simulated speed "
            "(metadata.motion.time_scale)",
            file=sys.stderr,
        )
    print(
        f"generated {args.episodes} episodes ({frames} frames) in {seconds:.1f} s "
        f"({frames / seconds:.1f} frames/s)"
    )
    print_written({"dataset": out, "manifest": out / MANIFEST_NAME})
    return 0
