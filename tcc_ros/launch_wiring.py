"""What the launch file starts, as plain data: one plan for ``ros2 launch`` and ``python -m``.

``launch/progress_monitor.launch.py`` and :mod:`tcc_ros.monitor` both turn the same launch
arguments into the same :class:`NodeSpec` list with :func:`plan`, so the two ways to start read
the parameter file the same way: a launch argument overrides a key of ``params_file`` only when
it is given (not empty). The demo camera takes the image topic, encoding and QoS reliability the
monitor ends up with, so the two always match. No ROS import here: the tests check this wiring
without ``launch``, which is not on PyPI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tcc_model.errors import ConfigError, safe_text

NODE_KEY = "progress_monitor"


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument: name, default ("" = not given) and what it does."""

    name: str
    default: str
    description: str


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument(
        "params_file",
        "",
        "parameter file of the progress_monitor node (default: the installed "
        "config/progress_monitor.yaml)",
    ),
    LaunchArgument("bundle", "", "exported bundle directory; empty: the params file's bundle"),
    LaunchArgument(
        "namespace",
        "tcc",
        "namespace of the monitor, console and demo camera: outputs come out as "
        "/<namespace>/progress, /<namespace>/phase, ...",
    ),
    LaunchArgument(
        "image_topic", "", "camera topic; empty: the params file's image_topic (/camera/image_raw)"
    ),
    LaunchArgument(
        "compressed",
        "",
        "true: sensor_msgs/CompressedImage on image_topic; empty: the params file's compressed",
    ),
    LaunchArgument("use_console", "true", "true: print events and a final report"),
    LaunchArgument("report", "", "console: also write the final report as JSON to this path"),
    LaunchArgument(
        "use_demo_camera", "false", "true: a camera replays a dataset with ground truth"
    ),
    LaunchArgument("demo_dataset", "sim_pouring", "demo camera: registered dataset or folder:PATH"),
    LaunchArgument("demo_split", "test", "demo camera: dataset split"),
    LaunchArgument("demo_episodes", "", "demo camera: number of episodes; empty: all"),
    LaunchArgument("demo_rate", "12.0", "demo camera: frames per second"),
)


@dataclass
class NodeSpec:
    """One process of the launch: what ``launch_ros.actions.Node`` or a command line needs."""

    role: str
    executable: str
    module: str
    name: str
    namespace: str
    arguments: list[str] = field(default_factory=list)
    parameters: list[Any] = field(default_factory=list)  # [params file path, {key: value}]


