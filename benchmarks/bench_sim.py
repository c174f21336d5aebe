"""Benchmark of the pouring dataset generator: end-to-end frames/s (simulate, render, encode).

    python benchmarks/bench_sim.py [--episodes 12] [--size 112] [--workers 2]

Generates a throw-away dataset in a temporary folder and prints frames per second.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tcc_model.data.format import read_manifest
from tcc_model.data.sim_pouring import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--anomaly-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = generate_dataset(
            Path(tmp) / "ds",
            args.episodes,
            size=args.size,
            anomaly_rate=args.anomaly_rate,
            seed=args.seed,
            workers=args.workers,
            progress=False,
        )
        seconds = time.perf_counter() - start
        frames = read_manifest(out)["num_frames"]
    print(
        f"sim_pouring: {args.episodes} episodes, {frames} frames at {args.size}x{args.size}, "
        f"{args.workers} workers: {seconds:.1f} s, {frames / seconds:.1f} frames/s "
        f"(1-min load average: {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
