"""The progress monitor node's parameters: one definition, typed descriptors, strict checks.

Node settings are listed once in :data:`NODE_PARAMETERS`; the ``monitor.*`` parameters are
generated from the fields of :class:`tcc_model.stream.MonitorConfig` (type, default, and the help
text of the field's metadata where it has one). Every parameter is declared with a
``ParameterDescriptor`` (type, description, range, read-only), so ``ros2 param describe`` and rqt
show what each one means. A key the node does not know, or a value of the wrong type, stops the
node at start with one message naming the key, the value and what is expected.

Runtime-safe parameters (the anomaly thresholds, detector switches and settings, the no-frame
timeout, the stamp-gap limit) can be changed with ``ros2 param set`` and apply from the next
frame; the others are read-only and their descriptors say so.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tcc_model.errors import ConfigError, safe_text

#: Kinds of parameter values, by the name ``ros2 param describe`` prints.
KINDS = ("bool", "integer", "double", "string", "double_array", "string_array")

#: Parameters rclpy declares on every node (not ours to check).
_ROS_OWN = ("use_sim_time", "start_type_description_service")
_ROS_OWN_PREFIXES = ("qos_overrides.",)

#: Keys of older parameter files, with what replaced them.
REMOVED = {
    "output_namespace": "outputs are relative names under the node's namespace: start with "
    "namespace:=NAME (ros2 launch), --namespace NAME (python -m tcc_ros.monitor) or "
    "--ros-args -r __ns:=/NAME",
}


def runtime_safe(field_name: str) -> bool:
    """Whether MonitorConfig field ``field_name`` may change while the node runs: one of
    :data:`tcc_model.stream.RUNTIME_SETTINGS` (what ``update_settings`` takes; the next frame
    uses the new value)."""
    from tcc_model.stream import RUNTIME_SETTINGS

    return field_name in RUNTIME_SETTINGS


#: Ranges of MonitorConfig fields ``(low, high)``; the dataclass checks combinations.
MONITOR_RANGES: dict[str, tuple[float, float]] = {
    "window": (4, 4096),
    "window_back": (0, 4095),
    "start_frames": (1, 1000),
    "evidence_decay": (0.0, 1.0),
    "temperature": (0.0, 1e6),
    "phase_margin": (0.0, 1.0),
    "distance_threshold": (0.0, 1e6),
    "off_trajectory_m": (1, 1000),
    "off_trajectory_n": (1, 1000),
    "stall_seconds": (0.0, 1e6),
    "stall_min_advance": (0.0, 1.0),
    "end_progress": (0.0, 1.0),
    "backwards_threshold": (0.0, 1.0),
    "backwards_peak_rate": (1e-6, 100.0),
    "skip_threshold": (0.0, 1.0),
    "skip_hold_frames": (0, 1000),
    "fps": (0.0, 1000.0),
}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, kind, default (``None``: not set), description and limits."""

    name: str
    kind: str
    default: Any
    description: str
    read_only: bool = True
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    @property
    def constraints(self) -> str:
        """Human-readable limits (for the descriptor and error messages)."""
        parts = []
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        if self.low is not None and self.high is not None:
            parts.append(f"in [{self.low:g}, {self.high:g}]")
        parts.append("read-only" if self.read_only else "can be changed at run time")
        return "; ".join(parts)


def _node(name: str, kind: str, default: Any, text: str, **limits: Any) -> ParamSpec:
    return ParamSpec(name, kind, default, text, **limits)


#: The node's own settings (the ``monitor.*`` ones come from MonitorConfig).
NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    _node("bundle", "string", "", "exported bundle directory (bundle.yaml, ONNX, references)"),
    _node("image_topic", "string", "/camera/image_raw", "camera topic to subscribe to"),
    _node("compressed", "bool", False, "true: the camera topic is sensor_msgs/CompressedImage"),
    _node(
        "backend",
        "string",
        "auto",
        "inference backend",
        choices=("auto", "onnxruntime", "torch", "tensorrt"),
    ),
    _node("threads", "integer", 1, "intra-op CPU threads of the engine", low=1, high=256),
    _node("publish_overlay", "bool", False, "publish 'overlay': the frame with phase and progress"),
    _node(
        "diagnostics_period",
        "double",
        1.0,
        "seconds between /diagnostics messages (steady clock)",
        low=0.01,
        high=3600.0,
    ),
    _node(
        "no_frame_timeout_s",
        "double",
        5.0,
        "warn on /diagnostics when no frame arrived for this many seconds",
        low=0.01,
        high=86400.0,
        read_only=False,
    ),
    _node(
        "max_stamp_gap_s",
        "double",
        5.0,
        "a step between image stamps that is not in (0, this] counts as a stamp jump and "
        "advances the episode time by one typical frame period",
        low=0.001,
        high=3600.0,
        read_only=False,
    ),
    _node(
        "qos.reliability",
        "string",
        "best_effort",
        "reliability of the camera subscription",
        choices=("best_effort", "reliable"),
    ),
    _node("qos.depth", "integer", 1, "queue depth of the camera subscription", low=1, high=1000),
)


