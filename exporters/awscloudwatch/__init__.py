"""``awscloudwatch`` exporter: cluster metrics to CloudWatch with PutMetricData."""

from ._plan import PublishedSeries, published_series
from .config import CloudWatchExporterConfig
from .exporter import CloudWatchExporter
from .factory import CloudWatchExporterFactory, factory

__all__ = [
    "CloudWatchExporter",
    "CloudWatchExporterConfig",
    "CloudWatchExporterFactory",
    "PublishedSeries",
    "factory",
    "published_series",
]
