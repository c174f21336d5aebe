"""ROS 2 adapters: report maths, launch wiring, the monitor node in-process, and multi-process runs.

* pure tests (no ROS): the live report, parameter file parsing, launch file consistency;
* ``ros``: the monitor node in-process with a stand-in monitor (fast, seconds);
* ``ros`` + ``slow``: real processes (monitor node, camera, console) on a bundle exported from a
  tiny light model with references from rendered simulator episodes.

Every ROS test uses its own ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tcc_ros.console import LiveReport, format_report
from tcc_ros.monitor import build_commands, parse_args, read_node_parameters

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "config" / "progress_monitor.yaml"
LAUNCH = REPO / "launch" / "progress_monitor.launch.py"
_DOMAINS = itertools.count(60 + os.getpid() % 80)


def _ros_env(domain: int) -> dict[str, str]:
    return {
        **os.environ,
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


# ------------------------------------------------------------------------------------------------
# Pure: live report
# ------------------------------------------------------------------------------------------------
def test_live_report_metrics_match_hand_computed_values() -> None:
    r = LiveReport()
    # episode a (normal, 4 frames), episode b (drop anomaly from frame 2, 4 frames)
    truth = [
        ("a", 0, 0, 0.0, False, ""),
        ("a", 1, 0, 0.25, False, ""),
        ("a", 2, 1, 0.5, False, ""),
        ("a", 3, 1, 1.0, False, ""),
        ("b", 0, 0, 0.0, False, "drop"),
        ("b", 1, 0, 0.3, False, "drop"),
        ("b", 2, 1, 0.6, True, "drop"),
        ("b", 3, 1, 1.0, True, "drop"),
    ]
    for i, (ep, f, ph, pr, an, kind) in enumerate(truth):
        r.add_truth(1000 * i, ep, f, ph, pr, an, kind)
    estimates = [0.1, 0.25, 0.5, 0.8, 0.0, 0.3, 0.6, 1.0]  # abs errors 0.1 and 0.2 -> MAE 0.0375
    phases = [0, 0, 0, 1, 0, 0, 1, 1]  # one wrong of 8
    flags = [False, False, False, False, False, False, False, True]  # b flagged at frame 3
    for i, (p, ph, fl) in enumerate(zip(estimates, phases, flags)):
        r.add_progress(1000 * i, p)
        r.add_phase(1000 * i, ph, 1000 * i + 2_000_000 * (i + 1))  # latency (i+1)*2 ms
        r.add_anomaly(1000 * i, fl)
    rep = r.report()
    assert rep["episodes"] == 2 and rep["frames_estimated"] == 8
    assert rep["progress_mae"] == pytest.approx(0.3 / 8)
    assert rep["phase_accuracy"] == pytest.approx(7 / 8)
    assert (rep["anomalies_caught"], rep["anomalies_missed"], rep["false_alarms"]) == (1, 0, 0)
    assert rep["detection_delay_frames_median"] == 1.0
    assert rep["latency_ms_p50"] == pytest.approx(9.0)
    assert "0.875" in format_report(rep)


def test_live_report_counts_misses_and_false_alarms_and_unmatched_stamps() -> None:
    r = LiveReport()
    r.add_truth(1, "normal", 0, 0, 0.0, False, "")
    r.add_truth(2, "bad", 0, 0, 0.0, True, "stall")
    r.add_anomaly(1, True)
    r.add_anomaly(2, False)
    r.add_phase(99, 0, 100)  # no ground truth for this stamp: latency only
    rep = r.report()
    assert (rep["anomalies_caught"], rep["anomalies_missed"], rep["false_alarms"]) == (0, 1, 1)
    assert rep["frames_estimated"] == 0 and math.isnan(rep["phase_accuracy"])
    assert rep["latency_samples"] == 1


def test_live_report_splits_replayed_episodes_and_ignores_alarms_before_onset() -> None:
    r = LiveReport()
    for run in range(2):  # a looping camera replays the same anomalous episode
        for f in range(4):
            stamp = 100 * run + f
            r.add_truth(stamp, "b", f, 0, f / 3, f >= 2, "drop")
            r.add_progress(stamp, f / 3)
            r.add_phase(stamp, 0, stamp)
    r.add_anomaly(1, True, 2.0)  # first run: an alarm before the onset only, not a detection
    r.add_anomaly(103, True, 3.0)  # second run: one frame after the onset
    rep = r.report()
    assert rep["episodes"] == 2 and rep["frames_estimated"] == 8
    assert (rep["anomalies_caught"], rep["anomalies_missed"], rep["false_alarms"]) == (1, 1, 0)
    assert rep["detection_delay_frames_median"] == 1.0
    assert rep["progress_mae"] == 0.0 and rep["phase_accuracy"] == 1.0


# ------------------------------------------------------------------------------------------------
# Pure: parameter file, launcher commands, launch file
# ------------------------------------------------------------------------------------------------
def test_params_file_has_the_monitor_section() -> None:
    params = read_node_parameters(PARAMS)
    assert params["image_topic"].startswith("/")
    assert params["qos"]["reliability"] in ("best_effort", "reliable")


def test_params_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        read_node_parameters(tmp_path / "missing.yaml")
    bad = tmp_path / "other.yaml"
    bad.write_text("some_node:\n  ros__parameters: {a: 1}\n")
    with pytest.raises(ValueError, match="progress_monitor"):
        read_node_parameters(bad)


def test_monitor_config_overrides_in_params_are_monitor_config_fields() -> None:
    from dataclasses import fields

    from tcc_model.stream import MonitorConfig

    names = {f.name for f in fields(MonitorConfig)}
    assert set(read_node_parameters(PARAMS).get("monitor", {})) <= names


def test_launcher_wires_topics_consistently() -> None:
    args = parse_args(
        [
            "--params",
            str(PARAMS),
            "--bundle",
            "B",
            "--with-demo-camera",
            "--demo-episodes",
            "2",
            "--report",
            "r.json",
        ]
    )
    params = {"image_topic": "/cam/img", "output_namespace": "/mon"}
    cmds = build_commands(args, params)
    assert set(cmds) == {"monitor", "console", "camera"}
    assert "bundle:=B" in cmds["monitor"] and "image_topic:=/cam/img" in cmds["monitor"]
    cam = cmds["camera"]
    assert cam[cam.index("--image-topic") + 1] == "/cam/img"
    assert cam[cam.index("--reset-topic") + 1] == "/mon/reset"
    assert cam[cam.index("--ground-truth-topic") + 1] == "/mon/ground_truth"
    assert cmds["console"][cmds["console"].index("--namespace") + 1] == "/mon"


def _launch_nodes() -> list[dict]:
    tree = ast.parse(LAUNCH.read_text())
    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node":
            kw = {k.arg: k.value for k in call.keywords}
            nodes.append(kw)
    return nodes


def test_launch_file_compiles_and_names_installed_executables() -> None:
    compile(LAUNCH.read_text(), str(LAUNCH), "exec")
    nodes = _launch_nodes()
    executables = {ast.literal_eval(n["executable"]) for n in nodes}
    assert executables == {"progress_monitor", "monitor_console", "camera_source"}
    for exe in executables:
        script = REPO / "scripts" / exe
        assert script.is_file() and os.access(script, os.X_OK), f"scripts/{exe} missing or not +x"
        assert script.read_text().startswith("#!/usr/bin/env python3")
        module = script.read_text().split("from tcc_ros.")[1].split(" import")[0]
        assert (REPO / "tcc_ros" / f"{module}.py").is_file()
    assert {ast.literal_eval(n["package"]) for n in nodes} == {"tcc_ros"}


def test_launch_parameters_exist_in_the_params_file_and_cli_flags_exist() -> None:
    params = read_node_parameters(PARAMS)
    monitor = next(
        n for n in _launch_nodes() if ast.literal_eval(n["executable"]) == "progress_monitor"
    )
    overrides = next(e for e in monitor["parameters"].elts if isinstance(e, ast.Dict))
    for key in overrides.keys:
        assert ast.literal_eval(key) in params
    from tcc_ros.camera_source import parse_args as camera_args
    from tcc_ros.console import parse_args as console_args

    for node in _launch_nodes():
        flags = [
            ast.literal_eval(e)
            for e in getattr(node.get("arguments"), "elts", [])
            if isinstance(e, ast.Constant) and str(e.value).startswith("--")
        ]
        exe = ast.literal_eval(node["executable"])
        if exe == "camera_source":
            argv = list(itertools.chain.from_iterable((f, "1") for f in flags))
            argv[argv.index("--dataset") + 1] = "sim_pouring"
            camera_args(argv)  # raises SystemExit on an unknown flag
        elif exe == "monitor_console":
            console_args(list(itertools.chain.from_iterable((f, "/x") for f in flags)))


def test_launch_gives_camera_and_monitor_the_same_image_settings() -> None:
    nodes = {ast.literal_eval(n["executable"]): n for n in _launch_nodes()}
    overrides = next(
        e for e in nodes["progress_monitor"]["parameters"].elts if isinstance(e, ast.Dict)
    )
    monitor = {
        ast.literal_eval(k): ast.unparse(v) for k, v in zip(overrides.keys, overrides.values)
    }
    camera = [ast.unparse(e) for e in nodes["camera_source"]["arguments"].elts]
    for flag, key in (("'--image-topic'", "image_topic"), ("'--compressed'", "compressed")):
        assert camera[camera.index(flag) + 1] == monitor[key], flag
    declared = {
        ast.literal_eval(c.args[0])
        for c in ast.walk(ast.parse(LAUNCH.read_text()))
        if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "DeclareLaunchArgument"
    }
    assert {"bundle", "image_topic", "output_namespace", "compressed"} <= declared


def test_camera_compressed_flag_takes_a_launch_value() -> None:
    from tcc_ros.camera_source import parse_args as camera_args

    base = ["--dataset", "sim_pouring"]
    assert camera_args(base).compressed is False
    assert camera_args([*base, "--compressed"]).compressed is True
    assert camera_args([*base, "--compressed", "false"]).compressed is False
    assert camera_args([*base, "--compressed", "True"]).compressed is True
    with pytest.raises(SystemExit):
        camera_args([*base, "--compressed", "maybe"])


# ------------------------------------------------------------------------------------------------
# In-process: the node with a stand-in monitor
# ------------------------------------------------------------------------------------------------
class _StandInMonitor:
    """Phase = mean pixel value // 50; sleeps ``delay`` s per frame like a slow engine."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.frames, self.resets = delay, 0, 0

    def process_frame(self, frame: np.ndarray, stamp: float):
        from tcc_model.stream import FrameResult

        time.sleep(self.delay)
        value = float(frame.mean())
        self.frames += 1
        return FrameResult(
            frame_index=self.frames - 1,
            valid=True,
            progress=value / 255,
            progress_std=0.01,
            reference_id="ref",
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
    rclpy.init(context=ctx, domain_id=next(_DOMAINS))
    executor = MultiThreadedExecutor(num_threads=3, context=ctx)
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


def _make_node(graph, monitor, **params):
    from rclpy.parameter import Parameter

    from tcc_ros.monitor_node import LoadedMonitor, ProgressMonitorNode

    calls = []

    def factory(bundle, backend, threads, overrides):
        calls.append((bundle, overrides))
        return LoadedMonitor(
            monitor=monitor, backend="stand-in", bundle_id="id", anomaly_threshold=1.0
        )

    overrides = [
        Parameter(k, value=v)
        for k, v in {
            "bundle": "b0",
            "image_topic": "/cam",
            "diagnostics_period": 0.2,
            **params,
        }.items()
    ]
    node = ProgressMonitorNode(
        monitor_factory=factory, context=graph.ctx, parameter_overrides=overrides
    )
    graph.nodes.append(node)
    graph.executor.add_node(node)
    return node, calls


def _probe(graph, reliable_images: bool = True):
    """A node publishing images to /cam and recording /tcc/phase, /tcc/anomaly, /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from tcc_ros.msg import Anomaly, TaskPhase

    node = Node("probe", context=graph.ctx)
    rel = ReliabilityPolicy.RELIABLE if reliable_images else ReliabilityPolicy.BEST_EFFORT
    pub = node.create_publisher(Image, "/cam", QoSProfile(depth=100, reliability=rel))
    got = SimpleNamespace(phase=[], anomaly=[], diag=[])
    node.create_subscription(TaskPhase, "/tcc/phase", got.phase.append, 100)
    node.create_subscription(Anomaly, "/tcc/anomaly", got.anomaly.append, 100)
    node.create_subscription(DiagnosticArray, "/diagnostics", got.diag.append, 100)
    graph.nodes.append(node)
    graph.executor.add_node(node)
    return node, pub, got


def _linked(node, pub) -> bool:
    """Both directions matched: the node reads the probe's images and the probe its outputs
    (messages sent before a reader matches are lost, even when reliable)."""
    return (
        pub.get_subscription_count() > 0
        and node.pub_phase.get_subscription_count() > 0
        and node.pub_anomaly.get_subscription_count() > 0
    )


def _wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _image(value: int, sec: int, **overrides):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    fields = dict(
        height=8, width=8, encoding="rgb8", is_bigendian=0, step=24, data=bytes([value]) * 192
    )
    fields.update(overrides)
    return Image(header=Header(stamp=Time(sec=sec, nanosec=7)), **fields)


def _diag_values(got) -> dict[str, str]:
    return {kv.key: kv.value for kv in got.diag[-1].status[0].values}


@pytest.mark.ros
def test_node_publishes_stamped_outputs_and_skips_malformed_frames(ros_graph) -> None:
    monitor = _StandInMonitor()
    # reliable, deep input QoS: this test checks conversion and counting, not transport losses
    node, _ = _make_node(ros_graph, monitor, **{"qos.reliability": "reliable", "qos.depth": 10})
    probe, pub, got = _probe(ros_graph, reliable_images=True)
    assert _wait(lambda: _linked(node, pub)), "node and probe never matched"
    time.sleep(0.3)
    frames = [
        _image(10, 1),
        _image(120, 2),
        _image(0, 3, step=5),
        _image(220, 4),
        _image(0, 5, encoding="weird"),
        _image(0, 6, data=b"\x00" * 10),
        _image(60, 7),
    ]
    for msg in frames:
        pub.publish(msg)
        time.sleep(0.1)
    assert _wait(lambda: len(got.phase) >= 4)
    assert [m.header.stamp.sec for m in got.phase] == [1, 2, 4, 7]
    assert all(m.header.stamp.nanosec == 7 for m in got.phase)
    assert [m.phase_id for m in got.phase] == [0, 2, 4, 1]
    assert [m.anomaly for m in got.anomaly] == [False, False, True, False]
    assert got.anomaly[2].kind == "off_trajectory" and got.anomaly[2].threshold == 1.0

    # The 3 malformed frames are rejected when the worker looks at them; one superseded in the
    # mailbox before that (a loaded machine) is counted as dropped instead, never processed.
    def settled() -> bool:
        v = _diag_values(got) if got.diag else {}
        return (v.get("frames_received"), v.get("frames_processed")) == ("7", "4") and int(
            v.get("frames_rejected", 0)
        ) + int(v.get("frames_dropped", 0)) == 3

    assert _wait(settled, 10), _diag_values(got) if got.diag else "no /diagnostics received"
    values = _diag_values(got)
    assert values["backend"] == "stand-in" and int(values["frames_rejected"]) >= 1
    assert any(word in values["last_rejection"] for word in ("weird", "truncated", "step"))


@pytest.mark.ros
def test_fast_camera_keeps_only_the_newest_frame(ros_graph) -> None:
    monitor = _StandInMonitor(delay=0.05)  # 20 fps engine
    # reliable deep input queue: every frame reaches the callback, so the mailbox does the dropping
    node, _ = _make_node(ros_graph, monitor, **{"qos.reliability": "reliable", "qos.depth": 100})
    _, pub, got = _probe(ros_graph)
    assert _wait(lambda: _linked(node, pub))
    time.sleep(0.3)
    sent = 60
    for i in range(sent):  # 200 fps camera
        pub.publish(_image(i % 200, 100 + i))
        time.sleep(0.005)
    assert _wait(lambda: got.phase and got.phase[-1].header.stamp.sec == 100 + sent - 1, 10), (
        "the newest frame must be processed"
    )
    stamps = [m.header.stamp.sec for m in got.phase]
    assert stamps == sorted(stamps)
    s = node.stats
    assert _wait(lambda: s.received == sent, 5)
    assert s.dropped > sent // 3, f"expected drops at 10x overload, got {s.dropped}"
    assert s.processed + s.dropped == s.received
    assert monitor.frames == s.processed < sent


@pytest.mark.ros
def test_reset_and_reload_topics(ros_graph) -> None:
    from rclpy.node import Node
    from std_msgs.msg import Empty, String

    monitor = _StandInMonitor()
    node, calls = _make_node(ros_graph, monitor, **{"monitor.window": 32})
    ctl = Node("ctl", context=ros_graph.ctx)
    ros_graph.nodes.append(ctl)
    reset = ctl.create_publisher(Empty, "/tcc/reset", 10)
    reload_ = ctl.create_publisher(String, "/tcc/reload", 10)
    assert _wait(lambda: reset.get_subscription_count() and reload_.get_subscription_count())
    reset.publish(Empty())
    assert _wait(lambda: monitor.resets == 1, 5)
    reload_.publish(String(data="/new/bundle"))
    assert _wait(lambda: len(calls) == 2, 5)
    assert calls[0] == ("b0", {"window": 32}) and calls[1][0] == "/new/bundle"
    assert node.bundle == "/new/bundle"


@pytest.mark.ros
def test_worker_keeps_running_after_a_failing_reset(ros_graph) -> None:
    from rclpy.node import Node
    from std_msgs.msg import Empty

    class FailingReset(_StandInMonitor):
        def reset(self) -> None:
            raise RuntimeError("reset failed")

    node, _ = _make_node(ros_graph, FailingReset())
    ctl = Node("ctl", context=ros_graph.ctx)
    ros_graph.nodes.append(ctl)
    reset = ctl.create_publisher(Empty, "/tcc/reset", 10)
    _, pub, got = _probe(ros_graph)
    assert _wait(lambda: reset.get_subscription_count() and _linked(node, pub))
    reset.publish(Empty())
    assert _wait(lambda: node.stats.failed == 1, 5)
    pub.publish(_image(10, 1))
    assert _wait(lambda: len(got.phase) == 1, 5), "the worker thread died after the failure"
    assert node._worker.is_alive()


@pytest.mark.ros
def test_wrong_image_type_is_reported_on_diagnostics(ros_graph) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.node import Node
    from std_msgs.msg import String

    node, _ = _make_node(ros_graph, _StandInMonitor())
    other_ctx = rclpy.context.Context()  # a second participant, like another process
    rclpy.init(context=other_ctx, domain_id=ros_graph.ctx.get_domain_id())
    other = Node("wrong_camera", context=other_ctx)
    try:
        other.create_publisher(String, "/cam", 10)
        assert _wait(lambda: "std_msgs/msg/String" in node.diagnostics_status().message, 15)
        status = node.diagnostics_status()
        assert status.level == DiagnosticStatus.ERROR and "compressed" in status.message
    finally:
        other.destroy_node()
        rclpy.shutdown(context=other_ctx)


@pytest.mark.ros
def test_bad_qos_parameter_is_a_value_error(ros_graph) -> None:
    with pytest.raises(ValueError, match="qos.reliability"):
        _make_node(ros_graph, _StandInMonitor(), **{"qos.reliability": "sometimes"})
    with pytest.raises(ValueError, match="diagnostics_period"):
        _make_node(ros_graph, _StandInMonitor(), diagnostics_period=0.0)


@pytest.mark.ros
def test_missing_bundle_exits_with_one_error_line(tmp_path: Path) -> None:
    pytest.importorskip("tcc_ros.msg", reason="build the messages first (make env)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tcc_ros.monitor_node",
            "--ros-args",
            "--params-file",
            str(PARAMS),
            "-p",
            f"bundle:={tmp_path / 'nope'}",
        ],
        env=_ros_env(next(_DOMAINS)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nope" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# Multi-process: real monitor node, camera and console on a tiny exported bundle
# ------------------------------------------------------------------------------------------------
_RENDER_SCRIPT = """
import sys
from pathlib import Path
from tcc_model.data.format import EpisodeLabels, write_episode, write_manifest
from tcc_model.data.sim_pouring import render_episode
root = Path(sys.argv[1])
plan = {"train": [(0, None), (1, None), (2, None)], "val": [(3, None)],
        "test": [(4, None), (5, "drop")]}
for split, items in plan.items():
    (root / split).mkdir(parents=True, exist_ok=True)
    for seed, anomaly in items:
        frames, labels = render_episode(seed, anomaly, 64, min_frames=48, max_frames=60)
        write_episode(root / split, f"ep{seed:03d}", frames, EpisodeLabels.from_dict(labels),
                      "png")
write_manifest(root, {"name": "tiny_sim", "phase_names": labels["phase_names"],
                      "splits": {k: len(v) for k, v in plan.items()}})
"""

_BUNDLE_SCRIPT = """
import sys
import torch
from tcc_model.data.format import load_split
from tcc_model.engine import load_bundle
from tcc_model.export import export_bundle
from tcc_model.models import ModelConfig, build_model
from tcc_model.stream import ReferenceSet, calibrate
data, out = sys.argv[1], sys.argv[2]
train, val = load_split(data, "train"), load_split(data, "val")
torch.manual_seed(0)
cfg = ModelConfig(image_size=64, light_width=16, embedding_size=32, context_stride=4)
export_bundle(build_model(cfg).eval(), out, model_config=cfg.to_dict(),
              phase_names=train[0].labels.phase_names, overwrite=True)
engine = load_bundle(out, backend="onnxruntime")
embed = lambda eps: [engine.embed_frames(e.load_frames()) for e in eps]
refs = ReferenceSet.from_episodes(
    embed(train), [e.labels.phase_ids for e in train], train[0].labels.phase_names,
    [e.labels.key_events for e in train], engine.bundle_id,
    reference_ids=[e.name for e in train], fps=[e.labels.fps for e in train])
calibrate(refs, embed(val))
refs.save(out)
"""


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> SimpleNamespace:
    """Simulator episodes (png dataset) and a bundle of an untrained light model with references.

    Rendering and export run in subprocesses (EGL and the ONNX exporter stay out of pytest).
    An untrained encoder is enough to exercise the plumbing; alignment quality is only checked
    against loose bounds well above chance.
    """
    pytest.importorskip("tcc_ros.msg", reason="build the messages first (make env)")
    for module in (
        "tcc_model.data.sim_pouring",
        "tcc_model.export",
        "tcc_model.engine",
        "tcc_model.stream",
        "mujoco",
    ):
        pytest.importorskip(module, reason=f"{module} is needed to build the demo bundle")
    root = tmp_path_factory.mktemp("demo")
    env = {**_ros_env(0), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    for script, args in (
        (_RENDER_SCRIPT, [root / "data"]),
        (_BUNDLE_SCRIPT, [root / "data", root / "bundle"]),
    ):
        proc = subprocess.run(
            [sys.executable, "-c", script, *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            cwd=REPO,
        )
        if proc.returncode != 0:
            pytest.fail(f"building the demo bundle failed:\n{proc.stderr[-3000:]}")
    return SimpleNamespace(data=root / "data", bundle=root / "bundle")


def _launcher(demo, domain: int, report: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "tcc_ros.monitor",
        "--params",
        str(PARAMS),
        "--bundle",
        str(demo.bundle),
        "--with-demo-camera",
        "--demo-dataset",
        f"folder:{demo.data}",
        "--demo-split",
        "test",
        "--demo-rate",
        "12",
        "--report",
        str(report),
        *extra,
    ]
    return subprocess.run(
        cmd, env=_ros_env(domain), capture_output=True, text=True, timeout=240, cwd=REPO
    )


@pytest.mark.ros
@pytest.mark.slow
def _offline_replay(demo) -> dict:
    """The live report's numbers for the same episodes replayed in-process (no ROS, no drops)."""
    import yaml

    from tcc_model.data.format import load_split
    from tcc_model.monitor_metrics import score_episode, summarize
    from tcc_model.stream import ANOMALY_SCORE_THRESHOLD
    from tcc_ros.ground_truth import ground_truth_fields
    from tcc_ros.monitor_node import load_monitor

    params = yaml.safe_load(PARAMS.read_text())["/**/progress_monitor"]["ros__parameters"]
    loaded = load_monitor(str(demo.bundle), "onnxruntime", 1, params.get("monitor", {}))
    assert loaded.anomaly_threshold == ANOMALY_SCORE_THRESHOLD  # what /tcc/anomaly publishes
    scores = []
    for episode in load_split(demo.data, "test"):
        loaded.monitor.reset()
        truth = ground_truth_fields(episode.labels, episode.name)
        period = 1.0 / 12.0  # the camera's --demo-rate
        results = [
            loaded.monitor.process_frame(f, i * period) for i, f in enumerate(episode.load_frames())
        ]
        scores.append(
            score_episode(
                episode.name,
                pred_progress=[r.progress for r in results],
                pred_phase=[r.phase_id for r in results],
                pred_alarm=[r.anomaly for r in results],
                pred_score=[r.anomaly_score for r in results],
                gt_progress=[t["progress"] for t in truth],
                gt_phase=[t["phase_id"] for t in truth],
                gt_anomaly_mask=[t["anomaly"] for t in truth],
                anomalous=episode.labels.anomaly is not None,
            )
        )
        flagged = [r.anomaly for r in results]
        assert flagged == [r.anomaly_score > ANOMALY_SCORE_THRESHOLD for r in results]
    return summarize(scores)


def test_launcher_runs_the_demo_and_reports_against_ground_truth(demo_bundle, tmp_path) -> None:
    """Live (camera -> DDS -> monitor -> DDS -> console) matches an offline replay of the frames.

    The bundle is untrained, so what is checked is the pipeline: every frame arrives, is aligned
    exactly as the streaming core aligns it offline, and is scored against the ground truth that
    travelled with it under the same stamp.
    """
    report_path = tmp_path / "report.json"
    proc = _launcher(demo_bundle, next(_DOMAINS), report_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["episodes"] == 2 and report["frames_ground_truth"] == 120
    assert report["processed_fraction"] >= 0.9, report
    offline = _offline_replay(demo_bundle)
    assert offline["episodes"] == 2
    # a frame dropped live shifts a few estimates; anything beyond that is a pipeline error
    assert abs(report["phase_accuracy"] - offline["phase_accuracy"]) <= 0.05, (report, offline)
    assert abs(report["progress_mae"] - offline["progress_mae"]) <= 0.03, (report, offline)
    assert report["anomalies_caught"] + report["anomalies_missed"] == 1
    assert report["latency_ms_p99"] < 1000.0
    assert report["diagnostics"]["frames_rejected"] == "0"
    assert "-> phase" in proc.stdout and "| progress MAE" in proc.stdout


@pytest.mark.ros
@pytest.mark.slow
def test_launcher_fails_when_the_monitor_cannot_start(tmp_path) -> None:
    pytest.importorskip("tcc_ros.msg", reason="build the messages first (make env)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tcc_ros.monitor",
            "--params",
            str(PARAMS),
            "--bundle",
            str(tmp_path / "missing"),
            "--duration",
            "60",
        ],
        env=_ros_env(next(_DOMAINS)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert "missing" in proc.stderr and "monitor node exited" in proc.stderr


class _Listener:
    """A subprocess-free subscriber to /tcc/phase and /diagnostics on a private context."""

    def __init__(self, domain: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from tcc_ros.msg import TaskPhase

        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = Node("listener", context=self.ctx)
        self.phase: list[tuple[float, object]] = []
        self.diag: list[dict[str, str]] = []
        self.node.create_subscription(
            TaskPhase, "/tcc/phase", lambda m: self.phase.append((time.time(), m)), 100
        )
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diag.extend({kv.key: kv.value for kv in s.values} for s in m.status),
            100,
        )
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def _start(module: str, args: list[str], domain: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=_ros_env(domain),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate()[0] or ""


@pytest.mark.ros
@pytest.mark.slow
def test_monitor_killed_mid_episode_recovers_after_restart(demo_bundle) -> None:
    domain = next(_DOMAINS)
    monitor_args = [
        "--ros-args",
        "--params-file",
        str(PARAMS),
        "-p",
        f"bundle:={demo_bundle.bundle}",
    ]
    listener = _Listener(domain)
    monitor = _start("tcc_ros.monitor_node", monitor_args, domain)
    camera = _start(
        "tcc_ros.camera_source",
        ["--dataset", f"folder:{demo_bundle.data}", "--split", "test", "--rate", "12", "--loop"],
        domain,
    )
    try:
        assert _wait(lambda: len(listener.phase) >= 20, 40), _stop(monitor)
        monitor.kill()  # abrupt: no clean shutdown
        monitor.wait(10)
        killed_at = time.time()
        time.sleep(1.0)
        monitor = _start("tcc_ros.monitor_node", monitor_args, domain)
        assert _wait(lambda: sum(t > killed_at for t, _ in listener.phase) >= 20, 40), _stop(
            monitor
        )
        after = [m for t, m in listener.phase if t > killed_at]
        assert all(m.phase_id >= 0 for m in after[5:]), "restarted monitor publishes phases"
        stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in after]
        assert stamps == sorted(stamps)
        assert monitor.poll() is None and camera.poll() is None
    finally:
        _stop(camera)
        out = _stop(monitor)
        listener.close()
    assert monitor.returncode == 0, out[-2000:]  # SIGTERM: clean exit


@pytest.mark.ros
@pytest.mark.slow
def test_fast_camera_keeps_memory_flat_and_latency_bounded(demo_bundle) -> None:
    psutil = pytest.importorskip("psutil")
    domain = next(_DOMAINS)
    listener = _Listener(domain)
    monitor = _start(
        "tcc_ros.monitor_node",
        ["--ros-args", "--params-file", str(PARAMS), "-p", f"bundle:={demo_bundle.bundle}"],
        domain,
    )
    camera = _start(
        "tcc_ros.camera_source",
        [
            "--dataset",
            f"folder:{demo_bundle.data}",
            "--split",
            "test",
            "--rate",
            "200",
            "--loop",
            "--episode-gap",
            "0",
        ],
        domain,
    )
    try:
        assert _wait(lambda: len(listener.phase) >= 50, 40), _stop(monitor)
        proc = psutil.Process(monitor.pid)
        rss_start = proc.memory_info().rss
        time.sleep(10.0)
        rss_end = proc.memory_info().rss
        assert _wait(lambda: listener.diag and "latency_p99_ms" in listener.diag[-1], 5)
        diag = listener.diag[-1]
    finally:
        _stop(camera)
        _stop(monitor)
        listener.close()
    received, processed = int(diag["frames_received"]), int(diag["frames_processed"])
    assert processed > 0 and received >= processed
    assert rss_end - rss_start < 30 * 2**20, f"RSS grew {(rss_end - rss_start) / 2**20:.1f} MiB"
    assert float(diag["latency_p99_ms"]) < 1000.0, diag


@pytest.mark.ros
def test_diagnostics_warn_when_no_frames_arrive(ros_graph) -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    _make_node(ros_graph, _StandInMonitor(), no_frame_timeout_s=1.0)
    _probe_node, _pub, got = _probe(ros_graph)
    assert _wait(
        lambda: any(d.status[0].message.startswith("no frames received") for d in got.diag), 10
    ), [d.status[0].message for d in got.diag]
    warned = next(d.status[0] for d in got.diag if d.status[0].message.startswith("no frames"))
    assert warned.level == DiagnosticStatus.WARN and "/cam" in warned.message
    assert all(
        d.status[0].level == DiagnosticStatus.OK
        for d in got.diag
        if d.status[0].message.startswith("waiting for frames")
    )
