"""Soak benchmark: the monitor node under a 30 fps compressed camera that mixes in hostile frames.

    python benchmarks/bench_soak.py --minutes 10 --clean-minutes 3 [--bundle BUNDLE] [--json F]

Runs the ROS 2 monitor node (``compressed:=true``) twice against a camera published from this
process: first a clean camera, then the same camera with ``--bad-fraction`` (default 10%) of its
frames replaced by malformed and "bomb" frames (JPEG/PNG headers claiming 16384² to 65500²
pixels, a progressive-JPEG scan bomb, truncated and random data, other formats, empty data, a
100 KB format string). For each run it reports: frames published (valid / bad), ``/tcc/progress``
outputs for valid and for bad frames (the latter must be 0), the node's own counters from
``/diagnostics`` (processed, dropped, rejected, failed), latency of valid frames (image stamp to
output received here) p50/p99 after ``--warmup`` seconds, and the node's RSS after warm-up
(first, last, min, max).

Without ``--bundle`` it exports an untrained light model at 112² and builds references from
synthetic episodes (embeddings mean nothing; cost and robustness do not depend on them). Not a
test: it takes ``minutes + clean-minutes`` plus about a minute; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOPIC = "/soak/image"
#: Hostile frames whose image data is valid: the node must process them like any other.
DECODABLE = {"100 KB format string"}


def _jpeg(frame: np.ndarray, progressive: bool = False) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    return cv2.imencode(".jpg", frame[..., ::-1], params)[1].tobytes()


def _png_bomb(height: int, width: int, rows: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    row = b"\0" * (1 + (width + 7) // 8)
    body = zlib.compress(row * rows, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def bad_frames(valid: bytes) -> list[tuple[str, str, bytes]]:
    """``(kind, format, data)`` of every hostile frame the camera mixes in."""
    import cv2

    small = np.zeros((16, 16, 3), np.uint8)

    def claiming(height: int, width: int) -> bytes:
        data = bytearray(_jpeg(small))
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
        return bytes(data)

    progressive = _jpeg(small, progressive=True)
    last = progressive.rindex(b"\xff\xda")
    scan_bomb = progressive[:-2] + progressive[last:-2] * 3000 + progressive[-2:]
    rng = np.random.default_rng(0)
    return [
        ("jpeg bomb 16384^2", "jpeg", claiming(16384, 16384)),
        ("jpeg bomb 65500^2", "jpeg", claiming(65500, 65500)),
        ("png bomb 16384^2", "png", _png_bomb(16384, 16384, 256)),
        ("png bomb 65535^2", "png", _png_bomb(65535, 65535, 16)),
        ("jpeg scan bomb", "jpeg", scan_bomb),
        ("truncated jpeg", "jpeg", valid[: len(valid) // 3]),
        ("random bytes", "jpeg", rng.integers(0, 256, 4096, np.uint8).tobytes()),
        ("bmp", "bmp", cv2.imencode(".bmp", small)[1].tobytes()),
        ("empty", "jpeg", b""),
        ("100 KB format string", "x" * 100_000, valid),
    ]


def camera_frames(size: int, count: int = 90) -> list[bytes]:
    """A loop of smooth synthetic RGB frames, JPEG-encoded once."""
    s = np.linspace(0, 1, count)
    colour = np.stack([40 + 170 * s, 200 - 150 * s**2, 120 + 80 * np.sin(3 * s)], axis=1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    frames = []
    for t, c in enumerate(colour):
        img = c[None, None, :] * (0.7 + 0.3 * np.sin(6 * xx + t / 10))[..., None]
        img = img + 30 * yy[..., None]
        frames.append(_jpeg(np.clip(img, 0, 255).astype(np.uint8)))
    return frames


def make_bundle(root: Path) -> Path:
    """An untrained light model at 112² exported with references from synthetic episodes."""
    import torch

    from tcc_model.data.format import EpisodeLabels, key_events_from_phase_ids, write_episode
    from tcc_model.export import ExportInputs, ExportOptions, export_bundle
    from tcc_model.models import build_model

    phases = ["reach", "pour", "place"]
    torch.manual_seed(0)
    model = build_model({"encoder": "light", "head": "light", "image_size": 112}).eval()
    bundle = root / "bundle"
    export_bundle(model, bundle, ExportOptions(), ExportInputs(phase_names=phases))
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 4)):
        for i in range(count):
            n = 60 + 5 * i
            s = np.linspace(0, 1, n) ** rng.uniform(0.8, 1.25)
            colour = np.stack([40 + 170 * s, 200 - 150 * s**2, 120 + 80 * np.sin(3 * s)], axis=1)
            frames = np.repeat(colour[:, None, None, :], 112, 1).repeat(112, 2).astype(np.uint8)
            ids = np.minimum(np.arange(n) * 3 // n, 2).tolist()
            labels = EpisodeLabels(
                video="",
                fps=30.0,
                num_frames=n,
                phase_names=phases,
                phase_ids=ids,
                key_events=key_events_from_phase_ids(ids, phases),
            )
            write_episode(root / "data" / split, f"ep{i}", frames, labels, video_format="png")
    subprocess.run(
        [sys.executable, "-m", "tcc_model.reference", "--bundle", str(bundle), "--dataset",
         f"folder:{root / 'data'}", "--false-alarm-rate", "0.5"],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return bundle


def frame_costs(repeats: int = 20) -> list[tuple[str, str, float, int]]:
    """Per hostile frame kind: outcome, median conversion time (ms) and bytes on the wire.

    Measured in this process with :func:`tcc_ros.image_conversion.compressed_to_rgb`, the
    function the node calls; a valid 224² camera frame is the first row for comparison.
    """
    from types import SimpleNamespace

    from tcc_ros.image_conversion import ImageConversionError, compressed_to_rgb

    valid = camera_frames(224, count=1)[0]
    rows = []
    for kind, fmt, data in [("valid 224² camera frame", "jpeg", valid), *bad_frames(valid)]:
        msg = SimpleNamespace(format=fmt, data=data)
        times, outcome = [], "decoded"
        for _ in range(repeats):
            start = time.perf_counter()
            try:
                compressed_to_rgb(msg)
            except ImageConversionError:
                outcome = "rejected"
            times.append(time.perf_counter() - start)
        rows.append((kind, outcome, 1e3 * float(np.median(times)), len(data)))
    return rows


def _costs_table() -> str:
    import resource

    frame_costs(repeats=1)  # imports and decoder set-up are not the frames' cost
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = frame_costs()
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    lines = ["| frame | bytes | outcome | median ms |", "|---|---|---|---|"]
    lines += [f"| {kind} | {size} | {outcome} | {ms:.3f} |" for kind, outcome, ms, size in rows]
    lines.append(f"\npeak RSS growth over all of them ({len(rows)} x 20 frames): {grown:.1f} MiB")
    return "\n".join(lines)


class Probe:
    """Publishes the camera and listens to /tcc/progress and /diagnostics (in this process)."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage
        from tcc_ros.msg import TaskProgress

        rclpy.init()
        self.node = rclpy.create_node("soak_camera")
        self.pub = self.node.create_publisher(CompressedImage, TOPIC, qos_profile_sensor_data)
        self.msg_type = CompressedImage
        self.outputs: list[tuple[float, float]] = []  # (received wall time, stamp)
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(TaskProgress, "/tcc/progress", self._on_progress, 1000)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self.stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_progress(self, msg: Any) -> None:
        self.outputs.append((time.time(), msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec))

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "frames_processed" in values:
                self.diagnostics = values

    def publish(self, stamp: float, fmt: str, data: bytes) -> None:
        msg = self.msg_type()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int((stamp % 1) * 1e9)
        msg.header.frame_id = "soak"
        msg.format = fmt
        msg.data = data
        self.pub.publish(msg)

    def close(self) -> None:
        import rclpy

        self.stop.set()
        self.thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def _start_node(bundle: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tcc_ros.monitor_node", "--ros-args", "--params-file",
         str(REPO / "config" / "progress_monitor.yaml"), "-p", f"bundle:={bundle}",
         "-p", "compressed:=true", "-p", f"image_topic:={TOPIC}", "-p", "threads:=1"],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_for_output(
    probe: Probe, node: subprocess.Popen, frame: bytes, sent: dict[float, str], timeout: float
) -> None:
    """Publish ``frame`` every 0.1 s until the node answers (it is loading the bundle)."""
    deadline = time.time() + timeout
    while not probe.outputs:
        if node.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"monitor node gave no output: {node.stderr.read()[-3000:]}")
        now = time.time()
        sent[now] = "valid"
        probe.publish(now, "jpeg", frame)
        time.sleep(0.1)


