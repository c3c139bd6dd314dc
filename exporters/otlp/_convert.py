"""Our batch as the OpenTelemetry SDK's ``MetricsData``: pure functions and one pure state class.

The SDK's OTLP exporters (gRPC and HTTP) take ``MetricsData``, the frozen-dataclass tree of
``opentelemetry.sdk.metrics.export``, and encode it with the shared
``opentelemetry-exporter-otlp-proto-common`` encoder. Building that tree here, apart from any
transport, keeps this module free of I/O so table tests can drive it.

Mapping (the names stay CloudWatch's, case kept, so a dashboard reads the same name everywhere):

- ``MetricKind.GAUGE`` (awsAPILatency too) -> ``Gauge``.
- ``MetricKind.COUNTER`` (the cycle's increase) -> monotonic ``Sum``: with delta temporality the
  point is the increase over ``(cycle.previous, cycle.time]``; with cumulative temporality it is a
  running total kept by :class:`RunningTotals`, starting where that series was first seen.
- ``MetricKind.DISTRIBUTION`` -> explicit-bucket ``Histogram`` with the same temporality rule.
- Every point is stamped with the cycle's time; group-by dimensions are point attributes.
- Names, descriptions and units are the metric's own; whether a sum is monotonic follows its kind.
- Per-target series (``per_target: true``) go under one resource per target. The scrape does not
  keep ``# TYPE`` lines, so counters are told by name (:func:`is_counter_series`: a counter's
  suffix) or by the batch's aggregates (a family some counter aggregate has as its ``source``),
  and sent as cumulative monotonic sums starting at the target's ``process_start_time_seconds``;
  everything else is a gauge. NaN and infinite samples are skipped, as the aggregation skips them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pipeline import Batch, Distribution, MetricKind, TargetScrape, parse_series
from pipeline import Metric as PipelineMetric

__all__ = [
    "Running",
    "RunningTotals",
    "SeriesKey",
    "cluster_metrics",
    "count_points",
    "counter_sources",
    "is_counter_series",
    "target_metrics",
    "target_resource",
    "to_metrics_data",
    "to_nanos",
    "unit_of",
]

#: A cluster-level series: metric name and group-by attributes.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

#: CloudWatch unit names (what ``pipeline.Metric.unit`` holds) as UCUM, which OTLP uses.
_UNITS = {
    "Count": "1",
    "None": "",
    "Percent": "%",
    "Seconds": "s",
    "Milliseconds": "ms",
    "Microseconds": "us",
    "Bytes": "By",
    "Kilobytes": "kBy",
    "Megabytes": "MBy",
    "Count/Second": "1/s",
}

_COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")

_DELTA = AggregationTemporality.DELTA
_CUMULATIVE = AggregationTemporality.CUMULATIVE


def to_nanos(seconds: float) -> int:
    """UTC seconds as OTLP's nanoseconds since the epoch."""
    return round(seconds * 1_000_000_000)


def unit_of(cloudwatch_unit: str) -> str:
    """The UCUM unit for a CloudWatch unit name (unknown names pass through)."""
    return _UNITS.get(cloudwatch_unit, cloudwatch_unit)


def is_counter_series(family: str, series_name: str, counters: frozenset[str] = frozenset()
                      ) -> bool:
    """Whether a scraped series is a counter, judged by name since ``# TYPE`` is not kept.

    True for names ending ``_total``/``_count``/``_sum``/``_bucket`` (counters, and the
    cumulative parts of summaries and histograms) and for ``counters``: families without a
    suffix that the batch's aggregates read as counters (:func:`counter_sources`).
    """
    return series_name.endswith(_COUNTER_SUFFIXES) or family in counters


def counter_sources(batch: Batch) -> frozenset[str]:
    """The families the batch's counter aggregates were made from (their ``source``): what the
    aggregating processor's rules read as counters, whatever the page's ``# TYPE`` said."""
    return frozenset(m.source for m in batch.metrics if m.kind is MetricKind.COUNTER and m.source)


# -- cumulative state ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Running:
    """A cumulative series: running since ``start`` (UTC seconds), total ``value`` (counters) or
    ``distribution`` (histograms: bucket counts, sum and count added up over cycles)."""

    start: float
    value: float = 0.0
    distribution: Distribution | None = None


