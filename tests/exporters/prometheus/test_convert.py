"""Table tests of the pure aggregates -> Prometheus families conversion."""

from __future__ import annotations

import math

import pytest

from exporters.prometheus._convert import (
    Exposition,
    Family,
    HistogramSample,
    NumberSample,
    label_name,
    prometheus_name,
    snake_case,
)
from pipeline import Batch, Cycle, Distribution, Metric, MetricKind

GO_GAUGES = {
    "eniMaxAvailable": "awscni_eni_max",
    "maxIPAddresses": "awscni_ip_max",
    "eniAllocated": "awscni_eni_allocated",
    "totalIPAddresses": "awscni_total_ip_addresses",
    "assignIPAddresses": "awscni_assigned_ip_addresses",
    "totalIPv4Prefixes": "awscni_total_ipv4_prefixes",
}


def batch(*metrics: Metric, n: int = 1) -> Batch:
    return Batch(cycle=Cycle(time=30.0 * n, previous=30.0 * (n - 1)), metrics=metrics)


def g(name: str, value: float, attributes: tuple[tuple[str, str], ...] = (), unit: str = "Count"
      ) -> Metric:
    return Metric(name, MetricKind.GAUGE, value, unit=unit, attributes=attributes)


def c(name: str, value: float, attributes: tuple[tuple[str, str], ...] = ()) -> Metric:
    return Metric(name, MetricKind.COUNTER, value, attributes=attributes)


def families(fams: tuple[Family, ...]) -> dict[str, Family]:
    return {f.name: f for f in fams}


def values(family: Family) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in family.samples if isinstance(s, NumberSample)}


@pytest.mark.parametrize(("cloudwatch", "prometheus"), sorted(GO_GAUGES.items()))
def test_the_go_tools_six_gauges_keep_their_names(cloudwatch: str, prometheus: str) -> None:
    assert prometheus_name(g(cloudwatch, 1.0)) == prometheus


@pytest.mark.parametrize(("metric", "name"), [
    (c("addReqCount", 1), "awscni_add_ip_req_count_total"),
    (c("delReqCount", 1), "awscni_del_ip_req_count_total"),
    (c("awsAPIErr", 1), "awscni_aws_api_error_count_total"),
    (c("awsUtilErr", 1), "awscni_aws_utils_error_count_total"),
    (c("ipamdErr", 1), "awscni_ipamd_error_count_total"),
    (c("podENIErr", 1), "awscni_pod_eni_error_count_total"),
    (c("reconcileCount", 1), "awscni_reconcile_count_total"),
    (c("forceRemoveENI", 1), "awscni_force_removed_enis_total"),
    (c("forceRemoveIPs", 1), "awscni_force_removed_ips_total"),
    (c("ec2ApiReqCount", 1), "awscni_ec2api_req_count_total"),
    (c("ec2ApiErrCount", 1), "awscni_ec2api_error_count_total"),
    (g("ipamdActionInProgress", 1), "awscni_ipamd_action_inprogress"),
    (g("totalAssignedIPv4sPerCidr", 1), "awscni_assigned_ip_per_cidr"),
    (g("awsAPILatency", 1, unit="Milliseconds"), "awscni_aws_api_latency_p99_seconds"),
    # Names outside the table: snake case, unit suffix, _total for counters.
    (g("availableIPAddresses", 1), "awscni_available_ip_addresses"),
    (g("ipUtilization", 1, unit="Percent"), "awscni_ip_utilization_ratio"),
    (g("targetsReporting", 1), "awscni_targets_reporting"),
    (c("myCustomCounter", 1), "awscni_my_custom_counter_total"),
    (g("odd-name.x", 1, unit="Bytes"), "awscni_odd_name_x_bytes"),
    (c("already_total", 1), "awscni_already_total"),
])
def test_prometheus_name(metric: Metric, name: str) -> None:
    assert prometheus_name(metric) == name


@pytest.mark.parametrize(("text", "snake"), [
    ("availableIPAddresses", "available_ip_addresses"),
    ("eniUtilization", "eni_utilization"),
    ("targetsDiscovered", "targets_discovered"),
    ("ec2ApiReqCount", "ec2_api_req_count"),
])
def test_snake_case(text: str, snake: str) -> None:
    assert snake_case(text) == snake


@pytest.mark.parametrize(("key", "label"), [
    ("zone", "zone"),
    ("topology.kubernetes.io/zone", "topology_kubernetes_io_zone"),
    ("node.kubernetes.io/instance-type", "node_kubernetes_io_instance_type"),
    ("9lives", "key_9lives"),
    ("__reserved", "key__reserved"),
    ("", "key_"),
])
def test_label_name(key: str, label: str) -> None:
    assert label_name(key) == label


