"""The ``debug`` exporter: each cycle logged in the Go helper's words.

Writes, per cycle, the lines the Go ``cni-metrics-helper`` logs, so its users can compare outputs
line by line::

    Produce GAUGE metrics: totalIPAddresses, value: 11186.000000
    Produce COUNTER metrics: ipamdErr, value: 1.000000

Group-by values carry their dimensions after the name (``totalIPAddresses{zone=us-east-1a}``).
"""

from __future__ import annotations

import time

from pipeline import Batch, ComponentSettings, Metric, MetricKind, SimpleExporter

from .config import DebugExporterConfig


def format_metric(metric: Metric) -> str:
    name = metric.name
    if metric.attributes:
        name += "{" + ",".join(f"{k}={v}" for k, v in metric.attributes) + "}"
    if metric.kind is MetricKind.DISTRIBUTION and metric.distribution is not None:
        dist = metric.distribution
        return f"Produce DISTRIBUTION metrics: {name}, count: {dist.count:f}, sum: {dist.sum:f}"
    label = "COUNTER" if metric.kind is MetricKind.COUNTER else "GAUGE"
    return f"Produce {label} metrics: {name}, value: {metric.value:f}"


class DebugExporter(SimpleExporter):
    """Logs each batch (see the module docstring); holds nothing, so shutdown has nothing to do."""

    def __init__(self, settings: ComponentSettings, config: DebugExporterConfig) -> None:
        self.settings = settings
        self.config = config
        self._log = settings.logger

    async def consume(self, batch: Batch) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch.cycle.time))
        self._log.info("cycle %d @%s: %d metrics", batch.cycle.index, stamp, len(batch.metrics))
        for metric in batch.metrics:
            if metric.derived and not self.config.derived:
                continue
            self._log.info("%s", format_metric(metric))
        if self.config.verbosity == "detailed":
            for scrape in batch.targets:
                health = scrape.health
                state = "up" if health.up else f"down ({health.error_class}: {health.error})"
                self._log.info(
                    "target %s: %s, %d samples in %.3fs",
                    scrape.target,
                    state,
                    health.samples,
                    health.duration,
                )

