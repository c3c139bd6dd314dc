"""Golden cases: expected numbers worked out by hand from docs/aggregation.md's
"Aggregation semantics".

Each comment shows the arithmetic. Cycle i is at tick T0 + 30*i; the pipeline started 12 s before
T0; ``OLD_START`` is a process start long before that, so a first scrape is a baseline.
"""

from __future__ import annotations

import math
import random

from pipeline import Distribution, Duration, MetricKind, TargetScrape, validate_config
from processors.cni_aggregate._aggregate import Aggregator
from processors.cni_aggregate.config import CniAggregateConfig, RuleConfig, resolve_rules
from tests.processors.cni_aggregate._fleet import (
    OLD_START,
    STARTED,
    batch,
    by_key,
    down,
    series,
    target,
    tick,
    up,
    values,
)

ADD = "awscni_add_ip_req_count"
API_ERR = "awscni_aws_api_error_count"
ASSIGNED = "awscni_assigned_ip_addresses"
TOTAL = "awscni_total_ip_addresses"
LATENCY = "awscni_aws_api_latency_ms"
PREFIXES = "awscni_total_ipv4_prefixes"
NAN = math.nan

A, B, C, D = (target(name, zone=zone) for name, zone in
              (("node-a", "us-east-1a"), ("node-b", "us-east-1b"), ("node-c", "us-east-1a"),
               ("node-d", "us-east-1b")))


def aggregator(config: CniAggregateConfig | None = None) -> Aggregator:
    config = config or CniAggregateConfig()
    assert list(validate_config(config)) == []
    rules, _ = resolve_rules(config)
    return Aggregator(rules, config.group_by, config.staleness)


def add(value: float) -> dict[str, list[tuple[str, float]]]:
    return {ADD: [(ADD, value)]}


def test_three_nodes_publish_the_sum_of_their_own_deltas() -> None:
    agg = aggregator()
    first, _ = agg.aggregate(batch(0, [up(A, 0, add(20)), up(B, 0, add(50)), up(C, 0, add(30))]))
    # First sight, processes started before the pipeline: baselines, a counter with no increase
    # publishes 0.
    assert values(first)["addReqCount"] == 0.0
    second, _ = agg.aggregate(batch(1, [up(A, 1, add(25)), up(B, 1, add(60)), up(C, 1, add(31))]))
    # (25-20) + (60-50) + (31-30) = 16  (the Go helper publishes a per-target mix instead)
    metric = by_key(second)[("addReqCount", ())]
    assert metric.value == 16.0
    assert metric.kind is MetricKind.COUNTER
    assert metric.unit == "Count"


def test_restart_below_the_old_value_is_a_reset_by_drop() -> None:
    agg = aggregator()
    agg.aggregate(batch(0, [up(A, 0, add(100), start=None)]))
    # No process_start_time: the drop 100 -> 7 alone says "reset"; the increase is 7.
    out, stats = agg.aggregate(batch(1, [up(A, 1, add(7), start=None)]))
    assert values(out)["addReqCount"] == 7.0
    assert stats.resets == 1


def test_restart_above_the_old_value_is_caught_by_the_start_time() -> None:
    agg = aggregator()
    agg.aggregate(batch(0, [up(A, 0, add(100), start=OLD_START)]))
    # Restarted (start time changed) and already counted past the old value: the whole new value
    # 130 is the increase, not 130 - 100 = 30.
    out, stats = agg.aggregate(batch(1, [up(A, 1, add(130), start=tick(1) - 5)]))
    assert values(out)["addReqCount"] == 130.0
    assert stats.restarts == 1


def test_restart_above_the_old_value_without_a_start_time_is_undetectable() -> None:
    agg = aggregator()
    agg.aggregate(batch(0, [up(A, 0, add(100), start=None)]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, add(130), start=None)]))
    # docs/aggregation.md: without process_start_time_seconds only a drop is a reset: 130 - 100.
    assert values(out)["addReqCount"] == 30.0


def test_new_labelled_series_on_a_running_node_counts_whole() -> None:
    agg = aggregator()
    throttled = series(API_ERR, api="AssignPrivateIpAddresses", error="Throttling")
    denied = series(API_ERR, api="CreateNetworkInterface", error="UnauthorizedOperation")
    agg.aggregate(batch(0, [up(A, 0, {API_ERR: [(throttled, 3)]})]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, {API_ERR: [(throttled, 5), (denied, 2)]})]))
    # (5 - 3) + 2 (created since the last scrape by its first increments) = 4
    assert values(out)["awsAPIErr"] == 4.0


