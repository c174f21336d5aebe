"""Typed configuration: dataclasses built from mappings and ``key=value`` strings, type-checked.

One loader for every configuration of the project (training sections, the monitor, ROS
parameters). A configuration is a ``@dataclass`` whose fields carry type hints; :func:`from_mapping`
builds it from a mapping (a YAML file, a checkpoint's stored config), :func:`parse_text` coerces
one command-line string (``--set train.lr=3e-4``) against a field's type, and
:func:`apply_overrides` merges ``section.key=value`` strings into a nested mapping. Unknown keys
and values of the wrong type raise :class:`~tcc_model.errors.ConfigError` naming the key, the
value and the expected type, before anything expensive happens.

Supported field types: ``bool`` (``true/false/yes/no/on/off/1/0``), ``int`` (an integral number;
``5.5`` is an error), ``float`` (finite), ``str``, ``Literal[...]``, ``X | None`` (``null``,
``none``, ``~`` or an empty string give ``None``), ``tuple[X, ...]`` and fixed-length tuples
(a YAML list or ``a,b,c``), ``list[X]``, ``dict[...]`` (a YAML mapping), ``Any`` and nested
dataclasses. Range checks belong in the dataclass' ``__post_init__`` (raise ``ConfigError``).

Nothing heavy is imported here (no torch, numpy or ROS).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import yaml

from tcc_model.errors import ConfigError, safe_text

T = TypeVar("T")

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("null", "none", "~", "")


class _Mismatch(Exception):
    """Internal: a value does not fit a type (turned into a ConfigError naming the key)."""


def type_name(tp: Any) -> str:
    """A readable name of a field type, for error messages (``true or false``, ``one of ...``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {type_name(args[0])}s"
        return f"a list of {len(args)} values ({', '.join(type_name(a) for a in args)})"
    if origin is list:
        return f"a list of {type_name(args[0]) if args else 'values'}"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} keys"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as ``tp`` or :class:`_Mismatch`; strings are parsed as command-line text."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return yaml.safe_load(value) if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.strip().lower() in _NONE)
        ):
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        for option in args:
            if value == option and type(value) is type(option):
                return option
            if isinstance(value, str) and not isinstance(option, str):
                try:
                    if _coerce(value, type(option)) == option:
                        return option
                except _Mismatch:
                    pass
        raise _Mismatch
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, Mapping):
            raise _Mismatch
        return from_mapping(tp, value)
    if origin in (tuple, list):
        return _coerce_sequence(value, tp, origin, args)
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else {}
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    return _coerce_scalar(value, tp)


def _coerce_sequence(value: Any, tp: Any, origin: Any, args: tuple) -> Any:
    if isinstance(value, str):
        text = value.strip()
        value = yaml.safe_load(text) if text.startswith("[") else [p for p in text.split(",") if p]
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    if origin is list or (len(args) == 2 and args[1] is Ellipsis):
        item = args[0] if args else Any
        items = [_coerce(v, item) for v in value]
    else:
        if len(value) != len(args):
            raise _Mismatch
        items = [_coerce(v, a) for v, a in zip(value, args)]
    return items if origin is list else tuple(items)


def _coerce_scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _Mismatch
    if tp is int:
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError as exc:
                    raise _Mismatch from exc
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError as exc:
                raise _Mismatch from exc
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        if not math.isfinite(value):
            raise _Mismatch
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch


def coerce(value: Any, tp: Any, key: str, where: str = "") -> Any:
    """``value`` as type ``tp``, or a ConfigError ``<where>: <key>=<value>: expected <type>``."""
    try:
        return _coerce(value, tp)
    except _Mismatch:
        prefix = f"{where}: " if where else ""
        shown = safe_text(value if isinstance(value, str) else repr(value))
        raise ConfigError(f"{prefix}{key}={shown}: expected {type_name(tp)}") from None


def parse_text(text: str, tp: Any, key: str, where: str = "--set") -> Any:
    """A command-line string (``--set key=TEXT``, a ROS parameter string) as type ``tp``."""
    return coerce(text, tp, key, where)


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type}`` of a dataclass (string annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: help text}`` from each field's ``metadata['help']`` (empty when absent)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    """ConfigError naming the unknown keys of ``data`` and the valid ones of ``cls``."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in known]
    if unknown:
        names = ", ".join(safe_text(k) for k in unknown)
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {names}; valid keys: "
            f"{', '.join(known)}"
        )


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``: keys checked, values coerced to the field types.

    ``where`` prefixes the key in messages (``"model"`` gives ``model.encoder=...``); missing
    keys take the field defaults.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {safe_text(data)!r}")
    check_keys(cls, data, where or cls.__name__)
    types_ = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(types_[key]) and isinstance(value, Mapping):
            kwargs[key] = from_mapping(types_[key], value, name)
        else:
            kwargs[key] = coerce(value, types_[key], name)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A dataclass as plain YAML/JSON-friendly data (tuples become lists), recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def split_assignment(item: str, where: str = "--set") -> tuple[list[str], str]:
    """``"train.lr=3e-4"`` → ``(["train", "lr"], "3e-4")``; a ConfigError when malformed."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(
            f"{where} {safe_text(item)!r}: expected section.key=value, e.g. train.lr=3e-4"
        )
    return key.strip().split("."), raw


def apply_overrides(
    cls: type, data: Mapping[str, Any], items: Sequence[str], where: str = "--set"
) -> dict[str, Any]:
    """Merge ``section.key=value`` strings into ``data`` (a nested mapping of ``cls``).

    Each key is checked against the dataclass tree of ``cls`` and each value coerced to its
    field's type, so a wrong key or value fails here, naming both.
    """
    out = _deepcopy(data)
    for item in items:
        parts, raw = split_assignment(item, where)
        node, node_cls = out, cls
        for depth, part in enumerate(parts):
            dotted = ".".join(parts[: depth + 1])
            if not dataclasses.is_dataclass(node_cls):
                parent = ".".join(parts[:depth])
                raise ConfigError(f"{where} {safe_text(item)!r}: {parent} has no sub-keys")
            check_keys(node_cls, {part: None}, f"{where} {'.'.join(parts[:depth]) or 'config'}")
            tp = field_types(node_cls)[part]
            if depth == len(parts) - 1:
                node[part] = parse_text(raw, tp, dotted, where)
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{where} {safe_text(item)!r}: {dotted} is not a section")
                node_cls = tp
    return out


def merge(
    cls: type, base: Mapping[str, Any], update: Mapping[str, Any], source: str, prefix: str = ""
) -> dict[str, Any]:
    """Recursive update of ``base`` by ``update``; keys checked and values coerced against ``cls``.

    ``source`` names where ``update`` comes from (a file, ``command line``) in messages.
    """
    out = _deepcopy(base)
    check_keys(cls, update, f"{source}: {prefix or 'config'}")
    types_ = field_types(cls)
    for key, value in update.items():
        tp, dotted = types_[key], f"{prefix}.{key}" if prefix else key
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {dotted} must be a mapping, got {safe_text(value)!r}")
            out[key] = merge(tp, out.get(key) or {}, value, source, dotted)
        else:
            out[key] = coerce(value, tp, dotted, source)
    return out


def _deepcopy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
