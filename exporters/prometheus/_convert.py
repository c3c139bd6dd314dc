"""Cluster aggregates as Prometheus metric families: naming, units and running totals. Pure.

Names. An aggregate is named after the aws-node family it comes from, as the Go
cni-metrics-helper did for the six gauges it served (``awscni_eni_max``, ``awscni_ip_max``,
``awscni_eni_allocated``, ``awscni_total_ip_addresses``, ``awscni_assigned_ip_addresses``,
``awscni_total_ipv4_prefixes``), so those keep their names and, at cluster level, carry no label.
The rest follow Prometheus conventions, which ``promtool check metrics`` enforces:

- counters are running totals since the exporter started (the sum of the cycles' increases) with
  a ``_total`` suffix: ``addReqCount`` -> ``awscni_add_ip_req_count_total``;
- units are base units in the name: awsAPILatency (milliseconds, the highest p99 across nodes) is
  served in seconds as ``awscni_aws_api_latency_p99_seconds``; ``Percent`` becomes a ``_ratio``;
- distributions are histograms with cumulative buckets (running, like counters);
- names not in the table (derived metrics, third-party processors) become ``awscni_`` plus the
  name in snake case; group-by attributes become labels (``topology.kubernetes.io/zone`` ->
  ``topology_kubernetes_io_zone``).

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
    "snake_case",
]

Labels = tuple[tuple[str, str], ...]

#: CloudWatch name -> the aws-node family it aggregates (DESIGN.md's table); base names, before
#: the unit and ``_total`` suffixes are added.
_BASE_NAMES = {
    "addReqCount": "awscni_add_ip_req_count",
    "assignIPAddresses": "awscni_assigned_ip_addresses",
    "awsAPIErr": "awscni_aws_api_error_count",
    "awsAPILatency": "awscni_aws_api_latency_p99",
    "awsUtilErr": "awscni_aws_utils_error_count",
    "delReqCount": "awscni_del_ip_req_count",
    "eniAllocated": "awscni_eni_allocated",
    "eniMaxAvailable": "awscni_eni_max",
    "ipamdActionInProgress": "awscni_ipamd_action_inprogress",
    "ipamdErr": "awscni_ipamd_error_count",
    "maxIPAddresses": "awscni_ip_max",
    "podENIErr": "awscni_pod_eni_error_count",
    "reconcileCount": "awscni_reconcile_count",
    "totalIPAddresses": "awscni_total_ip_addresses",
    "totalIPv4Prefixes": "awscni_total_ipv4_prefixes",
    "totalAssignedIPv4sPerCidr": "awscni_assigned_ip_per_cidr",
    "forceRemoveENI": "awscni_force_removed_enis",
    "forceRemoveIPs": "awscni_force_removed_ips",
    "ec2ApiReqCount": "awscni_ec2api_req_count",
    "ec2ApiErrCount": "awscni_ec2api_error_count",
}

_SUM = "Sum over the cluster's aws-node pods of: "
_INCREASE = "Total since this exporter started, over the cluster's aws-node pods, of: "
#: HELP texts: the aws-node family's own HELP (amazon-vpc-cni-k8s prometheusmetrics.go), saying
#: how the cluster value is made of it. A metric's own description wins over these.
_HELP = {
    "addReqCount": _INCREASE + "the number of add IP address requests",
    "assignIPAddresses": _SUM + "the number of IP addresses assigned to pods",
    "awsAPIErr": _INCREASE + "the number of times AWS API returns an error",
    "awsAPILatency": "Highest 0.99 quantile of AWS API call latency across aws-node pods",
    "awsUtilErr": _INCREASE + "the number of errors not handled in awsutils library",
    "delReqCount": _INCREASE + "the number of delete IP address requests",
    "eniAllocated": _SUM + "the number of ENIs allocated",
    "eniMaxAvailable": _SUM + "the maximum number of ENIs that can be attached to the instance",
    "ipamdActionInProgress": _SUM + "the number of ipamd actions in progress",
    "ipamdErr": _INCREASE + "the number of errors encountered in ipamd",
    "maxIPAddresses": _SUM + "the maximum number of IP addresses that can be allocated",
    "podENIErr": _INCREASE + "the number of errors encountered for pod ENIs",
    "reconcileCount": _INCREASE + "the number of times ipamd reconciles on ENIs and IPs",
    "totalIPAddresses": _SUM + "the total number of IP addresses",
    "totalIPv4Prefixes": _SUM + "the total number of IPv4 prefixes",
    "totalAssignedIPv4sPerCidr": _SUM + "the number of IP addresses assigned per cidr",
    "forceRemoveENI": _INCREASE + "the number of ENIs force removed while they had assigned pods",
    "forceRemoveIPs": _INCREASE + "the number of IPs force removed while they had assigned pods",
    "ec2ApiReqCount": _INCREASE + "the number of requests made to EC2 APIs by CNI",
    "ec2ApiErrCount": _INCREASE + "the number of failed EC2 APIs requests",
}

#: CloudWatch unit -> (factor to the base unit, name suffix).
_UNITS: Mapping[str, tuple[float, str]] = {
    "Seconds": (1.0, "_seconds"),
    "Milliseconds": (1e-3, "_seconds"),
    "Microseconds": (1e-6, "_seconds"),
    "Bytes": (1.0, "_bytes"),
    "Percent": (0.01, "_ratio"),
}

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_:]")
_INVALID_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_]")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``availableIPAddresses`` -> ``available_ip_addresses``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def _scale(unit: str) -> float:
    return _UNITS.get(unit, (1.0, ""))[0]


def prometheus_name(metric: Metric) -> str:
    """The family name for an aggregate (for a counter, including ``_total``)."""
    base = _BASE_NAMES.get(metric.name) or "awscni_" + snake_case(metric.name)
    base = _INVALID_NAME_CHARS.sub("_", base)
    if base[0].isdigit():
        base = "_" + base
    suffix = _UNITS.get(metric.unit, (1.0, ""))[1]
    if suffix and not base.endswith(suffix):
        base += suffix
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

    def update(self, batch: Batch) -> tuple[Family, ...]:
        groups: dict[str, tuple[Metric, dict[Labels, NumberSample | HistogramSample]]] = {}
        for metric in batch.metrics:
            name = prometheus_name(metric)
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
        scale = _scale(metric.unit)
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


def _help(metric: Metric) -> str:
    """The table's text for a known name (it describes what is served: for a counter the running
    total, where a processor's description speaks of one cycle), else the metric's own."""
    if metric.name in _HELP:
        return _HELP[metric.name]
    text = metric.description or f"cluster-wide {metric.name} (cni-pipeline aggregate)"
    if metric.kind is not MetricKind.GAUGE:
        return "Running total since this exporter started of the cycles' values: " + text
    return text[:1].upper() + text[1:]
