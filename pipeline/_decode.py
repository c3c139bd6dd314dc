"""Lay user YAML over a config dataclass, type by type, collecting every problem with its key path.

The loader's generic half (confmap's decoder in the OpenTelemetry Collector): components only
declare dataclasses; unknown keys, wrong types and bad durations are found here, all at once.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

Problems = list[tuple[str, str]]

_MISSING = object()


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def overlay(base: Any, value: Any, path: str, problems: Problems) -> Any:
    """Return ``base`` (a dataclass instance) with the keys of mapping ``value`` laid over it."""
    cls: Any = type(base)
    if value is None:
        return base
    if not isinstance(value, Mapping):
        problems.append((path, f"expected a mapping of settings, got {_describe(value)}"))
        return base
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    changes: dict[str, Any] = {}
    for key, item in value.items():
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            problems.append((join(path, str(key)), f"unknown key (valid keys: {valid})"))
            continue
        current = getattr(base, key)
        decoded = decode(hints[key], item, join(path, key), problems, current)
        if decoded is not _MISSING:
            changes[key] = decoded
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as exc:
        problems.append((path, str(exc)))
        return base


def decode(tp: Any, value: Any, path: str, problems: Problems, current: Any = None) -> Any:
    """Convert one YAML value to type ``tp``; on a problem, record it and return ``_MISSING``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(get_args(tp)):
                return None
        if len(args) == 1:
            inner_current = current if current is not None else _default_of(args[0])
            return decode(args[0], value, path, problems, inner_current)
        problems.append((path, f"unsupported config type {tp}"))
        return _MISSING
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        shown = ", ".join(repr(a) for a in allowed)
        problems.append((path, f"must be one of {shown}, got {_describe(value)}"))
        return _MISSING
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, list):
            problems.append((path, f"expected a list, got {_describe(value)}"))
            return _MISSING
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [decode(item_tp, v, join(path, i), problems, None) for i, v in enumerate(value)]
        if any(i is _MISSING for i in items):
            return _MISSING
        return tuple(items) if origin is tuple else items
    if origin in (dict, typing.Mapping) or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            problems.append((path, f"expected a mapping, got {_describe(value)}"))
            return _MISSING
        _, val_tp = get_args(tp) or (str, Any)
        result = {}
        for key, item in value.items():
            decoded = decode(val_tp, item, join(path, str(key)), problems, None)
            if decoded is not _MISSING:
                result[str(key)] = decoded
        return result
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        base = current if isinstance(current, tp) else _default_of(tp)
        if base is None:
            problems.append((path, f"{tp.__name__} has no defaults to build from"))
            return _MISSING
        return overlay(base, value, path, problems)
    return _decode_scalar(tp, value, path, problems)


def _default_of(tp: Any) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        try:
            return tp()
        except TypeError:
            return None
    return None


def _decode_scalar(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    from_config = getattr(tp, "from_config", None)
    if from_config is not None:
        try:
            return from_config(value)
        except ValueError as exc:
            problems.append((path, str(exc)))
            return _MISSING
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            shown = ", ".join(repr(m.value) for m in tp)
            problems.append((path, f"must be one of {shown}, got {_describe(value)}"))
            return _MISSING
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append((path, f"expected true or false, got {_describe(value)}"))
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append((path, f"expected an integer, got {_describe(value)}"))
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        problems.append((path, f"expected a number, got {_describe(value)}"))
    elif tp is str:
        if isinstance(value, str):
            return value
        problems.append((path, f"expected a string, got {_describe(value)}"))
    else:
        problems.append((path, f"unsupported config type {tp!r}"))
    return _MISSING


def to_data(value: Any) -> Any:
    """The inverse: a config dataclass back to plain YAML-able data (durations as text)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
    if isinstance(value, Mapping):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_data(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(type(value), "from_config"):
        return str(value)
    return value
