"""Console view of a running monitor, and the live report against the demo camera's ground truth.

Subscribes to the monitor outputs (``progress``, ``phase``, ``anomaly``, the latched ``info``
with the phase names) and the demo camera's ``ground_truth``, all relative to its namespace
(``--namespace``, default ``/tcc``), and to ``/diagnostics``; prints phase changes, anomaly onsets
and a progress line; on exit prints (and optionally writes as JSON) a report: progress MAE, phase
accuracy, anomalies caught / missed / false alarms, end-to-end latency (image stamp ->
``phase`` received here) and the monitor's input / processing rates while frames were flowing.
Messages are matched to ground truth by ``header.stamp``. Without any monitor output it says so
instead of printing a table of NaNs.

With ``--report OUT.json`` the pictures of the run go beside it: ``progress_curves.png`` (every
episode), ``timelines/<episode>.png`` (estimated vs true progress and phase, anomaly score against
the monitor's threshold, true anomalous frames, onsets and alarms) and ``phase_confusion.png``,
drawn by :func:`tcc_model.visualize.write_monitor_plots` as for bag evaluations.

Run: ``python -m tcc_ros.console [--report OUT.json] [--duration S] [--max-timelines N]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcc_ros.live_report import LiveReport, format_report, write_report

if TYPE_CHECKING:
    from tcc_model.visualize import EpisodeTimeline

#: Seconds the console may spend drawing the report's timelines after it was stopped.
DRAWING_SECONDS = 20.0

__all__ = ["ConsoleNode", "LiveReport", "format_report", "main", "parse_args", "write_report"]


class ConsoleNode:
    """Subscriber side of the console view (wraps an rclpy node)."""

    def __init__(self, namespace: str = "/tcc", quiet: bool = False, context: Any = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from tcc_ros.camera_source import ground_truth_qos
        from tcc_ros.monitor_node.outputs import ANOMALY_NAMES
        from tcc_ros.msg import Anomaly, GroundTruth, MonitorInfo, TaskPhase, TaskProgress

        self.node = Node("monitor_console", namespace=namespace, context=context)
        self.report = LiveReport()
        self.quiet = quiet
        self._lock = threading.Lock()
        self._last_phase = -2
        self._last_anomaly = 0
        self._last_print = 0.0
        self._episode = ""
        self._phase_names: list[str] = []
        self._anomaly_names = ANOMALY_NAMES
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        sub = self.node.create_subscription
        sub(MonitorInfo, "info", self._on_info, latched)
        sub(TaskProgress, "progress", self._on_progress, qos)
        sub(TaskPhase, "phase", self._on_phase, qos)
        sub(Anomaly, "anomaly", self._on_anomaly, qos)
        sub(GroundTruth, "ground_truth", self._on_truth, ground_truth_qos())
        sub(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    @staticmethod
    def _ns(stamp: Any) -> int:
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _on_info(self, msg: Any) -> None:
        self._phase_names = list(msg.phase_names)
        with self._lock:
            self.report.phase_names = list(msg.phase_names)
            if math.isfinite(msg.anomaly_score_threshold) and msg.anomaly_score_threshold > 0:
                self.report.threshold = float(msg.anomaly_score_threshold)
        self._say(
            f"== monitor: bundle {msg.bundle_id or '?'} ({msg.backend}), phases "
            f"{', '.join(self._phase_names)}, {len(msg.reference_ids)} references"
        )

    def _phase_name(self, phase_id: int) -> str:
        if 0 <= phase_id < len(self._phase_names):
            return self._phase_names[phase_id]
        return "?" if phase_id < 0 else f"phase {phase_id}"

    def _on_truth(self, msg: Any) -> None:
        with self._lock:
            self.report.add_truth(
                self._ns(msg.header.stamp),
                msg.episode,
                msg.frame_index,
                msg.phase_id,
                msg.progress,
                msg.anomaly,
                msg.anomaly_kind,
            )
        if msg.episode != self._episode:
            self._episode = msg.episode
            kind = f" (anomaly: {msg.anomaly_kind})" if msg.anomaly_kind else ""
            self._say(f"== episode {msg.episode}, {msg.num_frames} frames{kind}")

    def _on_progress(self, msg: Any) -> None:
        with self._lock:
            self.report.add_progress(self._ns(msg.header.stamp), msg.progress)
        now = time.monotonic()
        if now - self._last_print >= 1.0:
            self._last_print = now
            bar = "#" * int(round(20 * msg.progress))
            self._say(
                f"   progress [{bar:<20}] {100 * msg.progress:5.1f}% "
                f"(+/- {100 * msg.progress_std:.1f}) frame {msg.frame_index}"
            )

    def _on_phase(self, msg: Any) -> None:
        received = time.time_ns()
        with self._lock:
            self.report.add_phase(self._ns(msg.header.stamp), msg.id, received)
        if msg.id != self._last_phase:
            self._last_phase = msg.id
            self._say(f"-> phase {self._phase_name(msg.id)} (confidence {msg.confidence:.2f})")

    def _on_anomaly(self, msg: Any) -> None:
        flagged = msg.kind != 0
        with self._lock:
            self.report.add_anomaly(self._ns(msg.header.stamp), flagged, msg.score)
        if msg.kind != self._last_anomaly:
            self._last_anomaly = msg.kind
            if flagged:
                kind = self._anomaly_names.get(msg.kind, str(msg.kind))
                self._say(f"!! ANOMALY {kind}: {msg.description} (score {msg.score:.2f})")
            else:
                self._say("   anomaly cleared")

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if "progress monitor" in status.name:
                values = {kv.key: kv.value for kv in status.values}
                values["message"] = status.message
                with self._lock:
                    self.report.add_diagnostics(values)

    def final_report(self) -> tuple[dict[str, Any], list[EpisodeTimeline]]:
        """The report's metrics and the episodes' timelines, from one consistent snapshot."""
        with self._lock:
            return self.report.report(), self.report.timelines()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="monitor_console", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--namespace",
        default="/tcc",
        help="namespace of the monitor's outputs (default /tcc); -r __ns:=... also sets it",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="write the final report as JSON, and its pictures (episode timelines, phase "
        "confusion) into the same folder",
    )
    p.add_argument(
        "--max-timelines",
        type=int,
        default=12,
        help="per-episode timeline PNGs written at most (the overview shows every episode)",
    )
    p.add_argument("--duration", type=float, default=None, help="exit after S seconds")
    p.add_argument("--quiet", action="store_true", help="print only the final report")
    args = p.parse_args(list(argv))
    if args.duration is not None and args.duration <= 0:
        p.error(f"--duration must be > 0, got {args.duration}")
    if args.max_timelines < 0:
        p.error(f"--max-timelines must be >= 0, got {args.max_timelines}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: spin until SIGINT/SIGTERM or ``--duration``, then print the report."""
    from tcc_ros.monitor_node.app import catch_stop_signals, ignore_stop_signals

    stop = catch_stop_signals()  # from the start: no KeyboardInterrupt ever
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(remove_ros_args(["monitor_console", *argv])[1:])
    rclpy.init(
        args=["monitor_console", *argv],
        signal_handler_options=rclpy.signals.SignalHandlerOptions.NO,
    )
    console = ConsoleNode(args.namespace, quiet=args.quiet)
    import scipy.stats  # noqa: F401  (the final report needs it: load it now, not at Ctrl-C)

    executor = SingleThreadedExecutor()
    executor.add_node(console.node)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            executor.spin_once(timeout_sec=0.1)
    finally:
        report, timelines = console.final_report()
        executor.shutdown()
        console.node.destroy_node()
        rclpy.try_shutdown()
        ignore_stop_signals()
    print("\n" + format_report(report), flush=True)
    if args.report is not None and (report["frames_estimated"] or report["latency_samples"]):
        # the launcher (tcc_ros.monitor) stops the console 30 s after asking: draw for 20 s
        write_report(report, timelines, args.report, args.max_timelines, DRAWING_SECONDS)
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
