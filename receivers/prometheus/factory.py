"""The ``prometheus`` receiver's factory, registered under the entry point
``cni_pipeline.receivers: prometheus``."""

from __future__ import annotations

from typing import ClassVar

from pipeline import ComponentSettings, Kind, MetricsConsumer, Receiver

from .config import PrometheusReceiverConfig
from .receiver import PrometheusReceiver


class PrometheusReceiverFactory:
    """Creates ``prometheus`` receivers; ``default_config`` has no side effects."""

    type: ClassVar[str] = "prometheus"
    kind: ClassVar[Kind] = Kind.RECEIVER

    def default_config(self) -> PrometheusReceiverConfig:
        return PrometheusReceiverConfig()

    def create(
        self,
        settings: ComponentSettings,
        config: PrometheusReceiverConfig,
        next_consumer: MetricsConsumer,
    ) -> Receiver:
        return PrometheusReceiver(settings, config, next_consumer)

    def cycle_interval(self, config: PrometheusReceiverConfig) -> float:
        """Seconds between this receiver's batches (its ``scrape_interval``): ``validate`` and the
        forecasts price and plan a pipeline at its receivers' pace."""
        return float(config.scrape_interval)


factory = PrometheusReceiverFactory()
