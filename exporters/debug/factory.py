"""The ``debug`` exporter's factory, registered under ``cni_pipeline.exporters``."""

from __future__ import annotations

from pipeline import ComponentSettings, Kind

from .config import DebugExporterConfig
from .exporter import DebugExporter


class DebugExporterFactory:
    type = "debug"
    kind = Kind.EXPORTER

    def default_config(self) -> DebugExporterConfig:
        return DebugExporterConfig()

    def create(self, settings: ComponentSettings, config: DebugExporterConfig) -> DebugExporter:
        return DebugExporter(settings, config)


factory = DebugExporterFactory()
