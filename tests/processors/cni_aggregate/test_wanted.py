"""The line filters ``cni_aggregate`` hands the receiver: which lines they skip, and that skipping
them never changes a published number (the same pages parsed with and without them)."""

from __future__ import annotations

import logging
import time

import pytest

from pipeline import (
    ComponentID,
    Kind,
    Metric,
    MetricsConsumer,
    TargetScrape,
    Telemetry,
    wanted_series_of,
)
from pipeline._fanout import GuardedConsumer
from processors.cni_aggregate import CniAggregateConfig, factory
from processors.cni_aggregate._rules import DEFAULT_RULES
from processors.cni_aggregate._wanted import series_filters
from processors.cni_aggregate.config import RuleConfig, resolve_rules
from receivers.prometheus._textparse import parse_page
from simfleet._node import NodeState
from tests.processors.cni_aggregate._fleet import (
    OLD_START,
    RecordingSink,
    batch,
    settings,
    target,
    up,
)
from tests.support.fixtures import AWS_NODE_PAGES

LATENCY = "awscni_aws_api_latency_ms"


def test_default_rules_read_only_the_p99_lines_of_the_latency_summary() -> None:
    filters = series_filters(DEFAULT_RULES)
    # Counters named X_count may also be read as X's lines (a fallback): those stay whole.
    with_fallback = {rule.family for rule in DEFAULT_RULES if len(rule.lookup_families) > 1}
    assert with_fallback and all(family.endswith("_count") for family in with_fallback)
    assert set(filters) == {rule.family for rule in DEFAULT_RULES} - with_fallback
    latency = filters[LATENCY]
    assert latency(f'{LATENCY}{{api="AttachNetworkInterface",error="false",quantile="0.99"}}')
    for refused in (f'{LATENCY}{{api="X",error="false",quantile="0.5"}}',
                    f'{LATENCY}{{api="X",error="false",quantile="0.9"}}',
                    f'{LATENCY}_sum{{api="X",error="false"}}',
                    f'{LATENCY}_count{{api="X",error="false"}}'):
        assert not latency(refused), refused
    counter = filters["awscni_force_removed_ips"]
    assert counter("awscni_force_removed_ips") and counter("awscni_force_removed_ips_total")
    assert not counter("awscni_force_removed_ips_created")  # a timestamp, never a count
    per_cidr = filters["awscni_assigned_ip_per_cidr"]
    assert per_cidr('awscni_assigned_ip_per_cidr{cidr="10.0.0.0/28"}')


def test_label_filters_of_user_rules_are_honoured() -> None:
    family = "awscni_assigned_ip_per_cidr"
    subnet = RuleConfig(name="subnetA", family=family, type="gauge",
                        label_regex={"cidr": r"10\.0\..*"})
    rules, problems = resolve_rules(CniAggregateConfig(rules=[subnet]))
    assert not problems
    # The default rule reads every line of the family, so every line stays.
    assert series_filters(rules)[family](f'{family}{{cidr="192.168.0.0/28"}}')
    only_user, _ = resolve_rules(CniAggregateConfig(default_rules=False, rules=[subnet]))
    cidrs = series_filters(only_user)[family]
    assert cidrs(f'{family}{{cidr="10.0.0.16/28"}}')
    assert not cidrs(f'{family}{{cidr="192.168.0.0/28"}}')


def test_fallback_and_histogram_families_keep_every_line() -> None:
    rules, problems = resolve_rules(CniAggregateConfig(default_rules=False, rules=[
        RuleConfig(name="apiCalls", family=f"{LATENCY}_count", type="counter"),
        RuleConfig(name="setup", family="awscni_pod_setup_seconds", type="histogram"),
        RuleConfig(name="p50", family=LATENCY, type="summary", quantile=0.5),
    ]))
    assert not problems
    filters = series_filters(rules)
    # X_count may be read from X's lines (its fallback), so neither X_count nor X is filtered;
    # a histogram reads every line of its family.
    assert set(filters) == set()


def chained(sink: RecordingSink) -> MetricsConsumer:
    """The default processor in front of ``sink``, as the engine's graph chains them."""
    processor = factory.create(settings(), factory.default_config(), sink)
    return GuardedConsumer(ComponentID("cni_aggregate"), processor, logging.getLogger("test"),
                           Telemetry(), Kind.PROCESSOR, downstream=sink)


async def test_a_consumer_downstream_that_wants_a_whole_family_keeps_it_whole() -> None:
    assert LATENCY in wanted_series_of(chained(RecordingSink()))
    filters = wanted_series_of(chained(RecordingSink(frozenset({LATENCY}))))
    assert LATENCY not in filters and "awscni_eni_max" in filters
    assert wanted_series_of(chained(RecordingSink(None))) == {}


# -- filtering changes nothing ------------------------------------------------------------------

def pages_of_a_fleet(nodes: int, cycles: int) -> list[list[str]]:
    """Per cycle, the pages of simulated aws-node pods (counters and latencies moving) and of
    the two real fixture pages."""
    now = time.time()
    states = [NodeState(n, seed=7, now=now, start_time=now - 3600) for n in range(nodes)]
    fixtures = [(AWS_NODE_PAGES / f"metrics-{v}.data").read_text() for v in ("v1", "v2")]
    per_cycle = []
    for _ in range(cycles):
        per_cycle.append([state.render() for state in states] + fixtures)
        for state in states:
            state.advance()
    return per_cycle


async def run(config: CniAggregateConfig, pages: list[list[str]], filtered: bool
              ) -> list[tuple[Metric, ...]]:
    sink = RecordingSink()
    proc: MetricsConsumer = factory.create(settings(), config, sink)
    wanted = proc.wanted_families()
    series = wanted_series_of(proc) if filtered else None
    nodes = [target(f"node-{n}", zone=f"zone-{n % 3}", number=n + 1)
             for n in range(len(pages[0]))]
    for index, texts in enumerate(pages):
        scrapes: list[TargetScrape] = []
        for node, text in zip(nodes, texts, strict=True):
            page = parse_page(text, wanted, count_all=False, series=series)
            scrapes.append(up(node, index, page.families, start=OLD_START))
        await proc.consume(batch(index, scrapes))
    return [b.metrics for b in sink.batches]


@pytest.mark.parametrize("config", [
    CniAggregateConfig(),
    CniAggregateConfig(group_by=["zone"], rules=[
        RuleConfig(name="p90", family=LATENCY, type="summary", quantile=0.9),
        RuleConfig(name="attachErrors", family="awscni_aws_api_error_count", type="counter",
                   label_regex={"api": "Attach.*"}),
    ]),
], ids=["default", "user-rules"])
async def test_filtered_and_unfiltered_pages_publish_the_same(config: CniAggregateConfig) -> None:
    pages = pages_of_a_fleet(nodes=12, cycles=4)
    filtered = await run(config, pages, filtered=True)
    unfiltered = await run(config, pages, filtered=False)
    assert filtered == unfiltered
    assert any(m.name == "awsAPILatency" for m in filtered[-1])
    assert any(m.value for m in filtered[-1] if m.name == "addReqCount")  # counters did move
