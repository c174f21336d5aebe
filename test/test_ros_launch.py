"""The launch file's wiring without ``launch`` (not on PyPI): one plan for both ways to start.

``launch/progress_monitor.launch.py`` builds its nodes from :func:`tcc_ros.launch_wiring.plan`;
``python -m tcc_ros.monitor`` turns the same plan into command lines. These tests check the plan
(params-file keys vs launch arguments, namespace, the demo camera following the monitor's image
settings), the launcher's command lines, and that the launch file uses the plan and fails the
launch when the monitor fails.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest
import yaml
from ros_helpers import PARAMS, REPO

from tcc_model.errors import ConfigError
from tcc_ros.launch_wiring import (
    LAUNCH_ARGUMENTS,
    command_line,
    exit_problem,
    flatten,
    plan,
    read_node_parameters,
)
from tcc_ros.monitor import build_commands, parse_args

LAUNCH = REPO / "launch" / "progress_monitor.launch.py"


def _params_file(tmp_path: Path, **keys) -> Path:
    data = yaml.safe_load(PARAMS.read_text())
    data["/**/progress_monitor"]["ros__parameters"].update(keys)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _specs(**given):
    return {spec.role: spec for spec in plan(given)}


def test_params_file_keys_are_kept_unless_a_launch_argument_is_given(tmp_path: Path) -> None:
    params = _params_file(
        tmp_path, image_topic="/robot/cam", compressed=True, bundle="/from/file", qos={"depth": 3}
    )
    monitor = _specs(params_file=str(params))["monitor"]
    assert monitor.parameters == [str(params), {}]  # nothing overrides the file
    # empty launch arguments are "not given"
    monitor = _specs(params_file=str(params), image_topic="", compressed="", bundle="")["monitor"]
    assert monitor.parameters[1] == {}
    monitor = _specs(params_file=str(params), image_topic="/other", compressed="false")["monitor"]
    assert monitor.parameters[1] == {"image_topic": "/other", "compressed": False}
    assert _specs(params_file=str(params), bundle="/b")["monitor"].parameters[1] == {"bundle": "/b"}


def test_demo_camera_follows_the_monitors_image_settings(tmp_path: Path) -> None:
    params = _params_file(
        tmp_path, image_topic="/robot/cam", compressed=True, qos={"reliability": "reliable"}
    )
    camera = _specs(params_file=str(params), use_demo_camera="true")["camera"].arguments
    assert camera[camera.index("--image-topic") + 1] == "/robot/cam"
    assert camera[camera.index("--compressed") + 1] == "true"
    assert "--reliable" in camera  # a best-effort camera would never reach a reliable reader
    camera = _specs(
        params_file=str(params), use_demo_camera="true", image_topic="/x", compressed="false"
    )["camera"].arguments
    assert camera[camera.index("--image-topic") + 1] == "/x"
    assert camera[camera.index("--compressed") + 1] == "false"
    camera = _specs(use_demo_camera="true")["camera"].arguments  # the shipped params file
    assert "--reliable" not in camera
    # the camera waits for the console's ground-truth subscription: every frame gets scored
    assert "--wait-ground-truth" in camera
    camera = _specs(use_demo_camera="true", use_console="false")["camera"].arguments
    assert "--wait-ground-truth" not in camera


def test_namespace_moves_every_node_and_relative_names_follow() -> None:
    specs = _specs(namespace="robot1", use_demo_camera="true")
    assert {s.namespace for s in specs.values()} == {"/robot1"}
    camera = specs["camera"].arguments
    assert camera[camera.index("--ground-truth-topic") + 1] == "ground_truth"  # relative
    assert camera[camera.index("--reset-service") + 1] == "reset"
    assert specs["console"].arguments[specs["console"].arguments.index("--namespace") + 1] == (
        "/robot1"
    )
    assert _specs()["monitor"].namespace == "/tcc"  # the documented default outputs: /tcc/...


def test_launch_arguments_all_have_descriptions_and_bad_booleans_fail() -> None:
    assert all(len(a.description) > 15 for a in LAUNCH_ARGUMENTS)
    names = [a.name for a in LAUNCH_ARGUMENTS]
    assert len(names) == len(set(names))
    with pytest.raises(ConfigError, match="compressed"):
        plan({"compressed": "maybe"})
    with pytest.raises(ConfigError, match="no such file"):
        plan({"params_file": "/nonexistent.yaml"})


def test_monitor_failure_fails_the_launch_and_a_clean_exit_does_not() -> None:
    assert exit_problem("monitor", 2) and "status 2" in exit_problem("monitor", 2)
    assert exit_problem("monitor", -11)
    assert exit_problem("monitor", 0) is None
    assert exit_problem("camera", 1) is None  # the camera ending does not fail the launch


def test_launch_file_builds_its_nodes_from_the_plan_and_handles_the_monitor_exit() -> None:
    tree = ast.parse(LAUNCH.read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "tcc_ros.launch_wiring"
        for alias in node.names
    }
    assert {"LAUNCH_ARGUMENTS", "plan", "exit_problem"} <= imported
    calls = {getattr(c.func, "id", None) for c in ast.walk(tree) if isinstance(c, ast.Call)}
    assert {"DeclareLaunchArgument", "OpaqueFunction", "OnProcessExit", "Node"} <= calls
    # the handler raises on a failed monitor: `ros2 launch` then shuts down with status 1
    assert any(isinstance(n, ast.Raise) for n in ast.walk(tree))


def test_launch_executables_are_installed_scripts() -> None:
    for spec in plan({"use_demo_camera": "true"}):
        script = REPO / "scripts" / spec.executable
        assert script.is_file() and os.access(script, os.X_OK), f"scripts/{spec.executable}"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env python3")
        assert f"from {spec.module} import main" in text
        assert "entry_point(main)" in text  # one error line, exit 2, like python -m


def test_python_launcher_starts_exactly_the_planned_nodes(tmp_path: Path) -> None:
    args = parse_args(
        ["--params", str(PARAMS), "--bundle", "B", "--with-demo-camera", "--namespace", "mon"]
    )
    commands = build_commands(args)
    assert set(commands) == {"monitor", "console", "camera"}
    given = {"params_file": str(PARAMS), "bundle": "B", "namespace": "mon"}
    for spec in plan({**given, "use_demo_camera": "true"}):
        assert commands[spec.role] == command_line(spec, sys.executable)
    monitor = commands["monitor"]
    assert monitor[monitor.index("--params-file") + 1] == str(PARAMS)
    assert "bundle:=B" in monitor and "__ns:=/mon" in monitor
    assert not any(a.startswith("image_topic:=") for a in monitor)  # not given: from the file


def test_python_launcher_defaults_to_the_shipped_params_file() -> None:
    args = parse_args(["--bundle", "B"])
    monitor = build_commands(args)["monitor"]
    assert Path(monitor[monitor.index("--params-file") + 1]) == PARAMS


def test_params_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_node_parameters(tmp_path / "missing.yaml")
    bad = tmp_path / "other.yaml"
    bad.write_text("some_node:\n  ros__parameters: {a: 1}\n")
    with pytest.raises(ConfigError, match="progress_monitor"):
        read_node_parameters(bad)


def test_shipped_params_file_holds_only_node_parameters() -> None:
    from tcc_ros.monitor_node.parameters import all_parameters, unknown_keys

    keys = flatten(read_node_parameters(PARAMS))
    assert unknown_keys(keys, all_parameters()) == []
    assert "output_namespace" not in keys


def test_camera_compressed_flag_takes_a_launch_value() -> None:
    from tcc_ros.camera_source import parse_args as camera_args

    base = ["--dataset", "sim_pouring"]
    assert camera_args(base).compressed is False
    assert camera_args([*base, "--compressed"]).compressed is True
    assert camera_args([*base, "--compressed", "false"]).compressed is False
    assert camera_args([*base, "--compressed", "True"]).compressed is True
    with pytest.raises(SystemExit):
        camera_args([*base, "--compressed", "maybe"])


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"monitor": {"window": "big"}}, "monitor.window: got 'big' (string), expected an integer"),
        ({"compressed": "yes"}, "compressed: got 'yes' (string), expected a bool"),
        ({"diagnostics_period": 2}, "diagnostics_period: got 2 (integer), expected a double"),
        ({"qos": {"depth": 0}}, "qos.depth: got 0, expected a value in [1, 1000]"),
        ({"publish_overlayy": True}, "unknown parameter publish_overlayy"),
        ({"output_namespace": "/tcc"}, "output_namespace was removed"),
    ],
)
def test_params_file_values_are_checked_naming_file_key_value_and_type(
    tmp_path: Path, keys, expected
) -> None:
    params = _params_file(tmp_path, **keys)
    with pytest.raises(ConfigError) as info:
        read_node_parameters(params)
    assert str(info.value).startswith(f"params file {params}: ")
    assert expected in str(info.value)
    with pytest.raises(ConfigError, match="params file"):  # the launch file's path too
        plan({"params_file": str(params)})


def test_unreadable_params_file_is_a_config_error(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="binary.yaml: not valid YAML"):
        read_node_parameters(binary)
    with pytest.raises(ConfigError, match="no such file"):
        read_node_parameters(tmp_path)  # a folder


def test_python_launcher_refuses_a_bad_params_file_before_starting_a_node(
    tmp_path: Path, monkeypatch
) -> None:
    import subprocess

    from tcc_ros import monitor

    params = _params_file(tmp_path, monitor={"stall_seconds": "long"})
    started: list = []
    monkeypatch.setattr(monitor.subprocess, "Popen", lambda *a, **k: started.append(a))
    with pytest.raises(ConfigError, match="monitor.stall_seconds: got 'long'"):
        monitor.run(parse_args(["--params", str(params), "--bundle", "B"]))
    assert started == []
    monkeypatch.undo()  # Popen is subprocess's own: the command line below needs it
    proc = subprocess.run(
        [sys.executable, "-m", "tcc_ros.monitor", "--params", str(params), "--bundle", "B"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: params file") and "expected a double" in lines[0]
