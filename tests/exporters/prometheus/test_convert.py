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
    quantile_suffix,
    snake_case,
)
from pipeline import Batch, Cycle, Distribution, Metric, MetricKind
from processors.cni_aggregate._rules import DEFAULT_RULES, DERIVED_NAMES
from tests.exporters.aggregates import aggregate

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
    assert prometheus_name(aggregate(cloudwatch, 1.0)) == prometheus


#: Every default rule's served name and HELP, as they were when the exporter kept its own copy
#: of the rule table (they must not change now that they come from the metric).
_INCREASE = "Total since this exporter started, over the cluster's aws-node pods, of: "
_SUM = "Sum over the cluster's aws-node pods of: "
SERVED = {
    "addReqCount": ("awscni_add_ip_req_count_total",
                    _INCREASE + "the number of add IP address requests"),
    "assignIPAddresses": ("awscni_assigned_ip_addresses",
                          _SUM + "the number of IP addresses assigned to pods"),
    "awsAPIErr": ("awscni_aws_api_error_count_total",
                  _INCREASE + "the number of times AWS API returns an error"),
    "awsAPILatency": ("awscni_aws_api_latency_p99_seconds",
                      "Highest 0.99 quantile of AWS API call latency across aws-node pods"),
    "awsUtilErr": ("awscni_aws_utils_error_count_total",
                   _INCREASE + "the number of errors not handled in awsutils library"),
    "delReqCount": ("awscni_del_ip_req_count_total",
                    _INCREASE + "the number of delete IP address requests"),
    "eniAllocated": ("awscni_eni_allocated", _SUM + "the number of ENIs allocated"),
    "eniMaxAvailable": ("awscni_eni_max",
                        _SUM + "the maximum number of ENIs that can be attached to the instance"),
    "ipamdActionInProgress": ("awscni_ipamd_action_inprogress",
                              _SUM + "the number of ipamd actions in progress"),
    "ipamdErr": ("awscni_ipamd_error_count_total",
                 _INCREASE + "the number of errors encountered in ipamd"),
    "maxIPAddresses": ("awscni_ip_max",
                       _SUM + "the maximum number of IP addresses that can be allocated"),
    "podENIErr": ("awscni_pod_eni_error_count_total",
                  _INCREASE + "the number of errors encountered for pod ENIs"),
    "reconcileCount": ("awscni_reconcile_count_total",
                       _INCREASE + "the number of times ipamd reconciles on ENIs and IPs"),
    "totalIPAddresses": ("awscni_total_ip_addresses", _SUM + "the total number of IP addresses"),
    "totalIPv4Prefixes": ("awscni_total_ipv4_prefixes",
                          _SUM + "the total number of IPv4 prefixes"),
    "totalAssignedIPv4sPerCidr": ("awscni_assigned_ip_per_cidr",
                                  _SUM + "the number of IP addresses assigned per cidr"),
    "forceRemoveENI": ("awscni_force_removed_enis_total",
                       _INCREASE + "the number of ENIs force removed while they had assigned pods"),
    "forceRemoveIPs": ("awscni_force_removed_ips_total",
                       _INCREASE + "the number of IPs force removed while they had assigned pods"),
    "ec2ApiReqCount": ("awscni_ec2api_req_count_total",
                       _INCREASE + "the number of requests made to EC2 APIs by CNI"),
    "ec2ApiErrCount": ("awscni_ec2api_error_count_total",
                       _INCREASE + "the number of failed EC2 APIs requests"),
}


def test_every_default_rule_keeps_its_name_and_help() -> None:
    assert set(SERVED) == {rule.name for rule in DEFAULT_RULES}
    fams = families(Exposition().update(batch(*(aggregate(r.name, 1.0) for r in DEFAULT_RULES))))
    assert {name: (served, fams[served].help) for name, (served, _) in SERVED.items()} == SERVED