def default_params_file() -> Path:
    """The installed ``share/tcc_ros/config/progress_monitor.yaml``, else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("tcc_ros")) / "config" / f"{NODE_KEY}.yaml"
        if installed.is_file():
            return installed
    except (ImportError, LookupError, ValueError, OSError):
        pass
    return Path(__file__).resolve().parents[1] / "config" / f"{NODE_KEY}.yaml"


def read_node_parameters(params_file: str | os.PathLike) -> dict[str, Any]:
    """``ros__parameters`` of the progress_monitor entry of a ROS 2 parameter file.

    Raises :class:`~tcc_model.errors.ConfigError` naming the file when it is missing,
    unreadable, not YAML or has no such entry, and naming the key, the value and the expected
    type when a key is not a parameter of the node or its value does not fit (the checks the
    node makes at start, so both ways to start refuse the same file before any node runs).
    """
    path = Path(params_file)
    shown = safe_text(path)
    if not path.is_file():
        raise ConfigError(f"params file {shown}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"params file {shown}: not valid YAML ({safe_text(exc, 300)})") from exc
    except OSError as exc:
        raise ConfigError(f"params file {shown}: cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"params file {shown}: expected a mapping of node names")
    for key, section in data.items():
        name = str(key).rstrip("/").split("/")[-1]
        if name in (NODE_KEY, "**") and isinstance(section, dict):
            params = section.get("ros__parameters")
            if isinstance(params, dict):
                problems = parameter_problems(flatten(params))
                if problems:
                    raise ConfigError(f"params file {shown}: " + "; ".join(problems))
                return params
    raise ConfigError(
        f"params file {shown}: no '/**/progress_monitor: ros__parameters:' section; "
        "start from config/progress_monitor.yaml"
    )


def parameter_problems(values: Mapping[str, Any]) -> list[str]:
    """What is wrong with flat parameter ``values``: unknown keys, wrong types, out of range."""
    from tcc_ros.monitor_node.parameters import all_parameters, check_value, unknown_keys

    specs = all_parameters()
    problems = unknown_keys(values, specs)
    for spec in specs:
        if spec.name in values:
            problems += [p for p in [check_value(spec, values[spec.name])] if p]
    return problems


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameter mappings as ROS names: ``{"qos": {"depth": 1}}`` -> ``{"qos.depth": 1}``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"launch argument {name}:={safe_text(text)}: expected true or false")


def _namespace(text: str) -> str:
    ns = "/" + text.strip().strip("/")
    return ns if ns != "/" else "/"


def plan(given: Mapping[str, str]) -> list[NodeSpec]:
    """The processes for launch arguments ``given`` (missing or empty ones take their default).

    Reads ``params_file`` to learn what the monitor will use, so the demo camera publishes the
    same image topic, encoding and reliability.
    """
    args = {a.name: a.default for a in LAUNCH_ARGUMENTS}
    args.update({k: str(v) for k, v in given.items() if str(v) != ""})
    params_file = args["params_file"] or str(default_params_file())
    effective = flatten(read_node_parameters(params_file))
    overrides: dict[str, Any] = {}
    if args["bundle"]:
        overrides["bundle"] = args["bundle"]
    if args["image_topic"]:
        overrides["image_topic"] = args["image_topic"]
    if args["compressed"]:
        overrides["compressed"] = _bool("compressed", args["compressed"])
    effective.update(overrides)
    ns = _namespace(args["namespace"])
    nodes = [
        NodeSpec(
            "monitor",
            "progress_monitor",
            "tcc_ros.monitor_node",
            NODE_KEY,
            ns,
            parameters=[params_file, overrides],
        )
    ]
    if _bool("use_console", args["use_console"]):
        console = ["--namespace", ns] + (["--report", args["report"]] if args["report"] else [])
        nodes.append(
            NodeSpec(
                "console", "monitor_console", "tcc_ros.console", "monitor_console", ns, console
            )
        )
    if _bool("use_demo_camera", args["use_demo_camera"]):
        nodes.append(_camera(args, effective, ns))
        if _bool("use_console", args["use_console"]):  # every frame scored: wait for the console
            nodes[-1].arguments.append("--wait-ground-truth")
    return nodes


def _camera(args: Mapping[str, str], effective: Mapping[str, Any], ns: str) -> NodeSpec:
    camera = [
        "--dataset",
        args["demo_dataset"],
        "--split",
        args["demo_split"],
        "--rate",
        args["demo_rate"],
        "--image-topic",
        str(effective.get("image_topic", "/camera/image_raw")),
        "--compressed",
        str(bool(effective.get("compressed", False))).lower(),
        "--ground-truth-topic",
        "ground_truth",
        "--reset-service",
        "reset",
    ]
    if str(effective.get("qos.reliability", "best_effort")) == "reliable":
        camera.append("--reliable")
    if args["demo_episodes"]:
        camera += ["--episodes", args["demo_episodes"]]
    return NodeSpec("camera", "camera_source", "tcc_ros.camera_source", "camera_source", ns, camera)


def command_line(spec: NodeSpec, python: str) -> list[str]:
    """The ``python -m`` command line that starts ``spec`` like ``ros2 launch`` does."""
    cmd = [python, "-m", spec.module, *spec.arguments, "--ros-args"]
    cmd += ["-r", f"__node:={spec.name}", "-r", f"__ns:={spec.namespace}"]
    for entry in spec.parameters:
        if isinstance(entry, Mapping):
            for key, value in entry.items():
                text = str(value).lower() if isinstance(value, bool) else str(value)
                cmd += ["-p", f"{key}:={text}"]
        else:
            cmd += ["--params-file", str(entry)]
    return cmd


def exit_problem(role: str, returncode: int | None) -> str | None:
    """Why the launch must fail when process ``role`` exited with ``returncode`` (None: fine)."""
    if returncode in (0, None) or role != "monitor":
        return None
    return f"the progress monitor exited with status {returncode}; stopping the launch"