def test_node_that_starts_inside_the_window_counts_from_zero() -> None:
    agg = aggregator()
    agg.aggregate(batch(0, [up(A, 0, add(20))]))
    out, stats = agg.aggregate(batch(1, [
        up(A, 1, add(25)),
        # Started 10 s after cycle 0's tick: everything it counted happened in the window.
        up(C, 1, add(4), start=tick(0) + 10),
        # Started before the previous tick: a baseline, its 40 are history.
        up(D, 1, add(40), start=tick(0) - 1),
    ]))
    # (25 - 20) + 4 + 0 = 9
    assert values(out)["addReqCount"] == 9.0
    assert stats.counted_from_start == 1


def test_first_cycle_judges_new_processes_against_the_pipeline_start() -> None:
    agg = aggregator()
    out, _ = agg.aggregate(batch(0, [
        up(A, 0, add(3), start=STARTED + 1),    # started after the pipeline: 3
        up(B, 0, add(50), start=STARTED - 1),   # started before it: baseline
    ]))
    assert values(out)["addReqCount"] == 3.0


def test_failed_node_is_carried_while_stale_and_leaving_node_drops_at_once() -> None:
    config = CniAggregateConfig(staleness=Duration(60))
    agg = aggregator(config)

    def gauges(assigned: float, total: float, added: float) -> dict[str, list[tuple[str, float]]]:
        return {ASSIGNED: [(ASSIGNED, assigned)], TOTAL: [(TOTAL, total)], ADD: [(ADD, added)]}

    agg.aggregate(batch(0, [up(A, 0, gauges(10, 30, 100)), up(B, 0, gauges(20, 40, 50)),
                            up(C, 0, gauges(30, 50, 10))]))
    # Cycle 1: B fails (still discovered), C has left discovery.
    out, _ = agg.aggregate(batch(1, [up(A, 1, gauges(11, 30, 101)), down(B, 1, tick(0))]))
    got = values(out)
    assert got["assignIPAddresses"] == 11 + 20   # B's last value carried; C gone at once
    assert got["totalIPAddresses"] == 30 + 40
    assert got["addReqCount"] == 1.0              # B adds no increase while failed
    assert got["availableIPAddresses"] == 70 - 31
    assert got["targetsDiscovered"] == 2
    assert got["targetsReporting"] == 1
    assert got["targetsStale"] == 1
    assert got["targetsFailed"] == 0
    # Cycle 2: B's last success (cycle 0) is 60 s old, not younger than staleness: dropped.
    out, _ = agg.aggregate(batch(2, [up(A, 2, gauges(12, 30, 103)), down(B, 2, tick(0))]))
    got = values(out)
    assert got["assignIPAddresses"] == 12
    assert (got["targetsStale"], got["targetsFailed"]) == (0, 1)
    # Cycle 3: B is back at 58: its increase since its last success (50) is not lost.
    out, _ = agg.aggregate(batch(3, [up(A, 3, gauges(12, 30, 103)), up(B, 3, gauges(21, 40, 58))]))
    assert values(out)["addReqCount"] == 0 + 8
    # Cycle 4: C rejoins: a first sight again (baseline), not diffed against cycle 0.
    out, _ = agg.aggregate(batch(4, [up(A, 4, gauges(12, 30, 103)), up(B, 4, gauges(21, 40, 58)),
                                     up(C, 4, gauges(30, 50, 99))]))
    assert values(out)["addReqCount"] == 0.0


def test_counter_family_only_on_a_stale_node_publishes_zero() -> None:
    agg = aggregator()
    agg.aggregate(batch(0, [up(A, 0, add(5)), up(B, 0, {})]))
    out, _ = agg.aggregate(batch(1, [down(A, 1), up(B, 1, {})]))
    assert values(out)["addReqCount"] == 0.0


def latency(api: str, error: str, p99: float, p50: float = 1.0) -> list[tuple[str, float]]:
    return [
        (series(LATENCY, api=api, error=error, quantile="0.5"), p50),
        (series(LATENCY, api=api, error=error, quantile="0.99"), p99),
        (series(f"{LATENCY}_sum", api=api, error=error), 1000.0),
        (series(f"{LATENCY}_count", api=api, error=error), 10.0),
    ]


