"""The ``prometheus`` exporter's factory, registered under ``cni_pipeline.exporters``."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import ClusterShape, ComponentSettings, Kind, Metric

from ._convert import Exposition
from .config import PrometheusExporterConfig
from .exporter import PrometheusExporter


class PrometheusExporterFactory:
    type = "prometheus"
    kind = Kind.EXPORTER

    def default_config(self) -> PrometheusExporterConfig:
        return PrometheusExporterConfig()

    def create(
        self, settings: ComponentSettings, config: PrometheusExporterConfig
    ) -> PrometheusExporter:
        return PrometheusExporter(settings, config)

    def describe_plan(
        self, config: PrometheusExporterConfig, metrics: Sequence[Metric], shape: ClusterShape
    ) -> list[str]:
        """What ``validate`` tells the user (no network call, nothing bound)."""
        names = Exposition()  # names as the exporter gives them, a shared name told apart
        families = sorted({names.name_of(m) for m in metrics})
        return [
            f"serves {len(metrics)} series in {len(families)} families on "
            f"http://{config.endpoint}/metrics",
            "families: " + ", ".join(families),
        ]


factory = PrometheusExporterFactory()
