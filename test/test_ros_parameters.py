"""The node's parameters: generated from MonitorConfig, typed descriptors, strict at start,
validated at run time (``ros2 param set``)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest
from ros_helpers import DOMAINS, PARAMS, StandInMonitor, make_node, ros_env

from tcc_model.errors import ConfigError
from tcc_model.stream import RUNTIME_SETTINGS, MonitorConfig
from tcc_ros.monitor_node.parameters import (
    NODE_PARAMETERS,
    all_parameters,
    check_value,
    monitor_parameters,
    unknown_keys,
)


def test_monitor_parameters_are_generated_from_every_monitor_config_field() -> None:
    fields = {f.name for f in dataclasses.fields(MonitorConfig)}
    specs = {s.name[len("monitor.") :]: s for s in monitor_parameters()}
    assert set(specs) == fields
    # writable exactly when the monitor can take the change while running (update_settings)
    writable = {name for name, spec in specs.items() if not spec.read_only}
    assert writable == set(RUNTIME_SETTINGS)
    assert specs["window"].kind == "integer" and specs["window"].default == 64
    assert specs["transition"].kind == "double_array"
    assert specs["phase_source"].kind == "string"
    # optional settings are "not set" (the bundle's calibration decides), not a fake value
    assert specs["temperature"].kind == "double" and specs["temperature"].default is None
    assert specs["window"].read_only and not specs["stall_min_advance"].read_only
    names = [s.name for s in all_parameters()]
    assert len(names) == len(set(names))
    assert all(s.description for s in all_parameters())


def test_values_are_checked_against_type_choices_and_range() -> None:
    specs = {s.name: s for s in all_parameters()}
    assert check_value(specs["threads"], 2) == ""
    assert "expected an integer" in check_value(specs["threads"], "many")
    assert "[1, 256]" in check_value(specs["threads"], 0)
    assert "write 3.0" in check_value(specs["no_frame_timeout_s"], 3)
    assert "one of best_effort, reliable" in check_value(specs["qos.reliability"], "sometimes")
    assert "expected a bool" in check_value(specs["compressed"], "yes")
    assert check_value(specs["monitor.transition"], [0.1, 0.8, 0.1]) == ""


def test_unknown_and_removed_keys_are_named_with_a_fix() -> None:
    problems = unknown_keys(
        ["publish_overlayy", "output_namespace", "use_sim_time"], NODE_PARAMETERS
    )
    assert len(problems) == 2
    assert "did you mean publish_overlay" in problems[1]
    assert "output_namespace was removed" in problems[0] and "namespace:=" in problems[0]


@pytest.mark.ros
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"publish_overlayy": True}, "unknown parameter publish_overlayy"),
        ({"monitor.window": "big"}, "monitor.window: got 'big' (string), expected an integer"),
        ({"monitor.stall_seconds": 3}, "monitor.stall_seconds: got 3 (integer), expected a double"),
        ({"qos.depth": 0}, "qos.depth: got 0, expected a value in [1, 1000]"),
        ({"monitor.wndow": 32}, "did you mean monitor.window"),
        ({"monitor.off_trajectory_m": 9}, "off_trajectory_m <= off_trajectory_n"),
        ({"output_namespace": "/x"}, "output_namespace was removed"),
    ],
)
def test_bad_parameters_stop_the_node_before_the_bundle_is_loaded(
    ros_graph, params, expected
) -> None:
    calls: list = []
    with pytest.raises(ConfigError, match="parameter|monitor parameters") as info:
        make_node(ros_graph, StandInMonitor(), calls=calls, **params)
    assert expected in str(info.value)
    assert calls == []


@pytest.mark.ros
def test_runtime_safe_parameters_change_others_are_read_only(ros_graph) -> None:
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    monitor = StandInMonitor(refuse=("skip_threshold",))
    node, calls = make_node(ros_graph, monitor, **{"monitor.window": 32})
    described = node.describe_parameters(["monitor.stall_seconds", "monitor.window", "threads"])
    assert not described[0].read_only and described[1].read_only and described[2].read_only
    assert described[2].integer_range[0].from_value == 1
    assert "calibration" in described[0].description

    def value_of(name: str):
        try:
            return node.get_parameter(name).value
        except ParameterUninitializedException:  # "not set": the calibration decides
            return "not set"

    def rejected(name: str, value, reason: str) -> None:
        before = value_of(name)
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, result.reason
        assert value_of(name) == before  # the parameter keeps its value ...
        assert monitor.settings == {}  # ... and the monitor its settings

    rejected("threads", 4, "read-only")
    rejected("monitor.off_trajectory_m", 50, "off_trajectory_m")  # m > n: does not fit
    rejected("monitor.stall_seconds", "long", "Wrong parameter type")  # rclpy's static typing
    rejected("monitor.skip_threshold", 0.5, "refused by the stand-in")  # the monitor says no

    result = node.set_parameters([Parameter("monitor.stall_seconds", value=2.5)])[0]
    assert result.successful, result.reason
    assert monitor.settings == {"stall_seconds": 2.5}  # in effect when the call returns
    result = node.set_parameters([Parameter("no_frame_timeout_s", value=9.0)])[0]
    assert result.successful and node.no_frame_timeout_s == 9.0
    # applied in place: no reload, no new episode; a reload keeps the changed settings
    assert len(calls) == 1 and monitor.resets == 0
    node._reload("b1")
    assert calls[-1] == ("b1", {"window": 32, "stall_seconds": 2.5})


@pytest.mark.ros
def test_ros2_param_set_applies_from_the_next_frame_mid_episode(ros_graph) -> None:
    """A parameter change through the parameter service (what ``ros2 param set`` calls)
    reaches the monitor between two frames of the same episode; a refused one never does."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from ros_helpers import call, image, linked, probe, wait

    monitor = StandInMonitor(refuse=("end_progress",))
    node, _ = make_node(ros_graph, monitor)
    _, pub, got = probe(ros_graph)
    assert wait(lambda: linked(node, pub))

    def send(count: int) -> None:
        for i in range(count):
            pub.publish(image(100, sec=len(monitor.times) + 1, nanosec=i))
            target = len(monitor.settings_seen) + 1
            assert wait(lambda n=target: len(monitor.settings_seen) >= n), "frame not processed"

    def param_set(name: str, value: float):
        value_msg = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value_msg)])
        return call(ros_graph, SetParameters, "/tcc/progress_monitor/set_parameters", request)

    send(3)
    response = param_set("monitor.backwards_threshold", 0.05)
    assert response.results[0].successful, response.results[0].reason
    send(2)
    assert monitor.settings_seen == [{}] * 3 + [{"backwards_threshold": 0.05}] * 2
    response = param_set("monitor.end_progress", 0.9)
    assert not response.results[0].successful
    assert "end_progress" in response.results[0].reason
    send(1)
    assert monitor.settings_seen[-1] == {"backwards_threshold": 0.05}
    assert node.get_parameter("monitor.end_progress").value != 0.9
    assert monitor.resets == 0  # the same episode throughout


