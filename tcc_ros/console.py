"""Console view of a running monitor, and the live report against the demo camera's ground truth.

Subscribes to the monitor outputs (``progress``, ``phase``, ``anomaly``, the latched ``info``
with the phase names) and the demo camera's ``ground_truth``, all relative to its namespace
(``--namespace``, default ``/tcc``), and to ``/diagnostics``; prints phase changes, anomaly onsets
and a progress line; on exit prints (and optionally writes as JSON) a report: progress MAE, phase
accuracy, anomalies caught / missed / false alarms, end-to-end latency (image stamp ->
``phase`` received here) and the monitor's input / processing rates while frames were flowing.
Messages are matched to ground truth by ``header.stamp``. Without any monitor output it says so
instead of printing a table of NaNs.

Run: ``python -m tcc_ros.console [--report OUT.json] [--duration S]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcc_model.monitor_metrics import score_episode, summarize


@dataclass
class _Truth:
    episode: str
    frame_index: int
    phase_id: int
    progress: float
    anomaly: bool
    anomaly_kind: str


@dataclass
class LiveReport:
    """Accumulates monitor outputs and ground truth keyed by image stamp (ns); pure Python."""

    truth: dict[int, _Truth] = field(default_factory=dict)
    progress: dict[int, float] = field(default_factory=dict)
    phase: dict[int, int] = field(default_factory=dict)
    anomaly: dict[int, bool] = field(default_factory=dict)
    anomaly_score: dict[int, float] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    diagnostics: dict[str, str] = field(default_factory=dict)
    rates_hz: list[tuple[float, float]] = field(default_factory=list)  # (input, processed)

    def add_diagnostics(self, values: dict[str, str]) -> None:
        """Keep the latest diagnostics; rates only while frames were flowing (input > 0)."""
        self.diagnostics = dict(values)
        try:
            rates = (float(values["input_rate_hz"]), float(values["processed_rate_hz"]))
        except (KeyError, ValueError):
            return
        if rates[0] > 0 and len(self.rates_hz) < 100_000:
            self.rates_hz.append(rates)

    def add_truth(
        self,
        stamp_ns: int,
        episode: str,
        frame_index: int,
        phase_id: int,
        progress: float,
        anomaly: bool,
        anomaly_kind: str,
    ) -> None:
        self.truth[stamp_ns] = _Truth(
            episode, frame_index, phase_id, progress, anomaly, anomaly_kind
        )

    def add_progress(self, stamp_ns: int, progress: float) -> None:
        self.progress[stamp_ns] = progress

    def add_phase(self, stamp_ns: int, phase_id: int, received_ns: int) -> None:
        self.phase[stamp_ns] = phase_id
        self.latencies_ms.append((received_ns - stamp_ns) * 1e-6)

    def add_anomaly(self, stamp_ns: int, anomaly: bool, score: float = math.nan) -> None:
        self.anomaly[stamp_ns] = anomaly
        self.anomaly_score[stamp_ns] = score

    def _episodes(self) -> list[list[int]]:
        """Ground-truth stamps grouped into episode runs, in stamp order.

        A run ends when the episode name changes or its frame index goes back (a looping camera
        replays the same episode).
        """
        runs: list[list[int]] = []
        previous: _Truth | None = None
        for stamp in sorted(self.truth):
            t = self.truth[stamp]
            if (
                previous is None
                or t.episode != previous.episode
                or t.frame_index <= previous.frame_index
            ):
                runs.append([])
            runs[-1].append(stamp)
            previous = t
        return runs

    def report(self) -> dict[str, Any]:
        """Metrics over everything received so far (NaN where there is nothing to measure).

        Each episode is scored with :func:`tcc_model.monitor_metrics.score_episode` (frames the
        monitor published no progress for are left out of the progress and phase scores) and the
        episodes are aggregated with :func:`tcc_model.monitor_metrics.summarize`.
        """
        scores = []
        for stamps in self._episodes():
            truth = [self.truth[s] for s in stamps]
            scores.append(
                score_episode(
                    truth[0].episode,
                    pred_progress=[self.progress.get(s, math.nan) for s in stamps],
                    pred_phase=[self.phase.get(s, -1) for s in stamps],
                    pred_alarm=[self.anomaly.get(s, False) for s in stamps],
                    pred_score=[self.anomaly_score.get(s, math.nan) for s in stamps],
                    gt_progress=[t.progress for t in truth],
                    gt_phase=[t.phase_id for t in truth],
                    gt_anomaly_mask=[t.anomaly for t in truth],
                    anomalous=bool(truth[0].anomaly_kind),
                )
            )
        summary = summarize(scores)
        estimated = sum(s in self.truth for s in self.phase)
        lat = np.array(self.latencies_ms, float)
        rates = np.array(self.rates_hz, float).reshape(-1, 2)
        return {
            "episodes": len(scores),
            "frames_ground_truth": len(self.truth),
            "frames_estimated": estimated,
            "processed_fraction": estimated / len(self.truth) if self.truth else math.nan,
            "progress_mae": summary.get("progress_mae", math.nan),
            "phase_accuracy": summary.get("phase_accuracy", math.nan),
            "anomalies_caught": summary.get("anomalies_caught", 0),
            "anomalies_missed": summary.get("anomalies_missed", 0),
            "false_alarms": summary.get("false_alarm_episodes", 0),
            "detection_delay_frames_median": summary.get("median_detection_delay", math.nan),
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else math.nan,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else math.nan,
            "latency_samples": int(lat.size),
            "input_rate_hz": float(np.median(rates[:, 0])) if rates.size else math.nan,
            "processed_rate_hz": float(np.median(rates[:, 1])) if rates.size else math.nan,
            "diagnostics": dict(self.diagnostics),
        }


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%" if math.isfinite(value) else "n/a"


def format_report(report: dict[str, Any]) -> str:
    """Markdown table of a :meth:`LiveReport.report` dict (a line instead when it is empty)."""
    if not report["frames_estimated"] and not report["latency_samples"]:
        return "no monitor outputs received: no report (is the monitor running?)"
    rows = [
        ("episodes", f"{report['episodes']}"),
        (
            "frames estimated / ground truth",
            f"{report['frames_estimated']} / {report['frames_ground_truth']}",
        ),
        ("progress MAE", f"{report['progress_mae']:.3f}"),
        ("phase accuracy", _percent(report["phase_accuracy"])),
        (
            "anomalies caught / missed / false alarms",
            " / ".join(
                str(report[k]) for k in ("anomalies_caught", "anomalies_missed", "false_alarms")
            ),
        ),
        ("detection delay (median, frames)", f"{report['detection_delay_frames_median']:.1f}"),
        (
            "latency p50 / p99 (ms)",
            f"{report['latency_ms_p50']:.1f} / {report['latency_ms_p99']:.1f}",
        ),
        (
            "input / processed rate (Hz, median while streaming)",
            f"{report['input_rate_hz']:.2f} / {report['processed_rate_hz']:.2f}",
        ),
    ]
    diag = report.get("diagnostics") or {}
    if diag:
        rows.append(
            (
                "dropped / rejected frames (monitor)",
                f"{diag.get('frames_dropped', '?')} / {diag.get('frames_rejected', '?')}",
            )
        )
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


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

    def final_report(self) -> dict[str, Any]:
        with self._lock:
            return self.report.report()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="monitor_console", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--namespace",
        default="/tcc",
        help="namespace of the monitor's outputs (default /tcc); -r __ns:=... also sets it",
    )
    p.add_argument("--report", type=Path, default=None, help="write the final report as JSON")
    p.add_argument("--duration", type=float, default=None, help="exit after S seconds")
    p.add_argument("--quiet", action="store_true", help="print only the final report")
    args = p.parse_args(list(argv))
    if args.duration is not None and args.duration <= 0:
        p.error(f"--duration must be > 0, got {args.duration}")
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
        report = console.final_report()
        executor.shutdown()
        console.node.destroy_node()
        rclpy.try_shutdown()
        ignore_stop_signals()
    print("\n" + format_report(report), flush=True)
    if args.report is not None and (report["frames_estimated"] or report["latency_samples"]):
        from tcc_model.utils import write_text_atomic

        write_text_atomic(args.report, json.dumps(_json_safe(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from tcc_model.cli import entry_point

    entry_point(main)
