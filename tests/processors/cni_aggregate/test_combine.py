"""Shards' partials combine into exactly what one replica publishes (``cni_combine``).

The same random fleets as the fast-path tests (NaNs, infinities, -0.0, resets, restarts, new
and vanished series, failing and leaving targets, a histogram, max / avg / label rules,
group_by zone) are aggregated once whole and once split over K shards whose partials a
:class:`Combiner` puts back together, also after a trip through OTLP's protobuf (the otlp
exporter's conversion and the otlp receiver's). Every value must be the same to the bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from fractions import Fraction

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporters.otlp._convert import to_metrics_data
from pipeline import Batch, Metric, MetricKind
from processors.cni_aggregate._aggregate import Aggregator
from processors.cni_aggregate._exact_sum import exact_sum
from processors.cni_aggregate._partials import exact_parts, stamp
from processors.cni_aggregate.combine._combiner import (
    Added,
    Combiner,
    PartialError,
    Report,
    reports_of,
)
from processors.cni_aggregate.config import CniAggregateConfig, resolve_rules
from receivers.otlp._convert import Converter
from tests.processors.cni_aggregate._fleet import INTERVAL, batch
from tests.processors.cni_aggregate.test_fast_paths import RULES, fleet

Key = tuple[str, tuple[tuple[str, str], ...]]


def shard_of(key: str, shards: int) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest()[8:], "big") % shards


def exact(metrics: list[Metric]) -> dict[Key, tuple[object, ...]]:
    """Every published field, floats as repr (so -0.0 is not 0.0 and NaN equals NaN)."""
    out: dict[Key, tuple[object, ...]] = {}
    for m in metrics:
        key = (m.name, m.attributes)
        assert key not in out, f"{key} published twice"
        out[key] = (m.kind, repr(m.value), m.unit, m.derived, m.description, m.source,
                    m.quantile, m.distribution and repr(m.distribution))
    return out


def through_otlp(batch_: Batch, converter: Converter) -> Batch:
    """The batch as the otlp exporter sends it (delta) and the otlp receiver takes it back."""
    data = to_metrics_data(batch_, resource={"cluster": "c"},
                           scope=InstrumentationScope("cni-pipeline"))
    request = encode_metrics(data)
    (received,) = converter.batches(request, INTERVAL)
    assert received.cycle.time == batch_.cycle.time
    return received


def aggregators(shards: int) -> tuple[Aggregator, list[Aggregator]]:
    config = CniAggregateConfig(rules=RULES, group_by=["zone"])
    rules, problems = resolve_rules(config)
    assert problems == []
    return (Aggregator(rules, config.group_by, 60.0),
            [Aggregator(rules, config.group_by, 60.0, partials=True) for _ in range(shards)])


def combined_cycles(seed: int, shards: int, otlp: bool
                    ) -> list[tuple[dict[Key, tuple[object, ...]], dict[Key, tuple[object, ...]]]]:
    single, parts = aggregators(shards)
    combiner = Combiner(staleness=300.0)
    converter = Converter()
    out = []
    for index, scrapes in enumerate(fleet(seed)):
        whole = batch(index, scrapes)
        expected, _ = single.aggregate(whole)
        added = []
        for shard, aggregator in enumerate(parts):
            mine = tuple(s for s in scrapes if shard_of(s.target.key, shards) == shard)
            part = dataclasses.replace(whole, targets=mine, shard=(shard, shards))
            metrics, _ = aggregator.aggregate(part)
            sent = Batch(cycle=whole.cycle, metrics=tuple(stamp(metrics, part)))
            if otlp:
                sent = through_otlp(sent, converter)
            reports, others = reports_of(sent)
            assert others == []
            added += [combiner.add(report) for report in reports]
        assert added[-1] is Added.COMPLETE
        published = combiner.publish(whole.cycle.time)
        assert published.missing == ()
        got = [m for m in published.batch.metrics if m.name != "shardsMissing"]
        out.append((exact(expected), exact(got)))
    return out


@pytest.mark.parametrize("shards", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", range(25))
def test_shards_combine_to_the_single_replica_bit_for_bit(seed: int, shards: int) -> None:
    for expected, got in combined_cycles(seed, shards, otlp=False):
        assert got == expected


@pytest.mark.parametrize("seed", range(8))
def test_partials_survive_otlp(seed: int) -> None:
    """Through protobuf: attributes, units, kinds, descriptions and histograms come back as
    they left."""
    distributions = 0
    for expected, got in combined_cycles(seed, 3, otlp=True):
        assert got == expected
        distributions += sum(v[0] is MetricKind.DISTRIBUTION for v in expected.values())
    assert distributions  # the histogram rule published, and came through


@pytest.mark.parametrize("values", [
    [0.1, 0.2, 0.3], [1e16, 1.0, -1e16, 3.5], [1.0, 2.0], [], [-0.0], [1e308, 1e308, -1e308],
    [0.1] * 1000 + [1e-30],
])
def test_exact_parts_sum_to_the_exact_sum(values: list[float]) -> None:
    parts = exact_parts(values)
    assert parts[0] == exact_sum(values) or not math.isfinite(parts[0])
    if math.isfinite(parts[0]):
        assert sum(map(Fraction, parts)) == sum(map(Fraction, values))


def test_a_sum_split_anyhow_rounds_once() -> None:
    """Why parts are sent: summing two shards' rounded sums would round twice."""
    left, right = [0.1, 0.2], [0.3]
    twice = math.fsum([math.fsum(left), math.fsum(right)])
    once = math.fsum(left + right)
    assert twice != once        # the double rounding this guards against exists
    assert math.fsum([*exact_parts(left), *exact_parts(right)]) == once


