"""Config of the ``otlp`` exporter, with the OpenTelemetry Collector's key names.

``endpoint``, ``protocol``, ``headers``, ``tls``, ``compression``, ``timeout`` and
``sending_queue`` mean what they mean in the Collector's ``otlp`` / ``otlphttp`` exporters. There is
no ``retry_on_failure``: the SDK exporter underneath already retries (backoff, ``RetryInfo``, within
``timeout``), and a second retry loop on top would multiply attempts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

from pipeline import ComponentConfig, Duration
from pipeline.configtls import ClientTLSConfig
from pipeline.exporterhelper import QueueSettings

#: Defaults, as named constants (the Collector's habit).
DEFAULT_GRPC_ENDPOINT = "localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_TIMEOUT = Duration(10)
METRICS_PATH = "/v1/metrics"

OtlpProtocol = Literal["grpc", "http/protobuf"]


#: ``tls:`` as in the Collector's ``configtls.ClientConfig``, shared with the other components. For
#: gRPC, ``insecure: true`` means plaintext; otherwise TLS is used unless the endpoint says
#: ``http://``. For HTTP the endpoint's scheme decides and ``insecure`` is ignored. ``ca_file``
#: verifies the server; ``cert_file`` + ``key_file`` authenticate the client.
TLSConfig = ClientTLSConfig


@dataclass(frozen=True, kw_only=True)
class OtlpExporterConfig(ComponentConfig):
    #: gRPC: ``host:port`` (or ``http(s)://host:port``). HTTP: the base URL; ``/v1/metrics`` is
    #: appended. Empty means the protocol's default (localhost:4317 / http://localhost:4318).
    endpoint: str = ""
    protocol: OtlpProtocol = "grpc"
    #: HTTP only: the full URL to POST to, instead of ``endpoint`` + ``/v1/metrics``.
    metrics_endpoint: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    tls: TLSConfig = field(default_factory=TLSConfig)
    compression: Literal["gzip", "deflate", "none"] = "gzip"
    #: The SDK exporter's deadline for one export, its retries included.
    timeout: Duration = DEFAULT_TIMEOUT
    sending_queue: QueueSettings = field(default_factory=QueueSettings)
    #: ``delta``: counters are the cycle's increase, start time = the previous cycle.
    #: ``cumulative``: running totals kept by this exporter since it started.
    temporality: Literal["delta", "cumulative"] = "delta"
    #: ``k8s.cluster.name``; empty: ``AWS_CLUSTER_ID``, else discovered as the CloudWatch
    #: exporter does.
    cluster_id: str = ""
    #: ``cloud.region``; empty: ``AWS_REGION``, else the instance metadata service.
    region: str = ""
    #: Extra resource attributes (e.g. ``deployment.environment``), laid over the defaults.
    resource_attributes: dict[str, str] = field(default_factory=dict)
    #: Also forward every scraped per-node series, one resource per target.
    per_target: bool = False
    #: With ``per_target``: forward only these families (empty = every family scraped).
    per_target_families: list[str] = field(default_factory=list)

    def resolved_endpoint(self) -> str:
        """The endpoint the SDK exporter is given: for HTTP, the full metrics URL."""
        if self.protocol == "grpc":
            return self.endpoint or DEFAULT_GRPC_ENDPOINT
        if self.metrics_endpoint:
            return self.metrics_endpoint
        return (self.endpoint or DEFAULT_HTTP_ENDPOINT).rstrip("/") + METRICS_PATH

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.timeout <= 0:
            yield "timeout", "must be positive"
        if self.tls.insecure_skip_verify:
            yield ("tls.insecure_skip_verify",
                   "not supported by the OTLP exporters (they always verify the server)")
        if self.per_target_families and not self.per_target:
            yield "per_target_families", "only applies with per_target: true"
        if self.protocol == "grpc":
            yield from self._validate_grpc()
        else:
            yield from self._validate_http()

    def _validate_grpc(self) -> Iterable[tuple[str, str]]:
        if self.metrics_endpoint:
            yield "metrics_endpoint", "only applies to protocol http/protobuf"
        scheme = urlparse(self.endpoint).scheme if "://" in self.endpoint else ""
        if scheme not in ("", "http", "https"):
            yield "endpoint", f"scheme {scheme!r} not supported (use host:port or http(s)://)"
        if scheme == "https" and self.tls.insecure:
            yield "tls.insecure", "contradicts the endpoint's https:// scheme"

    def _validate_http(self) -> Iterable[tuple[str, str]]:
        for key, url in (("endpoint", self.endpoint), ("metrics_endpoint", self.metrics_endpoint)):
            if url and urlparse(url).scheme not in ("http", "https"):
                yield key, f"must be an http:// or https:// URL for protocol http/protobuf: {url!r}"