class RunningTotals:
    """Running totals of counter increases and distributions, for ``temporality: cumulative``.

    Pure state: :meth:`add` takes a batch and returns the totals of the series it holds, to be
    sent with that batch. It runs when a batch is *accepted* (before the sending queue), so a
    request that is later dropped loses no increase: the next one carries it in its totals.
    A series starts at the previous tick of the cycle it first appears in (its first increase
    covers that interval). A distribution whose bucket bounds change starts afresh.
    """

    def __init__(self) -> None:
        self._series: dict[SeriesKey, Running] = {}

    def __len__(self) -> int:
        return len(self._series)

    def add(self, batch: Batch) -> dict[SeriesKey, Running]:
        snapshot: dict[SeriesKey, Running] = {}
        start = batch.cycle.previous
        for metric in batch.metrics:
            key: SeriesKey = (metric.name, metric.attributes)
            if metric.kind is MetricKind.COUNTER:
                running = self._add_counter(self._series.get(key), metric.value, start)
            elif metric.kind is MetricKind.DISTRIBUTION and metric.distribution is not None:
                running = self._add_distribution(
                    self._series.get(key), metric.distribution, start
                )
            else:
                continue
            self._series[key] = running
            snapshot[key] = running
        return snapshot

    @staticmethod
    def _add_counter(previous: Running | None, increase: float, start: float) -> Running:
        if not math.isfinite(increase):
            increase = 0.0
        if previous is None:
            return Running(start=start, value=increase)
        return Running(start=previous.start, value=previous.value + increase)

    @staticmethod
    def _add_distribution(previous: Running | None, dist: Distribution, start: float) -> Running:
        old = previous.distribution if previous is not None else None
        if previous is None or old is None or old.bounds != dist.bounds or (
            len(old.counts) != len(dist.counts)
        ):
            return Running(start=start, distribution=dist)
        total = Distribution(
            bounds=dist.bounds,
            counts=tuple(a + b for a, b in zip(old.counts, dist.counts, strict=True)),
            sum=old.sum + dist.sum,
            count=old.count + dist.count,
        )
        return Running(start=previous.start, distribution=total)


# -- cluster aggregates ----------------------------------------------------------------------


def _number_point(
    attributes: Mapping[str, str], start: int, time: int, value: float
) -> NumberDataPoint:
    return NumberDataPoint(
        attributes=attributes, start_time_unix_nano=start, time_unix_nano=time, value=float(value)
    )


def _histogram_point(
    attributes: Mapping[str, str], start: int, time: int, dist: Distribution
) -> HistogramDataPoint:
    counts = [int(round(c)) for c in dist.counts]
    # OTLP wants len(bucket_counts) == len(explicit_bounds) + 1 (the last is the overflow).
    if len(counts) < len(dist.bounds) + 1:
        counts += [0] * (len(dist.bounds) + 1 - len(counts))
    count = int(round(dist.count)) if dist.count else sum(counts)
    return HistogramDataPoint(
        attributes=attributes, start_time_unix_nano=start, time_unix_nano=time, count=count,
        sum=float(dist.sum), bucket_counts=counts, explicit_bounds=list(dist.bounds),
        min=None, max=None,  # type: ignore[arg-type]  # unknown: the encoder leaves them unset
    )


def _data_for(
    kind: MetricKind,
    metrics: Sequence[PipelineMetric],
    batch: Batch,
    running: Mapping[SeriesKey, Running] | None,
) -> Gauge | Sum | Histogram:
    """One OTLP data object holding a point per attribute set of one metric name."""
    time = to_nanos(batch.cycle.time)
    delta_start = to_nanos(batch.cycle.previous)
    temporality = _DELTA if running is None else _CUMULATIVE

    def start_and(metric: PipelineMetric) -> tuple[int, Running | None]:
        if running is None:
            return delta_start, None
        total = running.get((metric.name, metric.attributes))
        return (to_nanos(total.start), total) if total is not None else (delta_start, None)

    if kind is MetricKind.COUNTER:
        points = []
        for m in metrics:
            start, total = start_and(m)
            value = total.value if total is not None else m.value
            points.append(_number_point(dict(m.attributes), start, time, value))
        return Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=True)
    if kind is MetricKind.DISTRIBUTION:
        hist_points = []
        for m in metrics:
            start, total = start_and(m)
            dist = total.distribution if total is not None else m.distribution
            if dist is not None:
                hist_points.append(_histogram_point(dict(m.attributes), start, time, dist))
        return Histogram(data_points=hist_points, aggregation_temporality=temporality)
    # Gauges have no start time in OTLP's data model (0 = unset).
    return Gauge(data_points=[_number_point(dict(m.attributes), 0, time, m.value)
                              for m in metrics if math.isfinite(m.value)])


def cluster_metrics(
    batch: Batch, running: Mapping[SeriesKey, Running] | None = None
) -> list[Metric]:
    """The batch's aggregates as OTLP metrics, one per (name, kind), points in batch order.

    ``running`` (from :meth:`RunningTotals.add`) switches counters and distributions to
    cumulative temporality; ``None`` means delta.
    """
    groups: dict[tuple[str, MetricKind], list[PipelineMetric]] = {}
    for metric in batch.metrics:
        groups.setdefault((metric.name, metric.kind), []).append(metric)
    out: list[Metric] = []
    for (name, kind), metrics in groups.items():
        first = metrics[0]
        data = _data_for(kind, metrics, batch, running)
        if not data.data_points:
            continue
        out.append(Metric(name=name, description=first.description, unit=unit_of(first.unit),
                          data=data))
    return out


