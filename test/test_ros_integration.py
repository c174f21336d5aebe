"""ROS 2 adapters: report maths, the monitor node in-process, and multi-process runs.

* pure tests (no ROS): the live report;
* ``ros``: the monitor node in-process with a stand-in monitor (fast, seconds): outputs, namespace
  and remapping, the reset / reload services, diagnostics;
* ``ros`` + ``slow``: real processes (monitor node, camera, console) on a bundle exported from a
  tiny light model with references from rendered simulator episodes, and Ctrl-C of the process
  group. Launch wiring, parameters and time: ``test_ros_launch.py``, ``test_ros_parameters.py``,
  ``test_ros_time.py``.

Every ROS test uses its own ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
"""

from __future__ import annotations

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
from ros_helpers import (
    DOMAINS,
    PARAMS,
    REPO,
    StandInMonitor,
    call,
    diag_values,
    image,
    linked,
    make_node,
    probe,
    publish_in_turn,
    ros_env,
    wait,
)

from tcc_ros.console import LiveReport, format_report


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
    assert "87.5%" in format_report(rep)


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


def test_live_report_rates_are_those_while_frames_flowed() -> None:
    r = LiveReport()
    for rate in ("12.00", "11.00", "0.00", "0.00"):  # the stream ended: the last ones are 0
        r.add_diagnostics({"input_rate_hz": rate, "processed_rate_hz": rate, "frames_dropped": "1"})
    rep = r.report()
    assert rep["input_rate_hz"] == pytest.approx(11.5)
    assert rep["processed_rate_hz"] == pytest.approx(11.5)
    assert rep["diagnostics"]["frames_dropped"] == "1"
    assert "no monitor outputs received" in format_report(rep)  # nothing estimated: no table


def test_camera_with_a_missing_video_fails_before_waiting_for_subscribers(tmp_path) -> None:
    pytest.importorskip("tcc_ros.msg", reason="build the messages first (make env)")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tcc_ros.camera_source", "--video", str(tmp_path / "no.mp4")]
        + ["--wait-subscribers", "120"],
        env=ros_env(next(DOMAINS)),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert time.monotonic() - start < 100  # it did not wait the 120 s for a subscriber
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no.mp4" in errors[0] and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# In-process: the node with a stand-in monitor
# ------------------------------------------------------------------------------------------------
@pytest.mark.ros
def test_node_publishes_stamped_outputs_and_skips_malformed_frames(ros_graph) -> None:
    from tcc_ros.msg import Anomaly, TaskPhase

    monitor = StandInMonitor()
    # reliable, deep input QoS: this test checks conversion and counting, not transport losses
    node, _ = make_node(ros_graph, monitor, **{"qos.reliability": "reliable", "qos.depth": 10})
    _probe_node, pub, got = probe(ros_graph)
    assert wait(lambda: linked(node, pub)), "node and probe never matched"
    time.sleep(0.3)
    frames = [
        image(10, 1),
        image(120, 2),
        image(0, 3, step=5),
        image(220, 4),
        image(0, 5, encoding="weird" * 10_000),
        image(0, 6, data=b"\x00" * 10),
        image(60, 7),
    ]
    publish_in_turn(node, pub, frames)
    assert wait(lambda: len(got.phase) >= 4 and len(got.alignment) >= 4)
    assert [m.header.stamp.sec for m in got.phase] == [1, 2, 4, 7]
    assert all(m.header.stamp.nanosec == 7 for m in got.phase)
    assert [m.id for m in got.phase] == [0, 2, 4, 1]
    assert [m.kind for m in got.anomaly] == [Anomaly.NONE] * 2 + [Anomaly.OFF_TRAJECTORY, 0]
    assert got.anomaly[2].description == "far" and got.anomaly[2].frames_since_onset >= 0
    assert got.anomaly[2].detector == "off_trajectory" and got.anomaly[0].detector == ""
    assert got.anomaly[0].frames_since_onset == -1 and got.anomaly[0].description == ""
    assert [m.reference_index for m in got.alignment] == [1] * 4  # "r1" in MonitorInfo
    assert TaskPhase.UNKNOWN == -1
    # static information once, latched: a subscriber that came late still gets it
    assert wait(lambda: got.info, 5) and got.info[-1].phase_names[4] == "e"
    assert got.info[-1].reference_lengths.tolist() == [90, 100]

    # The 3 malformed frames are rejected when the worker looks at them; one superseded in the
    # mailbox before that (a loaded machine) is counted as dropped instead, never processed.
    def settled() -> bool:
        v = diag_values(got) if got.diag else {}
        return (v.get("frames_received"), v.get("frames_processed")) == ("7", "4") and int(
            v.get("frames_rejected", 0)
        ) + int(v.get("frames_dropped", 0)) == 3

    assert wait(settled, 10), diag_values(got) if got.diag else "no /diagnostics received"
    values = diag_values(got)
    assert values["backend"] == "stand-in" and int(values["frames_rejected"]) >= 1
    assert values["frames_failed"] == "0" and values["stamp_jumps"] == "0"
    assert values["detector.stillness"] == "off: no pixels"  # a detector never off silently
    # echoed input is escaped and capped: the 50 000-character encoding is not copied whole
    assert all(len(v) < 1000 for v in values.values()), max(map(len, values.values()))


