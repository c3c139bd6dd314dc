"""``prometheus`` exporter: the cluster aggregates on an HTTP endpoint for Prometheus to scrape."""

from ._plan import ServedFamily, served_families
from .config import PrometheusExporterConfig
from .exporter import PrometheusExporter
from .factory import PrometheusExporterFactory, factory

__all__ = [
    "PrometheusExporter",
    "PrometheusExporterConfig",
    "PrometheusExporterFactory",
    "ServedFamily",
    "factory",
    "served_families",
]