def test_nan_quantiles_are_skipped_and_max_of_p99_is_taken() -> None:
    agg = aggregator()
    out, stats = agg.aggregate(batch(0, [
        up(A, 0, {LATENCY: latency("CreateTags", "false", NAN) + latency("GetMetadata", "false",
                                                                          NAN)}),
        # The p50 of 500 is not a p99, the _sum of 1000 is not a quantile.
        up(B, 0, {LATENCY: latency("CreateTags", "false", 12.0, p50=500.0)
                  + latency("DescribeInstances", "true", 40.0)}),
        up(C, 0, {LATENCY: latency("AttachNetworkInterface", "false", math.inf)}),
    ]))
    metric = by_key(out)[("awsAPILatency", ())]
    assert metric.value == 40.0
    assert metric.unit == "Milliseconds"
    assert stats.nan_skipped == 3


def test_all_nan_quantiles_publish_nothing() -> None:
    agg = aggregator()
    out, _ = agg.aggregate(batch(0, [up(A, 0, {LATENCY: latency("CreateTags", "false", NAN)})]))
    assert "awsAPILatency" not in values(out)


def test_nan_gauge_is_skipped_not_summed() -> None:
    agg = aggregator()
    out, _ = agg.aggregate(batch(0, [up(A, 0, {ASSIGNED: [(ASSIGNED, NAN)]}),
                                     up(B, 0, {ASSIGNED: [(ASSIGNED, 5)]}),
                                     up(C, 0, {ASSIGNED: [(ASSIGNED, -math.inf)]})]))
    assert values(out)["assignIPAddresses"] == 5.0


def test_nan_counter_sample_keeps_the_last_finite_value_as_base() -> None:
    agg = aggregator()
    agg.aggregate(batch(0, [up(A, 0, add(10))]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, add(NAN))]))
    assert "addReqCount" not in values(out)   # no finite sample: the family did not report
    out, _ = agg.aggregate(batch(2, [up(A, 2, add(15))]))
    assert values(out)["addReqCount"] == 5.0   # 15 - 10, not 15


def test_family_missing_on_some_nodes_still_publishes_from_the_others() -> None:
    agg = aggregator()
    out, _ = agg.aggregate(batch(0, [
        up(A, 0, {ASSIGNED: [(ASSIGNED, 3)]}),                              # v1 page: no prefixes
        up(B, 0, {ASSIGNED: [(ASSIGNED, 4)], PREFIXES: [(PREFIXES, 2)]}),
        up(C, 0, {ASSIGNED: [(ASSIGNED, 5)], PREFIXES: [(PREFIXES, 6)]}),
    ]))
    got = values(out)
    assert got["totalIPv4Prefixes"] == 8.0
    assert got["assignIPAddresses"] == 12.0
    assert "eniAllocated" not in got             # nobody reported it: not published


def test_every_series_of_a_gauge_family_is_summed() -> None:
    family = "awscni_ipamd_action_inprogress"
    agg = aggregator()
    out, _ = agg.aggregate(batch(0, [
        up(A, 0, {family: [(series(family, fn="increaseIPPool"), 1),
                           (series(family, fn="decreaseIPPool"), 2)]}),
        up(B, 0, {family: [(series(family, fn="increaseIPPool"), 4)]}),
    ]))
    assert values(out)["ipamdActionInProgress"] == 7.0


def test_output_does_not_depend_on_target_order() -> None:
    def scrapes(index: int, scale: float) -> list[TargetScrape]:
        return [
            up(node, index, {ADD: [(ADD, 0.1 * n * scale)], ASSIGNED: [(ASSIGNED, 0.1 * n + 1e-3)],
                             LATENCY: latency("X", "false", 1.0 / n)})
            for n, node in enumerate(nodes, start=1)
        ]

    nodes = [target(f"node-{n}", zone=f"zone-{n % 3}", number=n) for n in range(40)]
    config = CniAggregateConfig(group_by=["zone"])
    straight, shuffled = aggregator(config), aggregator(config)
    rng = random.Random(7)
    for index, scale in enumerate((1.0, 1.7, 2.9)):
        in_order = scrapes(index, scale)
        mixed = list(in_order)
        rng.shuffle(mixed)
        expected, _ = straight.aggregate(batch(index, in_order))
        got, _ = shuffled.aggregate(batch(index, mixed))
        assert got == expected   # exactly, not approximately


