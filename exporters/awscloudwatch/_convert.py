"""Metrics to CloudWatch datums, and datums to PutMetricData requests within the API's limits.

Pure functions and a small accumulator: no I/O, so tests drive them with tables.

CloudWatch limits (PutMetricData): at most 1000 datums and 1 MB per request, 30 dimensions per
datum, 150 distinct values in a ``Values`` array, names of 1 to 255 characters, dimension values of
1 to 1024, and values either 0 or of magnitude within [2^-360, 2^360]; NaN and infinities are
refused. A request with one bad datum is refused whole, so bad datums are taken out here, before
they can cost the rest of their request.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline import METRIC_UNITS, Distribution, Metric, MetricKind

MAX_DATUMS_PER_REQUEST = 1000
#: The API's limit is 1 MB of request body; our estimate of a datum's size is deliberately high,
#: and we stay a tenth below the limit on top of that.
MAX_REQUEST_BYTES = 900_000
MAX_VALUES_PER_DATUM = 150
MAX_DIMENSIONS = 30
MAX_NAME_LENGTH = 255
MAX_DIMENSION_VALUE_LENGTH = 1024
MIN_MAGNITUDE = 2.0**-360
MAX_MAGNITUDE = 2.0**360

CLUSTER_DIMENSION = "CLUSTER_ID"
#: A group-by attribute with no value (a node without a zone label, say) still needs a dimension
#: value: CloudWatch refuses empty ones.
EMPTY_DIMENSION_VALUE = "unknown"


Datum = dict[str, Any]


def valid_value(value: float) -> bool:
    """Whether CloudWatch stores ``value``: finite, and 0 or within its magnitude range."""
    if not math.isfinite(value):
        return False
    magnitude = abs(value)
    return magnitude == 0.0 or MIN_MAGNITUDE <= magnitude <= MAX_MAGNITUDE


@dataclass(frozen=True, slots=True)
class Rejected:
    """A metric (or part of one) left out, and why; the exporter logs and counts these."""

    name: str
    attributes: tuple[tuple[str, str], ...]
    reason: str


@dataclass(slots=True)
class Conversion:
    datums: list[Datum] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: Units not in CloudWatch's list, sent as "None" instead.
    unknown_units: set[str] = field(default_factory=set)


@dataclass(frozen=True, kw_only=True)
class DatumOptions:
    cluster_id: str
    storage_resolution: int = 60
    send_derived: bool = False
    derived_names: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=1 << 15)  # distinct group-by value sets (nodes, zones...)
def _dimensions(cluster_id: str, attributes: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """A metric's dimension list. Cached: the same group-by values recur every cycle, and
    building these lists was most of the conversion time (bench/bench_awscloudwatch.py). The
    lists are shared between datums, so nothing may mutate them (boto3 does not)."""
    dims = [{"Name": CLUSTER_DIMENSION, "Value": cluster_id}]
    for key, value in attributes:
        if key == CLUSTER_DIMENSION:
            continue
        text = (value or EMPTY_DIMENSION_VALUE)[:MAX_DIMENSION_VALUE_LENGTH]
        dims.append({"Name": key[:MAX_NAME_LENGTH], "Value": text})
    return dims


def distribution_values(dist: Distribution) -> list[tuple[float, float]]:
    """``(value, count)`` pairs for a ``Values``/``Counts`` datum: one per non-empty bucket.

    A bucket is represented by its midpoint (the first bucket's lower edge is 0, or its own bound
    when that is negative); the overflow bucket, which has no upper edge, by the last bound. This
    is how the OpenTelemetry awsemf exporter maps explicit buckets, and it lets CloudWatch compute
    percentiles over the values.
    """
    pairs: list[tuple[float, float]] = []
    bounds = dist.bounds
    for i, count in enumerate(dist.counts):
        if not count or count <= 0 or not math.isfinite(count):
            continue
        if i >= len(bounds):
            if not bounds:
                continue
            value = bounds[-1]
        else:
            upper = bounds[i]
            lower = bounds[i - 1] if i > 0 else min(0.0, upper)
            value = (lower + upper) / 2
        pairs.append((value, float(count)))
    return pairs


def _wanted(metric: Metric, options: DatumOptions) -> bool:
    return not metric.derived or options.send_derived or metric.name in options.derived_names


def to_datums(metrics: Iterable[Metric], timestamp: float, options: DatumOptions) -> Conversion:
    """The datums for one cycle's metrics, each stamped with the cycle's time."""
    out = Conversion()
    stamp = datetime.fromtimestamp(timestamp, UTC)
    high_resolution = options.storage_resolution == 1
    for metric in metrics:
        if not _wanted(metric, options):
            continue
        problem = _check_metric(metric)
        if problem:
            out.rejected.append(Rejected(metric.name, metric.attributes, problem))
            continue
        unit = metric.unit
        if unit not in METRIC_UNITS:
            out.unknown_units.add(unit)
            unit = "None"
        datum: Datum = {
            "MetricName": metric.name,
            "Dimensions": _dimensions(options.cluster_id, metric.attributes),
            "Timestamp": stamp,
            "Unit": unit,
        }
        if high_resolution:
            datum["StorageResolution"] = 1
        if metric.kind is MetricKind.DISTRIBUTION and metric.distribution is not None:
            out.datums.extend(_distribution_datums(metric, datum, out))
        elif valid_value(metric.value):
            datum["Value"] = float(metric.value)
            out.datums.append(datum)
        else:
            out.rejected.append(Rejected(metric.name, metric.attributes,
                                         f"value {metric.value!r} is not storable in CloudWatch"))
    return out


def _check_metric(metric: Metric) -> str:
    if not 1 <= len(metric.name) <= MAX_NAME_LENGTH:
        return f"metric name must be 1 to {MAX_NAME_LENGTH} characters"
    if len(metric.attributes) + 1 > MAX_DIMENSIONS:
        return f"more than {MAX_DIMENSIONS} dimensions"
    return ""


def _distribution_datums(metric: Metric, base: Datum, out: Conversion) -> Iterator[Datum]:
    """One datum per 150 non-empty buckets (CloudWatch merges datums of one metric and time)."""
    assert metric.distribution is not None
    pairs = distribution_values(metric.distribution)
    good = [(v, c) for v, c in pairs if valid_value(v) and valid_value(c)]
    if len(good) < len(pairs):
        out.rejected.append(Rejected(metric.name, metric.attributes,
                                     f"{len(pairs) - len(good)} bucket value(s) not storable"))
    for start in range(0, len(good), MAX_VALUES_PER_DATUM):
        chunk = good[start : start + MAX_VALUES_PER_DATUM]
        yield {**base, "Values": [v for v, _ in chunk], "Counts": [c for _, c in chunk]}


def estimate_size(datum: Datum) -> int:
    """A high estimate of a datum's bytes in a PutMetricData body.

    Based on the query protocol's form encoding (``MetricData.member.N.Dimensions.member.M.Name=``
    and so on), the most verbose of the protocols botocore may use for CloudWatch.
    """
    size = 64 + len(datum["MetricName"]) * 3  # names may be percent-encoded
    for dim in datum["Dimensions"]:
        size += 96 + (len(dim["Name"]) + len(dim["Value"])) * 3
    size += 80  # Timestamp
    size += 48  # Unit
    if "StorageResolution" in datum:
        size += 48
    if "Value" in datum:
        size += 64
    for key in ("Values", "Counts"):
        size += len(datum.get(key, ())) * 64
    return size


@dataclass(frozen=True, slots=True)
class PutRequest:
    """One PutMetricData call's datums (all of one namespace)."""

    datums: tuple[Datum, ...]
    size: int

    def __len__(self) -> int:
        return len(self.datums)


