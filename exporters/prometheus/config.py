"""Config of the ``prometheus`` exporter (key names as in the Collector's prometheus exporter)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import ComponentConfig, parse_endpoint

#: The Go cni-metrics-helper's USE_PROMETHEUS port.
DEFAULT_ENDPOINT = "0.0.0.0:61681"

_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, kw_only=True)
class PrometheusExporterConfig(ComponentConfig):
    #: Where to serve the aggregates for Prometheus to scrape (any path answers).
    endpoint: str = DEFAULT_ENDPOINT
    #: Labels added to every series (none by default: the Go tool's gauges carry no labels).
    const_labels: dict[str, str] = field(default_factory=dict)

    def validate(self) -> Iterable[tuple[str, str]]:
        try:
            parse_endpoint(self.endpoint, DEFAULT_ENDPOINT)
        except ValueError as exc:
            yield "endpoint", str(exc)
        for name in self.const_labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                yield f"const_labels.{name}", (
                    "not a valid Prometheus label name ([A-Za-z_][A-Za-z0-9_]*, not starting "
                    "with __)"
                )