def test_counter_rule_decides_even_for_a_summary_count_line() -> None:
    config = CniAggregateConfig(rules=[
        RuleConfig(name="awsAPICalls", family=f"{LATENCY}_count", type="counter"),
    ])
    agg = aggregator(config)
    agg.aggregate(batch(0, [up(A, 0, {LATENCY: latency("X", "false", 5)})]))
    later = [(s, 14.0 if s.startswith(f"{LATENCY}_count") else v)
             for s, v in latency("X", "false", 5)]
    out, _ = agg.aggregate(batch(1, [up(A, 1, {LATENCY: later})]))
    assert values(out)["awsAPICalls"] == 4.0   # 14 - 10 from the _count line filed under LATENCY


def test_openmetrics_counter_total_lines_count_and_created_lines_do_not() -> None:
    # prometheus_client names counter `awscni_add_ip_req_count`'s sample `..._total`, adds a
    # `..._created` timestamp, and the receiver files both under the family.
    agg = aggregator()
    created = (f"{ADD}_created", 1_699_999_000.0)
    agg.aggregate(batch(0, [up(A, 0, {ADD: [(f"{ADD}_total", 7.0), created]}),
                            up(B, 0, add(3))]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, {ADD: [(f"{ADD}_total", 9.0), created]}),
                                     up(B, 1, add(4))]))
    assert values(out)["addReqCount"] == 2 + 1


def test_summary_count_line_filed_apart_still_counts() -> None:
    # With `..._count` wanted, the receiver files those lines under their own name.
    config = CniAggregateConfig(rules=[
        RuleConfig(name="awsAPICalls", family=f"{LATENCY}_count", type="counter")])
    agg = aggregator(config)
    count = series(f"{LATENCY}_count", api="X", error="false")
    agg.aggregate(batch(0, [up(A, 0, {f"{LATENCY}_count": [(count, 10.0)]})]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, {f"{LATENCY}_count": [(count, 12.0)]})]))
    assert values(out)["awsAPICalls"] == 2.0


def test_counters_tracked_in_another_order_than_the_page_lists_them() -> None:
    # awsAPICalls reads the latency family (its _count lines), which the page lists before
    # ec2api_req_count, but it comes after ec2ApiReqCount in rule order, so the counter tracker
    # meets the lines in another order than the page's; restarts (an added rule, tracked last)
    # ends both orders. Each line must still be diffed against its own last value.
    ec2, restarts = "awscni_ec2api_req_count", "awscni_ipamd_restarts"
    config = CniAggregateConfig(rules=[
        RuleConfig(name="awsAPICalls", family=f"{LATENCY}_count", type="counter"),
        RuleConfig(name="ipamdRestarts", family=restarts, type="counter"),
    ])
    agg = aggregator(config)

    def page(calls: float, requests: float) -> dict[str, list[tuple[str, float]]]:
        return {
            ADD: [(ADD, 100.0)],
            LATENCY: [(s, calls if s.startswith(f"{LATENCY}_count") else v)
                      for s, v in latency("X", "false", 5)],
            ec2: [(series(ec2, fn="A"), requests), (series(ec2, fn="B"), 2 * requests)],
            restarts: [(restarts, 7.0)],
        }

    agg.aggregate(batch(0, [up(A, 0, page(10.0, 50.0))]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, page(14.0, 53.0))]))
    got = values(out)
    assert got["awsAPICalls"] == 4.0                # 14 - 10
    assert got["ec2ApiReqCount"] == 3.0 + 6.0       # (53 - 50) + (106 - 100)
    assert got["addReqCount"] == 0.0
    assert got["ipamdRestarts"] == 0.0


def test_label_filters_select_series() -> None:
    config = CniAggregateConfig(rules=[
        RuleConfig(name="awsAPILatencyErrors", family=LATENCY, type="summary",
                   labels={"error": "true"}, unit="Milliseconds"),
        RuleConfig(name="describeErrors", family=API_ERR, type="counter",
                   label_regex={"api": "Describe.*"}),
    ])
    agg = aggregator(config)
    err = [(series(API_ERR, api="DescribeInstances", error="Throttling"), 1),
           (series(API_ERR, api="AttachNetworkInterface", error="Throttling"), 1)]
    agg.aggregate(batch(0, [up(A, 0, {API_ERR: err})]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, {
        LATENCY: latency("CreateTags", "false", 90.0) + latency("CreateTags", "true", 30.0),
        API_ERR: [(s, v + 3 + i) for i, (s, v) in enumerate(err)],
    })]))
    got = values(out)
    assert got["awsAPILatency"] == 90.0
    assert got["awsAPILatencyErrors"] == 30.0
    assert got["awsAPIErr"] == 3 + 4
    assert got["describeErrors"] == 3


