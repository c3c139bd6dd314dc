"""OTLP metrics as the engine's batches: one batch per point time (a producer's cycle), each
metric with its kind, unit, description and point attributes.

Gauges stay gauges; a monotonic delta sum is a counter (its point is the increase); a monotonic
cumulative sum becomes a counter too, its increase taken against the series' previous point (the
first point of a series counts whole if the series started after the receiver did, else it is a
baseline, as the scrape side judges a new target); a non-monotonic sum is a gauge. An
explicit-bucket histogram is a distribution of the cycle (delta: as sent; cumulative: the
increase of each bucket, its sum and count over the series' previous point, with the same
first-point rule, and counted whole after a drop or a change of bounds). An exponential
histogram becomes the same: its buckets' edges, powers of its base, as explicit bounds (exact
for positive values and the zero bucket; a negative value on an edge falls in the bucket below
the OTLP one), so that a scale change is a change of bounds. A summary becomes what a Prometheus
summary is to the scrape side: one gauge per quantile (``quantile`` set and an attribute of
that name, so that quantiles stay apart in every exporter), and ``<name>_sum`` and
``<name>_count`` as counters, their increases taken as a cumulative sum's are. Anything else
is counted as dropped by the receiver.
"""

from __future__ import annotations

import math
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
                    increase = self._increase((metric.name, _attributes(point.attributes),
                                               resource), value, point)
                    if increase is None:
                        continue
                    value = increase
                yield _at(point), _metric(metric, MetricKind.COUNTER, value, unit, point)
        elif field == "summary":
            yield from self._summary(metric, resource, unit)
        elif field in ("histogram", "exponential_histogram"):
            data = getattr(metric, field)
            cumulative = data.aggregation_temporality == _CUMULATIVE
            to_distribution = _explicit if field == "histogram" else _exponential
            for point in data.data_points:
                dist = to_distribution(point)
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

    def _increase(self, key: SeriesKey, value: float, point: Any) -> float | None:
        """A cumulative sum's increase over the series' previous point; None for a baseline."""
        last = self._last.get(key)
        self._last[key] = value
        if last is None and point.start_time_unix_nano / _NS < self._started_at:
            return None  # a baseline: what it counted before we listened is unknown
        if last is None:
            last = 0.0  # the series began while we listened: all of it is new
        return value - last if value >= last else value  # a reset: counts whole

    def _summary(self, metric: Any, resource: tuple[tuple[str, str], ...], unit: str
                 ) -> Iterator[tuple[float, Metric]]:
        for point in metric.summary.data_points:
            at, attributes = _at(point), _attributes(point.attributes)
            for quantile in point.quantile_values:
                labelled = tuple(sorted((*attributes, ("quantile", _quantile_text(quantile)))))
                yield at, Metric(metric.name, MetricKind.GAUGE, float(quantile.value), unit,
                                 labelled, description=metric.description,
                                 quantile=float(quantile.quantile))
            for suffix, total, part_unit in (("_sum", float(point.sum), unit),
                                             ("_count", float(point.count), "Count")):
                name = metric.name + suffix
                increase = self._increase((name, attributes, resource), total, point)
                if increase is not None:
                    yield at, Metric(name, MetricKind.COUNTER, increase, part_unit, attributes,
                                     description=metric.description)


def _quantile_text(quantile: Any) -> str:
    """A quantile as Prometheus writes it in a label: 0.5, 0.99, 1 (``repr`` of the float,
    without a trailing ``.0``)."""
    text = repr(float(quantile.quantile))
    return text[:-2] if text.endswith(".0") else text


def _explicit(point: Any) -> Distribution:
    return Distribution(tuple(point.explicit_bounds), tuple(map(float, point.bucket_counts)),
                        float(point.sum), float(point.count))


def _exponential(point: Any) -> Distribution:
    """An exponential histogram point as explicit bounds: the edges of its buckets.

    Bucket ``i`` of the positive range holds values in ``(base**i, base**(i + 1)]``, with
    ``base = 2 ** 2 ** -scale``; of the negative range, their negatives; the zero bucket the
    values within ``zero_threshold`` of 0. In increasing order: the negative buckets (most
    negative first, each bounded above by its edge nearer 0), the zero bucket (up to
    ``zero_threshold``), an empty bucket up to the lowest positive edge, then the positive
    buckets, and an empty overflow (nothing lies above the last edge).
    """
    scale = point.scale
    bounds: list[float] = []
    counts: list[float] = []
    negative = point.negative
    for index in reversed(range(len(negative.bucket_counts))):
        bounds.append(-_edge(scale, negative.offset + index))
        counts.append(float(negative.bucket_counts[index]))
    zero = float(point.zero_threshold)
    bounds.append(zero)
    counts.append(float(point.zero_count))
    positive = point.positive
    if len(positive.bucket_counts):
        low = _edge(scale, positive.offset)
        if low > zero:
            bounds.append(low)
            counts.append(0.0)
        for index, count in enumerate(positive.bucket_counts):
            bounds.append(_edge(scale, positive.offset + index + 1))
            counts.append(float(count))
    counts.append(0.0)
    return Distribution(tuple(bounds), tuple(counts), float(point.sum), float(point.count))


def _edge(scale: int, index: int) -> float:
    """The edge ``base ** index`` of bucket ``index``, as ``2 ** (index * 2 ** -scale)``: the
    exponent is exact in a float, so an integer one gives the exact power of two and any other
    a once-rounded ``**`` (``base ** index`` would compound the rounding of ``base``)."""
    exponent = index * 2.0 ** -scale
    return math.ldexp(1.0, int(exponent)) if exponent.is_integer() else 2.0 ** exponent


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
