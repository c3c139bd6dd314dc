"""The ``otlp`` exporter: the exporter helper's queue in front of the SDK's OTLP exporter.

``protocol`` picks ``opentelemetry.exporter.otlp.proto.grpc``'s or ``.proto.http``'s
``OTLPMetricExporter``. Their ``export()`` blocks and already retries what is retryable (gRPC
codes, HTTP 429/502/503/504, connection errors) with backoff, honouring the server's delay, all
within ``timeout``; then returns SUCCESS or FAILURE. So we:

- build the SDK exporter (:mod:`._client`) at start, convert the batch with :mod:`._convert` and
  call ``export()`` through ``asyncio.to_thread``;
- are a :class:`pipeline.exporterhelper.QueuedExporter` (bounded, drop-oldest queue, workers) with
  *our* retry disabled, because a second retry loop would stack on theirs;
- count a FAILURE as given up: logged and counted in ``exporter_failed_datapoints_total``.

The request converter makes one request per batch: (batch, cumulative snapshot, point count)
rather than the bare batch: with ``temporality: cumulative`` the running totals are taken when a
batch is accepted, so a request dropped later loses no increase.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporters._aws_identity import resolve_cluster_id, resolve_region
from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
    PermanentExportError,
)
from pipeline.exporterhelper import QueuedExporter, RequestConverter, RetrySettings

from ._client import SdkExporterFactory, build_sdk_exporter
from ._convert import Running, RunningTotals, SeriesKey, count_points, to_metrics_data
from .config import OtlpExporterConfig

SERVICE_NAME = "cni-pipeline"
#: How much longer than the SDK's own deadline our per-request timeout waits. The SDK ends an
#: export at ``timeout``; ours only catches a thread that somehow outlives it.
_TIMEOUT_SLACK = 5.0
#: Shutdown grace beyond one export's timeout: room to send the batch in flight and the last one.
_GRACE_SLACK = 2.0


def _version() -> str:
    try:
        return importlib.metadata.version("cni-pipeline")
    except importlib.metadata.PackageNotFoundError:
        return ""


def cluster_resource(
    cluster_id: str, region: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The cluster resource's attributes (semantic-convention names), ``extra`` laid over them."""
    attrs = {"service.name": SERVICE_NAME, "cloud.provider": "aws", "k8s.cluster.name": cluster_id}
    if region:
        attrs["cloud.region"] = region
    attrs.update(extra or {})
    return attrs


@dataclass(frozen=True, slots=True)
class _Request:
    """What the sending queue holds: a batch, its cumulative totals, and its point count."""

    batch: Batch
    running: Mapping[SeriesKey, Running] | None
    points: int


class OtlpExporter(QueuedExporter[_Request]):
    """Sends each batch's aggregates (and, with ``per_target``, the scraped series) over OTLP."""

    def __init__(
        self,
        settings: ComponentSettings,
        config: OtlpExporterConfig,
        *,
        sdk_exporter_factory: SdkExporterFactory = build_sdk_exporter,
    ) -> None:
        self.config = config
        self._log = settings.logger
        self._make_sdk = sdk_exporter_factory
        self._sdk: MetricExporter | None = None
        self._totals = RunningTotals() if config.temporality == "cumulative" else None
        self._families = frozenset(config.per_target_families) or None
        self.resource: dict[str, str] = {}
        self._scope = InstrumentationScope("cni-pipeline", _version() or None)
        self.endpoint = config.resolved_endpoint()
        super().__init__(
            settings, self._push,
            converter=RequestConverter(convert=self._to_request,
                                       items_of=lambda request: request.points),
            queue=config.sending_queue,
            retry=RetrySettings(enabled=False),
            timeout=float(config.timeout) + _TIMEOUT_SLACK,
            shutdown_grace=float(config.timeout) + _GRACE_SLACK,
            on_start=self._open, on_shutdown=self._close,
            # The scraped families per_target forwards (None: every family).
            wanted_families=self._families if config.per_target else frozenset(),
        )

    async def _open(self) -> None:
        """Resolve region and cluster ID (may ask IMDS/EC2, in a thread) and build the SDK exporter
        (which only creates its channel or session: no connection yet). The helper then starts
        the workers."""
        region = await asyncio.to_thread(resolve_region, self.config.region, logger=self._log)
        cluster = await asyncio.to_thread(
            resolve_cluster_id, self.config.cluster_id, region=region, logger=self._log
        )
        self.resource = cluster_resource(cluster, region, self.config.resource_attributes)
        try:
            self._sdk = self._make_sdk(self.config)
        except ComponentError as exc:
            raise ComponentError(str(exc), str(self.settings.id)) from exc
        self._log.info(
            "exporting over OTLP (%s) to %s, %s temporality, cluster %s",
            self.config.protocol, self.endpoint, self.config.temporality, cluster,
            extra={"component": str(self.settings.id)},
        )

    def _to_request(self, batch: Batch) -> tuple[_Request]:
        """The converter: one request per batch, its running totals taken as it is accepted."""
        running = self._totals.add(batch) if self._totals is not None else None
        points = count_points(batch, per_target=self.config.per_target, families=self._families)
        return (_Request(batch, running, points),)

    async def _close(self) -> None:
        """Once the queue has drained: shut the SDK exporter down, which also aborts a retry
        backoff still sleeping in its thread."""
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            await asyncio.to_thread(sdk.shutdown)

    # -- sending ----------------------------------------------------------------------------

    async def _push(self, request: _Request) -> None:
        sdk = self._sdk
        if sdk is None:
            raise PermanentExportError("exporter not started", str(self.settings.id))
        result = await asyncio.to_thread(self._export, sdk, request)
        if result is not MetricExportResult.SUCCESS:
            # The SDK retried already and logged why it gave up; never retried again here.
            raise PermanentExportError(
                f"OTLP export to {self.endpoint} failed (the SDK exporter's retries within "
                f"timeout {self.config.timeout} are spent; its log has the cause)",
                str(self.settings.id),
            )

    def _export(self, sdk: MetricExporter, request: _Request) -> MetricExportResult:
        """Runs in a worker thread: conversion (heavy with per_target) and the blocking send."""
        data = to_metrics_data(
            request.batch,
            resource=self.resource,
            scope=self._scope,
            running=request.running,
            per_target=self.config.per_target,
            families=self._families,
            default_start=self.settings.started_at,
        )
        return sdk.export(data, timeout_millis=float(self.config.timeout) * 1000)
