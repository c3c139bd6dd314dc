"""OTLP metrics as the engine's batches: one batch per point time (a producer's cycle), each
metric with its kind, unit, description and point attributes.

Gauges stay gauges; a monotonic delta sum is a counter (its point is the increase); a monotonic
cumulative sum becomes a counter too, its increase taken against the series' previous point (the
first point of a series counts whole if the series started after the receiver did, else it is a
baseline, as the scrape side judges a new target); a non-monotonic sum is a gauge. An
explicit-bucket histogram is a distribution of the cycle (delta: as sent; cumulative: the
increase of each bucket, its sum and count over the series' previous point, with the same
first-point rule, and counted whole after a drop or a change of bounds). Summaries and
exponential histograms are not taken (counted as dropped by the receiver).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline import Batch, Cycle, Distribution, Metric, MetricKind

#: UCUM units as CloudWatch names them (the otlp exporter's mapping, reversed).
UNITS = {"1": "Count", "ms": "Milliseconds", "s": "Seconds", "us": "Microseconds", "%": "Percent",
         "By": "Bytes", "": "None"}
_NS = 1_000_000_000
_DELTA, _CUMULATIVE = 1, 2

SeriesKey = tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


class Converter:
    """Keeps the last value of each cumulative sum series, to turn it into increases."""

    def __init__(self, started_at: float = 0.0) -> None:
        self._started_at = started_at
        self._last: dict[SeriesKey, float] = {}
        self._last_histogram: dict[SeriesKey, Distribution] = {}
        self.dropped = 0

    def batches(self, request: Any, interval: float = 30.0) -> list[Batch]:
        by_time: dict[float, list[Metric]] = {}
        for at, metric in self._metrics(request):
            by_time.setdefault(at, []).append(metric)
        return [Batch(cycle=Cycle(time=at, previous=at - interval), metrics=tuple(metrics))
                for at, metrics in sorted(by_time.items())]

    def _metrics(self, request: Any) -> Iterator[tuple[float, Metric]]:
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    yield from self._points(metric, resource)

    def _points(self, metric: Any, resource: tuple[tuple[str, str], ...]
                ) -> Iterator[tuple[float, Metric]]:
        field = metric.WhichOneof("data")
        unit = UNITS.get(metric.unit, "None")
        if field == "gauge":
            for point in metric.gauge.data_points:
                yield _at(point), _metric(metric, MetricKind.GAUGE, _value(point), unit, point)
        elif field == "sum":
            data = metric.sum
            for point in data.data_points:
                value = _value(point)
                if not data.is_monotonic:
                    yield _at(point), _metric(metric, MetricKind.GAUGE, value, unit, point)
                    continue
                if data.aggregation_temporality == _CUMULATIVE:
                    key = (metric.name, _attributes(point.attributes), resource)
                    last = self._last.get(key)
                    self._last[key] = value
                    if last is None and point.start_time_unix_nano / _NS < self._started_at:
                        continue  # a baseline: what it counted before we listened is unknown
                    if last is None:
                        last = 0.0  # the series began while we listened: all of it is new
                    value = value - last if value >= last else value  # a reset: counts whole
                yield _at(point), _metric(metric, MetricKind.COUNTER, value, unit, point)
        elif field == "histogram":
            cumulative = metric.histogram.aggregation_temporality == _CUMULATIVE
            for point in metric.histogram.data_points:
                dist = Distribution(tuple(point.explicit_bounds),
                                    tuple(map(float, point.bucket_counts)), float(point.sum),
                                    float(point.count))
                if cumulative:
                    key = (metric.name, _attributes(point.attributes), resource)
                    previous = self._last_histogram.get(key)
                    self._last_histogram[key] = dist
                    if previous is None and point.start_time_unix_nano / _NS < self._started_at:
                        continue  # a baseline, as for sums
                    if previous is not None:
                        dist = _increase(dist, previous)
                yield _at(point), Metric(
                    metric.name, MetricKind.DISTRIBUTION, dist.count, unit,
                    _attributes(point.attributes), description=metric.description,
                    distribution=dist)
        else:
            self.dropped += 1


def _increase(now: Distribution, last: Distribution) -> Distribution:
    """A cumulative histogram's increase over its previous point: bucket by bucket; the whole of
    it after a reset (a count that dropped) or a change of bucket bounds."""
    if (now.bounds != last.bounds or len(now.counts) != len(last.counts)
            or now.count < last.count
            or any(c < p for c, p in zip(now.counts, last.counts, strict=True))):
        return now
    return Distribution(now.bounds,
                        tuple(c - p for c, p in zip(now.counts, last.counts, strict=True)),
                        now.sum - last.sum, now.count - last.count)


def _at(point: Any) -> float:
    return float(point.time_unix_nano) / _NS


def _value(point: Any) -> float:
    return float(point.as_double if point.WhichOneof("value") == "as_double" else point.as_int)


def _metric(metric: Any, kind: MetricKind, value: float, unit: str, point: Any) -> Metric:
    return Metric(metric.name, kind, value, unit, _attributes(point.attributes),
                  description=metric.description)


def _attributes(attributes: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for kv in attributes:
        which = kv.value.WhichOneof("value")
        out.append((kv.key, str(getattr(kv.value, which)) if which else ""))
    return tuple(sorted(out))
