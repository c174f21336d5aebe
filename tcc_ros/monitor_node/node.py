"""The progress monitor node: camera frames in; progress, phase, alignment, anomaly out.

A thin adapter around :class:`tcc_model.stream.ProgressMonitor`. The subscription callback only
drops the message into a one-slot mailbox (the newest frame wins, older ones are counted as
dropped); a worker thread converts, runs the engine and publishes, so a camera faster than the
engine never builds a queue. Every output carries the stamp of the image it was computed from.

Names are relative to the node's namespace (``/tcc`` unless started in another one): topics
``progress``, ``phase``, ``alignment``, ``anomaly``, ``overlay`` (optional) and ``info``
(latched ``MonitorInfo``); services ``reset`` (``ResetEpisode``) and ``reload``
(``ReloadBundle``). ``/diagnostics`` carries rates, latency, dropped / rejected / failed frames
and stamp jumps. Parameters: :mod:`tcc_ros.monitor_node.parameters`.

The frame pipeline is :mod:`tcc_ros.monitor_node.frames`, the publishers, ``info`` and
``/diagnostics`` :mod:`tcc_ros.monitor_node.publishing`; this module builds the node and runs
its worker thread and control requests (reset, reload, parameter changes).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from tcc_model.errors import BundleError, ConfigError, safe_text
from tcc_ros.monitor_node import diagnostics, parameters
from tcc_ros.monitor_node.declare import declare_all
from tcc_ros.monitor_node.frames import IMAGE_TYPE_NAMES, FramePipeline
from tcc_ros.monitor_node.loading import (
    FrameMonitor,
    LoadedMonitor,
    MonitorFactory,
    load_monitor,
)
from tcc_ros.monitor_node.publishing import Publishing
from tcc_ros.monitor_node.stamps import EpisodeClock
from tcc_ros.srv import ReloadBundle, ResetEpisode

__all__ = ["FrameMonitor", "LoadedMonitor", "ProgressMonitorNode", "load_monitor"]

#: Namespace of the node when none is given (``--ros-args -r __ns:=/x`` overrides it).
DEFAULT_NAMESPACE = "/tcc"
NODE_NAME = "progress_monitor"
#: Longest wait of a service call for the worker thread (a reload loads ONNX graphs).
SERVICE_TIMEOUT_S = 120.0


@dataclass
class _Request:
    """A control request for the worker thread (reset, reload, settings); ``done`` when handled."""

    kind: str
    argument: Any = None
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    message: str = ""


class ProgressMonitorNode(FramePipeline, Publishing):
    """Subscribes to a camera, streams frames through the monitor, publishes the estimates."""

    def __init__(self, monitor_factory: MonitorFactory = load_monitor, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("namespace", DEFAULT_NAMESPACE)
        super().__init__(NODE_NAME, **node_kwargs)
        values, given = declare_all(self)  # raises ConfigError before anything else happens
        self.bundle: str = values["bundle"]
        self.image_topic: str = values["image_topic"]
        self.compressed: bool = values["compressed"]
        self.backend_request: str = values["backend"]
        self.threads: int = values["threads"]
        self.no_frame_timeout_s: float = values["no_frame_timeout_s"]
        # only the monitor settings given: the others come from the bundle's calibration
        self._overrides = parameters.monitor_overrides({k: values[k] for k in given})
        self._factory = monitor_factory
        self.loaded = monitor_factory(
            self.bundle, self.backend_request, self.threads, dict(self._overrides)
        )
        self.stats = diagnostics.FrameStats()
        self._rates = diagnostics.Rates()
        self.clock_keeper = EpisodeClock(max_gap_s=values["max_stamp_gap_s"])
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._mailbox: tuple[Any, float] | None = None
        self._requests: deque[_Request] = deque()
        self._stopping = False
        self._started = time.monotonic()
        self._type_error = ""
        self._create_interfaces(values)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._work, name="tcc-monitor-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"monitoring {self.image_topic} ({IMAGE_TYPE_NAMES[self.compressed]}, "
            f"{values['qos.reliability']}) with bundle {safe_text(self.bundle)} on backend "
            f"{self.loaded.info.backend}; publishing under {self.get_namespace()}"
        )

    def _create_interfaces(self, values: dict[str, Any]) -> None:
        self._create_publishers(values)
        self._publish_info()
        in_qos = QoSProfile(
            depth=values["qos.depth"],
            history=HistoryPolicy.KEEP_LAST,
            reliability=(
                ReliabilityPolicy.RELIABLE
                if values["qos.reliability"] == "reliable"
                else ReliabilityPolicy.BEST_EFFORT
            ),
        )
        image_type = CompressedImage if self.compressed else Image
        self.create_subscription(image_type, self.image_topic, self._on_image, in_qos)
        self.create_service(ResetEpisode, "reset", self._on_reset)
        self.create_service(ReloadBundle, "reload", self._on_reload)
        # A steady timer: diagnostics keep coming under use_sim_time before /clock starts.
        self.create_timer(
            values["diagnostics_period"],
            self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    # ---------------------------------------------------------------- requests (executor thread)
    def _submit(self, request: _Request, timeout: float = SERVICE_TIMEOUT_S) -> _Request:
        """Hand ``request`` to the worker and wait for its answer.

        A request the worker has not started within ``timeout`` is withdrawn (it never runs);
        one it has started is waited for, so the answer always says what happened.
        """
        with self._lock:
            if self._stopping:
                request.message = "the node is shutting down"
                return request
            self._requests.append(request)
            self._wake.notify()
        if not request.done.wait(timeout):
            with self._lock:
                withdrawn = request in self._requests
                if withdrawn:
                    self._requests.remove(request)
            if withdrawn:
                request.ok = False
                request.message = f"the worker was busy for {timeout:.0f} s; nothing changed"
            else:
                request.done.wait()
        return request

    def _on_reset(self, _request: Any, response: Any) -> Any:
        done = self._submit(_Request("reset"))
        response.success, response.message = done.ok, done.message
        return response

    def _on_reload(self, request: Any, response: Any) -> Any:
        path = request.bundle_path.strip() or self.bundle
        done = self._submit(_Request("reload", path))
        response.success, response.message = done.ok, done.message
        response.bundle_id = self.loaded.info.bundle_id
        return response

    def _on_set_parameters(self, changed: list[Any]) -> SetParametersResult:
        """Validate a ``ros2 param set`` and apply it from the next frame.

        Monitor settings go to the worker thread, which hands them to the monitor
        (``update_settings``) between two frames; the call returns once they are in effect. A
        change that is unknown, read-only, of the wrong type, out of range or refused by the
        monitor returns the reason and changes nothing.
        """
        values = {param.name: param.value for param in changed}
        problem, overrides, node_changes = parameters.check_changes(values, self._overrides)
        settings = parameters.monitor_overrides(
            {k: v for k, v in values.items() if k.startswith("monitor.")}
        )
        if not problem and settings:
            done = self._submit(_Request("settings", (settings, overrides)))
            problem = "" if done.ok else done.message
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        if "no_frame_timeout_s" in node_changes:
            self.no_frame_timeout_s = float(node_changes["no_frame_timeout_s"])
        if "max_stamp_gap_s" in node_changes:
            self.clock_keeper.max_gap_s = float(node_changes["max_stamp_gap_s"])
        return SetParametersResult(successful=True, reason="")

    # ---------------------------------------------------------------- worker thread
    def stop(self) -> None:
        """Stop the worker thread (idempotent); pending service calls are answered."""
        with self._lock:
            self._stopping = True
            pending = list(self._requests)
            self._requests.clear()
            self._wake.notify()
        for request in pending:
            request.message = "the node is shutting down"
            request.done.set()
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
                while not self._stopping and self._mailbox is None and not self._requests:
                    self._wake.wait()
                if self._stopping:
                    return
                request = self._requests.popleft() if self._requests else None
                item, self._mailbox = (None, self._mailbox) if request else (self._mailbox, None)
            if request is not None:
                self._handle(request)
            elif item is not None:
                try:
                    self._process(*item)
                except Exception as exc:  # one failed frame must not end the worker
                    self.stats.fail(repr(exc))
                    self.get_logger().error(
                        f"monitor failed on a frame: {safe_text(repr(exc))}",
                        throttle_duration_sec=5.0,
                    )

    def _handle(self, request: _Request) -> None:
        try:
            if request.kind == "reset":
                self._reset()
                request.ok, request.message = True, "episode reset"
            elif request.kind == "reload":
                request.ok, request.message = self._reload(request.argument)
            elif request.kind == "settings":
                request.ok, request.message = self._update_settings(*request.argument)
        except Exception as exc:  # a failing request is answered, the worker goes on
            self.stats.fail(repr(exc))
            request.ok, request.message = False, f"{request.kind} failed: {safe_text(exc)}"
            self.get_logger().error(request.message)
        finally:
            request.done.set()

    def _update_settings(
        self, settings: dict[str, Any], overrides: dict[str, Any]
    ) -> tuple[bool, str]:
        """Give the monitor new runtime settings (worker thread, between two frames)."""
        shown = ", ".join(f"{k}={safe_text(repr(v), 80)}" for k, v in settings.items())
        try:
            self.loaded.monitor.update_settings(**settings)
        except (ConfigError, ValueError, TypeError) as exc:  # the monitor refuses: nothing changed
            return False, f"monitor refused {shown}: {safe_text(exc, 400)}"
        self._overrides = overrides
        self.get_logger().info(f"monitor settings in effect from the next frame: {shown}")
        return True, f"in effect from the next frame: {shown}"

    def _reset(self) -> None:
        self.clock_keeper.reset()
        self.loaded.monitor.reset()
        self.get_logger().info("episode reset")

    def _reload(self, bundle: str) -> tuple[bool, str]:
        shown = safe_text(bundle)
        overrides = dict(self._overrides)
        try:
            loaded = self._factory(bundle, self.backend_request, self.threads, overrides)
        except (BundleError, ConfigError, OSError, ValueError) as exc:
            message = f"reload of bundle {shown} failed, keeping {safe_text(self.bundle)}: " + (
                safe_text(exc, 400)
            )
            with self.stats.lock:
                self.stats.reload_failed_at = time.monotonic()
                self.stats.last_reload = message
            self.get_logger().error(message)
            return False, message
        self.loaded, self.bundle = loaded, bundle
        self.clock_keeper.reset()
        message = f"reloaded bundle {shown} (id {loaded.info.bundle_id}, {loaded.info.backend})"
        with self.stats.lock:
            self.stats.reload_failed_at = None
            self.stats.last_reload = message
        self._publish_info()
        self.get_logger().info(message)
        return True, message
