"""The processor as the engine drives it: lifecycle, between a fake source and a recording sink,
a failing sink, self-metrics."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from pipeline import (
    Batch,
    Component,
    ComponentError,
    ErrorClass,
    MetricKind,
    MetricsConsumer,
    Processor,
    TargetScrape,
    Telemetry,
)
from processors.cni_aggregate import CniAggregateConfig, factory
from tests.processors.cni_aggregate._fleet import (
    OLD_START,
    FailingSink,
    RecordingSink,
    batch,
    down,
    settings,
    target,
    tick,
    up,
    values,
)
from tests.support.fixtures import AWS_NODE_PAGES

FIXTURES = AWS_NODE_PAGES
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")


def read_page(text: str, wanted: frozenset[str] | None) -> dict[str, list[tuple[str, float]]]:
    """Just enough of the text format for the fixtures: summary/histogram lines are filed under
    their family, as the receiver does."""
    kinds: dict[str, str] = {}
    families: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            kinds[name] = kind
            continue
        match = _LINE.match(line)
        if line.startswith("#") or not match:
            continue
        name = match.group(1)
        family = name
        for suffix in ("_sum", "_count", "_bucket"):
            base = name.removesuffix(suffix)
            if base != name and kinds.get(base) in ("summary", "histogram"):
                family = base
        if wanted is None or family in wanted:
            families.setdefault(family, []).append(
                (name + (match.group(2) or ""), float(match.group(3))))
    return families


class FakeSource:
    """Plays a receiver: builds each cycle's batch and pushes it into the next consumer."""

    def __init__(self, next_consumer: MetricsConsumer, pages: list[str]) -> None:
        self.next = next_consumer
        self.pages = pages
        self.nodes = [target(f"node-{n}", zone=f"zone-{n % 2}", number=n + 1)
                      for n in range(len(pages))]

    async def cycle(self, index: int, bump: float = 0.0, failing: frozenset[int] = frozenset()
                    ) -> None:
        wanted = self.next.wanted_families()
        scrapes: list[TargetScrape] = []
        for n, (node, text) in enumerate(zip(self.nodes, self.pages, strict=True)):
            if n in failing:
                scrapes.append(down(node, index, error_class=ErrorClass.CONNECT))
                continue
            families = read_page(text, wanted)
            # Every counter-ish line grows by `bump` per node per cycle.
            adds = families.get("awscni_add_ip_req_count", [])
            families["awscni_add_ip_req_count"] = [(s, v + bump * index) for s, v in adds]
            scrapes.append(up(node, index, families, start=OLD_START))
        await self.next.consume(batch(index, scrapes))


def fixture_pages() -> list[str]:
    if not FIXTURES.exists():
        pytest.skip("aws-node fixtures not next to the repository")
    return [(FIXTURES / name).read_text() for name in ("metrics-v1.data", "metrics-v2.data")]


def processor(sink: MetricsConsumer, config: CniAggregateConfig | None = None,
              telemetry: Telemetry | None = None) -> Processor:
    return factory.create(settings(telemetry=telemetry), config or factory.default_config(), sink)


async def test_shutdown_without_start_and_twice() -> None:
    proc = processor(RecordingSink())
    await proc.shutdown()
    await proc.shutdown()


async def test_start_then_shutdown_and_consume_after_shutdown_is_refused() -> None:
    proc = processor(RecordingSink())
    assert isinstance(proc, Component) and isinstance(proc, MetricsConsumer)
    await proc.start(host=None)  # type: ignore[arg-type]
    await proc.shutdown()
    with pytest.raises(ComponentError, match="after shutdown"):
        await proc.consume(batch(0, []))


async def test_between_fake_source_and_recording_sink_on_real_pages() -> None:
    sink = RecordingSink()
    proc = processor(sink, CniAggregateConfig(group_by=["zone"]))
    await proc.start(host=None)  # type: ignore[arg-type]
    source = FakeSource(proc, fixture_pages() * 2)   # four nodes: v1, v2, v1, v2
    await source.cycle(0, bump=3)
    await source.cycle(1, bump=3)
    await source.cycle(2, bump=3, failing=frozenset({1}))
    await proc.shutdown()
    assert len(sink.batches) == 3
    first, second, third = sink.batches
    # The batch goes on whole: the same targets, metrics appended.
    assert len(first.targets) == 4 and first.cycle.index == 0
    got = values(first.metrics)
    # Per page: assigned 1 (v1) / see v2; the summed values are page sums times two.
    assert got["assignIPAddresses"] == 2 * sum(
        v for page in fixture_pages()
        for _, v in read_page(page, None)["awscni_assigned_ip_addresses"])
    assert got["awsAPILatency"] == 1.0        # the only finite p99 in the fixtures (GetMetadata)
    assert got["addReqCount"] == 0.0          # baseline
    assert "totalIPv4Prefixes" in got         # only the v2 pages have it
    assert values(second.metrics)["addReqCount"] == 4 * 3.0
    third_values = values(third.metrics)
    # Node 1 failed: its increase waits for its next success; its gauges are carried.
    assert third_values["addReqCount"] == 3 * 3.0
    assert third_values["assignIPAddresses"] == got["assignIPAddresses"]
    assert third_values["targetsStale"] == 1
    assert values(third.metrics, (("zone", "zone-1"),))["targetsStale"] == 1
    kinds = {m.name: m.kind for m in second.metrics if not m.attributes}
    assert kinds["addReqCount"] is MetricKind.COUNTER
    assert kinds["assignIPAddresses"] is MetricKind.GAUGE


