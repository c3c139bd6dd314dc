"""Table tests of the pure batch -> MetricsData conversion (no network)."""

from __future__ import annotations

import math

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporters.otlp._convert import (
    Running,
    RunningTotals,
    cluster_metrics,
    count_points,
    counter_sources,
    is_counter_series,
    target_metrics,
    target_resource,
    to_metrics_data,
    to_nanos,
    unit_of,
)
from pipeline import (
    Batch,
    Cycle,
    Distribution,
    Metric,
    MetricKind,
    Target,
    TargetHealth,
    TargetScrape,
)
from tests.support.otlp_receiver import flatten

T0 = 1_700_000_000.0
ZONE = (("topology.kubernetes.io/zone", "us-west-2a"),)
DELTA = AggregationTemporality.DELTA
CUMULATIVE = AggregationTemporality.CUMULATIVE


def cycle(n: int, interval: float = 30.0) -> Cycle:
    return Cycle(time=T0 + n * interval, previous=T0 + (n - 1) * interval, index=n)


def gauge(name: str, value: float, attributes: tuple[tuple[str, str], ...] = (), **kw: object
          ) -> Metric:
    return Metric(name, MetricKind.GAUGE, value, attributes=attributes, **kw)  # type: ignore[arg-type]


def counter(name: str, value: float, attributes: tuple[tuple[str, str], ...] = ()) -> Metric:
    return Metric(name, MetricKind.COUNTER, value, attributes=attributes)


def dist(name: str, counts: tuple[float, ...], bounds: tuple[float, ...] = (10.0, 100.0),
         total: float = 0.0) -> Metric:
    d = Distribution(bounds=bounds, counts=counts, sum=total, count=sum(counts))
    return Metric(name, MetricKind.DISTRIBUTION, sum(counts), unit="Milliseconds", distribution=d)


@pytest.mark.parametrize(("cloudwatch", "ucum"), [
    ("Count", "1"), ("Milliseconds", "ms"), ("Seconds", "s"), ("Percent", "%"), ("Bytes", "By"),
    ("None", ""), ("{ip}", "{ip}"),
])
def test_unit_of(cloudwatch: str, ucum: str) -> None:
    assert unit_of(cloudwatch) == ucum


@pytest.mark.parametrize(("family", "series", "expected"), [
    ("awscni_add_ip_req_count", "awscni_add_ip_req_count", True),
    ("awscni_aws_api_latency_ms", "awscni_aws_api_latency_ms_sum", True),
    ("awscni_aws_api_latency_ms", "awscni_aws_api_latency_ms_count", True),
    ("awscni_aws_api_latency_ms", "awscni_aws_api_latency_ms", False),  # a quantile
    ("awscni_force_removed_enis", "awscni_force_removed_enis", False),  # no suffix, not told
    ("awscni_connmark_reconcile_total", "awscni_connmark_reconcile_total", True),
    ("x", "x_bucket", True),
    ("awscni_eni_max", "awscni_eni_max", False),
    ("awscni_ipamd_action_inprogress", "awscni_ipamd_action_inprogress", False),
])
def test_is_counter_series(family: str, series: str, expected: bool) -> None:
    assert is_counter_series(family, series) is expected


def test_a_family_without_suffix_is_a_counter_when_a_counter_aggregate_reads_it() -> None:
    batch = Batch(cycle=cycle(1), metrics=(
        Metric("forceRemoveENI", MetricKind.COUNTER, 1.0, source="awscni_force_removed_enis"),
        Metric("eniMaxAvailable", MetricKind.GAUGE, 1.0, source="awscni_eni_max"),
        Metric("availableIPAddresses", MetricKind.COUNTER, 1.0),  # no source
    ))
    counters = counter_sources(batch)
    assert counters == {"awscni_force_removed_enis"}
    assert is_counter_series("awscni_force_removed_enis", "awscni_force_removed_enis", counters)
    assert not is_counter_series("awscni_eni_max", "awscni_eni_max", counters)


def test_to_nanos_is_exact_for_whole_and_fractional_seconds() -> None:
    assert to_nanos(T0) == 1_700_000_000_000_000_000
    assert to_nanos(T0 + 0.5) == 1_700_000_000_500_000_000