def test_operations_on_a_gauge_and_a_counter() -> None:
    config = CniAggregateConfig(rules=[
        RuleConfig(name="assignedMin", family=ASSIGNED, type="gauge", operation="min"),
        RuleConfig(name="assignedMax", family=ASSIGNED, type="gauge", operation="max"),
        RuleConfig(name="assignedAvg", family=ASSIGNED, type="gauge", operation="avg"),
        RuleConfig(name="nodesReportingAssigned", family=ASSIGNED, type="gauge",
                   operation="count"),
        RuleConfig(name="nodesReportingAdds", family=ADD, type="counter", operation="count"),
    ])
    agg = aggregator(config)
    out, _ = agg.aggregate(batch(0, [
        up(A, 0, {ASSIGNED: [(ASSIGNED, 3)], ADD: [(ADD, 1)]}),
        up(B, 0, {ASSIGNED: [(ASSIGNED, 9)]}),
        up(C, 0, {ASSIGNED: [(ASSIGNED, NAN)], ADD: [(ADD, 1)]}),
    ]))
    got = by_key(out)
    assert got[("assignedMin", ())].value == 3
    assert got[("assignedMax", ())].value == 9
    assert got[("assignedAvg", ())].value == 6
    assert got[("nodesReportingAssigned", ())].value == 2     # C's only sample is NaN
    assert got[("nodesReportingAdds", ())].value == 2
    assert got[("nodesReportingAdds", ())].kind is MetricKind.GAUGE


def test_quantile_override_reads_another_quantile() -> None:
    agg = aggregator(CniAggregateConfig(rules=[RuleConfig(name="awsAPILatency", quantile=0.5)]))
    out, _ = agg.aggregate(batch(0, [up(A, 0, {LATENCY: latency("X", "false", 80.0, p50=3.0)})]))
    assert values(out)["awsAPILatency"] == 3.0


def test_group_by_publishes_per_zone_and_leaves_cluster_output_unchanged() -> None:
    def cycle_scrapes(index: int) -> list[TargetScrape]:
        return [up(node, index, {ASSIGNED: [(ASSIGNED, n + index)], ADD: [(ADD, 10 * n * index)]})
                for n, node in enumerate((A, B, C, D), start=1)]

    plain, grouped = aggregator(), aggregator(CniAggregateConfig(group_by=["zone", "node"]))
    plain.aggregate(batch(0, cycle_scrapes(0)))
    grouped.aggregate(batch(0, cycle_scrapes(0)))
    expected, _ = plain.aggregate(batch(1, cycle_scrapes(1)))
    out, _ = grouped.aggregate(batch(1, cycle_scrapes(1)))
    assert [m for m in out if m.attributes == ()] == expected
    # zone a: A (1+1) and C (3+1); zone b: B (2+1) and D (4+1). Increases 10n.
    assert values(out, (("zone", "us-east-1a"),))["assignIPAddresses"] == 2 + 4
    assert values(out, (("zone", "us-east-1b"),))["assignIPAddresses"] == 3 + 5
    assert values(out, (("zone", "us-east-1a"),))["addReqCount"] == 10 + 30
    assert values(out, (("zone", "us-east-1b"),))["targetsDiscovered"] == 2
    assert values(out, (("node", "node-d"),))["addReqCount"] == 40
    # Order: the cluster block, then zones sorted, then nodes sorted.
    blocks = list(dict.fromkeys(m.attributes for m in out))
    assert blocks == [(), (("zone", "us-east-1a"),), (("zone", "us-east-1b"),),
                      (("node", "node-a"),), (("node", "node-b"),), (("node", "node-c"),),
                      (("node", "node-d"),)]


def test_target_without_the_attribute_is_grouped_as_unknown() -> None:
    bare = target("node-x")
    agg = aggregator(CniAggregateConfig(group_by=["nodegroup"]))
    out, _ = agg.aggregate(batch(0, [up(bare, 0, {ASSIGNED: [(ASSIGNED, 2)]})]))
    assert values(out, (("nodegroup", "unknown"),))["assignIPAddresses"] == 2


