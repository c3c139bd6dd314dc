"""The ``awscloudwatch`` exporter: cycles in, coalesced PutMetricData requests out.

A :class:`pipeline.exporterhelper.QueuedExporter` whose request converter turns a cycle's metrics
into datums stamped with the cycle's time and packs them into a pending request; a full request
(1000 datums or ~1 MB) goes to the sending queue at once, the rest waits for the helper's flush
(every ``flush_interval``), so several cycles share one request. The sending queue, sized in datums
by ``max_datums_held``, keeps failed requests and retries them with backoff; it drops the oldest
only when full, and counts what it drops. Shutdown sends what is pending and drains the queue
within ``shutdown_grace``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from exporters._aws_identity import resolve_cluster_id, resolve_region
from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
)
from pipeline.exporterhelper import QueuedExporter, QueueSettings, RequestConverter

from ._client import make_client, map_error
from ._convert import Conversion, DatumOptions, PutRequest, RequestBuilder, to_datums
from .config import CloudWatchExporterConfig

ClientFactory = Callable[[CloudWatchExporterConfig, str], Any]

#: Our own per-attempt deadline sits this far past botocore's connect + read timeouts, so that
#: botocore's timeout (which we can classify) fires first, and ours only catches a hung thread.
_ATTEMPT_MARGIN = 10.0


class CloudWatchExporter(QueuedExporter[PutRequest]):
    """Publishes a pipeline's metrics with PutMetricData (see the module docstring)."""

    def __init__(
        self,
        settings: ComponentSettings,
        config: CloudWatchExporterConfig,
        *,
        client_factory: ClientFactory = make_client,
    ) -> None:
        self.config = config
        self._log = settings.logger
        self._client_factory = client_factory
        self._client: Any = None
        self._builder = RequestBuilder()
        self._options: DatumOptions | None = None
        self.region = ""
        self.cluster_id = ""
        self._warned_units: set[str] = set()
        label = {"exporter": str(settings.id)}
        self._invalid = settings.telemetry.counter(
            "exporter_invalid_datapoints_total",
            "Values left out because the backend cannot store them (NaN, infinite, out of range).",
            ("exporter",),
        ).labels(**label)
        attempt_timeout = float(config.connect_timeout + config.read_timeout) + _ATTEMPT_MARGIN
        super().__init__(
            settings, self._push,
            converter=RequestConverter(
                convert=self._to_requests, flush=self._pending, items_of=len, size_of=len,
                flush_interval=float(config.flush_interval),
            ),
            queue=QueueSettings(num_consumers=config.max_concurrent_requests,
                                queue_size=config.max_datums_held),
            retry=config.retry_on_failure, timeout=attempt_timeout,
            shutdown_grace=float(config.shutdown_grace),
            on_start=self._open, on_shutdown=self._close,
        )

    # -- lifecycle (the helper starts the queue and the flush timer after _open) --------------

    async def _open(self) -> None:
        """Find the region and cluster ID and build the client."""
        self.region = await asyncio.to_thread(resolve_region, self.config.region,
                                              logger=self._log)
        if not self.region:
            raise ComponentError(
                "no AWS region: set region in the exporter's config or AWS_REGION, or run where "
                "the instance metadata service (IMDSv2) answers", str(self.settings.id)
            )
        self.cluster_id = await asyncio.to_thread(
            resolve_cluster_id, self.config.cluster_id, region=self.region, logger=self._log
        )
        self._log.info("Using REGION=%s and CLUSTER_ID=%s", self.region, self.cluster_id)
        self._client = await asyncio.to_thread(self._client_factory, self.config, self.region)
        self._options = DatumOptions(
            cluster_id=self.cluster_id,
            storage_resolution=self.config.storage_resolution,
            send_derived=self.config.send_derived,
            derived_names=frozenset(self.config.derived_metrics),
        )

    async def _close(self) -> None:
        """Close the client, once the queue has drained."""
        if self._client is not None:
            await asyncio.to_thread(self._client.close)

    # -- consuming: the request converter ---------------------------------------------------

    async def consume(self, batch: Batch) -> None:
        if not self.running:
            # Datums need the cluster ID found at start; the engine starts exporters before
            # anything feeds them, so this is a misuse.
            self._log.warning("awscloudwatch: batch of cycle %s arrived while not running; "
                              "dropped %d metrics", batch.cycle.index, len(batch.metrics))
            self.settings.telemetry.counter(
                "exporter_dropped_datapoints_total", "", ("exporter",)
            ).labels(exporter=str(self.settings.id)).inc(len(batch.metrics))
            return
        await super().consume(batch)

    def _to_requests(self, batch: Batch) -> list[PutRequest]:
        """The cycle's datums added to the pending request; the requests that filled up."""
        assert self._options is not None  # consume refuses batches before start
        conversion = to_datums(batch.metrics, batch.cycle.time, self._options)
        self._note_rejected(conversion)
        full = (self._builder.add(datum) for datum in conversion.datums)
        return [request for request in full if request is not None]

    def _pending(self) -> tuple[PutRequest, ...]:
        """The pending request, taken (the helper's flush: timer and shutdown)."""
        request = self._builder.take()
        return () if request is None else (request,)

    def _note_rejected(self, conversion: Conversion) -> None:
        if conversion.rejected:
            self._invalid.inc(len(conversion.rejected))
            shown = "; ".join(
                f"{r.name}{dict(r.attributes) if r.attributes else ''}: {r.reason}"
                for r in conversion.rejected[:10]
            )
            more = len(conversion.rejected) - 10
            self._log.warning("left out %d value(s) CloudWatch cannot store: %s%s",
                              len(conversion.rejected), shown,
                              f" (and {more} more)" if more > 0 else "")
        for unit in conversion.unknown_units - self._warned_units:
            self._warned_units.add(unit)
            self._log.warning("unit %r is not a CloudWatch unit; sending Unit=None instead", unit)

    # -- sending ----------------------------------------------------------------------------

    async def _push(self, request: PutRequest) -> None:
        await asyncio.to_thread(self._put, request)

    def _put(self, request: PutRequest) -> None:
        """One PutMetricData call (in a worker thread), its errors mapped to ours."""
        try:
            self._client.put_metric_data(
                Namespace=self.config.namespace, MetricData=list(request.datums)
            )
        except Exception as exc:  # noqa: BLE001 - mapped, then re-raised
            mapped = map_error(exc, self.config.namespace)
            if mapped is exc:
                raise
            raise mapped from exc
