"""The ``debug`` exporter: logs each cycle's aggregates in the Go helper's words."""

from .factory import DebugExporter, DebugExporterConfig, DebugExporterFactory, factory

__all__ = ["DebugExporter", "DebugExporterConfig", "DebugExporterFactory", "factory"]