def soak_run(probe: Probe, bundle: Path, args: argparse.Namespace, bad_fraction: float) -> dict:
    """One run of the node: camera at ``args.rate`` for its duration; returns the figures."""
    import psutil

    valid = camera_frames(args.size)
    hostile = bad_frames(valid[0])
    probe.outputs.clear()
    probe.diagnostics = {}
    node = _start_node(bundle)
    try:
        sent: dict[float, str] = {}  # stamp -> kind ("valid" or the bad kind)
        _wait_for_output(probe, node, valid[0], sent, timeout=120)
        minutes = args.minutes if bad_fraction else args.clean_minutes
        proc = psutil.Process(node.pid)
        rng = np.random.default_rng(args.seed)
        rss: list[tuple[float, float]] = []
        start = time.time()
        period, i = 1.0 / args.rate, 0
        while (now := time.time()) - start < 60 * minutes:
            if rss == [] or now - rss[-1][0] >= 1.0:
                rss.append((now, proc.memory_info().rss / 2**20))
            if rng.random() < bad_fraction:
                kind, fmt, data = hostile[int(rng.integers(len(hostile)))]
            else:
                kind, fmt, data = "valid", "jpeg", valid[i % len(valid)]
            sent[now] = kind
            probe.publish(now, fmt, data)
            i += 1
            time.sleep(max(0.0, start + i * period - time.time()))
        time.sleep(5.0)  # drain the last outputs and a diagnostics message
        if node.poll() is not None:
            raise RuntimeError(f"monitor node exited: {node.stderr.read()[-3000:]}")
        return _summary(sent, list(probe.outputs), rss, dict(probe.diagnostics), start, args)
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()


