"""Declaring the node's parameters with typed ``ParameterDescriptor``s and checking them at start.

Everything wrong is collected first (unknown keys, wrong types, values out of range, settings the
monitor refuses) and raised as one :class:`~tcc_model.errors.ConfigError`, before the bundle is
loaded and before any subscription exists.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from tcc_ros.monitor_node.parameters import (
    ParamSpec,
    all_parameters,
    check_monitor_config,
    check_value,
    monitor_overrides,
    raise_problems,
    unknown_keys,
)

_ROS_TYPES = {
    "bool": (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
    "integer": (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
    "double": (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
    "string": (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
    "double_array": (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
    "string_array": (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of ``spec``: type, description, range, read-only."""
    d = ParameterDescriptor(
        name=spec.name,
        type=_ROS_TYPES[spec.kind][0],
        description=spec.description,
        additional_constraints=spec.constraints,
        read_only=spec.read_only,
    )
    if spec.low is not None and spec.high is not None:
        if spec.kind == "integer":
            d.integer_range = [
                IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)
            ]
        elif spec.kind == "double":
            d.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
    return d


def _given(node: Node) -> dict[str, Any]:
    """Parameter values given to the node (params files, ``-p``, ``parameter_overrides``)."""
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    return {name: p.value for name, p in overrides.items()}


def declare_all(node: Node) -> tuple[dict[str, Any], set[str]]:
    """Declare every parameter on ``node``; return the values (``None`` = not set) and the
    names that were given (params file, ``-p``), as opposed to defaults.

    Raises :class:`~tcc_model.errors.ConfigError` listing every problem: unknown keys, values of
    the wrong type or out of range, and monitor settings that do not fit together.
    """
    specs = all_parameters()
    given = _given(node)
    problems = unknown_keys(given, specs)
    values: dict[str, Any] = {}
    for spec in specs:
        value = given.get(spec.name)
        problem = check_value(spec, value) if value is not None else ""
        if problem:
            problems.append(problem)
            continue
        default = spec.default if spec.default is not None else _ROS_TYPES[spec.kind][1]
        declared = node.declare_parameter(spec.name, default, descriptor(spec))
        values[spec.name] = declared.value
    if not problems:
        problems += [p for p in [check_monitor_config(monitor_overrides(values))] if p]
    raise_problems(problems)
    return values, {name for name in given if name in values}
