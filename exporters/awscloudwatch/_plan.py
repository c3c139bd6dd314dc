"""What a config will create in CloudWatch and what it will cost, for ``cni-pipeline validate``.

No network call: the metrics come from the processor's plan for a cluster shape given on the
command line, and the prices are CloudWatch's published list prices for us-east-1 (custom metrics
tiered per month, PutMetricData per 1,000 requests). Other regions cost somewhat more; the
estimate is for a 30-day month with every metric published all month.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline import ClusterShape, Duration, Metric, MetricKind

from ._convert import DatumOptions, pack, to_datums
from .config import CloudWatchExporterConfig

SECONDS_PER_MONTH = 30 * 24 * 3600
#: (metrics in the tier, USD per metric-month): us-east-1 list prices.
METRIC_TIERS: tuple[tuple[float, float], ...] = (
    (10_000, 0.30), (240_000, 0.10), (750_000, 0.05), (math.inf, 0.02),
)
USD_PER_1000_REQUESTS = 0.01


def metric_cost(metrics: int) -> float:
    """Monthly USD for ``metrics`` custom metrics under the tiered price."""
    cost, left = 0.0, float(metrics)
    for size, price in METRIC_TIERS:
        taken = min(left, size)
        cost += taken * price
        left -= taken
        if left <= 0:
            break
    return cost


@dataclass(frozen=True, slots=True)
class Plan:
    metrics: int
    datums_per_cycle: int
    cycles_per_flush: int
    flush_seconds: float
    requests_per_flush: int
    requests_per_month: int
    derived_left_out: int

    @property
    def metric_usd(self) -> float:
        return metric_cost(self.metrics)

    @property
    def request_usd(self) -> float:
        return self.requests_per_month / 1000 * USD_PER_1000_REQUESTS


def plan(config: CloudWatchExporterConfig, metrics: Sequence[Metric], shape: ClusterShape) -> Plan:
    options = DatumOptions(
        cluster_id="k8s-cluster", storage_resolution=config.storage_resolution,
        send_derived=config.send_derived, derived_names=frozenset(config.derived_metrics),
    )
    conversion = to_datums(metrics, 0.0, options)
    sent = {(d["MetricName"], tuple((x["Name"], x["Value"]) for x in d["Dimensions"]))
            for d in conversion.datums}
    derived_left_out = sum(
        1 for m in metrics
        if m.derived and not (config.send_derived or m.name in config.derived_metrics)
    )
    interval = max(float(shape.interval), 1e-3)
    # A flush shorter than a cycle still sends each cycle once, in its own request(s).
    flush = max(float(config.flush_interval), interval)
    cycles_per_flush = max(1, math.floor(flush / interval + 1e-9))
    requests_per_flush = len(pack(conversion.datums * cycles_per_flush))
    flushes_per_month = SECONDS_PER_MONTH / flush
    return Plan(
        metrics=len(sent),
        datums_per_cycle=len(conversion.datums),
        cycles_per_flush=cycles_per_flush,
        flush_seconds=flush,
        requests_per_flush=requests_per_flush,
        requests_per_month=math.ceil(flushes_per_month * requests_per_flush),
        derived_left_out=derived_left_out,
    )


def describe_plan(
    config: CloudWatchExporterConfig, metrics: Sequence[Metric], shape: ClusterShape
) -> list[str]:
    """The lines ``validate`` prints for this exporter."""
    if not metrics:
        return ["no metric plan available (no processor in this pipeline describes its "
                "output), so no CloudWatch estimate"]
    p = plan(config, metrics, shape)
    lines = [
        f"{p.metrics:,} CloudWatch metrics in namespace {config.namespace!r} on a cluster of "
        f"{shape.nodes:,} nodes, {shape.zones} zones, {shape.nodegroups} node groups; "
        f"{p.datums_per_cycle:,} datums every {Duration(shape.interval)} cycle",
        f"{p.requests_per_flush:,} PutMetricData request(s) per {Duration(p.flush_seconds)} "
        f"flush, {p.requests_per_month:,} requests a month",
        f"estimated cost: ${p.metric_usd:,.2f}/month for metrics + ${p.request_usd:,.2f}/month "
        f"for requests = ${p.metric_usd + p.request_usd:,.2f}/month (us-east-1 list prices, "
        "30-day month; other regions cost more)",
    ]
    per_flush = p.datums_per_cycle * p.cycles_per_flush
    if p.datums_per_cycle > config.max_datums_held:
        lines.append(
            f"warning: one cycle ({p.datums_per_cycle:,} datums) is more than max_datums_held "
            f"({config.max_datums_held:,}): raise it, or data will be dropped at every cycle"
        )
    elif per_flush > config.max_datums_held:
        lines.append(
            f"note: max_datums_held ({config.max_datums_held:,}) holds less than one flush "
            f"({per_flush:,} datums) should CloudWatch be unreachable"
        )
    if p.derived_left_out:
        lines.append(f"{p.derived_left_out:,} derived metric(s) not sent (send_derived: false, "
                     "none named in derived_metrics)")
    return lines


@dataclass(frozen=True, slots=True)
class PublishedSeries:
    """One CloudWatch metric name and dimension set a config publishes (dimension names only:
    their values, a zone or a subnet, are known only at run time)."""

    name: str
    dimensions: tuple[str, ...]
    unit: str
    counter: bool


def published_series(
    config: CloudWatchExporterConfig, metrics: Sequence[Metric]
) -> list[PublishedSeries]:
    """What the exporter sends of ``metrics`` (derived ones only when asked), in first-seen
    order: the exact conversion ``PutMetricData`` gets, so dashboards and alarms built on this
    name nothing that is not sent."""
    options = DatumOptions(
        cluster_id="k8s-cluster", storage_resolution=config.storage_resolution,
        send_derived=config.send_derived, derived_names=frozenset(config.derived_metrics),
    )
    counters = {m.name for m in metrics if m.kind is MetricKind.COUNTER}
    seen: dict[tuple[str, tuple[str, ...]], PublishedSeries] = {}
    for datum in to_datums(metrics, 0.0, options).datums:
        dims = tuple(d["Name"] for d in datum["Dimensions"])
        key = (datum["MetricName"], dims)
        if key not in seen:
            seen[key] = PublishedSeries(datum["MetricName"], dims, datum.get("Unit") or "None",
                                        datum["MetricName"] in counters)
    return list(seen.values())
