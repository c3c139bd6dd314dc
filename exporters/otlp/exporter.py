"""The ``otlp`` exporter: our sending queue in front of the OpenTelemetry SDK's OTLP exporter.

``protocol`` picks ``opentelemetry.exporter.otlp.proto.grpc``'s or ``.proto.http``'s
``OTLPMetricExporter``. Their ``export()`` blocks and already retries what is retryable (gRPC
codes, HTTP 429/502/503/504, connection errors) with backoff, honouring the server's delay, all
within ``timeout``; then returns SUCCESS or FAILURE. So we:

- convert the batch with :mod:`._convert` and call ``export()`` through ``asyncio.to_thread``;
- put :class:`pipeline.exporterhelper.SendingQueue` in front (bounded, drop-oldest, workers) with
  *our* retry disabled, because a second retry loop would stack on theirs;
- count a FAILURE as given up: logged and counted in ``exporter_failed_datapoints_total``.

The queued request is (batch, cumulative snapshot) rather than the bare batch
(``QueuedExporter``'s request type): with ``temporality: cumulative`` the running totals are
taken when a batch is accepted, so a request dropped later loses no increase.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
    FamilySet,
    Host,
    PermanentExportError,
)
from pipeline.aws import resolve_cluster_id, resolve_region
from pipeline.configtls import FILE_KEYS
from pipeline.exporterhelper import RetrySettings, SendingQueue

from ._convert import Running, RunningTotals, SeriesKey, count_points, to_metrics_data
from .config import OtlpExporterConfig

SERVICE_NAME = "cni-pipeline"
#: How much longer than the SDK's own deadline our per-request timeout waits. The SDK ends an
#: export at ``timeout``; ours only catches a thread that somehow outlives it.
_TIMEOUT_SLACK = 5.0
#: Shutdown grace beyond one export's timeout: room to send the batch in flight and the last one.
_GRACE_SLACK = 2.0

#: Builds the SDK exporter from our config (tests may pass their own).
SdkExporterFactory = Callable[[OtlpExporterConfig], MetricExporter]


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


def build_grpc_exporter(config: OtlpExporterConfig) -> MetricExporter:
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    endpoint = config.resolved_endpoint()
    scheme = urlparse(endpoint).scheme if "://" in endpoint else ""
    insecure = scheme == "http" or (config.tls.insecure and scheme != "https")
    credentials = None
    if not insecure:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=config.tls.read("ca_file"),
            private_key=config.tls.read("key_file"),
            certificate_chain=config.tls.read("cert_file"),
        )
    compression = {
        "gzip": grpc.Compression.Gzip,
        "deflate": grpc.Compression.Deflate,
        "none": grpc.Compression.NoCompression,
    }[config.compression]
    return OTLPMetricExporter(
        endpoint=endpoint,
        insecure=insecure,
        credentials=credentials,
        # gRPC metadata keys must be lower case (the Collector lower-cases them too).
        headers={key.lower(): value for key, value in config.headers.items()},
        timeout=float(config.timeout),
        compression=compression,
    )


def build_http_exporter(config: OtlpExporterConfig) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    for key in FILE_KEYS:
        config.tls.read(key)  # fail at start, naming the key, not at first send
    return OTLPMetricExporter(
        endpoint=config.resolved_endpoint(),
        certificate_file=config.tls.ca_file or None,
        client_key_file=config.tls.key_file or None,
        client_certificate_file=config.tls.cert_file or None,
        headers=dict(config.headers),
        timeout=float(config.timeout),
        compression=Compression(config.compression),
    )


def build_sdk_exporter(config: OtlpExporterConfig) -> MetricExporter:
    if config.protocol == "grpc":
        return build_grpc_exporter(config)
    return build_http_exporter(config)


@dataclass(frozen=True, slots=True)
class _Request:
    """What the sending queue holds: a batch, its cumulative totals, and its point count."""

    batch: Batch
    running: Mapping[SeriesKey, Running] | None
    points: int


class OtlpExporter:
    """Sends each batch's aggregates (and, with ``per_target``, the scraped series) over OTLP."""

    def __init__(
        self,
        settings: ComponentSettings,
        config: OtlpExporterConfig,
        *,
        sdk_exporter_factory: SdkExporterFactory = build_sdk_exporter,
    ) -> None:
        self.settings = settings
        self.config = config
        self._log = settings.logger
        self._make_sdk = sdk_exporter_factory
        self._sdk: MetricExporter | None = None
        self._totals = RunningTotals() if config.temporality == "cumulative" else None
        self._families = frozenset(config.per_target_families) or None
        self.resource: dict[str, str] = {}
        self._scope = InstrumentationScope("cni-pipeline", _version() or None)
        self._started = False
        self._stopped = False
        self.endpoint = config.resolved_endpoint()
        self._sender: SendingQueue[_Request] = SendingQueue(
            settings,
            self._push,
            items_of=lambda request: request.points,
            queue=config.sending_queue,
            retry=RetrySettings(enabled=False),
            timeout=float(config.timeout) + _TIMEOUT_SLACK,
            shutdown_grace=float(config.timeout) + _GRACE_SLACK,
        )

    def wanted_families(self) -> FamilySet:
        if not self.config.per_target:
            return frozenset()
        return self._families  # None: every family

    async def start(self, host: Host) -> None:
        """Resolve region and cluster ID (may ask IMDS/EC2, in a thread), build the SDK exporter
        (which only creates its channel or session: no connection yet), start the workers."""
        if self._started:
            return
        region = await asyncio.to_thread(resolve_region, self.config.region, logger=self._log)
        cluster = await asyncio.to_thread(
            resolve_cluster_id, self.config.cluster_id, region=region, logger=self._log
        )
        self.resource = cluster_resource(cluster, region, self.config.resource_attributes)
        try:
            self._sdk = self._make_sdk(self.config)
        except ComponentError as exc:
            raise ComponentError(str(exc), str(self.settings.id)) from exc
        self._started = True
        self._log.info(
            "exporting over OTLP (%s) to %s, %s temporality, cluster %s",
            self.config.protocol, self.endpoint, self.config.temporality, cluster,
            extra={"component": str(self.settings.id)},
        )
        await self._sender.start(host)

    async def consume(self, batch: Batch) -> None:
        running = self._totals.add(batch) if self._totals is not None else None
        points = count_points(batch, per_target=self.config.per_target, families=self._families)
        await self._sender.offer(_Request(batch, running, points))

    async def shutdown(self) -> None:
        """Drain the queue (within the grace), then shut the SDK exporter down, which also
        aborts a retry backoff still sleeping in its thread. Idempotent; safe without start."""
        if self._stopped:
            return
        self._stopped = True
        await self._sender.shutdown()
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
