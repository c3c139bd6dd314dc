"""Config of the ``prometheus`` exporter (key names as in the Collector's prometheus exporter)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import ComponentConfig

#: The Go cni-metrics-helper's USE_PROMETHEUS port.
DEFAULT_ENDPOINT = "0.0.0.0:61681"

_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; an empty host means every IPv4 interface, as in Go) as
    ``(host, port)``; ``ValueError`` with a message for the user otherwise."""
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"must be host:port, like {DEFAULT_ENDPOINT!r}: {endpoint!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", port


@dataclass(frozen=True, kw_only=True)
class PrometheusExporterConfig(ComponentConfig):
    #: Where to serve the aggregates for Prometheus to scrape (any path answers).
    endpoint: str = DEFAULT_ENDPOINT
    #: Labels added to every series (none by default: the Go tool's gauges carry no labels).
    const_labels: dict[str, str] = field(default_factory=dict)

    def validate(self) -> Iterable[tuple[str, str]]:
        try:
            parse_endpoint(self.endpoint)
        except ValueError as exc:
            yield "endpoint", str(exc)
        for name in self.const_labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                yield f"const_labels.{name}", (
                    "not a valid Prometheus label name ([A-Za-z_][A-Za-z0-9_]*, not starting "
                    "with __)"
                )
