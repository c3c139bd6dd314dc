"""Config value types with a text form: durations (``30s``) and byte sizes (``10MiB``).

Each has ``from_config(value)``, which the config loader calls for a field of that type and which
raises ``ValueError`` with a message fit for the user; bare numbers are rejected, since ``30`` could
mean seconds or milliseconds.
"""

from __future__ import annotations

import re
from typing import Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_BYTES = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


class Duration(float):
    """Seconds, written in config as Go does: ``30s``, ``500ms``, ``5m``, ``1m30s``."""

    @classmethod
    def from_config(cls, value: Any) -> Duration:
        if isinstance(value, Duration):
            return value
        if not isinstance(value, str) or isinstance(value, bool):
            raise ValueError(
                f'not a duration: {value!r} (write it with a unit, like "30s" or "500ms")'
            )
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f'must not be negative: "{value}"')
        parts = list(_DURATION_PART.finditer(text))
        if not text or "".join(p.group(0) for p in parts) != text:
            raise ValueError(f'not a duration: "{value}" (use units ns, us, ms, s, m, h)')
        return cls(sum(float(p.group(1)) * _DURATION_SECONDS[p.group(2)] for p in parts))

    def __str__(self) -> str:
        seconds = float(self)
        if seconds and seconds < 1:
            return f"{seconds * 1000:g}ms"
        if seconds >= 60 and seconds % 60 == 0:
            return f"{seconds / 60:g}m"
        return f"{seconds:g}s"

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"


def parse_endpoint(endpoint: str, example: str = "0.0.0.0:8888") -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as ``(host, port)``; ``ValueError`` with a user's message.

    The port is required (0 asks the system for a free one, as in tests); an empty host (``:8888``)
    means every IPv4 interface, as in Go. Config ``validate`` methods and the code that listens
    both call this, so a value that passes validation is one that can be listened on.
    """
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"must be host:port, like {example!r}: {endpoint!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535: {endpoint!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host must be in brackets, like '[::1]:8888': {endpoint!r}")
    return host or "0.0.0.0", port


class ByteSize(int):
    """A size in bytes, written ``10MiB``, ``512KB`` or a plain number of bytes."""

    @classmethod
    def from_config(cls, value: Any) -> ByteSize:
        if isinstance(value, bool):
            raise ValueError(f"not a size: {value!r}")
        if isinstance(value, int):
            return cls(value)
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f'not a size: "{value}" (like "10MiB", "512KB" or bytes)')
        return cls(int(float(match.group(1)) * _SIZE_BYTES[match.group(2)]))

    def __str__(self) -> str:
        for unit in ("GiB", "MiB", "KiB"):
            scale = _SIZE_BYTES[unit]
            if self and self % scale == 0:
                return f"{self // scale}{unit}"
        return f"{int(self)}B"
