"""The ``awscloudwatch`` exporter's factory, registered under ``cni_pipeline.exporters``."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import ClusterShape, ComponentSettings, Kind, Metric

from ._plan import describe_plan
from .config import CloudWatchExporterConfig
from .exporter import CloudWatchExporter


class CloudWatchExporterFactory:
    type = "awscloudwatch"
    kind = Kind.EXPORTER

    def default_config(self) -> CloudWatchExporterConfig:
        return CloudWatchExporterConfig()

    def create(
        self, settings: ComponentSettings, config: CloudWatchExporterConfig
    ) -> CloudWatchExporter:
        return CloudWatchExporter(settings, config)

    def describe_plan(
        self, config: CloudWatchExporterConfig, metrics: Sequence[Metric], shape: ClusterShape
    ) -> list[str]:
        """What ``validate`` prints: metrics created and the monthly cost (no network call)."""
        return describe_plan(config, metrics, shape)


factory = CloudWatchExporterFactory()