async def test_failing_sink_error_reaches_the_caller_and_state_stays_right() -> None:
    sink = FailingSink(RuntimeError("exporter down"))
    proc = processor(sink)
    node = target("node-a")
    family = "awscni_add_ip_req_count"
    with pytest.raises(RuntimeError, match="exporter down"):
        await proc.consume(batch(0, [up(node, 0, {family: [(family, 10)]})]))
    with pytest.raises(RuntimeError):
        await proc.consume(batch(1, [up(node, 1, {family: [(family, 15)]})]))
    with pytest.raises(RuntimeError):
        await proc.consume(batch(2, [up(node, 2, {family: [(family, 16)]})]))
    # Each cycle was aggregated once: 5 then 1, never re-counted after a failed hand-off.
    assert [values(b.metrics)["addReqCount"] for b in sink.batches] == [0.0, 5.0, 1.0]


async def test_self_metrics() -> None:
    telemetry = Telemetry()
    proc = processor(RecordingSink(), telemetry=telemetry)
    a, b = target("node-a"), target("node-b")
    family = "awscni_add_ip_req_count"
    assigned = "awscni_assigned_ip_addresses"
    await proc.consume(batch(0, [up(a, 0, {family: [(family, 10)], assigned: [(assigned, 1)]}),
                                 up(b, 0, {family: [(family, 10)]})]))
    await proc.consume(batch(1, [
        up(a, 1, {family: [(family, 2)], assigned: [(assigned, math.nan)]}),   # drop: reset
        up(b, 1, {family: [(family, 1)]}, start=tick(1) - 3),                 # restart
    ]))
    await proc.consume(batch(2, [up(a, 2, {family: [(family, 3)]}), down(b, 2)]))

    def sample(name: str, **labels: str) -> float | None:
        return telemetry.registry.get_sample_value(
            f"cni_pipeline_{name}", {"processor": "cni_aggregate", **labels})

    assert sample("nan_samples_skipped_total") == 1
    assert sample("counter_resets_total", reason="drop") == 1
    assert sample("counter_resets_total", reason="restart") == 1
    assert sample("targets_stale") == 1
    assert sample("targets_excluded") == 0
    assert sample("counter_series_tracked") == 2
    duration = sample("aggregate_duration_seconds")
    assert duration is not None and duration >= 0


async def test_metrics_are_appended_to_what_came_in() -> None:
    sink = RecordingSink()
    proc = processor(sink)
    incoming = batch(0, [up(target("node-a"), 0, {})])
    await proc.consume(incoming)
    assert sink.batches[0].targets == incoming.targets
    assert sink.batches[0].cycle == incoming.cycle
    assert isinstance(sink.batches[0], Batch)
    assert incoming.metrics == ()   # the batch handed in is not changed


async def test_a_group_by_key_no_target_carries_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RecordingSink()
    proc = processor(sink, CniAggregateConfig(group_by=["zone", "nodegroup", "node"]))
    source = FakeSource(proc, fixture_pages())  # targets with a zone, without a node group
    for index in range(3):
        await source.cycle(index)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "group_by nodegroup: none of the 2 targets" in warnings[0]
    assert "kubernetes_sd.node_metadata: true" in warnings[0]
    assert values(sink.batches[-1].metrics, (("nodegroup", "unknown"),))


async def test_a_shard_publishing_final_values_is_told_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A replica that scrapes one shard of the fleet but publishes its sums as the cluster's
    (output: metrics) would put a fraction of the fleet in CloudWatch: said once, as an error."""
    sink = RecordingSink()
    proc = processor(sink)
    shard = dataclasses.replace(batch(0, []), shard=(1, 3))
    with caplog.at_level("ERROR"):
        await proc.consume(shard)
        await proc.consume(dataclasses.replace(shard, cycle=batch(1, []).cycle))
    said = [r.getMessage() for r in caplog.records if "shard 1 of 3" in r.getMessage()]
    assert len(said) == 1 and "output: partials" in said[0]
    caplog.clear()
    partials = processor(RecordingSink(), CniAggregateConfig(output="partials"))
    with caplog.at_level("ERROR"):
        await partials.consume(shard)
    assert not caplog.records
