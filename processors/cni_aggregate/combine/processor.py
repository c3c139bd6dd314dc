"""The ``cni_combine`` processor: the gateway's side of sharding.

Shards (``cni_aggregate`` with ``output: partials``) send each cycle's partials, through the
``otlp`` exporter and receiver; this processor holds a cycle until every shard's partials for it
arrived, or until its deadline, and hands on one batch per cycle holding exactly what one replica
scraping the whole fleet would have published (:mod:`._combiner`).
"""

from __future__ import annotations

import asyncio

from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
    FamilySet,
    Host,
    MetricsConsumer,
)

from ._combiner import Added, Combiner, PartialError, Published, reports_of
from .config import CniCombineConfig

#: The deadline when the shards did not say their interval.
_DEFAULT_DEADLINE = 15.0


class CniCombineProcessor:
    def __init__(self, settings: ComponentSettings, config: CniCombineConfig,
                 next_consumer: MetricsConsumer) -> None:
        self._settings = settings
        self._log = settings.logger
        self._next = next_consumer
        self._config = config
        self._combiner = Combiner(float(config.staleness))
        self._lock = asyncio.Lock()     # cycles are published one at a time, in time order
        self._deadlines: dict[float, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._said_others = False
        self._host: Host | None = None
        self._instruments(settings)

    def _instruments(self, settings: ComponentSettings) -> None:
        telemetry, name = settings.telemetry, str(settings.id)
        cycles = telemetry.counter(
            "combine_cycles_total", "Cycles published: with every shard (complete) or at the "
            "deadline without some.", ("processor", "result"))
        self._complete = cycles.labels(name, "complete")
        self._at_deadline = cycles.labels(name, "deadline")
        self._late = telemetry.counter(
            "combine_partials_late_total", "Shard reports that came after their cycle was "
            "published (their counter increases went into the next cycle).", ("processor",)
        ).labels(name)
        self._invalid = telemetry.counter(
            "combine_partials_invalid_total", "Batches with partials whose marks could not be "
            "read (dropped).", ("processor",)).labels(name)
        self._missing = telemetry.gauge(
            "combine_shards_missing", "Shards missing from the latest published cycle.",
            ("processor",)).labels(name)
        self._shards = telemetry.gauge(
            "combine_shards", "Shards the latest cycle was combined from (K, learnt from "
            "their partials).", ("processor",)).labels(name)

    def take_over(self, previous: CniCombineProcessor) -> None:
        """After a config reload changed this processor's config (called by the engine after
        ``previous`` shut down, which published its pending cycles, and before start): carry on
        with its cycles. Without it, the rest of a cycle ``previous`` published would look new
        here and be published a second time; with it, it is late (its increases carried)."""
        previous._combiner.staleness = self._combiner.staleness
        self._combiner = previous._combiner

    async def start(self, host: Host) -> None:
        self._host = host
        deadline = (f"{self._config.deadline}" if self._config.deadline is not None
                    else "half the shards' interval")
        self._log.info("combining shards' partials: a cycle is published when every shard "
                       "reported, or %s after its first partial", deadline)

    async def shutdown(self) -> None:
        """Idempotent. Cycles still pending are published first: what arrived is not lost."""
        if self._closed:
            return
        self._closed = True
        for handle in self._deadlines.values():
            handle.cancel()
        self._deadlines.clear()
        for task in list(self._tasks):
            task.cancel()
        async with self._lock:
            for time in self._combiner.pending_before(float("inf")):
                await self._publish(time)

    def wanted_families(self) -> FamilySet:
        return frozenset()

    async def consume(self, batch: Batch) -> None:
        if self._closed:
            raise ComponentError("consume after shutdown", str(self._settings.id))
        try:
            reports, others = reports_of(batch)
        except PartialError as exc:
            self._invalid.inc()
            self._log.warning("dropped a batch of %d metrics: %s", len(batch.metrics), exc)
            return
        if others:   # not partials (another OTLP source): passed on as they came
            if not self._said_others:
                self._said_others = True
                self._log.warning(
                    "passing on %d metrics that are not shards' partials (%s, ...) as they "
                    "came; a shard whose cni_aggregate lacks output: partials sends these",
                    len(others), others[0].name)
            await self._next.consume(Batch(cycle=batch.cycle, metrics=tuple(others)))
        async with self._lock:
            for report in reports:
                added = self._combiner.add(report)
                if added is Added.COMPLETE:
                    for time in self._combiner.pending_before(report.time):
                        await self._publish(time)
                elif added is Added.FIRST:
                    self._arm(report.time, report.interval)
                elif added is Added.LATE:
                    self._late.inc()
                    self._log.info("shard %d's partials for cycle %.0f came after it was "
                                   "published: its counter increases go into the next cycle",
                                   report.shard, report.time)

    def _arm(self, time: float, interval: float) -> None:
        deadline = (float(self._config.deadline) if self._config.deadline is not None
                    else interval / 2 if interval > 0 else _DEFAULT_DEADLINE)
        loop = asyncio.get_running_loop()
        self._deadlines[time] = loop.call_later(deadline, self._expire, time)

    def _expire(self, time: float) -> None:
        task = asyncio.get_running_loop().create_task(self._on_deadline(time))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_deadline(self, time: float) -> None:
        async with self._lock:
            for pending in self._combiner.pending_before(time):
                await self._publish(pending)

    async def _publish(self, time: float) -> None:
        handle = self._deadlines.pop(time, None)
        if handle is not None:
            handle.cancel()
        published = self._combiner.publish(time)
        self._record(published)
        try:
            await self._next.consume(published.batch)
        except Exception:
            self._log.exception("next consumer failed on combined cycle %.0f", time)

    def _record(self, published: Published) -> None:
        self._shards.set(published.shards)
        self._missing.set(len(published.missing))
        if not published.missing:
            self._complete.inc()
            if self._host is not None:
                self._host.report_status(True)
            return
        self._at_deadline.inc()
        missing = ", ".join(map(str, published.missing))
        message = (f"cycle {published.batch.cycle.time:.0f} published at its deadline without "
                   f"shard(s) {missing} of {published.shards}: their last gauges are carried "
                   "as stale, their counter increases come with their next report")
        self._log.warning("%s", message)
        if self._host is not None:
            self._host.report_status(len(published.missing) < published.shards, message)
