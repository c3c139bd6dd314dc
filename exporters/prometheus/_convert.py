"""Cluster aggregates as Prometheus metric families: naming, units and running totals. Pure.

Names and HELP texts come from the metric alone (no table of a processor's output names here):

- a metric with a ``source`` (the aws-node family it aggregates) is named after that family, as the
  Go cni-metrics-helper named the six gauges it served (``awscni_eni_max``, ``awscni_ip_max``,
  ``awscni_eni_allocated``, ``awscni_total_ip_addresses``, ``awscni_assigned_ip_addresses``,
  ``awscni_total_ipv4_prefixes``), which keep their names and, at cluster level, carry no label;
- a metric without one (derived metrics, self-metrics, third-party processors) is ``awscni_`` plus
  its name in snake case, acronyms kept whole (``nodesReportingIPs`` ->
  ``awscni_nodes_reporting_ips``, ``totalAssignedIPv4sPerCidr`` ->
  ``awscni_total_assigned_ipv4s_per_cidr``);
- a quantile is ``_p`` and its percentage without the point: 0.5 -> ``_p50``, 0.9 -> ``_p90``,
  0.99 -> ``_p99``, 0.999 -> ``_p999``;
- units are base units in the name, as ``promtool check metrics`` wants: awsAPILatency
  (``awscni_aws_api_latency_ms``, milliseconds, the highest p99 across nodes) is served in seconds
  as ``awscni_aws_api_latency_p99_seconds`` (the family's own unit word gives way);
  ``Percent`` becomes a ``_ratio``;
- counters are running totals since the exporter started (the sum of the cycles' increases) with
  a ``_total`` suffix: ``addReqCount`` -> ``awscni_add_ip_req_count_total``; distributions are
  histograms with cumulative buckets (running, like counters);
- two metrics that would share a name (two rules reading one family: a count beside a sum, or
  label-filtered subsets) do not: the first one seen keeps it for the exporter's lifetime, the
  other is named after itself (``awscni_`` + snake case);
- group-by attributes become labels (``topology.kubernetes.io/zone`` ->
  ``topology_kubernetes_io_zone``).

HELP is the metric's description; a counter's or histogram's is prefixed "Total since this
exporter started, " since the value served is a running total, not one cycle's increase.

A family is served while the latest cycle has it: a gauge that no target reported any more leaves
the page, a counter's running total is kept and goes on from where it was if it comes back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pipeline import Batch, Distribution, Metric, MetricKind

__all__ = [
    "Exposition",
    "Family",
    "HistogramSample",
    "NumberSample",
    "label_name",
    "prometheus_name",
    "quantile_suffix",
    "snake_case",
]

Labels = tuple[tuple[str, str], ...]
#: What a metric's served name is made of: name, source, quantile, unit, kind.
_NameKey = tuple[str, str, float | None, str, MetricKind]

@dataclass(frozen=True, slots=True)
class _Unit:
    """A CloudWatch unit served in a Prometheus base unit: the factor to it, the name's suffix,
    and the unit words a source family's name may end with, which the suffix replaces."""

    factor: float
    suffix: str
    words: tuple[str, ...] = ()


_UNITS: Mapping[str, _Unit] = {
    "Seconds": _Unit(1.0, "_seconds", ("_seconds",)),
    "Milliseconds": _Unit(1e-3, "_seconds", ("_milliseconds", "_ms")),
    "Microseconds": _Unit(1e-6, "_seconds", ("_microseconds", "_us")),
    "Bytes": _Unit(1.0, "_bytes", ("_bytes",)),
    "Percent": _Unit(0.01, "_ratio", ("_percent",)),
}
_AS_IS = _Unit(1.0, "")

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_:]")
_INVALID_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_]")
#: The words of a camelCase name: an acronym (two capitals or more, with a version such as
#: ``v4`` and a plural ``s``: ``IPs``, ``IPv4s``, ``API``), a word, a lone capital, digits.
_WORD = re.compile(r"[A-Z]{2,}(?:[a-z][0-9]+)?s?(?![a-z])|[A-Z]?[a-z]+[0-9]*|[A-Z]|[0-9]+")


