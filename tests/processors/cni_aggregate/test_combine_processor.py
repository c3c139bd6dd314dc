"""The ``cni_combine`` processor's shell: when it publishes (every shard in, or the deadline),
in what order, what shutdown does with pending cycles, its self-metrics and health, and what it
does with metrics that are not partials."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from pipeline import (
    Batch,
    ComponentID,
    ComponentSettings,
    Duration,
    Kind,
    Metric,
    MetricKind,
    Telemetry,
)
from processors.cni_aggregate.combine import CniCombineConfig, factory
from processors.cni_aggregate.combine.processor import CniCombineProcessor
from tests.processors.cni_aggregate.test_combine import partial_batch
from tests.support.recording import RecordingHost, RecordingSink


def make(deadline: float = 0.3
         ) -> tuple[CniCombineProcessor, RecordingSink, RecordingHost, Telemetry]:
    telemetry = Telemetry()
    settings = ComponentSettings(
        id=ComponentID("cni_combine"), kind=Kind.PROCESSOR, telemetry=telemetry,
        started_at=0.0,
        logger=logging.LoggerAdapter(logging.getLogger("test.cni_combine"), {}))
    sink, host = RecordingSink(), RecordingHost()
    proc = factory.create(settings, CniCombineConfig(deadline=Duration(deadline)), sink)
    return proc, sink, host, telemetry


def value(batch: Batch, name: str) -> float:
    (metric,) = [m for m in batch.metrics if m.name == name and not m.attributes]
    return metric.value


async def test_published_when_every_shard_is_in_and_at_the_deadline_otherwise() -> None:
    proc, sink, host, telemetry = make()
    await proc.start(host)
    try:
        await proc.consume(partial_batch(30.0, 0, 2, 5, 10.0, 1.0))
        assert sink.batches == []                                   # waits for shard 1
        await proc.consume(partial_batch(30.0, 1, 2, 5, 20.0, 2.0))
        assert [b.cycle.time for b in sink.batches] == [30.0]       # complete: at once
        assert value(sink.batches[0], "assignIPAddresses") == 30.0
        await proc.consume(partial_batch(60.0, 0, 2, 5, 11.0, 1.0))
        async with asyncio.timeout(5):
            while len(sink.batches) < 2:
                await asyncio.sleep(0.02)                          # the deadline publishes
        late = sink.batches[1]
        assert late.cycle.time == 60.0 and value(late, "shardsMissing") == 1.0
        assert value(late, "assignIPAddresses") == 11.0 + 20.0      # shard 1 carried
        assert host.statuses[-1][0] is True and "without shard(s) 1 of 2" in host.statuses[-1][1]
        def sample(name: str, **labels: str) -> float | None:
            return telemetry.registry.get_sample_value(
                f"cni_pipeline_{name}", {"processor": "cni_combine", **labels})

        assert sample("combine_cycles_total", result="complete") == 1
        assert sample("combine_cycles_total", result="deadline") == 1
        assert (sample("combine_shards_missing"), sample("combine_shards")) == (1, 2)
    finally:
        await proc.shutdown()


async def test_shutdown_publishes_what_is_pending_in_time_order() -> None:
    proc, sink, host, _ = make(deadline=60.0)
    await proc.start(host)
    await proc.consume(partial_batch(90.0, 0, 2, 5, 1.0, 0.0))
    await proc.consume(partial_batch(60.0, 0, 2, 5, 1.0, 0.0))
    await proc.shutdown()
    assert [b.cycle.time for b in sink.batches] == [60.0, 90.0]


async def test_other_metrics_pass_through_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    proc, sink, host, _ = make()
    await proc.start(host)
    plain = Batch(cycle=partial_batch(30.0, 0, 1, 1, 1.0, 0.0).cycle,
                  metrics=(Metric("assignIPAddresses", MetricKind.GAUGE, 7.0),))
    with caplog.at_level("WARNING"):
        await proc.consume(plain)
        await proc.consume(dataclasses.replace(plain))
    await proc.shutdown()
    assert [b.metrics for b in sink.batches] == [plain.metrics, plain.metrics]
    said = [r for r in caplog.records if "not shards' partials" in r.getMessage()]
    assert len(said) == 1 and "output: partials" in said[0].getMessage()


async def test_a_reloaded_gateway_carries_on_without_publishing_a_cycle_twice() -> None:
    """A config reload replaces the processor: the old one publishes what it holds at shutdown,
    and the new one takes its state over, so the rest of that cycle is late (its increase goes
    into the next cycle) rather than a second datapoint of the same cycle."""
    old, sink, host, _ = make(deadline=60.0)
    await old.start(host)
    await old.consume(partial_batch(30.0, 0, 2, 5, 10.0, 1.0))
    await old.shutdown()                                   # publishes 30 without shard 1
    new = factory.create(old._settings, CniCombineConfig(deadline=Duration(30.0)), sink)
    new.take_over(old)
    await new.start(host)
    await new.consume(partial_batch(30.0, 1, 2, 5, 20.0, 4.0))   # the rest of 30: late
    for shard in range(2):
        await new.consume(partial_batch(60.0, shard, 2, 5, 10.0, 1.0))
    await new.shutdown()
    assert [b.cycle.time for b in sink.batches] == [30.0, 60.0]
    assert value(sink.batches[0], "addReqCount") == 1.0
    assert value(sink.batches[1], "addReqCount") == 1.0 + 1.0 + 4.0