def test_derived_capacity_and_coverage() -> None:
    agg = aggregator()
    scrape = {ASSIGNED: [(ASSIGNED, 15)], TOTAL: [(TOTAL, 60)],
              "awscni_eni_allocated": [("awscni_eni_allocated", 3)],
              "awscni_eni_max": [("awscni_eni_max", 4)]}
    out, _ = agg.aggregate(batch(0, [up(A, 0, scrape), up(B, 0, scrape), down(C, 0)]))
    got = by_key(out)
    # available 120 - 30 = 90; IP use 30 / 120 = 25 %; ENI use 6 / 8 = 75 %
    assert got[("availableIPAddresses", ())].value == 90
    assert got[("ipUtilization", ())].value == 25.0
    assert got[("ipUtilization", ())].unit == "Percent"
    assert got[("eniUtilization", ())].value == 75.0
    assert got[("targetsDiscovered", ())].value == 3
    assert got[("targetsReporting", ())].value == 2
    assert got[("targetsFailed", ())].value == 1
    derived = {m.name for m in out if m.derived}
    assert derived == {"availableIPAddresses", "ipUtilization", "eniUtilization",
                       "targetsDiscovered", "targetsReporting", "targetsStale", "targetsFailed"}
    assert not got[("assignIPAddresses", ())].derived


def test_emission_order_is_the_rule_table_order() -> None:
    agg = aggregator()
    every = {rule.family: [(rule.family, 1.0)] for rule in resolve_rules(CniAggregateConfig())[0]}
    every[LATENCY] = latency("X", "false", 2.0)
    out, _ = agg.aggregate(batch(0, [up(A, 0, every)]))
    names = [m.name for m in out]
    table = [rule.name for rule in resolve_rules(CniAggregateConfig())[0]]
    assert names[:20] == table
    assert names[20:] == ["availableIPAddresses", "ipUtilization", "eniUtilization",
                          "targetsDiscovered", "targetsReporting", "targetsStale",
                          "targetsFailed"]


def test_no_targets_publish_only_coverage() -> None:
    out, _ = aggregator().aggregate(batch(0, []))
    assert values(out) == {"targetsDiscovered": 0, "targetsReporting": 0, "targetsStale": 0,
                           "targetsFailed": 0}


def test_a_target_listed_twice_counts_once() -> None:
    out, _ = aggregator().aggregate(batch(0, [up(A, 0, {ASSIGNED: [(ASSIGNED, 2)]}),
                                              up(A, 0, {ASSIGNED: [(ASSIGNED, 5)]})]))
    assert values(out)["assignIPAddresses"] == 2
    assert values(out)["targetsDiscovered"] == 1


# -- histograms ------------------------------------------------------------------------------

HIST = "awscni_ipamd_reconcile_seconds"


def hist(bounds: dict[str, float], total: float, labels: dict[str, str] | None = None
         ) -> list[tuple[str, float]]:
    labels = labels or {}
    lines = [(series(f"{HIST}_bucket", **labels, le=le), count) for le, count in bounds.items()]
    lines.append((series(f"{HIST}_sum", **labels), total))
    lines.append((series(f"{HIST}_count", **labels), bounds["+Inf"]))
    return lines


def histogram_aggregator() -> Aggregator:
    return aggregator(CniAggregateConfig(rules=[
        RuleConfig(name="reconcileSeconds", family=HIST, type="histogram", unit="Seconds"),
    ]))


def test_histogram_is_per_bucket_deltas_across_targets() -> None:
    agg = histogram_aggregator()
    out, _ = agg.aggregate(batch(0, [
        up(A, 0, {HIST: hist({"0.1": 1, "1": 3, "+Inf": 4}, 2.0)}),
        up(B, 0, {HIST: hist({"0.5": 2, "+Inf": 2}, 0.5)}),
    ]))
    first = by_key(out)[("reconcileSeconds", ())]
    assert first.kind is MetricKind.DISTRIBUTION
    assert first.distribution == Distribution((0.1, 0.5, 1.0), (0.0, 0.0, 0.0, 0.0), 0.0, 0.0)
    out, _ = agg.aggregate(batch(1, [
        # A: +2 at or below 0.1, +1 in (0.1, 1], +3 above 1 -> cumulative 3, 6, 10
        up(A, 1, {HIST: hist({"0.1": 3, "1": 6, "+Inf": 10}, 9.0)}),
        # B (other bucket layout): +1 in (0, 0.5], +1 above -> cumulative 3, 4
        up(B, 1, {HIST: hist({"0.5": 3, "+Inf": 4}, 1.5)}),
    ]))
    metric = by_key(out)[("reconcileSeconds", ())]
    # Bounds 0.1, 0.5, 1, +Inf: A gives 2, -, 1, 3; B gives -, 1, -, 1.
    assert metric.distribution == Distribution((0.1, 0.5, 1.0), (2.0, 1.0, 1.0, 4.0),
                                               sum=7.0 + 1.0, count=6.0 + 2.0)
    assert metric.value == 8.0
    assert metric.unit == "Seconds"