# -- per-target series -----------------------------------------------------------------------


@lru_cache(maxsize=1 << 16)
def _parsed(series: str) -> tuple[str, Mapping[str, str]]:
    """``parse_series`` memoised: a series text is stable across cycles, so each is parsed once.

    The returned mapping is shared between calls and must not be changed.
    """
    return parse_series(series)


def target_resource(scrape: TargetScrape, base: Mapping[str, str]) -> dict[str, str]:
    """A target's resource: ``base`` (cluster and cloud attributes), then what identifies the
    target (semantic-convention names), then the target's own attributes (zone, node group...)."""
    target = scrape.target
    attrs = dict(base)
    attrs["service.name"] = "aws-node"
    attrs["service.instance.id"] = target.address
    for key, value in (
        ("k8s.pod.name", target.pod),
        ("k8s.node.name", target.node),
        ("k8s.namespace.name", target.namespace),
        ("url.full", target.url),
    ):
        if value:
            attrs[key] = value
    attrs.update(target.attributes)
    return attrs


def target_metrics(
    scrape: TargetScrape,
    time: int,
    default_start: int,
    families: frozenset[str] | None = None,
    counters: frozenset[str] = frozenset(),
) -> list[Metric]:
    """One target's scraped series as OTLP metrics, plus ``up`` (1 or 0), Prometheus-style.

    ``families`` limits the families forwarded (``None`` = all); ``counters`` are families read
    as counters though their names carry no counter suffix. Counter series start at the
    target's ``process_start_time_seconds`` when known, else at ``default_start``.
    """
    start = to_nanos(scrape.process_start_time) if scrape.process_start_time else default_start
    sums: dict[str, list[NumberDataPoint]] = {}
    gauges: dict[str, list[NumberDataPoint]] = {
        "up": [_number_point({}, 0, time, 1.0 if scrape.health.up else 0.0)]
    }
    for family, samples in scrape.families.items():
        if families is not None and family not in families:
            continue
        for series, value in samples:
            if not math.isfinite(value):
                continue
            name, labels = _parsed(series)
            if is_counter_series(family, name, counters):
                sums.setdefault(name, []).append(_number_point(labels, start, time, value))
            else:
                gauges.setdefault(name, []).append(_number_point(labels, 0, time, value))
    out = [Metric(name=name, description="", unit="", data=Gauge(data_points=points))
           for name, points in gauges.items()]
    out += [Metric(name=name, description="", unit="",
                   data=Sum(data_points=points, aggregation_temporality=_CUMULATIVE,
                            is_monotonic=True))
            for name, points in sums.items()]
    return out


# -- the whole request -----------------------------------------------------------------------


def to_metrics_data(
    batch: Batch,
    *,
    resource: Mapping[str, str],
    scope: InstrumentationScope,
    running: Mapping[SeriesKey, Running] | None = None,
    per_target: bool = False,
    target_base: Mapping[str, str] | None = None,
    families: frozenset[str] | None = None,
    default_start: float = 0.0,
) -> MetricsData:
    """The whole request for one batch: the cluster resource with the aggregates, then (with
    ``per_target``) one resource per target with its series.

    ``resource`` is the cluster resource's attributes; ``target_base`` the attributes every
    target resource starts from (default: ``resource`` without ``service.name``).
    """
    scope_metrics = ScopeMetrics(scope=scope, metrics=cluster_metrics(batch, running),
                                 schema_url="")
    resources = [ResourceMetrics(resource=Resource(dict(resource)),
                                 scope_metrics=[scope_metrics], schema_url="")]
    if per_target:
        base = dict(target_base) if target_base is not None else {
            k: v for k, v in resource.items() if k != "service.name"
        }
        time = to_nanos(batch.cycle.time)
        start = to_nanos(default_start) if default_start else 0
        counters = counter_sources(batch)
        for scrape in batch.targets:
            metrics = target_metrics(scrape, time, start, families, counters)
            resources.append(ResourceMetrics(
                resource=Resource(target_resource(scrape, base)),
                scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics, schema_url="")],
                schema_url="",
            ))
    return MetricsData(resource_metrics=resources)


def count_points(batch: Batch, *, per_target: bool, families: frozenset[str] | None) -> int:
    """How many data points :func:`to_metrics_data` makes of ``batch`` (for self-metrics)."""
    count = len(batch.metrics)
    if per_target:
        for scrape in batch.targets:
            count += 1 + sum(len(samples) for family, samples in scrape.families.items()
                             if families is None or family in families)
    return count
