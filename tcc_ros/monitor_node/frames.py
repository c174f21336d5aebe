"""The node's frame pipeline: the one-slot mailbox, and a frame through the monitor to its topics.

The subscription callback (:meth:`FramePipeline._on_image`, executor thread) only drops the
message into the mailbox: the newest frame wins, an unread one is counted as dropped. The worker
thread's :meth:`FramePipeline._process` converts it, runs the monitor and publishes the estimates
(and the overlay) with the stamp of the image. A part of
:class:`~tcc_ros.monitor_node.node.ProgressMonitorNode`, which creates the attributes declared here.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from tcc_model.errors import safe_text
from tcc_ros.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_image_fields,
)
from tcc_ros.monitor_node import diagnostics
from tcc_ros.monitor_node.loading import LoadedMonitor
from tcc_ros.monitor_node.outputs import frame_messages
from tcc_ros.monitor_node.overlay import draw_overlay
from tcc_ros.monitor_node.stamps import EpisodeClock

IMAGE_TYPE_NAMES = {False: "sensor_msgs/msg/Image", True: "sensor_msgs/msg/CompressedImage"}


class FramePipeline(Node):
    """Camera frames in, estimates out: the node's image callback and per-frame work."""

    compressed: bool
    loaded: LoadedMonitor
    stats: diagnostics.FrameStats
    clock_keeper: EpisodeClock
    pub_overlay: Publisher | None
    _lock: threading.Lock
    _wake: threading.Condition
    _mailbox: tuple[Any, float] | None

    # ---------------------------------------------------------------- inputs (executor thread)
    def _on_image(self, msg: Any) -> None:
        now = time.monotonic()
        with self._lock:
            with self.stats.lock:
                self.stats.received += 1
                self.stats.last_frame_at = now
                if self._mailbox is not None:
                    self.stats.dropped += 1
            self._mailbox = (msg, now)
            self._wake.notify()

    # ---------------------------------------------------------------- worker thread
    def _process(self, msg: Any, received_at: float) -> None:
        try:
            frame = compressed_to_rgb(msg) if self.compressed else image_to_rgb(msg)
        except ImageConversionError as exc:
            self.stats.reject(exc)
            self.get_logger().warning(
                f"rejected frame: {safe_text(exc)}", throttle_duration_sec=5.0
            )
            return
        stamp = msg.header.stamp
        episode_time, jumped = self.clock_keeper.update(stamp.sec + stamp.nanosec * 1e-9)
        if jumped:
            with self.stats.lock:
                self.stats.stamp_jumps += 1
            self.get_logger().warning(
                f"image stamp {stamp.sec}.{stamp.nanosec:09d} jumped; episode time advanced by "
                f"one frame period",
                throttle_duration_sec=5.0,
            )
        try:
            result = self.loaded.monitor.process_frame(frame, episode_time)
        except ValueError as exc:  # a frame the monitor refuses (shape, dtype)
            self.stats.reject(exc)
            self.get_logger().warning(
                f"rejected frame: {safe_text(exc)}", throttle_duration_sec=5.0
            )
            return
        header = Header(stamp=stamp, frame_id=msg.header.frame_id)
        messages = frame_messages(header, result, self.loaded.info)
        for key, message in messages.items():
            getattr(self, f"pub_{key}").publish(message)
        if self.pub_overlay is not None:
            overlay = draw_overlay(frame, result)
            self.pub_overlay.publish(Image(header=header, **rgb_to_image_fields(overlay)))
        done = time.monotonic()
        age_ns = self.get_clock().now().nanoseconds - (stamp.sec * 10**9 + stamp.nanosec)
        with self.stats.lock:
            self.stats.processed += 1
            self.stats.latencies_s.append(done - received_at)
            if self.get_clock().now().nanoseconds > 0:  # a sim clock before /clock reads 0
                self.stats.stamp_ages_s.append(age_ns * 1e-9)