@pytest.mark.ros
def test_fast_camera_keeps_only_the_newest_frame(ros_graph) -> None:
    monitor = StandInMonitor(delay=0.05)  # 20 fps engine
    # reliable deep input queue: every frame reaches the callback, so the mailbox does the dropping
    node, _ = make_node(ros_graph, monitor, **{"qos.reliability": "reliable", "qos.depth": 100})
    _, pub, got = probe(ros_graph)
    assert wait(lambda: linked(node, pub))
    time.sleep(0.3)
    sent = 60
    for i in range(sent):  # 200 fps camera
        pub.publish(image(i % 200, 100 + i))
        time.sleep(0.005)
    assert wait(lambda: got.phase and got.phase[-1].header.stamp.sec == 100 + sent - 1, 10), (
        "the newest frame must be processed"
    )
    stamps = [m.header.stamp.sec for m in got.phase]
    assert stamps == sorted(stamps)
    s = node.stats
    assert wait(lambda: s.received == sent, 5)
    assert s.dropped > sent // 3, f"expected drops at 10x overload, got {s.dropped}"
    # the newest frame's outputs go out before it is counted as processed: wait for the count
    assert wait(lambda: s.processed + s.dropped == s.received, 5), s
    assert monitor.frames == s.processed < sent


@pytest.mark.ros
def test_outputs_follow_the_namespace_and_remapping(ros_graph) -> None:
    monitor = StandInMonitor()
    node, _ = make_node(
        ros_graph,
        monitor,
        namespace="/robot1",
        cli_args=["--ros-args", "-r", "anomaly:=alarms"],
        **{"qos.reliability": "reliable", "qos.depth": 10},
    )
    assert node.pub_phase.topic_name == "/robot1/phase"
    assert node.pub_anomaly.topic_name == "/robot1/alarms"
    _, pub, got = probe(ros_graph, namespace="/robot1")
    assert wait(lambda: pub.get_subscription_count() and node.pub_phase.get_subscription_count())
    time.sleep(0.3)
    pub.publish(image(10, 1))
    assert wait(lambda: len(got.phase) == 1 and len(got.progress) == 1, 10)
    assert got.anomaly == []  # remapped away from /robot1/anomaly
    services = {
        name for name, _ in node.get_service_names_and_types_by_node(node.get_name(), "/robot1")
    }
    assert {"/robot1/reset", "/robot1/reload"} <= services