class RequestBuilder:
    """Packs datums into as few requests as the limits allow.

    ``add`` returns a request as soon as one is full, so a large cycle never waits for the flush
    timer with more than one request's worth pending; ``take`` returns what is pending.
    """

    def __init__(self, max_datums: int = MAX_DATUMS_PER_REQUEST,
                 max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self._max_datums = max_datums
        self._max_bytes = max_bytes
        self._datums: list[Datum] = []
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._datums)

    def add(self, datum: Datum) -> PutRequest | None:
        size = estimate_size(datum)
        full: PutRequest | None = None
        if self._datums and self._bytes + size > self._max_bytes:
            full = self._cut()
        self._datums.append(datum)
        self._bytes += size
        if len(self._datums) >= self._max_datums:
            # Only one of the two cuts can happen per add: the first leaves one datum behind.
            full = self._cut()
        return full

    def take(self) -> PutRequest | None:
        return self._cut() if self._datums else None

    def _cut(self) -> PutRequest:
        request = PutRequest(tuple(self._datums), self._bytes)
        self._datums = []
        self._bytes = 0
        return request


def pack(datums: Iterable[Datum]) -> list[PutRequest]:
    """All of ``datums`` as requests (for planning and tests)."""
    builder = RequestBuilder()
    requests = [r for r in (builder.add(d) for d in datums) if r is not None]
    last = builder.take()
    return requests + ([last] if last else [])