def snake_case(name: str) -> str:
    """``availableIPAddresses`` -> ``available_ip_addresses``, ``nodesReportingIPs`` ->
    ``nodes_reporting_ips``, ``ec2ApiReqCount`` -> ``ec2_api_req_count``; characters that are
    neither letters nor digits separate words."""
    return "_".join(_WORD.findall(name)).lower()


def quantile_suffix(quantile: float) -> str:
    """``_p`` and the quantile as a percentage without its point, at least two digits: 0.5 ->
    ``_p50``, 0.9 -> ``_p90``, 0.99 -> ``_p99``, 0.999 -> ``_p999``, 0.05 -> ``_p05``, 1 ->
    ``_p100``. Distinct quantiles (to six decimals) get distinct suffixes."""
    if quantile >= 1.0:
        return "_p100"
    digits = f"{quantile:.6f}".split(".")[1].rstrip("0")
    return "_p" + digits.ljust(2, "0")


def _unit(unit: str) -> _Unit:
    return _UNITS.get(unit, _AS_IS)


def _base_name(metric: Metric, unit: _Unit) -> str:
    """The name before the unit and ``_total`` suffixes: the source family (its unit word
    dropped, the quantile added), else ``awscni_`` and the metric's name in snake case."""
    if not metric.source:
        return "awscni_" + snake_case(metric.name)
    base = metric.source
    for word in unit.words:
        if base.endswith(word):
            base = base[: -len(word)]
            break
    if metric.quantile is not None:
        base += quantile_suffix(metric.quantile)
    return base


def prometheus_name(metric: Metric, *, own: bool = False) -> str:
    """The family name for an aggregate (for a counter, including ``_total``). ``own``: named
    after the metric's own name even when it has a source (to tell apart two metrics whose
    source would give them one name)."""
    unit = _unit(metric.unit)
    base = "awscni_" + snake_case(metric.name) if own else _base_name(metric, unit)
    base = _INVALID_NAME_CHARS.sub("_", base)
    if base[0].isdigit():
        base = "_" + base
    if unit.suffix and not base.endswith(unit.suffix):
        base += unit.suffix
    if metric.kind is MetricKind.COUNTER and not base.endswith("_total"):
        base += "_total"
    return base


def label_name(key: str) -> str:
    """An attribute key as a Prometheus label name (invalid characters become ``_``)."""
    name = _INVALID_LABEL_CHARS.sub("_", key)
    if not name or name[0].isdigit():
        name = "key_" + name
    if name.startswith("__"):
        name = "key" + name
    return name


