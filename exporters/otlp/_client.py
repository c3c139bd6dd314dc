"""The OpenTelemetry SDK's OTLP metric exporter (gRPC or HTTP), built from our config.

The SDK exporter is this component's client: it encodes, compresses and sends, and retries what
is retryable within ``timeout`` (see :mod:`.exporter` for why ours does not retry on top).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from opentelemetry.sdk.metrics.export import MetricExporter

from pipeline.configtls import FILE_KEYS

from .config import OtlpExporterConfig

#: Builds the SDK exporter from our config (tests may pass their own).
SdkExporterFactory = Callable[[OtlpExporterConfig], MetricExporter]


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
        session=_ca_file_session() if config.tls.ca_file else None,
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


def _ca_file_session() -> Any:
    """A requests session that keeps ``tls.ca_file``.

    The SDK sets the CA file as the session's ``verify``, but requests lets ``REQUESTS_CA_BUNDLE``
    / ``CURL_CA_BUNDLE`` from the environment override a session's ``verify`` (requests issue
    3829), and many images set them: the configured CA was then ignored and every send failed
    certificate verification. Proxies and the rest of the environment still apply.
    """
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                       cert: Any) -> Any:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if verify is None and isinstance(self.verify, str):
                settings["verify"] = self.verify
            return settings

    return Session()
