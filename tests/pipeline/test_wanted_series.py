"""Line filters across consumers: ``union_series``, and how the fan-out and the per-component
guard pass them upstream (consumers without ``wanted_series`` read every line)."""

from __future__ import annotations

import logging

from pipeline import (
    Batch,
    ComponentID,
    FamilySet,
    Kind,
    SeriesFilter,
    SeriesFilters,
    Telemetry,
    union_series,
    wanted_series_of,
)
from pipeline._fanout import FanOut, GuardedConsumer


def quantile(q: str) -> SeriesFilter:
    return lambda series: f'quantile="{q}"' in series


P99, P50 = quantile("0.99"), quantile("0.5")


class Consumer:
    def __init__(self, families: FamilySet, series: SeriesFilters | None = None) -> None:
        self._families = families
        if series is not None:
            self.wanted_series = lambda: series

    async def consume(self, batch: Batch) -> None:
        return None

    def wanted_families(self) -> FamilySet:
        return self._families


def test_a_family_is_filtered_only_while_every_consumer_wanting_it_filters_it() -> None:
    merged = union_series([
        (frozenset({"lat", "eni"}), {"lat": P99}),
        (frozenset({"lat"}), {"lat": P50, "unrelated": P50}),
        (frozenset({"eni"}), {}),
    ])
    assert set(merged) == {"lat"}  # eni is wanted whole by one; unrelated is wanted by none
    assert merged["lat"]('lat{quantile="0.99"}') and merged["lat"]('lat{quantile="0.5"}')
    assert not merged["lat"]('lat{quantile="0.9"}')
    assert union_series([(frozenset({"lat"}), {"lat": P99})])["lat"] is P99
    assert union_series([(frozenset({"lat"}), {"lat": P99}), (None, {})]) == {}


def test_fan_out_and_guard_pass_filters_upstream() -> None:
    filtering = Consumer(frozenset({"lat"}), {"lat": P99})
    plain = Consumer(frozenset({"lat"}))  # no wanted_series at all: reads every line
    guard = GuardedConsumer(
        ComponentID("x"), filtering, logging.getLogger("test"), Telemetry(), Kind.PROCESSOR
    )
    assert wanted_series_of(guard) == {"lat": P99}
    assert wanted_series_of(plain) == {}
    assert wanted_series_of(FanOut([guard, Consumer(frozenset({"eni"}))])) == {"lat": P99}
    assert wanted_series_of(FanOut([guard, plain])) == {}


def test_the_engine_adds_what_follows_a_processor_to_what_it_wants() -> None:
    """A processor states only its own wants (here: none); the engine's guard adds its next
    consumer's, so an exporter after a processor that forgot them still gets its families read."""
    forgetful = Consumer(frozenset())
    exporter = Consumer(frozenset({"lat", "eni"}), {"lat": P99})
    guard = GuardedConsumer(ComponentID("p"), forgetful, logging.getLogger("test"), Telemetry(),
                            Kind.PROCESSOR, downstream=exporter)
    assert guard.wanted_families() == frozenset({"lat", "eni"})
    assert wanted_series_of(guard) == {"lat": P99}
    reading = Consumer(frozenset({"lat"}))  # reads every lat line itself: the filter goes
    guard = GuardedConsumer(ComponentID("p"), reading, logging.getLogger("test"), Telemetry(),
                            Kind.PROCESSOR, downstream=exporter)
    assert wanted_series_of(guard) == {}
    everything = Consumer(None)
    guard = GuardedConsumer(ComponentID("p"), forgetful, logging.getLogger("test"), Telemetry(),
                            Kind.PROCESSOR, downstream=everything)
    assert guard.wanted_families() is None
