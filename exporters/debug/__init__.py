"""``debug`` exporter: logs each cycle's aggregates in the Go helper's words."""

from .config import DebugExporterConfig
from .exporter import DebugExporter
from .factory import DebugExporterFactory, factory

__all__ = ["DebugExporter", "DebugExporterConfig", "DebugExporterFactory", "factory"]
