"""The ``otlp`` exporter's factory, registered under ``cni_pipeline.exporters``."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import ClusterShape, ComponentSettings, Kind, Metric

from .config import OtlpExporterConfig
from .exporter import OtlpExporter


class OtlpExporterFactory:
    type = "otlp"
    kind = Kind.EXPORTER

    def default_config(self) -> OtlpExporterConfig:
        return OtlpExporterConfig()

    def create(self, settings: ComponentSettings, config: OtlpExporterConfig) -> OtlpExporter:
        return OtlpExporter(settings, config)

    def describe_plan(
        self, config: OtlpExporterConfig, metrics: Sequence[Metric], shape: ClusterShape
    ) -> list[str]:
        """What ``validate`` tells the user this exporter would send (no network call)."""
        lines = [
            f"sends {len(metrics)} data points per cycle (every {shape.interval:g}s) over OTLP "
            f"({config.protocol}) to {config.resolved_endpoint()}, {config.temporality} "
            "temporality for counters and histograms"
        ]
        if config.per_target:
            which = (", ".join(config.per_target_families) if config.per_target_families
                     else "every scraped family")
            lines.append(
                f"per_target: also {shape.nodes} node resources per cycle with {which} "
                "(roughly 100-300 data points per node on aws-node pages)"
            )
        return lines


factory = OtlpExporterFactory()
