"""ROS 2 node: camera frames in, task progress / phase / alignment / anomaly out.

A thin adapter around :class:`tcc_model.stream.ProgressMonitor`. The subscription callback only
drops the message into a one-slot mailbox (the newest frame wins, older ones are counted as
dropped); a worker thread converts, runs the engine and publishes, so a camera faster than the
engine never builds a queue. Every output carries the stamp of the image it was computed from.

Run: ``python -m tcc_ros.monitor_node --ros-args --params-file config/progress_monitor.yaml``.
Topics (under ``output_namespace``, default ``/tcc``): ``progress``, ``phase``, ``alignment``,
``anomaly``, optional ``overlay``; inputs ``reset`` (std_msgs/Empty) and ``reload``
(std_msgs/String: a bundle path, or empty to reload the current one). ``/diagnostics`` carries
rates, latency, dropped and rejected frames.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty, Header, String

from tcc_ros.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_image_fields,
)
from tcc_ros.msg import Alignment, Anomaly, TaskPhase, TaskProgress

IMAGE_TYPE_NAMES = {False: "sensor_msgs/msg/Image", True: "sensor_msgs/msg/CompressedImage"}


class FrameMonitor(Protocol):
    """What the node needs from a monitor (``tcc_model.stream.ProgressMonitor`` satisfies it)."""

    def process_frame(self, frame: np.ndarray, stamp: float) -> Any: ...

    def reset(self) -> None: ...


@dataclass
class LoadedMonitor:
    """A monitor plus what diagnostics report about it."""

    monitor: FrameMonitor
    backend: str
    bundle_id: str
    anomaly_threshold: float = math.nan


MonitorFactory = Callable[[str, str, int, dict[str, Any]], LoadedMonitor]


def load_monitor(
    bundle: str, backend: str, threads: int, overrides: dict[str, Any]
) -> LoadedMonitor:
    """Load the engine and references of ``bundle`` and build a streaming monitor.

    ``overrides`` are :class:`tcc_model.stream.MonitorConfig` fields (thresholds etc.).
    Raises ``ValueError`` naming the bundle or the unknown override.
    """
    from tcc_model.engine import load_bundle
    from tcc_model.stream import (
        ANOMALY_SCORE_THRESHOLD,
        MonitorConfig,
        ProgressMonitor,
        ReferenceSet,
    )

    if not bundle:
        raise ValueError("parameter 'bundle' is empty; set it to an exported bundle directory")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        config = MonitorConfig(**overrides)
    except TypeError as exc:
        raise ValueError(f"unknown monitor.* parameter: {exc}") from exc
    engine = load_bundle(bundle, backend=backend, threads=threads)
    references = ReferenceSet.load(bundle)
    monitor = ProgressMonitor(references, config=config, engine=engine)
    return LoadedMonitor(
        monitor=monitor,
        backend=str(getattr(engine, "backend", backend)),
        bundle_id=str(getattr(engine, "bundle_id", "")),
        anomaly_threshold=ANOMALY_SCORE_THRESHOLD,
    )


@dataclass
class _Stats:
    """Counters behind /diagnostics (touched from the callback and the worker thread)."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0
    last_frame_wall: float | None = None
    last_rejection: str = ""
    latencies_s: deque = field(default_factory=lambda: deque(maxlen=512))
    processing_s: deque = field(default_factory=lambda: deque(maxlen=512))