@pytest.mark.parametrize(("metric", "name"), [
    # Named after the source family: its unit word gives way, the quantile is added.
    (Metric("x", MetricKind.GAUGE, 1.0, "Milliseconds", source="awscni_x_ms", quantile=0.9),
     "awscni_x_p90_seconds"),
    (Metric("x", MetricKind.GAUGE, 1.0, "Seconds", source="awscni_x_seconds", quantile=0.5),
     "awscni_x_p50_seconds"),
    (Metric("x", MetricKind.GAUGE, 1.0, source="awscni_x", quantile=0.999), "awscni_x_p999"),
    (Metric("x", MetricKind.COUNTER, 1.0, source="awscni_x_count"), "awscni_x_count_total"),
    (Metric("x", MetricKind.COUNTER, 1.0, source="awscni_x_total"), "awscni_x_total"),
    (Metric("x", MetricKind.GAUGE, 1.0, "Bytes", source="awscni_mem_bytes"), "awscni_mem_bytes"),
    # No source: awscni_ + snake case, unit suffix, _total for counters.
    (g("availableIPAddresses", 1), "awscni_available_ip_addresses"),
    (g("ipUtilization", 1, unit="Percent"), "awscni_ip_utilization_ratio"),
    (g("targetsReporting", 1), "awscni_targets_reporting"),
    (c("myCustomCounter", 1), "awscni_my_custom_counter_total"),
    (g("odd-name.x", 1, unit="Bytes"), "awscni_odd_name_x_bytes"),
    (c("already_total", 1), "awscni_already_total"),
])
def test_prometheus_name(metric: Metric, name: str) -> None:
    assert prometheus_name(metric) == name


#: Every default rule's and derived metric's name in snake case: acronyms stay whole, with their
#: version (``IPv4``) and plural (``IPs``, ``IPv4s``).
SNAKE = {
    "addReqCount": "add_req_count", "assignIPAddresses": "assign_ip_addresses",
    "awsAPIErr": "aws_api_err", "awsAPILatency": "aws_api_latency",
    "awsUtilErr": "aws_util_err", "delReqCount": "del_req_count",
    "eniAllocated": "eni_allocated", "eniMaxAvailable": "eni_max_available",
    "ipamdActionInProgress": "ipamd_action_in_progress", "ipamdErr": "ipamd_err",
    "maxIPAddresses": "max_ip_addresses", "podENIErr": "pod_eni_err",
    "reconcileCount": "reconcile_count", "totalIPAddresses": "total_ip_addresses",
    "totalIPv4Prefixes": "total_ipv4_prefixes",
    "totalAssignedIPv4sPerCidr": "total_assigned_ipv4s_per_cidr",
    "forceRemoveENI": "force_remove_eni", "forceRemoveIPs": "force_remove_ips",
    "ec2ApiReqCount": "ec2_api_req_count", "ec2ApiErrCount": "ec2_api_err_count",
    "availableIPAddresses": "available_ip_addresses", "ipUtilization": "ip_utilization",
    "eniUtilization": "eni_utilization", "targetsDiscovered": "targets_discovered",
    "targetsReporting": "targets_reporting", "targetsStale": "targets_stale",
    "targetsFailed": "targets_failed", "shardsMissing": "shards_missing",
}


def test_snake_case_of_every_default_and_derived_name() -> None:
    assert set(SNAKE) == {r.name for r in DEFAULT_RULES} | set(DERIVED_NAMES)
    assert {name: snake_case(name) for name in SNAKE} == SNAKE


@pytest.mark.parametrize(("text", "snake"), [
    ("nodesReportingIPs", "nodes_reporting_ips"),
    ("IPs", "ips"),
    ("ENIsAttached", "enis_attached"),
    ("IPv6Addresses", "ipv6_addresses"),
    ("APIStatus", "api_status"),
    ("getX", "get_x"),
    ("http2Errors", "http2_errors"),
    ("odd-name.x", "odd_name_x"),
    ("already_snake_case", "already_snake_case"),
])
def test_snake_case_tricky_names(text: str, snake: str) -> None:
    assert snake_case(text) == snake


@pytest.mark.parametrize(("quantile", "suffix"), [
    (0.5, "_p50"), (0.9, "_p90"), (0.95, "_p95"), (0.99, "_p99"), (0.999, "_p999"),
    (0.05, "_p05"), (0.0, "_p00"), (1.0, "_p100"),
])
def test_quantile_suffix(quantile: float, suffix: str) -> None:
    assert quantile_suffix(quantile) == suffix


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
        aggregate("totalIPAddresses", 96.0),
        aggregate("totalIPAddresses", 32.0, (("zone", "us-west-2a"),)),
        aggregate("awsAPILatency", 812.0),
        g("ipUtilization", 37.5, unit="Percent"),
    )))
    total = fams["awscni_total_ip_addresses"]
    assert total.type == "gauge" and total.help
    assert values(total) == {(): 96.0, (("zone", "us-west-2a"),): 32.0}
    assert values(fams["awscni_aws_api_latency_p99_seconds"]) == {(): 0.812}
    assert values(fams["awscni_ip_utilization_ratio"]) == {(): 0.375}
    second = families(expo.update(batch(aggregate("totalIPAddresses", 90.0), n=2)))
    assert values(second["awscni_total_ip_addresses"]) == {(): 90.0}  # the zone left the cycle
    assert "awscni_aws_api_latency_p99_seconds" not in second