# -- cluster aggregates, delta -----------------------------------------------------------------


def test_delta_kinds_times_and_grouping() -> None:
    batch = Batch(cycle=cycle(1), metrics=(
        gauge("totalIPAddresses", 96.0),
        gauge("totalIPAddresses", 32.0, ZONE),
        counter("addReqCount", 100.0),
        counter("addReqCount", 40.0, ZONE),
        gauge("awsAPILatency", 812.0, unit="Milliseconds", description="p99"),
        dist("podLatency", (1, 2, 3), total=420.0),
    ))
    metrics = {m.name: m for m in cluster_metrics(batch)}
    assert list(metrics) == ["totalIPAddresses", "addReqCount", "awsAPILatency", "podLatency"]

    total = metrics["totalIPAddresses"]
    assert isinstance(total.data, Gauge) and total.unit == "1"
    points = {tuple(sorted(p.attributes.items())): p for p in total.data.data_points}
    assert points[()].value == 96.0 and points[ZONE].value == 32.0
    assert all(p.time_unix_nano == to_nanos(T0 + 30) and p.start_time_unix_nano == 0
               for p in total.data.data_points)

    add = metrics["addReqCount"]
    assert isinstance(add.data, Sum)
    assert add.data.is_monotonic and add.data.aggregation_temporality is DELTA
    assert sorted(p.value for p in add.data.data_points) == [40.0, 100.0]
    assert {p.start_time_unix_nano for p in add.data.data_points} == {to_nanos(T0)}

    latency = metrics["awsAPILatency"]
    assert isinstance(latency.data, Gauge)
    assert (latency.unit, latency.description) == ("ms", "p99")

    hist = metrics["podLatency"]
    assert isinstance(hist.data, Histogram) and hist.data.aggregation_temporality is DELTA
    (point,) = hist.data.data_points
    assert list(point.bucket_counts) == [1, 2, 3]
    assert list(point.explicit_bounds) == [10.0, 100.0]
    assert (point.count, point.sum) == (6, 420.0)
    assert point.start_time_unix_nano == to_nanos(T0)


def test_values_are_doubles_and_nan_gauges_are_skipped() -> None:
    batch = Batch(cycle=cycle(1), metrics=(
        gauge("eniAllocated", 3), gauge("awsAPILatency", math.nan), counter("awsAPIErr", 0),
    ))
    metrics = {m.name: m for m in cluster_metrics(batch)}
    assert "awsAPILatency" not in metrics  # its only point was NaN
    assert isinstance(metrics["eniAllocated"].data.data_points[0].value, float)
    assert metrics["awsAPIErr"].data.data_points[0].value == 0.0  # no increase still publishes 0


def test_histogram_counts_padded_to_bounds_plus_overflow() -> None:
    batch = Batch(cycle=cycle(1), metrics=(dist("d", (4,), bounds=(1.0, 2.0)),))
    (metric,) = cluster_metrics(batch)
    (point,) = metric.data.data_points
    assert list(point.bucket_counts) == [4, 0, 0]


# -- cumulative ---------------------------------------------------------------------------------


def test_running_totals_over_cycles() -> None:
    totals = RunningTotals()
    first = totals.add(Batch(cycle=cycle(1), metrics=(counter("c", 5), gauge("g", 1))))
    assert first == {("c", ()): Running(start=T0, value=5.0)}  # gauges are not accumulated
    totals.add(Batch(cycle=cycle(2), metrics=(counter("c", 7), counter("c", 2, ZONE))))
    third = totals.add(Batch(cycle=cycle(3), metrics=(counter("c", 0), counter("c", 1, ZONE))))
    assert third[("c", ())] == Running(start=T0, value=12.0)
    # A series first seen in cycle 2 runs from cycle 2's previous tick.
    assert third[("c", ZONE)] == Running(start=T0 + 30, value=3.0)


def test_running_totals_skip_a_series_absent_from_a_cycle_and_keep_its_total() -> None:
    totals = RunningTotals()
    totals.add(Batch(cycle=cycle(1), metrics=(counter("c", 5),)))
    assert totals.add(Batch(cycle=cycle(2), metrics=())) == {}
    assert totals.add(Batch(cycle=cycle(3), metrics=(counter("c", 1),)))[("c", ())].value == 6.0
    assert totals.add(Batch(cycle=cycle(4), metrics=(counter("c", math.nan),)))[
        ("c", ())].value == 6.0


