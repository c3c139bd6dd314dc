"""The ``prometheus`` exporter: serves the latest cycle's cluster aggregates for scraping.

Served with prometheus_client (``start_http_server`` on a private ``CollectorRegistry`` holding one
custom collector), not a hand-written HTTP server: it already does content negotiation (text
0.0.4 or OpenMetrics, which Prometheus asks for), gzip when the scraper accepts it, escaping and
number formatting, all of which a scrape test would otherwise have to re-verify. No global registry
is touched, so two instances (``prometheus/a``, ``prometheus/b``) can run side by side.

Threads: the server answers in its own threads; :meth:`consume` (event loop) replaces an immutable
tuple of families in one assignment, so a scrape sees one whole cycle, never half of one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.utils import floatToGoString

from pipeline import Batch, ComponentError, ComponentSettings, FamilySet, Host, parse_endpoint

from ._convert import Exposition, Family, HistogramSample, NumberSample
from .config import DEFAULT_ENDPOINT, PrometheusExporterConfig


def to_prometheus_client(family: Family) -> PromMetric:
    """A :class:`Family` as a prometheus_client metric family (samples with their own labels,
    since a cluster-level sample and group-by samples share a family)."""
    if family.type == "counter":
        # prometheus_client names a counter family without _total and its samples with it.
        metric = PromMetric(family.name.removesuffix("_total"), family.help, "counter")
    else:
        metric = PromMetric(family.name, family.help, family.type)
    for sample in family.samples:
        labels = dict(sample.labels)
        if isinstance(sample, NumberSample):
            metric.add_sample(family.name, labels, sample.value)
        elif isinstance(sample, HistogramSample):
            for bound, count in sample.buckets:
                metric.add_sample(
                    family.name + "_bucket",
                    {**labels, "le": floatToGoString(bound)},  # type: ignore[no-untyped-call]
                    count,
                )
            metric.add_sample(family.name + "_count", labels, sample.count)
            metric.add_sample(family.name + "_sum", labels, sample.sum)
    return metric


class _LatestCycle:
    """prometheus_client collector over the families of the latest cycle."""

    def __init__(self) -> None:
        self.families: tuple[Family, ...] = ()

    def collect(self) -> Iterator[PromMetric]:
        for family in self.families:  # one read of an immutable tuple: a whole cycle
            yield to_prometheus_client(family)


class PrometheusExporter:
    """Serves the aggregates on ``endpoint``; binds in :meth:`start`."""

    def __init__(self, settings: ComponentSettings, config: PrometheusExporterConfig) -> None:
        self.settings = settings
        self.config = config
        self._exposition = Exposition(config.const_labels)
        self._collector = _LatestCycle()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``:0``); 0 before start."""
        return int(self._server.server_address[1]) if self._server is not None else 0

    def wanted_families(self) -> FamilySet:
        return frozenset()

    async def start(self, host: Host) -> None:
        if self._server is not None:
            return
        address, port = parse_endpoint(self.config.endpoint, DEFAULT_ENDPOINT)
        try:
            self._server, self._thread = start_http_server(
                port, addr=address, registry=self._registry
            )
        except OSError as exc:
            raise ComponentError(
                f"cannot serve metrics on endpoint {self.config.endpoint}: "
                f"{exc.strerror or exc}", str(self.settings.id),
            ) from exc
        self.settings.logger.info(
            "serving cluster metrics for Prometheus on %s (port %d)", self.config.endpoint,
            self.port, extra={"component": str(self.settings.id)},
        )

    async def consume(self, batch: Batch) -> None:
        self._collector.families = self._exposition.update(batch)

    async def shutdown(self) -> None:
        """Stop serving (idempotent; safe without start). Nothing is buffered to flush."""
        server, self._server = self._server, None
        if server is None:
            return
        # shutdown() waits for serve_forever's loop to notice (up to its 0.5s poll): in a thread.
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None
