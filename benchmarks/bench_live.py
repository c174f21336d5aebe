"""Live end-to-end benchmark of the ROS 2 monitor: camera -> monitor node -> another process.

Starts the monitor node and a camera (dataset replay resized to ``--size``, default 224², at
``--rate`` fps, default 30) as separate processes, listens to ``/tcc/phase`` here, and prints a
Markdown table: end-to-end latency (image stamp -> ``/tcc/phase`` received in this process)
p50/p99, processed fps, dropped frames and the monitor's RSS over time.

    python benchmarks/bench_live.py --bundle BUNDLE --dataset sim_pouring --duration 30
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="exported bundle with references")
    p.add_argument("--dataset", default="sim_pouring", help="dataset replayed by the camera")
    p.add_argument("--split", default="test")
    p.add_argument("--size", type=int, default=224, help="camera frame size (default 224)")
    p.add_argument("--rate", type=float, default=30.0, help="camera fps (default 30)")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds ignored at the start")
    p.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--domain", type=int, default=42, help="ROS_DOMAIN_ID (default 42)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not (Path(args.bundle) / "bundle.yaml").is_file():
        print(f"error: --bundle {args.bundle}: no bundle.yaml there", file=sys.stderr)
        return 2
    os.environ.update(ROS_DOMAIN_ID=str(args.domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    import psutil
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from tcc_ros.msg import TaskPhase

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    py = [sys.executable, "-m"]
    monitor = subprocess.Popen(
        [
            *py,
            "tcc_ros.monitor_node",
            "--ros-args",
            "--params-file",
            str(REPO / "config" / "progress_monitor.yaml"),
            "-p",
            f"bundle:={args.bundle}",
            "-p",
            f"threads:={args.threads}",
            "-p",
            f"backend:={args.backend}",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    camera = subprocess.Popen(
        [
            *py,
            "tcc_ros.camera_source",
            "--dataset",
            args.dataset,
            "--split",
            args.split,
            "--size",
            str(args.size),
            "--rate",
            f"{args.rate:g}",
            "--loop",
            "--episode-gap",
            "0",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rclpy.init()
    node = Node("bench_live")
    received: list[tuple[float, float]] = []  # (receive wall time, latency s)

    def on_phase(msg: TaskPhase) -> None:
        now = time.time()
        received.append((now, now - (msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)))

    node.create_subscription(TaskPhase, "/tcc/phase", on_phase, 100)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)],
        daemon=True,
    )
    spinner.start()
    rss: list[tuple[float, float]] = []
    try:
        deadline = time.time() + 60
        while not received and time.time() < deadline and monitor.poll() is None:
            time.sleep(0.1)
        if not received:
            print(
                "error: no /tcc/phase output within 60 s; monitor said:\n"
                + (monitor.stderr.read() if monitor.poll() is not None else ""),
                file=sys.stderr,
            )
            return 1
        time.sleep(args.warmup)
        start = time.time()
        proc = psutil.Process(monitor.pid)
        while time.time() - start < args.duration:
            rss.append((time.time() - start, proc.memory_info().rss / 2**20))
            time.sleep(1.0)
        end = time.time()
    finally:
        stop.set()
        spinner.join(5)
        for child in (camera, monitor):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                child.wait(15)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    window = np.array([lat for t, lat in received if start <= t <= end]) * 1e3
    rss_mb = np.array([m for _, m in rss])
    print(
        f"\nLive monitor, {args.size}x{args.size} camera at {args.rate:g} fps, "
        f"{args.duration:g} s, backend {args.backend}, threads {args.threads}\n"
    )
    print("| metric | value |\n|---|---|")
    print(
        f"| end-to-end latency p50 / p99 (ms) | {np.percentile(window, 50):.1f} / "
        f"{np.percentile(window, 99):.1f} |"
    )
    print(f"| processed fps | {len(window) / (end - start):.1f} (camera {args.rate:g}) |")
    print(
        f"| monitor RSS start / end / max (MiB) | {rss_mb[0]:.0f} / {rss_mb[-1]:.0f} / "
        f"{rss_mb.max():.0f} |"
    )
    print(
        "| RSS over time (MiB, every ~5 s) | "
        + " ".join(f"{m:.0f}" for m in rss_mb[:: max(1, len(rss_mb) // 6)])
        + " |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
