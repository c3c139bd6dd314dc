"""``otlp`` exporter: cluster aggregates (and optionally per-node series) over OTLP gRPC or HTTP."""

from .config import OtlpExporterConfig, TLSConfig
from .exporter import OtlpExporter
from .factory import OtlpExporterFactory, factory

__all__ = ["OtlpExporter", "OtlpExporterConfig", "OtlpExporterFactory", "TLSConfig", "factory"]
