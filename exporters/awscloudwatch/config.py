"""Config of the ``awscloudwatch`` exporter (defaults are the field defaults)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import ComponentConfig, Duration
from pipeline.exporterhelper import RetrySettings

DEFAULT_NAMESPACE = "Kubernetes"
DEFAULT_FLUSH_INTERVAL = Duration(60)
#: Enough for 100 full requests: a cycle of 2,500 group-by metrics held through 40 minutes of a
#: CloudWatch outage.
DEFAULT_MAX_DATUMS_HELD = 100_000
DEFAULT_CONCURRENT_REQUESTS = 2
#: A read timeout long enough that a slow but successful PutMetricData is not cut and re-sent
#: (which could store it twice); see the README on ambiguous failures.
DEFAULT_READ_TIMEOUT = Duration(30)
DEFAULT_CONNECT_TIMEOUT = Duration(5)
DEFAULT_SHUTDOWN_GRACE = Duration(10)


@dataclass(frozen=True, kw_only=True)
class CloudWatchExporterConfig(ComponentConfig):
    """``exporters.awscloudwatch``.

    ``cluster_id`` / ``region`` empty = discovered (``AWS_CLUSTER_ID`` / EC2 tags, ``AWS_REGION``
    / IMDSv2). ``endpoint_url`` empty = boto3's own choice (``AWS_ENDPOINT_URL_CLOUDWATCH``,
    ``AWS_ENDPOINT_URL``, else the regional endpoint). ``send_derived`` sends every derived metric
    (available IPs, utilisation...); ``derived_metrics`` names the ones to send when it is off.
    ``max_datums_held`` bounds the datums waiting to be sent (the oldest go first when full).
    """

    namespace: str = DEFAULT_NAMESPACE
    cluster_id: str = ""
    region: str = ""
    endpoint_url: str = ""
    flush_interval: Duration = DEFAULT_FLUSH_INTERVAL
    storage_resolution: int = 60
    send_derived: bool = False
    derived_metrics: list[str] = field(default_factory=list)
    max_datums_held: int = DEFAULT_MAX_DATUMS_HELD
    max_concurrent_requests: int = DEFAULT_CONCURRENT_REQUESTS
    compression: bool = True
    connect_timeout: Duration = DEFAULT_CONNECT_TIMEOUT
    read_timeout: Duration = DEFAULT_READ_TIMEOUT
    shutdown_grace: Duration = DEFAULT_SHUTDOWN_GRACE
    retry_on_failure: RetrySettings = field(default_factory=RetrySettings)

    def validate(self) -> Iterable[tuple[str, str]]:
        if not 1 <= len(self.namespace) <= 255 or self.namespace.startswith("AWS/"):
            yield "namespace", "must be 1 to 255 characters and not start with 'AWS/'"
        if self.storage_resolution not in (1, 60):
            yield "storage_resolution", "must be 1 (high resolution) or 60"
        if self.flush_interval <= 0:
            yield "flush_interval", "must be positive"
        if self.max_datums_held < 1000:
            yield "max_datums_held", "must be at least 1000 (one full PutMetricData request)"
        if self.max_concurrent_requests < 1:
            yield "max_concurrent_requests", "must be at least 1"
        if self.connect_timeout <= 0:
            yield "connect_timeout", "must be positive"
        if self.read_timeout <= 0:
            yield "read_timeout", "must be positive"
        if self.shutdown_grace < 0:
            yield "shutdown_grace", "must not be negative"
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            yield "endpoint_url", "must start with http:// or https://"