def partial_batch(time: float, shard: int, shards: int, reporting: float,
                  assigned: float, increase: float) -> Batch:
    """A hand-made report: assigned IPs (a gauge sum), an increase, and coverage."""
    marks = (("cni.shard", str(shard)), ("cni.shards", str(shards)), ("cni.interval", "30.0"))
    metrics = (
        Metric("assignIPAddresses", MetricKind.GAUGE, assigned,
               attributes=(("cni.op", "sum"), *marks)),
        Metric("addReqCount", MetricKind.COUNTER, increase,
               attributes=(("cni.op", "sum"), *marks)),
        Metric("targetsReporting", MetricKind.GAUGE, reporting, derived=True,
               attributes=(("cni.op", "coverage"), *marks)),
    )
    cycle = dataclasses.replace(batch(0, []).cycle, time=time)
    return Batch(cycle=cycle, metrics=metrics)


def values(combiner: Combiner, time: float) -> dict[str, float]:
    published = combiner.publish(time)
    return {m.name: m.value for m in published.batch.metrics}


def add_all(combiner: Combiner, batch_: Batch) -> list[Added]:
    return [combiner.add(report) for report in reports_of(batch_)[0]]


def test_a_missing_shard_is_carried_as_stale_and_its_late_increases_land_once() -> None:
    combiner = Combiner(staleness=300.0)
    for shard in range(3):
        add_all(combiner, partial_batch(30.0, shard, 3, 10, 100.0 + shard, 1.0))
    first = values(combiner, 30.0)
    assert first["assignIPAddresses"] == 303.0 and first["addReqCount"] == 3.0
    assert first["shardsMissing"] == 0.0
    # Cycle 60: shard 2 is late. Published at the deadline without it: its gauges carried
    # from cycle 30, its 10 targets counted stale, no increase of its own.
    add_all(combiner, partial_batch(60.0, 0, 3, 10, 110.0, 2.0))
    add_all(combiner, partial_batch(60.0, 1, 3, 10, 111.0, 2.0))
    second = values(combiner, 60.0)
    assert second["assignIPAddresses"] == 110.0 + 111.0 + 102.0
    assert second["addReqCount"] == 4.0
    assert (second["targetsReporting"], second["targetsStale"]) == (20.0, 10.0)
    assert second["shardsMissing"] == 1.0
    # Its report for 60 arrives now: late; its increase goes into cycle 90, once (a retry of
    # the same report is a duplicate).
    assert add_all(combiner, partial_batch(60.0, 2, 3, 10, 112.0, 5.0)) == [Added.LATE]
    assert add_all(combiner, partial_batch(60.0, 2, 3, 10, 112.0, 5.0)) == [Added.DUPLICATE]
    for shard in range(3):
        add_all(combiner, partial_batch(90.0, shard, 3, 10, 120.0, 1.0))
    third = values(combiner, 90.0)
    assert third["addReqCount"] == 3.0 + 5.0
    assert third["assignIPAddresses"] == 360.0 and third["shardsMissing"] == 0.0