def test_histogram_series_resets_as_a_whole() -> None:
    agg = histogram_aggregator()
    agg.aggregate(batch(0, [up(A, 0, {HIST: hist({"0.1": 5, "+Inf": 6}, 3.0)}, start=None)]))
    # Restarted unseen (no start time), then 9 observations, all slow: the 0.1 bucket dropped
    # (5 -> 0) while +Inf rose (6 -> 9). The whole series counts from zero: 0 and 9, not 0 and 3.
    out, stats = agg.aggregate(batch(1, [
        up(A, 1, {HIST: hist({"0.1": 0, "+Inf": 9}, 20.0)}, start=None)]))
    metric = by_key(out)[("reconcileSeconds", ())]
    assert metric.distribution == Distribution((0.1,), (0.0, 9.0), sum=20.0, count=9.0)
    assert stats.resets == 1


def test_histogram_and_a_counter_on_its_count_line_share_the_increases() -> None:
    # A counter rule on HIST_count makes the receiver file those lines apart from HIST.
    agg = aggregator(CniAggregateConfig(rules=[
        RuleConfig(name="reconcileSeconds", family=HIST, type="histogram", unit="Seconds"),
        RuleConfig(name="reconciles", family=f"{HIST}_count", type="counter"),
    ]))

    def page(le1: float, inf: float, total: float) -> dict[str, list[tuple[str, float]]]:
        lines = hist({"1": le1, "+Inf": inf}, total)
        return {HIST: [line for line in lines if "_count" not in line[0]],
                f"{HIST}_count": [line for line in lines if "_count" in line[0]]}

    agg.aggregate(batch(0, [up(A, 0, page(1, 2, 1.5))]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, page(4, 7, 9.0))]))
    got = by_key(out)
    assert got[("reconciles", ())].value == 5.0
    assert got[("reconcileSeconds", ())].distribution == Distribution(
        (1.0,), (3.0, 2.0), sum=7.5, count=5.0)


def test_histogram_label_sets_merge() -> None:
    agg = histogram_aggregator()
    agg.aggregate(batch(0, [up(A, 0, {HIST: hist({"1": 0, "+Inf": 0}, 0, {"kind": "x"})
                                      + hist({"1": 0, "+Inf": 0}, 0, {"kind": "y"})})]))
    out, _ = agg.aggregate(batch(1, [up(A, 1, {HIST: hist({"1": 1, "+Inf": 1}, 0.5, {"kind": "x"})
                                               + hist({"1": 0, "+Inf": 2}, 4, {"kind": "y"})})]))
    assert by_key(out)[("reconcileSeconds", ())].distribution == Distribution(
        (1.0,), (1.0, 2.0), sum=4.5, count=3.0)


def test_sums_past_the_float_range_are_inf_not_a_failed_cycle() -> None:
    agg = aggregator()
    huge = 1.5e308
    out, _ = agg.aggregate(batch(0, [
        up(A, 0, {ASSIGNED: [(ASSIGNED, huge)], TOTAL: [(TOTAL, 9)]}),
        up(B, 0, {ASSIGNED: [(ASSIGNED, huge)], TOTAL: [(TOTAL, 1)]})]))
    got = values(out)
    assert got["assignIPAddresses"] == math.inf  # the exporters leave it out, saying so
    assert got["totalIPAddresses"] == 10.0  # the rest of the cycle is published as ever
    out, _ = agg.aggregate(batch(1, [
        up(A, 1, {ASSIGNED: [(ASSIGNED, huge)]}), up(B, 1, {ASSIGNED: [(ASSIGNED, huge)]}),
        up(C, 1, {ASSIGNED: [(ASSIGNED, -huge)]})]))
    assert values(out)["assignIPAddresses"] == huge  # exact although a partial sum overflows
