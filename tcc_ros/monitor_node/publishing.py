"""The node's publishers, its latched ``info`` and its ``/diagnostics`` status.

The per-frame estimates are published by :mod:`tcc_ros.monitor_node.frames`; this part creates
the publishers, publishes :class:`MonitorInfo` (at start and after a reload) and, on a steady
timer, the health summary of :mod:`tcc_ros.monitor_node.diagnostics`. A part of
:class:`~tcc_ros.monitor_node.node.ProgressMonitorNode`, which creates the attributes declared here.
"""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from tcc_model.errors import safe_text
from tcc_ros.monitor_node import diagnostics
from tcc_ros.monitor_node.frames import IMAGE_TYPE_NAMES
from tcc_ros.monitor_node.loading import LoadedMonitor
from tcc_ros.msg import Alignment, Anomaly, MonitorInfo, TaskPhase, TaskProgress


class Publishing(Node):
    """Publishers, ``info`` and ``/diagnostics`` of the node."""

    image_topic: str
    compressed: bool
    no_frame_timeout_s: float
    loaded: LoadedMonitor
    stats: diagnostics.FrameStats
    _rates: diagnostics.Rates
    _started: float
    _type_error: str

    def _create_publishers(self, values: dict[str, Any]) -> None:
        """The estimate topics, ``overlay`` when asked for, latched ``info``, ``/diagnostics``."""
        out_qos = QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST
        )
        self.pub_progress = self.create_publisher(TaskProgress, "progress", out_qos)
        self.pub_phase = self.create_publisher(TaskPhase, "phase", out_qos)
        self.pub_alignment = self.create_publisher(Alignment, "alignment", out_qos)
        self.pub_anomaly = self.create_publisher(Anomaly, "anomaly", out_qos)
        self.pub_overlay = (
            self.create_publisher(Image, "overlay", 2) if values["publish_overlay"] else None
        )
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.pub_info = self.create_publisher(MonitorInfo, "info", latched)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _publish_info(self) -> None:
        self.pub_info.publish(
            self.loaded.info.message(Header(stamp=self.get_clock().now().to_msg()))
        )

    # ---------------------------------------------------------------- diagnostics (executor)
    def diagnostics_status(self) -> DiagnosticStatus:
        """Current health summary (what /diagnostics publishes)."""
        self._check_image_topic_type()
        info = self.loaded.info
        level, message, values = diagnostics.status(
            self.stats,
            self._rates,
            image_topic=self.image_topic,
            started_at=self._started,
            no_frame_timeout_s=self.no_frame_timeout_s,
            type_error=self._type_error,
            info={"backend": info.backend, "bundle_id": info.bundle_id, **self._detector_states()},
        )
        return DiagnosticStatus(
            level=bytes([level]),
            name=f"{self.get_name()}: progress monitor",
            message=message,
            hardware_id=info.bundle_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )

    def _detector_states(self) -> dict[str, str]:
        """``detector.<name>``: ``on (threshold ...)``, ``off: why`` or ``inactive: why``."""
        states = getattr(self.loaded.monitor, "detector_states", None) or {}
        return {f"detector.{safe_text(k)}": safe_text(v, 200) for k, v in dict(states).items()}

    def _publish_diagnostics(self) -> None:
        status = self.diagnostics_status()
        if status.level != DiagnosticStatus.OK:
            self.get_logger().warning(status.message, throttle_duration_sec=30.0)
        self.pub_diagnostics.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
        )

    def _check_image_topic_type(self) -> None:
        resolve = getattr(self, "resolve_topic_name", None)  # rclpy >= Iron
        topic = resolve(self.image_topic) if resolve else self.image_topic
        types = [info.topic_type for info in self.get_publishers_info_by_topic(topic)]
        error = diagnostics.image_type_error(topic, types, IMAGE_TYPE_NAMES, self.compressed)
        if error and error != self._type_error:
            self.get_logger().error(error)
        self._type_error = error