def _labels(attributes: Iterable[tuple[str, str]], const: Labels) -> Labels:
    """Attributes as sorted labels; keys that sanitise to one name are joined with ``;`` (the
    OpenTelemetry-to-Prometheus rule), in the order of their original keys."""
    merged: dict[str, list[str]] = {}
    for key, value in sorted(attributes):
        merged.setdefault(label_name(key), []).append(value)
    out = {name: ";".join(values) for name, values in merged.items()}
    for name, value in const:
        out.setdefault(name, value)
    return tuple(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class NumberSample:
    labels: Labels
    value: float


@dataclass(frozen=True, slots=True)
class HistogramSample:
    """Cumulative buckets ``(upper bound, observations at or below it)``; the last bound is
    ``+Inf`` and its count equals ``count``."""

    labels: Labels
    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as served: for counters ``name`` ends with ``_total``."""

    name: str
    type: Literal["gauge", "counter", "histogram"]
    help: str
    samples: tuple[NumberSample | HistogramSample, ...]


@dataclass(frozen=True, slots=True)
class _RunningHistogram:
    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum: float
    count: float


def _add_histogram(old: _RunningHistogram | None, dist: Distribution, scale: float
                   ) -> _RunningHistogram:
    bounds = tuple(b * scale for b in dist.bounds)
    counts = tuple(dist.counts) + (0.0,) * max(0, len(bounds) + 1 - len(dist.counts))
    count = dist.count or sum(counts)
    if old is None or old.bounds != bounds or len(old.counts) != len(counts):
        return _RunningHistogram(bounds, counts, dist.sum * scale, count)
    return _RunningHistogram(
        bounds, tuple(a + b for a, b in zip(old.counts, counts, strict=True)),
        old.sum + dist.sum * scale, old.count + count,
    )


def _cumulative(hist: _RunningHistogram) -> tuple[tuple[float, float], ...]:
    out: list[tuple[float, float]] = []
    running = 0.0
    for bound, count in zip(hist.bounds, hist.counts, strict=False):
        running += count
        out.append((bound, running))
    out.append((math.inf, hist.count))
    return tuple(out)


class Exposition:
    """Turns each batch into the families to serve, keeping running totals for counters and
    histograms. Not thread-safe: one caller (the event loop) updates it; the HTTP threads read
    only the immutable tuple :meth:`update` returns."""

    def __init__(self, const_labels: Mapping[str, str] | None = None) -> None:
        self._const: Labels = tuple(sorted((const_labels or {}).items()))
        self._counters: dict[tuple[str, Labels], float] = {}
        self._histograms: dict[tuple[str, Labels], _RunningHistogram] = {}
        #: What a metric is served as, worked out once per distinct metric (the fields its name
        #: is made of), and which metric name holds each served name.
        self._names: dict[_NameKey, str] = {}
        self._holders: dict[str, str] = {}

    def name_of(self, metric: Metric) -> str:
        """The served name: :func:`prometheus_name`, unless a metric of another name already
        holds it, then the metric's own (``awscni_`` + snake case)."""
        key = (metric.name, metric.source, metric.quantile, metric.unit, metric.kind)
        name = self._names.get(key)
        if name is None:
            name = prometheus_name(metric)
            if self._holders.setdefault(name, metric.name) != metric.name:
                name = prometheus_name(metric, own=True)
                self._holders.setdefault(name, metric.name)
            self._names[key] = name
        return name

    def update(self, batch: Batch) -> tuple[Family, ...]:
        groups: dict[str, tuple[Metric, dict[Labels, NumberSample | HistogramSample]]] = {}
        for metric in batch.metrics:
            name = self.name_of(metric)
            first, samples = groups.setdefault(name, (metric, {}))
            if metric.kind is not first.kind:
                continue  # one family, one type: the first metric of a name decides
            sample = self._sample(name, metric)
            if sample is not None:
                samples[sample.labels] = sample  # a repeated label set: the last one wins
        return tuple(
            Family(name=name, type=_TYPES[first.kind], help=_help(first),
                   samples=tuple(samples.values()))
            for name, (first, samples) in groups.items() if samples
        )

    def _sample(self, name: str, metric: Metric) -> NumberSample | HistogramSample | None:
        labels = _labels(metric.attributes, self._const)
        scale = _unit(metric.unit).factor
        if metric.kind is MetricKind.DISTRIBUTION:
            if metric.distribution is None:
                return None
            key = (name, labels)
            hist = _add_histogram(self._histograms.get(key), metric.distribution, scale)
            self._histograms[key] = hist
            return HistogramSample(labels, _cumulative(hist), hist.sum, hist.count)
        if not math.isfinite(metric.value):
            return None
        if metric.kind is MetricKind.COUNTER:
            key = (name, labels)
            # An increase is never negative; if one were, the counter would go down.
            total = self._counters.get(key, 0.0) + max(metric.value, 0.0) * scale
            self._counters[key] = total
            return NumberSample(labels, total)
        return NumberSample(labels, metric.value * scale)


_TYPES: Mapping[MetricKind, Literal["gauge", "counter", "histogram"]] = {
    MetricKind.GAUGE: "gauge",
    MetricKind.COUNTER: "counter",
    MetricKind.DISTRIBUTION: "histogram",
}


#: Before a counter's or histogram's description: the metric is one cycle's increase, what is
#: served adds those up.
_RUNNING_TOTAL = "Total since this exporter started, "


def _help(metric: Metric) -> str:
    """The metric's description, as a sentence; for counters and histograms, said of the
    running total served."""
    text = metric.description or f"cluster-wide {metric.name} (cni-pipeline aggregate)"
    if metric.kind is not MetricKind.GAUGE:
        # Lower the first letter of a word, not of an acronym ("AWS ...", "ENIs ...").
        if text[1:2].islower():
            text = text[:1].lower() + text[1:]
        return _RUNNING_TOTAL + text
    return text[:1].upper() + text[1:]