def test_k_is_learnt_from_the_partials() -> None:
    combiner = Combiner(staleness=300.0)
    assert add_all(combiner, partial_batch(30.0, 0, 2, 1, 1.0, 0.0)) == [Added.FIRST]
    assert add_all(combiner, partial_batch(30.0, 1, 2, 1, 1.0, 0.0)) == [Added.COMPLETE]
    assert add_all(combiner, partial_batch(60.0, 3, 4, 1, 1.0, 0.0)) == [Added.FIRST]


def test_a_stale_shard_older_than_staleness_is_not_carried() -> None:
    combiner = Combiner(staleness=60.0)
    for shard in range(2):
        add_all(combiner, partial_batch(30.0, shard, 2, 4, 50.0, 0.0))
    values(combiner, 30.0)
    for time in (60.0, 90.0):
        add_all(combiner, partial_batch(time, 0, 2, 4, 50.0, 0.0))
    assert values(combiner, 60.0)["assignIPAddresses"] == 100.0     # 30 s old: carried
    assert values(combiner, 90.0)["assignIPAddresses"] == 50.0      # 60 s old: not


def test_unreadable_marks_are_refused_naming_the_metric() -> None:
    bad = Batch(cycle=batch(0, []).cycle, metrics=(
        Metric("assignIPAddresses", MetricKind.GAUGE, 1.0,
               attributes=(("cni.op", "sum"), ("cni.shard", "x"), ("cni.shards", "2"))),))
    with pytest.raises(PartialError, match="assignIPAddresses"):
        reports_of(bad)


def test_other_metrics_pass_through() -> None:
    plain = Metric("somethingElse", MetricKind.GAUGE, 1.0)
    reports, others = reports_of(Batch(cycle=batch(0, []).cycle, metrics=(plain,)))
    assert (reports, others) == ([], [plain])


def test_a_report_in_a_cycle_already_published_is_late() -> None:
    combiner = Combiner(staleness=300.0)
    combiner.add(Report(30.0, 0, 2, 30.0))
    combiner.publish(30.0)
    assert combiner.add(Report(30.0, 1, 2, 30.0)) is Added.LATE
    assert combiner.late == 1


def test_validate_plans_what_a_shard_sends() -> None:
    """A shard's plan (what its otlp exporter prices) leaves out what the gateway works out,
    and nothing else; its partials never hold those names."""
    from pipeline import ClusterShape
    from processors.cni_aggregate import factory
    from processors.cni_aggregate.factory import GATEWAY_DERIVED

    shape = ClusterShape(nodes=10, zones=2, nodegroups=1, instance_types=1)
    whole = factory.planned_metrics(CniAggregateConfig(group_by=["zone"]), shape)
    shard = factory.planned_metrics(CniAggregateConfig(group_by=["zone"], output="partials"),
                                    shape)
    assert [m.name for m in whole if m.name not in GATEWAY_DERIVED] == [m.name for m in shard]
    assert len(whole) - len(shard) == 4 * 3     # four per block: the cluster and two zones
    single, parts = aggregators(2)
    for scrapes in fleet(3):
        metrics, _ = parts[0].aggregate(batch(0, scrapes))
        assert not GATEWAY_DERIVED & {m.name for m in metrics}
        break


def test_a_retried_report_is_recognised_for_fifteen_minutes_at_any_interval() -> None:
    """A shard's exporter may retry a report for 5 minutes: at a 5 s interval that is 60
    cycles, so what the gateway remembers is counted in time, not in cycles."""
    combiner = Combiner(staleness=300.0)
    for n in range(200):                        # 1,000 s of cycles at a 5 s interval
        combiner.add(Report(5.0 * n, 0, 1, 5.0))
        combiner.publish(5.0 * n)
    now = 5.0 * 199
    assert combiner.add(Report(now - 800.0, 0, 1, 5.0)) is Added.DUPLICATE  # 160 cycles back
    assert combiner.add(Report(now - 950.0, 0, 1, 5.0)) is Added.LATE       # beyond 15 minutes