def test_running_distribution_adds_and_restarts_when_bounds_change() -> None:
    totals = RunningTotals()
    totals.add(Batch(cycle=cycle(1), metrics=(dist("d", (1, 0, 2), total=50),)))
    second = totals.add(Batch(cycle=cycle(2), metrics=(dist("d", (0, 3, 1), total=70),)))
    running = second[("d", ())]
    assert running.start == T0
    assert running.distribution is not None
    assert running.distribution.counts == (1, 3, 3)
    assert (running.distribution.sum, running.distribution.count) == (120, 7)
    third = totals.add(Batch(cycle=cycle(3), metrics=(dist("d", (5, 5), bounds=(1.0,)),)))
    restarted = third[("d", ())]
    assert restarted.start == T0 + 60 and restarted.distribution is not None
    assert restarted.distribution.counts == (5, 5)


def test_cumulative_conversion_uses_running_values_and_start() -> None:
    totals = RunningTotals()
    batches = [Batch(cycle=cycle(n), metrics=(counter("addReqCount", 10.0 * n),
                                              dist("d", (1, 1, 1)), gauge("g", float(n))))
               for n in (1, 2, 3)]
    snapshots = [totals.add(b) for b in batches]
    metrics = {m.name: m for m in cluster_metrics(batches[2], snapshots[2])}
    add = metrics["addReqCount"].data
    assert isinstance(add, Sum) and add.aggregation_temporality is CUMULATIVE and add.is_monotonic
    (point,) = add.data_points
    assert point.value == 60.0
    assert (point.start_time_unix_nano, point.time_unix_nano) == (to_nanos(T0), to_nanos(T0 + 90))
    hist = metrics["d"].data
    assert isinstance(hist, Histogram) and hist.aggregation_temporality is CUMULATIVE
    assert list(hist.data_points[0].bucket_counts) == [3, 3, 3]
    assert metrics["g"].data.data_points[0].value == 3.0  # gauges stay as they are


# -- per target ---------------------------------------------------------------------------------


def scrape(address: str = "10.0.1.5:61678", up: bool = True, **families: list[tuple[str, float]]
           ) -> TargetScrape:
    return TargetScrape(
        target=Target(address, url=f"http://{address}/metrics", pod="aws-node-abc",
                      node="ip-10-0-1-5", namespace="kube-system", attributes=ZONE),
        health=TargetHealth(up=up, scraped_at=T0 + 30),
        families=families if up else {},
        process_start_time=T0 - 3600 if up else None,
    )


def test_target_metrics_types_by_name_and_skip_nan() -> None:
    page = scrape(
        awscni_eni_max=[("awscni_eni_max", 4.0)],
        awscni_add_ip_req_count=[("awscni_add_ip_req_count", 17.0)],
        awscni_force_removed_enis=[("awscni_force_removed_enis", 2.0)],
        awscni_aws_api_latency_ms=[
            ('awscni_aws_api_latency_ms{api="GetMetadata",quantile="0.99"}', 1.0),
            ('awscni_aws_api_latency_ms{api="CreateTags",quantile="0.99"}', math.nan),
            ('awscni_aws_api_latency_ms_sum{api="GetMetadata"}', 4384.0),
            ('awscni_aws_api_latency_ms_count{api="GetMetadata"}', 82716.0),
        ],
    )
    # force_removed_enis has no counter suffix: the batch's counter aggregates tell it apart.
    counters = frozenset({"awscni_force_removed_enis"})
    metrics = {m.name: m for m in target_metrics(page, to_nanos(T0 + 30), 0, counters=counters)}
    assert isinstance(metrics["up"].data, Gauge) and metrics["up"].data.data_points[0].value == 1.0
    assert isinstance(metrics["awscni_eni_max"].data, Gauge)
    for name in ("awscni_add_ip_req_count", "awscni_force_removed_enis",
                 "awscni_aws_api_latency_ms_sum", "awscni_aws_api_latency_ms_count"):
        data = metrics[name].data
        assert isinstance(data, Sum), name
        assert data.aggregation_temporality is CUMULATIVE and data.is_monotonic
        assert data.data_points[0].start_time_unix_nano == to_nanos(T0 - 3600)
    quantiles = metrics["awscni_aws_api_latency_ms"].data
    assert isinstance(quantiles, Gauge)
    assert [dict(p.attributes) for p in quantiles.data_points] == [
        {"api": "GetMetadata", "quantile": "0.99"}
    ]


