"""Factory of the ``ip_forecast`` processor (registered by entry point, like any plugin)."""

from __future__ import annotations

from typing import ClassVar

from pipeline import ComponentConfig, ComponentSettings, ConfigError, Kind, MetricsConsumer

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
        problems = list(config.validate())
        if problems:  # the engine validates first; this guards direct callers
            raise ConfigError(f"processors.{settings.id}", problems)
        return IpForecastProcessor(settings, config, next_consumer)


factory = IpForecastFactory()