def _stamp_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class ProgressMonitorNode(Node):
    """Subscribes to a camera, streams frames through the monitor, publishes the estimates."""

    def __init__(self, monitor_factory: MonitorFactory = load_monitor, **node_kwargs: Any) -> None:
        super().__init__(
            "progress_monitor",
            allow_undeclared_parameters=True,
            automatically_declare_parameters_from_overrides=True,
            **node_kwargs,
        )
        self.bundle = str(self._param("bundle", ""))
        self.image_topic = str(self._param("image_topic", "/camera/image_raw"))
        self.compressed = bool(self._param("compressed", False))
        self.backend_request = str(self._param("backend", "auto"))
        self.threads = int(self._param("threads", 1))
        self.publish_overlay = bool(self._param("publish_overlay", False))
        self.diagnostics_period = float(self._param("diagnostics_period", 1.0))
        self.no_frame_timeout_s = float(self._param("no_frame_timeout_s", 5.0))
        out_ns = str(self._param("output_namespace", "/tcc")).rstrip("/")
        reliability = str(self._param("qos.reliability", "best_effort"))
        depth = int(self._param("qos.depth", 1))
        self._factory = monitor_factory
        self._overrides = {
            name: p.value for name, p in self.get_parameters_by_prefix("monitor").items()
        }
        if reliability not in ("best_effort", "reliable"):
            raise ValueError(
                "parameter qos.reliability must be 'best_effort' or 'reliable', "
                f"got {reliability!r}"
            )
        if depth < 1:
            raise ValueError(f"parameter qos.depth must be >= 1, got {depth}")
        if not self.diagnostics_period > 0 or not self.no_frame_timeout_s > 0:
            raise ValueError(
                "parameters diagnostics_period and no_frame_timeout_s must be > 0 seconds, got "
                f"{self.diagnostics_period} and {self.no_frame_timeout_s}"
            )

        self.loaded = monitor_factory(
            self.bundle, self.backend_request, self.threads, self._overrides
        )
        self.stats = _Stats()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._mailbox: tuple[Any, float] | None = None
        self._reset_requested = False
        self._reload_request: str | None = None
        self._stopping = False
        self._period_marks = (time.monotonic(), 0, 0)
        self._started = time.monotonic()
        self._type_error = ""

        out_qos = QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST
        )
        self.pub_progress = self.create_publisher(TaskProgress, f"{out_ns}/progress", out_qos)
        self.pub_phase = self.create_publisher(TaskPhase, f"{out_ns}/phase", out_qos)
        self.pub_alignment = self.create_publisher(Alignment, f"{out_ns}/alignment", out_qos)
        self.pub_anomaly = self.create_publisher(Anomaly, f"{out_ns}/anomaly", out_qos)
        self.pub_overlay = (
            self.create_publisher(Image, f"{out_ns}/overlay", 2) if self.publish_overlay else None
        )
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        in_qos = QoSProfile(
            depth=depth,
            history=HistoryPolicy.KEEP_LAST,
            reliability=(
                ReliabilityPolicy.BEST_EFFORT
                if reliability == "best_effort"
                else ReliabilityPolicy.RELIABLE
            ),
        )
        image_type = CompressedImage if self.compressed else Image
        self.create_subscription(image_type, self.image_topic, self._on_image, in_qos)
        self.create_subscription(Empty, f"{out_ns}/reset", self._on_reset, 10)
        self.create_subscription(String, f"{out_ns}/reload", self._on_reload, 10)
        self.create_timer(self.diagnostics_period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="tcc-monitor-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"monitoring {self.image_topic} ({IMAGE_TYPE_NAMES[self.compressed]}, {reliability}) "
            f"with bundle {self.bundle} on backend {self.loaded.backend}; publishing under {out_ns}"
        )

    def _param(self, name: str, default: Any) -> Any:
        if not self.has_parameter(name):
            self.declare_parameter(name, default)
        value = self.get_parameter(name).value
        if value is None:
            return default
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ):
            raise ValueError(f"parameter {name} must be {type(default).__name__}, got {value!r}")
        return value

    # ---------------------------------------------------------------- inputs (executor thread)
    def _on_image(self, msg: Any) -> None:
        with self._lock:
            self.stats.received += 1
            self.stats.last_frame_wall = time.monotonic()
            if self._mailbox is not None:
                self.stats.dropped += 1
            self._mailbox = (msg, time.monotonic())
            self._wake.notify()

    def _on_reset(self, _msg: Empty) -> None:
        with self._lock:
            self._reset_requested = True
            self._wake.notify()

    def _on_reload(self, msg: String) -> None:
        with self._lock:
            self._reload_request = msg.data.strip() or self.bundle
            self._wake.notify()

    # ---------------------------------------------------------------- worker thread
    def stop(self) -> None:
        """Stop the worker thread (idempotent)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=5.0)

    def destroy_node(self) -> None:
        """Stop the worker thread, then release the node's ROS resources."""
        if hasattr(self, "_worker"):  # not when __init__ failed before starting it
            self.stop()
        super().destroy_node()

    def _work(self) -> None:
        while True:
            with self._lock:
                while (
                    not self._stopping
                    and self._mailbox is None
                    and not self._reset_requested
                    and self._reload_request is None
                ):
                    self._wake.wait()
                if self._stopping:
                    return
                reload_path, self._reload_request = self._reload_request, None
                reset, self._reset_requested = self._reset_requested, False
                item, self._mailbox = self._mailbox, None
            try:
                if reload_path is not None:
                    self._reload(reload_path)
                if reset:
                    self.loaded.monitor.reset()
                    self.get_logger().info("episode reset")
                if item is not None:
                    self._process(*item)
            except Exception as exc:  # one failed step must not end the worker
                with self._lock:
                    self.stats.failed += 1
                self.get_logger().error(
                    f"monitor worker step failed: {exc!r}", throttle_duration_sec=5.0
                )

    def _reload(self, bundle: str) -> None:
        try:
            loaded = self._factory(bundle, self.backend_request, self.threads, self._overrides)
        except Exception as exc:  # keep serving with the old bundle
            self.get_logger().error(f"reload of bundle {bundle} failed, keeping the old one: {exc}")
            return
        self.loaded, self.bundle = loaded, bundle
        self.get_logger().info(f"reloaded bundle {bundle} (backend {loaded.backend})")

    def _process(self, msg: Any, received_at: float) -> None:
        try:
            frame = compressed_to_rgb(msg) if self.compressed else image_to_rgb(msg)
        except ImageConversionError as exc:
            with self._lock:
                self.stats.rejected += 1
                self.stats.last_rejection = str(exc)
            self.get_logger().warning(f"rejected frame: {exc}", throttle_duration_sec=5.0)
            return
        stamp = msg.header.stamp
        try:
            result = self.loaded.monitor.process_frame(frame, _stamp_seconds(stamp))
        except ValueError as exc:
            with self._lock:
                self.stats.rejected += 1
                self.stats.last_rejection = str(exc)
            self.get_logger().warning(f"rejected frame: {exc}", throttle_duration_sec=5.0)
            return
        except Exception as exc:
            with self._lock:
                self.stats.failed += 1
            self.get_logger().error(
                f"monitor failed on a frame: {exc!r}", throttle_duration_sec=5.0
            )
            return
        header = Header(stamp=stamp, frame_id=msg.header.frame_id)
        self._publish_result(header, result)
        if self.pub_overlay is not None:
            overlay = draw_overlay(frame, result)
            self.pub_overlay.publish(Image(header=header, **rgb_to_image_fields(overlay)))
        done = time.monotonic()
        with self._lock:
            self.stats.processed += 1
            self.stats.processing_s.append(done - received_at)
            self.stats.latencies_s.append(time.time() - _stamp_seconds(stamp))

    def _publish_result(self, header: Header, r: Any) -> None:
        frame_index = int(r.frame_index)
        valid = bool(getattr(r, "valid", True))
        if valid:
            self.pub_progress.publish(
                TaskProgress(
                    header=header,
                    progress=float(r.progress),
                    uncertainty=float(r.progress_std),
                    reference_id=str(r.reference_id),
                    reference_frame=int(r.reference_frame),
                    phase_progress=float(r.phase_progress),
                    frame_index=frame_index,
                )
            )
            self.pub_alignment.publish(
                Alignment(
                    header=header,
                    reference_id=str(r.reference_id),
                    reference_frame=int(r.reference_frame),
                    reference_length=int(r.reference_length),
                    distance=float(r.distance),
                    frame_index=frame_index,
                )
            )
        self.pub_phase.publish(
            TaskPhase(
                header=header,
                phase_id=int(r.phase_id) if valid else -1,
                phase_name=str(r.phase_name) if valid else "",
                confidence=float(r.phase_confidence) if valid else 0.0,
            )
        )
        onset = r.frames_since_onset
        self.pub_anomaly.publish(
            Anomaly(
                header=header,
                anomaly=bool(r.anomaly),
                score=float(r.anomaly_score),
                threshold=float(self.loaded.anomaly_threshold),
                kind=str(r.anomaly_kind or ""),
                description=str(r.anomaly_description or ""),
                frames_since_onset=-1 if onset is None else int(onset),
            )
        )

    # ---------------------------------------------------------------- diagnostics (executor)
    def diagnostics_status(self) -> DiagnosticStatus:
        """Current health summary (what /diagnostics publishes)."""
        now = time.monotonic()
        with self._lock:
            s = self.stats
            t0, received0, processed0 = self._period_marks
            elapsed = max(now - t0, 1e-6)
            input_rate = (s.received - received0) / elapsed
            processed_rate = (s.processed - processed0) / elapsed
            self._period_marks = (now, s.received, s.processed)
            latencies = np.array(s.latencies_s) if s.latencies_s else None
            processing = np.array(s.processing_s) if s.processing_s else None
            silent_for = None if s.last_frame_wall is None else now - s.last_frame_wall
            counts = dict(
                received=s.received,
                processed=s.processed,
                dropped=s.dropped,
                rejected=s.rejected,
                failed=s.failed,
            )
            last_rejection = s.last_rejection
        self._check_image_topic_type()
        level, message = DiagnosticStatus.OK, "ok"
        if self._type_error:
            level, message = DiagnosticStatus.ERROR, self._type_error
        elif silent_for is None and s.received == 0:
            waited = now - self._started
            if waited > self.no_frame_timeout_s:
                level = DiagnosticStatus.WARN
                message = f"no frames received on {self.image_topic} for {waited:.1f} s"
            else:
                message = f"waiting for frames on {self.image_topic}"
        elif silent_for is not None and silent_for > self.no_frame_timeout_s:
            level, message = DiagnosticStatus.WARN, f"no frames for {silent_for:.1f} s"
        elif counts["failed"]:
            level, message = DiagnosticStatus.WARN, f"{counts['failed']} frames failed"
        values = {
            "image_topic": self.image_topic,
            "backend": self.loaded.backend,
            "bundle_id": self.loaded.bundle_id,
            "input_rate_hz": f"{input_rate:.2f}",
            "processed_rate_hz": f"{processed_rate:.2f}",
            **{f"frames_{k}": str(v) for k, v in counts.items()},
            "last_rejection": last_rejection,
        }
        if latencies is not None:
            values["latency_p50_ms"] = f"{1e3 * np.percentile(latencies, 50):.1f}"
            values["latency_p99_ms"] = f"{1e3 * np.percentile(latencies, 99):.1f}"
        if processing is not None:
            values["processing_p50_ms"] = f"{1e3 * np.percentile(processing, 50):.1f}"
        return DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: progress monitor",
            message=message,
            hardware_id=self.loaded.bundle_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )

    def _publish_diagnostics(self) -> None:
        status = self.diagnostics_status()
        if status.level != DiagnosticStatus.OK:
            self.get_logger().warning(status.message, throttle_duration_sec=30.0)
        self.pub_diagnostics.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
        )

    def _check_image_topic_type(self) -> None:
        expected = IMAGE_TYPE_NAMES[self.compressed]
        types = sorted(
            {info.topic_type for info in self.get_publishers_info_by_topic(self.image_topic)}
        )
        wrong = [t for t in types if t != expected]
        if wrong:
            error = (
                f"image_topic {self.image_topic} has publishers of {', '.join(wrong)}, expected "
                f"{expected}; "
                f"set compressed:={str(not self.compressed).lower()} or point image_topic at "
                "the right topic"
            )
            if error != self._type_error:
                self.get_logger().error(error)
            self._type_error = error
        else:
            self._type_error = ""


