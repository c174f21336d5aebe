"""Shared helpers of the ROS tests: private domains, an in-process graph, a stand-in monitor.

Every ROS test uses its own ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "config" / "progress_monitor.yaml"
DOMAINS = itertools.count(60 + os.getpid() % 80)


def ros_env(domain: int) -> dict[str, str]:
    return {
        **os.environ,
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class StandInMonitor:
    """Phase = mean pixel value // 50; sleeps ``delay`` s per frame like a slow engine.

    Records the episode time it is given for every frame (``times``) and the settings in force
    at each frame (``settings_seen``); ``update_settings`` refuses the fields in ``refuse`` with a
    ConfigError, as the streaming monitor refuses a bad value, and then changes nothing.
    """

    detector_states = {"off_trajectory": "on (threshold 1)", "stillness": "off: no pixels"}

    def __init__(self, delay: float = 0.0, refuse: tuple[str, ...] = ()) -> None:
        self.delay, self.frames, self.resets = delay, 0, 0
        self.times: list[float] = []
        self.refuse = refuse
        self.settings: dict[str, Any] = {}
        self.settings_seen: list[dict[str, Any]] = []

    def update_settings(self, **overrides: Any) -> None:
        from tcc_model.errors import ConfigError

        refused = sorted(set(overrides) & set(self.refuse))
        if refused:
            raise ConfigError(f"MonitorConfig.{refused[0]}: refused by the stand-in")
        self.settings.update(overrides)

    def process_frame(self, frame: np.ndarray, stamp: float):
        from tcc_model.stream import FrameResult

        time.sleep(self.delay)
        value = float(frame.mean())
        self.frames += 1
        self.times.append(stamp)
        self.settings_seen.append(dict(self.settings))
        return FrameResult(
            frame_index=self.frames - 1,
            valid=True,
            progress=value / 255,
            progress_std=0.01,
            reference_id="r1",
            reference_frame=self.frames,
            reference_length=100,
            phase_id=int(value // 50),
            phase_name="p",
            phase_confidence=0.9,
            phase_progress=0.5,
            distance=0.1,
            anomaly_score=value / 200,
            anomaly=value > 200,
            anomaly_kind="off_trajectory" if value > 200 else "",
            anomaly_description="far" if value > 200 else "",
            frames_since_onset=0 if value > 200 else -1,
            detector="off_trajectory" if value > 200 else "",
        )

    def reset(self) -> None:
        self.resets += 1
        self.frames = 0


@pytest.fixture
def ros_graph(monkeypatch):
    """A fresh rclpy context on a private domain with an executor spinning in a thread."""
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("tcc_ros.msg", reason="build the messages first (make env)")
    from rclpy.executors import MultiThreadedExecutor

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=next(DOMAINS))
    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set() and ctx.ok():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)
    graph = SimpleNamespace(ctx=ctx, executor=executor, nodes=[])
    thread.start()
    yield graph
    stop.set()
    thread.join(5)
    for node in graph.nodes:
        if hasattr(node, "stop"):
            node.stop()
        node.destroy_node()
    executor.shutdown()
    rclpy.shutdown(context=ctx)


def info(**fields: Any):
    from tcc_ros.monitor_node.outputs import BundleInfo

    defaults = dict(
        bundle_id="id",
        backend="stand-in",
        phase_names=["a", "b", "c", "d", "e", "f"],
        reference_ids=["r0", "r1"],
        reference_lengths=[90, 100],
    )
    return BundleInfo(**{**defaults, **fields})


def make_node(graph, monitor, namespace=None, cli_args=None, fail=(), calls=None, **params):  # noqa: ANN001
    """The monitor node with ``monitor`` behind a factory recording its ``calls`` (bundle,
    overrides); ``fail``: bundles whose loading fails."""
    from rclpy.parameter import Parameter

    from tcc_model.errors import BundleError
    from tcc_ros.monitor_node import LoadedMonitor, ProgressMonitorNode

    calls = [] if calls is None else calls

    def factory(bundle, backend, threads, overrides):
        calls.append((bundle, overrides))
        if bundle in fail:
            raise BundleError(f"{bundle}: bundle.yaml missing; export a bundle there")
        return LoadedMonitor(monitor=monitor, info=info(bundle_path=bundle, bundle_id=bundle))

    values = {"bundle": "b0", "image_topic": "/cam", "diagnostics_period": 0.2, **params}
    kwargs: dict[str, Any] = {"context": graph.ctx}
    if namespace is not None:
        kwargs["namespace"] = namespace
    if cli_args is not None:
        kwargs["cli_args"] = cli_args
    node = ProgressMonitorNode(
        monitor_factory=factory,
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        **kwargs,
    )
    graph.nodes.append(node)
    graph.executor.add_node(node)
    return node, calls


def probe(graph, namespace: str = "/tcc", reliable_images: bool = True):
    """A node publishing images to /cam and recording the monitor's outputs under ``namespace``."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from tcc_ros.msg import Alignment, Anomaly, MonitorInfo, TaskPhase, TaskProgress

    node = Node("probe", context=graph.ctx)
    rel = ReliabilityPolicy.RELIABLE if reliable_images else ReliabilityPolicy.BEST_EFFORT
    pub = node.create_publisher(Image, "/cam", QoSProfile(depth=100, reliability=rel))
    got = SimpleNamespace(phase=[], anomaly=[], progress=[], alignment=[], diag=[], info=[])
    ns = namespace.rstrip("/")
    node.create_subscription(TaskPhase, f"{ns}/phase", got.phase.append, 100)
    node.create_subscription(Anomaly, f"{ns}/anomaly", got.anomaly.append, 100)
    node.create_subscription(TaskProgress, f"{ns}/progress", got.progress.append, 100)
    node.create_subscription(Alignment, f"{ns}/alignment", got.alignment.append, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", got.diag.append, 100)
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    node.create_subscription(MonitorInfo, f"{ns}/info", got.info.append, latched)
    graph.nodes.append(node)
    graph.executor.add_node(node)
    return node, pub, got


def linked(node, pub) -> bool:
    """Both directions matched: the node reads the probe's images and the probe its outputs
    (messages sent before a reader matches are lost, even when reliable)."""
    return (
        pub.get_subscription_count() > 0
        and node.pub_phase.get_subscription_count() > 0
        and node.pub_anomaly.get_subscription_count() > 0
    )


def handled(node) -> int:
    """Frames the node has finished with: published, rejected or failed."""
    with node.stats.lock:
        return node.stats.processed + node.stats.rejected + node.stats.failed


def publish_in_turn(node, pub, messages, timeout: float = 10.0) -> None:
    """Publish ``messages`` one at a time, each after the node has finished the previous one.

    The node keeps only the newest frame, so frames published faster than a loaded machine
    runs the worker would be dropped by design; tests that count outputs send them in turn.
    """
    for msg in messages:
        before = handled(node)
        pub.publish(msg)
        assert wait(lambda before=before: handled(node) > before, timeout), "frame not handled"


def image(value: int, sec: int, nanosec: int = 7, **overrides):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    fields = dict(
        height=8, width=8, encoding="rgb8", is_bigendian=0, step=24, data=bytes([value]) * 192
    )
    fields.update(overrides)
    return Image(header=Header(stamp=Time(sec=sec, nanosec=nanosec)), **fields)


def diag_values(got) -> dict[str, str]:
    return {kv.key: kv.value for kv in got.diag[-1].status[0].values}


def call(graph, srv_type, name: str, request, timeout: float = 20.0):
    """Call service ``name`` from a client node on ``graph``; returns the response (or None)."""
    from rclpy.node import Node

    client_node = Node("caller", context=graph.ctx)
    graph.nodes.append(client_node)
    client = client_node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), f"service {name} never appeared"
    future = client.call_async(request)
    graph.executor.add_node(client_node)
    assert wait(future.done, timeout), f"no answer from {name}"
    return future.result()