def test_target_metrics_family_filter_and_down_target() -> None:
    page = scrape(awscni_eni_max=[("awscni_eni_max", 4.0)], awscni_ip_max=[("awscni_ip_max", 9)])
    names = [m.name for m in target_metrics(page, 1, 0, frozenset({"awscni_ip_max"}))]
    assert names == ["up", "awscni_ip_max"]
    down = [(m.name, m.data.data_points[0].value) for m in target_metrics(scrape(up=False), 1, 0)]
    assert down == [("up", 0.0)]


def test_target_without_process_start_uses_default_start() -> None:
    page = TargetScrape(target=Target("a:1"), health=TargetHealth(up=True, scraped_at=0),
                        families={"x_total": [("x_total", 1.0)]})
    (_, total) = target_metrics(page, 10, 7)
    assert total.data.data_points[0].start_time_unix_nano == 7


def test_target_resource() -> None:
    base = {"k8s.cluster.name": "c", "cloud.provider": "aws"}
    assert target_resource(scrape(), base) == {
        "k8s.cluster.name": "c", "cloud.provider": "aws", "service.name": "aws-node",
        "service.instance.id": "10.0.1.5:61678", "k8s.pod.name": "aws-node-abc",
        "k8s.node.name": "ip-10-0-1-5", "k8s.namespace.name": "kube-system",
        "url.full": "http://10.0.1.5:61678/metrics",
        "topology.kubernetes.io/zone": "us-west-2a",
    }
    bare = TargetScrape(target=Target("a:1"), health=TargetHealth(up=False, scraped_at=0))
    assert target_resource(bare, {}) == {"service.name": "aws-node", "service.instance.id": "a:1"}


# -- the whole request, through the SDK's own encoder -------------------------------------------


def test_to_metrics_data_encodes_with_the_sdk_encoder() -> None:
    batch = Batch(
        cycle=cycle(1),
        metrics=(gauge("totalIPAddresses", 96.0), counter("addReqCount", 3.0, ZONE)),
        targets=(scrape(awscni_eni_max=[("awscni_eni_max", 4.0)]),
                 scrape("10.0.2.7:61678", up=False)),
    )
    resource = {"service.name": "cni-pipeline", "k8s.cluster.name": "c", "cloud.provider": "aws"}
    data = to_metrics_data(batch, resource=resource, scope=InstrumentationScope("cni-pipeline"),
                           per_target=True)
    points = flatten([encode_metrics(data)])
    assert [(p.resource["service.name"], p.name, p.value) for p in points] == [
        ("cni-pipeline", "totalIPAddresses", 96.0),
        ("cni-pipeline", "addReqCount", 3.0),
        ("aws-node", "up", 1.0),
        ("aws-node", "awscni_eni_max", 4.0),
        ("aws-node", "up", 0.0),
    ]
    assert points[1].attributes == {"topology.kubernetes.io/zone": "us-west-2a"}
    assert points[1].temporality == 1 and points[1].monotonic
    assert all(p.time == to_nanos(T0 + 30) for p in points)
    assert points[2].resource["k8s.cluster.name"] == "c"  # targets inherit the cluster attributes
    assert points[4].resource["service.instance.id"] == "10.0.2.7:61678"
    assert {p.scope for p in points} == {"cni-pipeline"}
    assert count_points(batch, per_target=True, families=None) == len(points)
    assert count_points(batch, per_target=False, families=None) == 2


def test_without_per_target_only_the_cluster_resource() -> None:
    batch = Batch(cycle=cycle(1), metrics=(gauge("g", 1.0),),
                  targets=(scrape(awscni_eni_max=[("awscni_eni_max", 4.0)]),))
    data = to_metrics_data(batch, resource={"service.name": "x"},
                           scope=InstrumentationScope("cni-pipeline"))
    assert len(data.resource_metrics) == 1
