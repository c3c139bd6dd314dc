"""``awscloudwatch`` exporter: cluster metrics to CloudWatch with PutMetricData."""

from .config import CloudWatchExporterConfig
from .exporter import CloudWatchExporter
from .factory import CloudWatchExporterFactory, factory

__all__ = ["CloudWatchExporter", "CloudWatchExporterConfig", "CloudWatchExporterFactory", "factory"]