@pytest.mark.ros
def test_reset_and_reload_services_answer_with_the_outcome(ros_graph) -> None:
    from tcc_ros.srv import ReloadBundle, ResetEpisode

    monitor = StandInMonitor()
    node, calls = make_node(ros_graph, monitor, fail=("/broken",), **{"monitor.window": 32})
    _, _, got = probe(ros_graph)
    reply = call(ros_graph, ResetEpisode, "/tcc/reset", ResetEpisode.Request())
    assert reply.success and monitor.resets == 1
    reply = call(ros_graph, ReloadBundle, "/tcc/reload", ReloadBundle.Request(bundle_path="/new"))
    assert reply.success and reply.bundle_id == "/new" and node.bundle == "/new"
    assert calls[0] == ("b0", {"window": 32}) and calls[1] == ("/new", {"window": 32})
    assert wait(lambda: got.info and got.info[-1].bundle_id == "/new", 5)
    # a failed reload keeps the old bundle, says why, and shows on /diagnostics
    bad = "/broken"
    reply = call(ros_graph, ReloadBundle, "/tcc/reload", ReloadBundle.Request(bundle_path=bad))
    assert not reply.success and "bundle.yaml missing" in reply.message
    assert reply.bundle_id == "/new" and node.bundle == "/new"
    assert wait(
        lambda: got.diag and "reload of bundle /broken failed" in got.diag[-1].status[0].message, 5
    )
    reply = call(ros_graph, ReloadBundle, "/tcc/reload", ReloadBundle.Request(bundle_path=""))
    assert reply.success and calls[-1][0] == "/new"  # empty path: the current bundle again


@pytest.mark.ros
def test_reload_path_with_control_characters_is_escaped(ros_graph) -> None:
    from tcc_ros.srv import ReloadBundle

    make_node(ros_graph, StandInMonitor(), fail=("/x\n\x1b[2Jy" + "z" * 5000,))
    path = "/x\n\x1b[2Jy" + "z" * 5000
    reply = call(ros_graph, ReloadBundle, "/tcc/reload", ReloadBundle.Request(bundle_path=path))
    assert not reply.success
    assert "\n" not in reply.message and "\x1b" not in reply.message and "\\x1b" in reply.message
    assert len(reply.message) < 1500


@pytest.mark.ros
def test_worker_keeps_running_after_a_failing_reset(ros_graph) -> None:
    from tcc_ros.srv import ResetEpisode

    class FailingReset(StandInMonitor):
        def reset(self) -> None:
            raise RuntimeError("reset failed")

    node, _ = make_node(ros_graph, FailingReset())
    _, pub, got = probe(ros_graph)
    reply = call(ros_graph, ResetEpisode, "/tcc/reset", ResetEpisode.Request())
    assert not reply.success and "reset failed" in reply.message
    assert node.stats.failed == 1
    assert wait(lambda: linked(node, pub))
    pub.publish(image(10, 1))
    assert wait(lambda: len(got.phase) == 1, 5), "the worker thread died after the failure"
    assert node._worker.is_alive()


@pytest.mark.ros
def test_failed_frames_warn_only_while_recent(ros_graph, monkeypatch) -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    from tcc_ros.monitor_node import diagnostics

    node, _ = make_node(ros_graph, StandInMonitor())
    node.stats.fail("boom")
    status = node.diagnostics_status()
    assert status.level == DiagnosticStatus.WARN and "1 frames failed" in status.message
    node.stats.last_frame_at = time.monotonic()
    monkeypatch.setattr(diagnostics, "PROBLEM_WINDOW_S", 0.2)
    time.sleep(0.3)
    status = node.diagnostics_status()
    assert status.level == DiagnosticStatus.OK, status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["frames_failed"] == "1" and values["frames_failed_recent"] == "0"


