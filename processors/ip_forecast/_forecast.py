"""Forecasts as pure state: each cycle's metrics in, hours until exhaustion out.

For each forecast and each attribute set its input carries (the cluster, a zone, a subnet), a
window of (cycle time, consumption) points is kept: ``used`` for a used/capacity pair, minus
``available`` for a pool read by what is left, so that in both cases consumption rises as
addresses run out. The slope is fitted over the window (:mod:`._fit`), and the remaining
addresses (``capacity - used``, or ``available``, at the latest cycle) divided by it.

Nothing is published for a series while its window is not yet full (a trend of minutes says
little about hours), while the trend is flat or falling (less than one address of rise over the
whole window), or when the answer lies beyond ``max_horizon``. A pool already empty reads 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline import Batch, Metric, MetricKind

from ._fit import Point, theil_sen_slope, thin
from .config import HOURS_UNIT, ForecastConfig

Attributes = tuple[tuple[str, str], ...]

#: A trend must rise by at least this many addresses over the window to be a trend.
MIN_RISE = 1.0


@dataclass
class _Series:
    points: deque[Point]
    latest_remaining: float = 0.0


class Forecaster:
    def __init__(self, forecasts: list[ForecastConfig], window: float, max_horizon: float):
        self._forecasts = forecasts
        self._window = window
        self._max_hours = max_horizon / 3600
        self._series: dict[tuple[str, Attributes], _Series] = {}

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, batch: Batch) -> list[Metric]:
        """Take one cycle's metrics; return the forecasts that can be published for it."""
        now = batch.cycle.time
        interval = max(now - batch.cycle.previous, 0.0)
        by_name: dict[str, dict[Attributes, float]] = {}
        for metric in batch.metrics:
            if metric.kind is MetricKind.GAUGE:
                by_name.setdefault(metric.name, {})[metric.attributes] = metric.value
        published = []
        for forecast in self._forecasts:
            for attributes, (consumed, remaining) in _readings(forecast, by_name).items():
                series = self._record(forecast.metric, attributes, now, consumed, remaining)
                hours = self._hours(series, now, interval)
                if hours is not None:
                    published.append(_metric(forecast, attributes, hours, self._window))
        self._forget(now)
        return published

    def _record(self, name: str, attributes: Attributes, now: float, consumed: float,
                remaining: float) -> _Series:
        series = self._series.get((name, attributes))
        if series is None:
            series = self._series[(name, attributes)] = _Series(deque())
        if series.points and series.points[-1][0] >= now:
            series.points.pop()  # the same cycle again (a replay): its latest reading wins
        series.points.append((now, consumed))
        series.latest_remaining = remaining
        while series.points[0][0] < now - self._window:
            series.points.popleft()
        return series

    def _hours(self, series: _Series, now: float, interval: float) -> float | None:
        points = series.points
        # Full: the oldest point is at the window's start, give or take half a cycle.
        if points[0][0] > now - self._window + interval / 2:
            return None
        if series.latest_remaining <= 0:
            return 0.0
        slope = theil_sen_slope(thin(list(points)))
        if slope is None or slope * self._window < MIN_RISE:
            return None
        hours = series.latest_remaining / (slope * 3600)
        return hours if hours <= self._max_hours else None

    def _forget(self, now: float) -> None:
        """Drop the series no cycle has carried for a whole window (a subnet or zone gone)."""
        gone = [key for key, s in self._series.items() if s.points[-1][0] < now - self._window]
        for key in gone:
            del self._series[key]


def planned_forecasts(forecasts: list[ForecastConfig], upstream: Sequence[Metric],
                      window: float) -> list[Metric]:
    """The forecasts a cycle carrying ``upstream`` could publish (values 0), one per series of
    each forecast's inputs."""
    by_name: dict[str, dict[Attributes, float]] = {}
    for metric in upstream:
        if metric.kind is MetricKind.GAUGE:
            by_name.setdefault(metric.name, {})[metric.attributes] = 0.0
    return [_metric(forecast, attributes, 0.0, window)
            for forecast in forecasts for attributes in _readings(forecast, by_name)]


def _readings(forecast: ForecastConfig, by_name: dict[str, dict[Attributes, float]]
              ) -> dict[Attributes, tuple[float, float]]:
    """(consumption, remaining) per attribute set, for the sets that have every input."""
    if forecast.available:
        return {attrs: (-value, value)
                for attrs, value in by_name.get(forecast.available, {}).items()}
    used, capacity = by_name.get(forecast.used, {}), by_name.get(forecast.capacity, {})
    return {attrs: (value, capacity[attrs] - value)
            for attrs, value in used.items() if attrs in capacity}


def _metric(forecast: ForecastConfig, attributes: Attributes, hours: float, window: float
            ) -> Metric:
    source = forecast.available or f"{forecast.used} and {forecast.capacity}"
    return Metric(
        name=forecast.metric,
        kind=MetricKind.GAUGE,
        value=hours,
        unit=HOURS_UNIT,
        attributes=attributes,
        description=(f"Hours until exhaustion at the trend of {source} over the last "
                     f"{window / 3600:g} h (a Theil-Sen fit); absent while the trend is flat or "
                     "falling and while the window fills."),
    )