def _field_kind(annotation: Any) -> tuple[str, bool]:
    """``(kind, optional)`` of a MonitorConfig field annotation."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        inner = typing.get_args(annotation)[0]
        return ("string_array" if inner is str else "double_array"), optional
    if isinstance(annotation, types.UnionType):  # pragma: no cover - not used by MonitorConfig
        raise TypeError(f"unsupported MonitorConfig field type {annotation}")
    kind = {bool: "bool", int: "integer", float: "double", str: "string"}[annotation]
    return kind, optional


def monitor_parameters() -> tuple[ParamSpec, ...]:
    """``monitor.<field>`` parameters generated from :class:`tcc_model.stream.MonitorConfig`."""
    from tcc_model.stream import MonitorConfig

    hints = typing.get_type_hints(MonitorConfig)
    specs = []
    for f in dataclasses.fields(MonitorConfig):
        kind, optional = _field_kind(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if optional or (isinstance(default, tuple) and not default):
            unset = "not set: from the bundle's calibration" if optional else "not set: none"
            value = None
        else:
            unset, value = "", list(default) if isinstance(default, tuple) else default
        help_text = f.metadata.get("help") or f.metadata.get("doc") or f"MonitorConfig.{f.name}"
        low, high = MONITOR_RANGES.get(f.name, (None, None))
        specs.append(
            ParamSpec(
                f"monitor.{f.name}",
                kind,
                value,
                f"{help_text}{f' ({unset})' if unset else ''}",
                read_only=not runtime_safe(f.name),
                low=low,
                high=high,
            )
        )
    return tuple(specs)


def all_parameters() -> tuple[ParamSpec, ...]:
    """Every parameter of the node: its own settings, then ``monitor.*``."""
    return NODE_PARAMETERS + monitor_parameters()


# ------------------------------------------------------------------------------------------------
# Checking values (shared by start-up and the on-set-parameters callback)
# ------------------------------------------------------------------------------------------------
def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return "string_array"
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return "double_array" if any(isinstance(v, float) for v in value) else "integer_array"
    return type(value).__name__


def check_value(spec: ParamSpec, value: Any) -> str:
    """Why ``value`` is not valid for ``spec`` ("" when it is)."""
    shown = safe_text(repr(value))
    kind = _kind_of(value)
    if kind != spec.kind:
        hint = ""
        if spec.kind == "double" and kind == "integer":
            hint = f" (write {value:.1f})"
        elif spec.kind == "double_array" and kind == "integer_array":
            hint = " (write the numbers with a decimal point)"
        article = "an" if spec.kind[0] in "aeiou" else "a"
        return f"parameter {spec.name}: got {shown} ({kind}), expected {article} {spec.kind}{hint}"
    if spec.choices and value not in spec.choices:
        return f"parameter {spec.name}: got {shown}, expected one of {', '.join(spec.choices)}"
    if spec.low is not None and spec.high is not None and kind in ("integer", "double"):
        if not (math.isfinite(value) and spec.low <= value <= spec.high):
            return (
                f"parameter {spec.name}: got {shown}, expected a value in "
                f"[{spec.low:g}, {spec.high:g}]"
            )
    return ""


def unknown_keys(keys: Iterable[str], specs: Iterable[ParamSpec]) -> list[str]:
    """Messages for keys that are not parameters of the node (typos, removed keys)."""
    names = {s.name for s in specs}
    problems = []
    for key in sorted(keys):
        if key in names or key in _ROS_OWN or key.startswith(_ROS_OWN_PREFIXES):
            continue
        if key in REMOVED:
            problems.append(f"parameter {key} was removed: {REMOVED[key]}")
            continue
        close = [n for n in names if _similar(key, n)]
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(
            f"unknown parameter {safe_text(key)}{hint}; the node's parameters are listed by "
            "`python -m tcc_ros.monitor_node --help`"
        )
    return problems


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.85


def monitor_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """MonitorConfig overrides from parameter values (``monitor.x`` -> ``x``; unset left out)."""
    out = {}
    for name, value in values.items():
        if name.startswith("monitor.") and value is not None:
            out[name[len("monitor.") :]] = tuple(value) if isinstance(value, list) else value
    return out


def check_monitor_config(overrides: Mapping[str, Any]) -> str:
    """Why ``overrides`` do not make a valid MonitorConfig ("" when they do)."""
    from tcc_model.stream import MonitorConfig

    try:
        MonitorConfig(**overrides)
    except (TypeError, ValueError) as exc:
        return f"monitor parameters: {safe_text(exc, 400)}"
    return ""


def check_changes(
    values: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Check a run-time change of parameters ``values`` against the monitor overrides in force.

    Returns ``(problem, monitor overrides after the change, node settings changed)``; a
    non-empty ``problem`` (unknown, read-only, wrong type, out of range, settings that do not fit
    together) means nothing changes.
    """
    specs = {s.name: s for s in all_parameters()}
    overrides, node_changes = dict(current), {}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            return f"unknown parameter {safe_text(name)}", dict(current), {}
        if spec.read_only:
            return f"{name} is read-only (set it at start)", dict(current), {}
        problem = check_value(spec, value)
        if problem:
            return problem, dict(current), {}
        if name.startswith("monitor."):
            overrides.update(monitor_overrides({name: value}))
        else:
            node_changes[name] = value
    problem = check_monitor_config(overrides)
    return (problem, dict(current), {}) if problem else ("", overrides, node_changes)


def raise_problems(problems: list[str]) -> None:
    """One ConfigError listing every problem found at start."""
    if problems:
        raise ConfigError("; ".join(problems))


def help_text() -> str:
    """The parameter table printed by ``python -m tcc_ros.monitor_node --help``."""
    lines = []
    for spec in all_parameters():
        default = "(not set)" if spec.default is None else repr(spec.default)
        lines.append(f"  {spec.name:<32} {spec.kind:<12} {default}")
        lines.append(f"      {spec.description}; {spec.constraints}")
    return "\n".join(lines)