def draw_overlay(frame: np.ndarray, result: Any) -> np.ndarray:
    """Copy of ``frame`` with the phase, a progress bar and (if any) the anomaly drawn on it."""
    import cv2

    out = frame.copy()
    h, w = out.shape[:2]
    scale = max(h, w) / 480.0
    bar_h = max(4, int(12 * scale))
    progress = float(np.clip(getattr(result, "progress", 0.0), 0.0, 1.0))
    cv2.rectangle(out, (0, h - bar_h), (w - 1, h - 1), (40, 40, 40), -1)
    cv2.rectangle(out, (0, h - bar_h), (int(progress * (w - 1)), h - 1), (60, 200, 60), -1)
    text = f"{getattr(result, 'phase_name', '')} {100 * progress:.0f}%"
    cv2.putText(
        out,
        text,
        (4, int(20 * scale) + 4),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6 * scale,
        (255, 255, 255),
        max(1, int(2 * scale)),
        cv2.LINE_AA,
    )
    if getattr(result, "anomaly", False):
        thickness = max(2, int(6 * scale))
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), (255, 0, 0), thickness)
        cv2.putText(
            out,
            f"ANOMALY {getattr(result, 'anomaly_kind', '')}",
            (4, int(44 * scale) + 4),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6 * scale,
            (255, 60, 60),
            max(1, int(2 * scale)),
            cv2.LINE_AA,
        )
    return out


def spin_until_signal(node: Node, extra: Callable[[], bool] | None = None) -> None:
    """Spin ``node`` until SIGINT or SIGTERM (or until ``extra()`` returns True)."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok(context=node.context):
            executor.spin_once(timeout_sec=0.1)
            if extra is not None and extra():
                break
    finally:
        executor.remove_node(node)
        executor.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``progress_monitor --ros-args --params-file config/progress_monitor.yaml``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rclpy.init(
        args=["progress_monitor", *argv],
        signal_handler_options=rclpy.signals.SignalHandlerOptions.NO,
    )
    node = None
    try:
        node = ProgressMonitorNode()
    except Exception as exc:  # a missing/corrupt bundle or a bad parameter: one clear line
        print(f"error: progress_monitor: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        spin_until_signal(node)
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