def test_gauges_are_the_latest_values_with_group_by_labels() -> None:
    expo = Exposition()
    fams = families(expo.update(batch(
        g("totalIPAddresses", 96.0), g("totalIPAddresses", 32.0, (("zone", "us-west-2a"),)),
        g("awsAPILatency", 812.0, unit="Milliseconds"),
        g("ipUtilization", 37.5, unit="Percent"),
    )))
    total = fams["awscni_total_ip_addresses"]
    assert total.type == "gauge" and total.help
    assert values(total) == {(): 96.0, (("zone", "us-west-2a"),): 32.0}
    assert values(fams["awscni_aws_api_latency_p99_seconds"]) == {(): 0.812}
    assert values(fams["awscni_ip_utilization_ratio"]) == {(): 0.375}
    second = families(expo.update(batch(g("totalIPAddresses", 90.0), n=2)))
    assert values(second["awscni_total_ip_addresses"]) == {(): 90.0}  # the zone left the cycle
    assert "awscni_aws_api_latency_p99_seconds" not in second


def test_counters_are_running_totals_that_survive_a_gap() -> None:
    expo = Exposition()
    zone = (("zone", "a"),)
    expo.update(batch(c("addReqCount", 5.0), c("addReqCount", 2.0, zone)))
    fams = families(expo.update(batch(c("addReqCount", 3.0), c("addReqCount", 0.0, zone), n=2)))
    total = fams["awscni_add_ip_req_count_total"]
    assert total.type == "counter"
    assert values(total) == {(): 8.0, zone: 2.0}
    assert "awscni_add_ip_req_count_total" not in families(expo.update(batch(n=3)))
    back = families(expo.update(batch(c("addReqCount", 1.0), n=4)))
    assert values(back["awscni_add_ip_req_count_total"]) == {(): 9.0}  # never goes down


def test_nan_and_negative_values() -> None:
    expo = Exposition()
    fams = families(expo.update(batch(g("awsAPILatency", math.nan), c("awsAPIErr", -3.0),
                                      g("eniAllocated", -1.0))))
    assert not [name for name in fams if name.startswith("awscni_aws_api_latency")]
    assert values(fams["awscni_aws_api_error_count_total"]) == {(): 0.0}
    assert values(fams["awscni_eni_allocated"]) == {(): -1.0}  # gauges may go negative


def test_histograms_are_cumulative_over_buckets_and_cycles() -> None:
    expo = Exposition()

    def d(counts: tuple[float, ...], total: float, bounds: tuple[float, ...] = (10.0, 100.0)
          ) -> Metric:
        dist = Distribution(bounds=bounds, counts=counts, sum=total, count=sum(counts))
        return Metric("podSetupLatency", MetricKind.DISTRIBUTION, sum(counts),
                      unit="Milliseconds", distribution=dist)

    expo.update(batch(d((1, 2, 3), 640.0)))
    fams = families(expo.update(batch(d((1, 0, 1), 120.0), n=2)))
    family = fams["awscni_pod_setup_latency_seconds"]
    assert family.type == "histogram"
    (sample,) = family.samples
    assert isinstance(sample, HistogramSample)
    assert sample.buckets == ((0.01, 2.0), (0.1, 4.0), (math.inf, 8.0))
    assert (sample.count, sample.sum) == (8.0, pytest.approx(0.76))
    restarted = families(expo.update(batch(d((4, 4), 1.0, bounds=(1.0,)), n=3)))
    (sample,) = restarted["awscni_pod_setup_latency_seconds"].samples
    assert isinstance(sample, HistogramSample)
    assert sample.buckets == ((0.001, 4.0), (math.inf, 8.0))


def test_const_labels_and_colliding_keys() -> None:
    expo = Exposition({"cluster": "prod"})
    fams = families(expo.update(batch(
        g("eniAllocated", 3.0),
        g("eniAllocated", 1.0, (("a.b", "x"), ("a/b", "y"))),
    )))
    assert values(fams["awscni_eni_allocated"]) == {
        (("cluster", "prod"),): 3.0,
        (("a_b", "x;y"), ("cluster", "prod")): 1.0,
    }


def test_help_texts() -> None:
    fams = families(Exposition().update(batch(
        c("addReqCount", 1.0), g("eniMaxAvailable", 1.0),
        Metric("availableIPAddresses", MetricKind.GAUGE, 1.0, description="free IPs"),
        Metric("customThing", MetricKind.COUNTER, 1.0, description="things in the cycle"),
    )))
    assert fams["awscni_add_ip_req_count_total"].help.startswith("Total since this exporter")
    assert "ENIs" in fams["awscni_eni_max"].help
    assert fams["awscni_available_ip_addresses"].help == "Free IPs"
    assert fams["awscni_custom_thing_total"].help.startswith("Running total")


def test_a_name_keeps_the_type_of_its_first_metric() -> None:
    mixed = batch(g("x", 1.0), Metric("x", MetricKind.DISTRIBUTION, 1.0))
    fams = families(Exposition().update(mixed))
    assert fams["awscni_x"].type == "gauge" and len(fams["awscni_x"].samples) == 1
