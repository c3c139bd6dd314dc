"""Validation of a config tree: every nested config's ``validate`` is called by the engine.

As the Collector's ``xconfmap.Validate``, the walk goes through the fields of a config dataclass
(and the items of list or tuple fields) and calls ``validate()`` on each value that has one, its
problems' keys prefixed with the path to it. So a config holding a ``TLSConfig`` or a
``RetrySettings`` never forwards their problems by hand, and a new nested config cannot be
forgotten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator


def validate_config(config: object) -> list[tuple[str, str]]:
    """Every ``(key, message)`` problem of ``config`` and the configs nested in it, keys relative
    to ``config`` (``tls.ca_file``, ``rules[2].family``); ``[]`` if it is valid."""
    return list(_walk(config, ""))


def _walk(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
        return
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return
    for field in dataclasses.fields(value):
        yield from _walk(getattr(value, field.name), _join(path, field.name))
    validate = getattr(value, "validate", None)
    if callable(validate):
        for key, message in validate():
            yield (_join(path, key) if key else path), message


def _join(path: str, key: str) -> str:
    if not path:
        return key
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"