def test_counters_are_running_totals_that_survive_a_gap() -> None:
    expo = Exposition()
    zone = (("zone", "a"),)
    expo.update(batch(aggregate("addReqCount", 5.0), aggregate("addReqCount", 2.0, zone)))
    fams = families(expo.update(batch(aggregate("addReqCount", 3.0),
                                      aggregate("addReqCount", 0.0, zone), n=2)))
    total = fams["awscni_add_ip_req_count_total"]
    assert total.type == "counter"
    assert values(total) == {(): 8.0, zone: 2.0}
    assert "awscni_add_ip_req_count_total" not in families(expo.update(batch(n=3)))
    back = families(expo.update(batch(aggregate("addReqCount", 1.0), n=4)))
    assert values(back["awscni_add_ip_req_count_total"]) == {(): 9.0}  # never goes down


def test_nan_and_negative_values() -> None:
    expo = Exposition()
    fams = families(expo.update(batch(aggregate("awsAPILatency", math.nan),
                                      aggregate("awsAPIErr", -3.0),
                                      aggregate("eniAllocated", -1.0))))
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
        aggregate("eniAllocated", 3.0),
        aggregate("eniAllocated", 1.0, (("a.b", "x"), ("a/b", "y"))),
    )))
    assert values(fams["awscni_eni_allocated"]) == {
        (("cluster", "prod"),): 3.0,
        (("a_b", "x;y"), ("cluster", "prod")): 1.0,
    }


def test_help_is_the_description_said_of_what_is_served() -> None:
    fams = families(Exposition().update(batch(
        Metric("availableIPAddresses", MetricKind.GAUGE, 1.0, description="free IPs"),
        Metric("customThing", MetricKind.COUNTER, 1.0, description="Things counted"),
        Metric("apiCalls", MetricKind.COUNTER, 1.0, description="AWS API calls"),
        Metric("bare", MetricKind.GAUGE, 1.0),
    )))
    assert fams["awscni_available_ip_addresses"].help == "Free IPs"
    assert fams["awscni_custom_thing_total"].help == (
        "Total since this exporter started, things counted")
    # An acronym keeps its capitals.
    assert fams["awscni_api_calls_total"].help == "Total since this exporter started, AWS API calls"
    assert fams["awscni_bare"].help == "Cluster-wide bare (cni-pipeline aggregate)"


def test_two_metrics_of_one_source_get_two_names_for_good() -> None:
    """A count of the nodes reporting a family beside its sum: the first keeps the family's
    name, the other is named after itself, in every later cycle too (even one the first is
    missing from)."""
    nodes = Metric("nodesReportingIPs", MetricKind.GAUGE, 3.0,
                   source="awscni_assigned_ip_addresses")
    expo = Exposition()
    first = families(expo.update(batch(aggregate("assignIPAddresses", 41.0), nodes)))
    assert values(first["awscni_assigned_ip_addresses"]) == {(): 41.0}
    assert values(first["awscni_nodes_reporting_ips"]) == {(): 3.0}
    alone = families(expo.update(batch(nodes, n=2)))
    assert list(alone) == ["awscni_nodes_reporting_ips"]
    both = families(expo.update(batch(nodes, aggregate("assignIPAddresses", 40.0), n=3)))
    assert values(both["awscni_assigned_ip_addresses"]) == {(): 40.0}


def test_a_name_keeps_the_type_of_its_first_metric() -> None:
    mixed = batch(g("x", 1.0), Metric("x", MetricKind.DISTRIBUTION, 1.0))
    fams = families(Exposition().update(mixed))
    assert fams["awscni_x"].type == "gauge" and len(fams["awscni_x"].samples) == 1
