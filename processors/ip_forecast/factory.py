"""Factory of the ``ip_forecast`` processor (registered by entry point, like any plugin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pipeline import (
    ClusterShape,
    ComponentConfig,
    ComponentSettings,
    ConfigError,
    Kind,
    Metric,
    MetricsConsumer,
    validate_config,
)

from ._forecast import planned_forecasts
from .config import IpForecastConfig
from .processor import IpForecastProcessor


class IpForecastFactory:
    type: ClassVar[str] = "ip_forecast"
    kind: ClassVar[Kind] = Kind.PROCESSOR

    def default_config(self) -> IpForecastConfig:
        return IpForecastConfig()

    def create(
        self, settings: ComponentSettings, config: ComponentConfig, next_consumer: MetricsConsumer
    ) -> IpForecastProcessor:
        if not isinstance(config, IpForecastConfig):
            raise TypeError(f"expected IpForecastConfig, got {type(config).__name__}")
        problems = validate_config(config)
        if problems:  # the engine validates first; this guards direct callers
            raise ConfigError(f"processors.{settings.id}", problems)
        return IpForecastProcessor(settings, config, next_consumer)

    def planned_metrics(
        self, config: ComponentConfig, shape: ClusterShape, upstream: Sequence[Metric] = ()
    ) -> list[Metric]:
        """What reached it, then a forecast for each series of its inputs among them (values 0):
        for ``validate``'s cost and the dashboards."""
        if not isinstance(config, IpForecastConfig):
            raise TypeError(f"expected IpForecastConfig, got {type(config).__name__}")
        return [*upstream, *planned_forecasts(list(config.forecasts), upstream,
                                                 float(config.window))]


factory = IpForecastFactory()