@pytest.mark.ros
def test_settings_the_busy_worker_never_started_are_withdrawn(ros_graph) -> None:
    """A change the worker cannot take in time is answered "nothing changed" and never
    applied later (no change behind the caller's back)."""
    from ros_helpers import image, linked, probe, wait

    from tcc_ros.monitor_node.node import _Request

    monitor = StandInMonitor(delay=1.5)
    node, _ = make_node(ros_graph, monitor)
    _, pub, _ = probe(ros_graph)
    assert wait(lambda: linked(node, pub))
    pub.publish(image(10, 1))
    # the worker has taken the frame and is inside its 1.5 s
    assert wait(lambda: node.stats.received == 1 and node._mailbox is None)
    done = node._submit(_Request("settings", ({"end_progress": 0.9}, {})), timeout=0.2)
    assert not done.ok and "nothing changed" in done.message
    time.sleep(2.0)
    assert monitor.settings == {} and node._overrides == {}


@pytest.mark.ros
def test_bad_parameter_exits_2_with_one_line_before_touching_the_camera(tmp_path) -> None:
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
            f"bundle:={tmp_path}",
            "-p",
            "monitor.window:=big",
        ],
        env=ros_env(next(DOMAINS)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: parameter monitor.window"), lines
    assert "'big'" in lines[0] and "integer" in lines[0]


def test_help_lists_every_parameter_fast() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tcc_ros.monitor_node", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for spec in all_parameters():
        assert spec.name in proc.stdout