def _summary(sent, outputs, rss, diagnostics, start, args) -> dict[str, Any]:  # noqa: ANN001
    """Figures of one run; ``sent`` and ``outputs`` cover the node's whole life."""
    kinds = {round(stamp, 6): kind for stamp, kind in sent.items()}
    expected = {"valid", *DECODABLE}
    valid_latency, counts = [], {"valid": 0, "bad": 0}
    for received, stamp in outputs:
        kind = kinds.get(round(stamp, 6), "unknown")
        counts["valid" if kind in expected else "bad"] += 1
        if kind == "valid" and stamp - start >= args.warmup:
            valid_latency.append(received - stamp)
    lat = np.array(valid_latency) * 1e3
    mem = np.array([m for t, m in rss if t - start >= args.warmup])
    published = list(kinds.values())
    return {
        "published_valid": sum(k in expected for k in published),
        "published_bad": sum(k not in expected for k in published),
        "bad_kinds": sorted(set(published) - {"valid"}),
        "outputs_valid": counts["valid"],
        "outputs_bad": counts["bad"],
        "node": {
            k: diagnostics.get(f"frames_{k}")
            for k in ("received", "processed", "dropped", "rejected", "failed")
        },  # fmt: skip
        "latency_ms_p50": float(np.percentile(lat, 50)) if len(lat) else None,
        "latency_ms_p99": float(np.percentile(lat, 99)) if len(lat) else None,
        "rss_mib": {
            "first": float(mem[0]),
            "last": float(mem[-1]),
            "min": float(mem.min()),
            "max": float(mem.max()),
        },
        "loadavg": os.getloadavg(),
    }


def _table(clean: dict, hostile: dict, args: argparse.Namespace) -> str:
    rows = [
        ("frames published valid / bad", "published_valid", "published_bad"),
        ("/tcc/progress for valid / bad frames", "outputs_valid", "outputs_bad"),
    ]
    lines = [
        f"| {args.rate:g} fps, {args.size}² JPEG | clean ({args.clean_minutes:g} min) | "
        f"{args.bad_fraction:.0%} hostile ({args.minutes:g} min) |",
        "|---|---|---|",
    ]
    for label, a, b in rows:
        lines.append(f"| {label} | {clean[a]} / {clean[b]} | {hostile[a]} / {hostile[b]} |")
    for key in ("received", "processed", "dropped", "rejected", "failed"):
        lines.append(f"| node frames {key} | {clean['node'][key]} | {hostile['node'][key]} |")
    for key in ("latency_ms_p50", "latency_ms_p99"):
        lines.append(
            f"| valid-frame {key[11:]} latency (ms) | {clean[key]:.1f} | {hostile[key]:.1f} |"
        )
    for run in (clean, hostile):
        m = run["rss_mib"]
        run["rss_text"] = f"{m['first']:.0f} / {m['last']:.0f} ({m['min']:.0f}-{m['max']:.0f})"
    lines.append(f"| RSS after warm-up first / last (min-max) MiB | {clean['rss_text']} | "
                 f"{hostile['rss_text']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, help="bundle with references (default: a throwaway)")
    p.add_argument("--minutes", type=float, default=10.0, help="hostile run (default 10)")
    p.add_argument("--clean-minutes", type=float, default=3.0, help="clean run (default 3)")
    p.add_argument("--bad-fraction", type=float, default=0.1)
    p.add_argument("--rate", type=float, default=30.0, help="camera fps (default 30)")
    p.add_argument("--size", type=int, default=224, help="camera frame size (default 224)")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds left out of the figures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domain", type=int, default=57, help="ROS_DOMAIN_ID (default 57)")
    p.add_argument("--json", type=Path, help="write the figures as JSON")
    p.add_argument("--costs-only", action="store_true", help="only the per-frame cost table")
    args = p.parse_args(argv)
    print(_costs_table(), flush=True)
    if args.costs_only:
        return 0
    os.environ.update(ROS_DOMAIN_ID=str(args.domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or make_bundle(Path(tmp))
        probe = Probe()
        try:
            clean = soak_run(probe, bundle, args, 0.0)
            hostile = soak_run(probe, bundle, args, args.bad_fraction)
        finally:
            probe.close()
    print(_table(clean, hostile, args))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps({"clean": clean, "hostile": hostile}, indent=2))
        print(f"wrote: figures {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
