"""The ``ip_forecast`` processor: adds each cycle's exhaustion forecasts to the batch it hands on.

It reads metrics that a processor before it (``cni_aggregate``) or a receiver (``aws_subnets``)
put in the batch, never scraped families, so it asks the receiver for nothing of its own.
"""

from __future__ import annotations

from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
    FamilySet,
    Host,
    Metric,
    MetricsConsumer,
)

from ._forecast import Forecaster
from .config import IpForecastConfig


class IpForecastProcessor:
    def __init__(self, settings: ComponentSettings, config: IpForecastConfig,
                 next_consumer: MetricsConsumer) -> None:
        self._settings = settings
        self._log = settings.logger
        self._next = next_consumer
        self._config = config
        self._forecaster = Forecaster(list(config.forecasts), float(config.window),
                                      float(config.max_horizon))
        self._published: set[str] = set()
        self._closed = False
        self._series = settings.telemetry.gauge(
            "forecast_series_tracked", "Series whose recent history a forecast keeps.",
            ("processor",)).labels(str(settings.id))

    async def start(self, host: Host) -> None:
        self._log.info("forecasting %s over a %s window",
                       ", ".join(f.metric for f in self._config.forecasts), self._config.window)

    async def shutdown(self) -> None:
        """Idempotent; nothing is held for anyone downstream."""
        self._closed = True

    def wanted_families(self) -> FamilySet:
        # Nothing scraped of its own (it reads the aggregated metrics); the engine adds what
        # follows it.
        return frozenset()

    async def consume(self, batch: Batch) -> None:
        if self._closed:
            raise ComponentError("consume after shutdown", str(self._settings.id))
        forecasts = self._forecaster.observe(batch)
        self._series.set(len(self._forecaster))
        self._say_when_published(forecasts)
        await self._next.consume(batch.with_metrics(forecasts) if forecasts else batch)

    def _say_when_published(self, forecasts: list[Metric]) -> None:
        """One info line when a forecast is first published (a window has filled), so that an
        operator knows when to expect the metric."""
        for metric in forecasts:
            if metric.name not in self._published:
                self._published.add(metric.name)
                self._log.info("%s: first forecast, %.1f h", metric.name, metric.value)