@pytest.mark.ros
def test_wrong_image_type_is_reported_on_diagnostics(ros_graph) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.node import Node
    from std_msgs.msg import String

    node, _ = make_node(ros_graph, StandInMonitor())
    other_ctx = rclpy.context.Context()  # a second participant, like another process
    rclpy.init(context=other_ctx, domain_id=ros_graph.ctx.get_domain_id())
    other = Node("wrong_camera", context=other_ctx)
    try:
        other.create_publisher(String, "/cam", 10)
        assert wait(lambda: "std_msgs/msg/String" in node.diagnostics_status().message, 15)
        status = node.diagnostics_status()
        assert status.level == DiagnosticStatus.ERROR and "compressed" in status.message
    finally:
        other.destroy_node()
        rclpy.shutdown(context=other_ctx)


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
        env=ros_env(next(DOMAINS)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
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
    env = {**ros_env(0), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
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
        cmd, env=ros_env(domain), capture_output=True, text=True, timeout=240, cwd=REPO
    )


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
    # what MonitorInfo publishes as the threshold of Anomaly.score
    assert loaded.info.anomaly_score_threshold == ANOMALY_SCORE_THRESHOLD
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


@pytest.mark.ros
@pytest.mark.slow
def test_launcher_runs_the_demo_and_reports_against_ground_truth(demo_bundle, tmp_path) -> None:
    """Live (camera -> DDS -> monitor -> DDS -> console) matches an offline replay of the frames.

    The bundle is untrained, so what is checked is the pipeline: every frame arrives, is aligned
    exactly as the streaming core aligns it offline, and is scored against the ground truth that
    travelled with it under the same stamp.
    """
    report_path = tmp_path / "report.json"
    proc = _launcher(demo_bundle, next(DOMAINS), report_path)
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
        env=ros_env(next(DOMAINS)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing" in errors[0]  # the node's line, not a second one
    assert "progress MAE" not in proc.stdout and "nan" not in proc.stdout  # no empty report


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
        env=ros_env(domain),
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
    domain = next(DOMAINS)
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
        assert wait(lambda: len(listener.phase) >= 20, 40), _stop(monitor)
        monitor.kill()  # abrupt: no clean shutdown
        monitor.wait(10)
        killed_at = time.time()
        time.sleep(1.0)
        monitor = _start("tcc_ros.monitor_node", monitor_args, domain)
        assert wait(lambda: sum(t > killed_at for t, _ in listener.phase) >= 20, 40), _stop(monitor)
        after = [m for t, m in listener.phase if t > killed_at]
        assert all(m.id >= 0 for m in after[5:]), "restarted monitor publishes phases"
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
def test_param_set_changes_the_real_monitor_between_two_frames(ros_graph, demo_bundle) -> None:
    """``ros2 param set`` on the node running the streaming monitor of a bundle: the detector
    switch and a threshold are in force from the next frame of the same episode; a value the
    monitor refuses (temperature 0) is answered with its reason and changes nothing."""
    from builtin_interfaces.msg import Time
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from tcc_ros.msg import Anomaly

    from tcc_model.data.format import load_split
    from tcc_ros.image_conversion import rgb_to_image_fields
    from tcc_ros.monitor_node import load_monitor

    monitor = load_monitor(str(demo_bundle.bundle), "onnxruntime", 1, {}).monitor
    node, _ = make_node(ros_graph, monitor)
    _, pub, got = probe(ros_graph)
    assert wait(lambda: linked(node, pub))
    frames = next(iter(load_split(demo_bundle.data, "test"))).load_frames()

    def send(first: int, count: int) -> None:
        for i in range(first, first + count):
            stamp = Time(sec=100 + i // 12, nanosec=(i % 12) * 83_333_333)
            pub.publish(Image(header=Header(stamp=stamp), **rgb_to_image_fields(frames[i])))
            assert wait(lambda n=i + 1: len(got.anomaly) >= n, 60), f"frame {i} not processed"

    def set_param(name: str, value):
        return node.set_parameters([Parameter(name, value=value)])[0]

    send(0, 6)
    before = monitor.config
    result = set_param("monitor.temperature", 0.0)
    assert not result.successful and "temperature must be > 0" in result.reason, result.reason
    assert monitor.config is before
    assert set_param("monitor.detectors", ["off_trajectory"]).successful
    assert set_param("monitor.distance_threshold", 1e-6).successful
    assert monitor.config.detectors == ("off_trajectory",)
    assert monitor.config.distance_threshold == 1e-6
    assert set(monitor.detector_states) == {"off_trajectory"}
    send(6, 3)  # every distance is above 1e-6: 3 of the last 5 frames flag the 9th
    assert got.anomaly[-1].kind == Anomaly.OFF_TRAJECTORY, got.anomaly[-1]
    assert got.anomaly[-1].detector == "off_trajectory"
    # one episode throughout: frame indices go on counting (a reset would start again at 0)
    assert wait(lambda: got.progress and got.progress[-1].frame_index == 8), got.progress[-1:]
    indices = [m.frame_index for m in got.progress]
    assert indices == sorted(set(indices))


@pytest.mark.ros
@pytest.mark.slow
def test_fast_camera_keeps_memory_flat_and_latency_bounded(demo_bundle) -> None:
    psutil = pytest.importorskip("psutil")
    domain = next(DOMAINS)
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
        assert wait(lambda: len(listener.phase) >= 50, 40), _stop(monitor)
        proc = psutil.Process(monitor.pid)
        rss_start = proc.memory_info().rss
        time.sleep(10.0)
        rss_end = proc.memory_info().rss
        assert wait(lambda: listener.diag and "latency_p99_ms" in listener.diag[-1], 5)
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

    make_node(ros_graph, StandInMonitor(), no_frame_timeout_s=1.0)
    _probe_node, _pub, got = probe(ros_graph)
    assert wait(
        lambda: any(d.status[0].message.startswith("no frames received") for d in got.diag), 10
    ), [d.status[0].message for d in got.diag]
    warned = next(d.status[0] for d in got.diag if d.status[0].message.startswith("no frames"))
    assert warned.level == DiagnosticStatus.WARN and "/cam" in warned.message
    assert all(
        d.status[0].level == DiagnosticStatus.OK
        for d in got.diag
        if d.status[0].message.startswith("waiting for frames")
    )


@pytest.mark.ros
@pytest.mark.slow
def test_ctrl_c_to_the_process_group_always_ends_cleanly(demo_bundle) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, at start-up, while
    loading and while running, followed by a second one (``ros2 launch`` forwards its own):
    every run exits 0 without a traceback. Repeated to catch a race in the clean-up."""
    import os

    args = [
        sys.executable,
        "-m",
        "tcc_ros.monitor_node",
        "--ros-args",
        "--params-file",
        str(PARAMS),
        "-p",
        f"bundle:={demo_bundle.bundle}",
    ]
    delays = [1.0, 2.0, 3.0, 4.5, None] * 3  # None: once the node says it is monitoring
    for run, delay in enumerate(delays):
        proc = subprocess.Popen(
            args,
            env=ros_env(next(DOMAINS)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
        if delay is None:
            line = ""
            while "monitoring" not in line and proc.poll() is None:
                line = proc.stderr.readline()
        else:
            time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05 * (run % 4))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"run {run} (delay {delay}): no exit 60 s after SIGINT")
        assert proc.returncode == 0, (run, delay, proc.returncode, err[-2000:])
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (run, delay, err)


@pytest.mark.ros
def test_every_anomaly_kind_of_the_monitor_has_a_message_constant() -> None:
    pytest.importorskip("tcc_ros.msg", reason="build the messages first (make env)")
    from tcc_ros.msg import Anomaly

    from tcc_model.stream import ANOMALY_KINDS
    from tcc_ros.monitor_node.outputs import ANOMALY_CODES

    assert set(ANOMALY_KINDS) <= set(ANOMALY_CODES), set(ANOMALY_KINDS) - set(ANOMALY_CODES)
    assert len(set(ANOMALY_CODES.values())) == len(ANOMALY_CODES)
    assert ANOMALY_CODES[""] == Anomaly.NONE


def test_overlay_is_legible_on_small_frames_and_marks_alarms() -> None:
    pytest.importorskip("cv2")
    from tcc_ros.monitor_node.overlay import MIN_SIDE, draw_overlay

    def result(anomaly: bool) -> SimpleNamespace:
        return SimpleNamespace(
            progress=0.5, phase_name="pour", anomaly=anomaly, anomaly_kind="stalled"
        )

    small = np.full((112, 112, 3), 90, np.uint8)
    out = draw_overlay(small, result(False))
    assert min(out.shape[:2]) >= MIN_SIDE and out.shape[0] == out.shape[1]
    white = (out == 255).all(axis=2)
    rows = np.flatnonzero(white.any(axis=1))
    assert rows.size and rows.max() - rows.min() >= 10, "phase text at least 10 px tall"
    assert (out[-1, : out.shape[1] // 2 - 2] == (60, 200, 60)).all()  # progress bar: half
    big = draw_overlay(np.full((480, 640, 3), 90, np.uint8), result(True))
    assert big.shape == (480, 640, 3)
    assert (big[0, :] == (255, 0, 0)).all()  # the alarm frame
    assert (draw_overlay(small, result(False))[0, -1] != (255, 0, 0)).any()
