"""Config of the ``ip_forecast`` processor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import ComponentConfig, Duration

#: Hours are not a CloudWatch unit; the metric's name says it.
HOURS_UNIT = "None"


@dataclass(frozen=True, kw_only=True)
class ForecastConfig:
    """One forecast: the metric it publishes and the series it reads, either ``used`` against
    ``capacity`` (IPs assigned vs IPs the nodes can hold) or ``available`` alone (a subnet's free
    addresses). Each series of the input, by its attributes, gets its own forecast."""

    metric: str = ""
    used: str = ""
    capacity: str = ""
    available: str = ""

    def problems(self) -> Iterable[tuple[str, str]]:
        if not self.metric:
            yield "metric", "is required: the name of the metric to publish"
        if self.available and (self.used or self.capacity):
            yield "available", "give either available, or used and capacity, not both"
        elif not self.available and not (self.used and self.capacity):
            yield "used", "give used and capacity (both), or available"


def default_forecasts() -> list[ForecastConfig]:
    return [
        ForecastConfig(metric="ipExhaustionHours", used="assignIPAddresses",
                       capacity="maxIPAddresses"),
        ForecastConfig(metric="subnetExhaustionHours", available="subnetAvailableIPs"),
    ]


@dataclass(frozen=True, kw_only=True)
class IpForecastConfig(ComponentConfig):
    #: How much history the trend is fitted over; nothing is published until it is full.
    window: Duration = Duration(3600)
    #: A forecast further out than this is not published (the trend is as good as flat).
    max_horizon: Duration = Duration(30 * 24 * 3600)
    forecasts: list[ForecastConfig] = field(default_factory=default_forecasts)

    def validate(self) -> Iterable[tuple[str, str]]:
        if float(self.window) <= 0:
            yield "window", "must be positive (like 1h)"
        if float(self.max_horizon) <= 0:
            yield "max_horizon", "must be positive (like 720h)"
        seen: set[str] = set()
        for i, forecast in enumerate(self.forecasts):
            for key, message in forecast.problems():
                yield f"forecasts[{i}].{key}", message
            if forecast.metric in seen:
                yield f"forecasts[{i}].metric", f"{forecast.metric!r} is published twice"
            seen.add(forecast.metric)
