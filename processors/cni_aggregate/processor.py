"""The ``cni_aggregate`` processor: the engine-facing shell around :class:`Aggregator`.

It turns each cycle's batch into cluster-level metrics, hands the batch on with them, and reports
what the cycle saw as self-metrics. The aggregation itself is pure and lives in ``_aggregate``.
"""

from __future__ import annotations

import time

from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
    FamilySet,
    Host,
    MetricsConsumer,
    SeriesFilters,
)

from ._aggregate import Aggregator, CycleStats
from ._partials import stamp
from ._rules import GROUP_KEYS, UNKNOWN_GROUP, Rule
from ._wanted import series_filters, wanted_families

#: group_by keys that come from the node's metadata (``node`` is always known).
NODE_METADATA_KEYS = frozenset(GROUP_KEYS) - {"node"}


class CniAggregateProcessor:
    """Aggregates every cycle; has no background work, so start and shutdown are cheap.

    Aggregation runs inline on the event loop: it is CPU-bound (a thread would not run it any
    sooner under the GIL), it runs once per cycle after the cycle's scrapes are done, and keeping
    it on one thread means the state between cycles needs no lock. ``bench/bench_aggregate.py``
    measures it on a 5,000-target cycle.
    """

    def __init__(
        self,
        settings: ComponentSettings,
        rules: list[Rule],
        group_by: list[str],
        staleness: float,
        next_consumer: MetricsConsumer,
        partials: bool = False,
    ) -> None:
        self._settings = settings
        self._log = settings.logger
        self._next = next_consumer
        self._aggregator = Aggregator(rules, group_by, staleness, partials)
        self._families = wanted_families(rules)
        self._line_filters = series_filters(rules)
        self._closed = False
        self._said_shard = False
        #: group_by keys not yet seen on any target (see :meth:`_check_groups`).
        self._unseen_groups = {key for key in group_by if key in NODE_METADATA_KEYS}
        self._instruments(settings)

    def take_over(self, previous: CniAggregateProcessor) -> None:
        """After a config reload changed this processor's config: carry on from the previous
        instance's state (called by the engine before start), so counter increases continue
        exactly across the reload."""
        fresh = self._aggregator.take_over(previous._aggregator)
        for rule in fresh:
            self._log.info("config reload: rule %s reads %s, not tracked before: its increases "
                           "start from a baseline this cycle", rule.name, rule.family)

    def _instruments(self, settings: ComponentSettings) -> None:
        telemetry = settings.telemetry
        name = str(settings.id)
        labels = ("processor",)
        self._nan = telemetry.counter(
            "nan_samples_skipped_total", "NaN or Inf samples skipped, never summed.", labels
        ).labels(name)
        resets = telemetry.counter(
            "counter_resets_total",
            "Counter resets: a series whose value dropped, or a target whose "
            "process_start_time_seconds changed.", ("processor", "reason"))
        self._resets_drop = resets.labels(name, "drop")
        self._resets_restart = resets.labels(name, "restart")
        self._from_start = telemetry.counter(
            "targets_counted_from_start_total",
            "First-seen targets that started inside the window, so counted from zero.", labels
        ).labels(name)
        self._stale = telemetry.gauge(
            "targets_stale", "Failed targets whose last values are carried in the sums.", labels
        ).labels(name)
        self._failed = telemetry.gauge(
            "targets_excluded", "Failed targets with nothing carried in the sums.", labels
        ).labels(name)
        self._series = telemetry.gauge(
            "counter_series_tracked", "Counter series whose last value is kept.", labels
        ).labels(name)
        self._duration = telemetry.gauge(
            "aggregate_duration_seconds", "Time the latest cycle's aggregation took.", labels
        ).labels(name)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        self._log.info(
            "aggregating %d rules, group_by=%s, staleness=%gs%s",
            len(self._aggregator.rules), list(self._aggregator.group_by),
            self._aggregator.staleness,
            ", publishing partials for a gateway's cni_combine" if self._aggregator.partials
            else "",
        )

    async def shutdown(self) -> None:
        """Idempotent; safe without start. Nothing is buffered, so there is nothing to flush."""
        self._closed = True

    # -- consumer -----------------------------------------------------------------------------

    def wanted_families(self) -> FamilySet:
        # Its rules' families only: the engine adds what the consumers after it want.
        return self._families

    def wanted_series(self) -> SeriesFilters:
        return self._line_filters

    async def consume(self, batch: Batch) -> None:
        if self._closed:
            raise ComponentError("consume after shutdown", str(self._settings.id))
        if self._unseen_groups:
            self._check_groups(batch)
        began = time.perf_counter()
        metrics, stats = self._aggregator.aggregate(batch)
        if self._aggregator.partials:
            metrics = stamp(metrics, batch)
        elif batch.shard[1] > 1 and not self._said_shard:
            self._said_shard = True
            self._log.error(
                "this replica scrapes shard %d of %d of the fleet but publishes its sums as the "
                "cluster's: set output: partials here and combine the shards with a gateway's "
                "cni_combine (configs/sharded/)", *batch.shard)
        self._record(stats, time.perf_counter() - began)
        await self._next.consume(batch.with_metrics(metrics))

    def _check_groups(self, batch: Batch) -> None:
        """Say once, plainly, when a ``group_by`` key is on no target at all: every node then
        lands in the group ``unknown``, which is what forgetting node metadata looks like."""
        if not batch.targets:
            return
        for key in sorted(self._unseen_groups):
            if any(scrape.target.attribute(key) for scrape in batch.targets):
                self._unseen_groups.discard(key)
            else:
                self._unseen_groups.discard(key)
                self._log.warning(
                    "group_by %s: none of the %d targets carries a %s, so all are grouped as "
                    "%r; the prometheus receiver adds it with kubernetes_sd.node_metadata: true",
                    key, len(batch.targets), key, UNKNOWN_GROUP)

    def _record(self, stats: CycleStats, seconds: float) -> None:
        self._nan.inc(stats.nan_skipped)
        self._resets_drop.inc(stats.resets)
        self._resets_restart.inc(stats.restarts)
        self._from_start.inc(stats.counted_from_start)
        self._stale.set(stats.stale)
        self._failed.set(stats.failed)
        self._series.set(self._aggregator.series_tracked())
        self._duration.set(seconds)
        self._log.debug(
            "cycle aggregated: %d reporting, %d stale, %d failed, %d resets, %d restarts, %.3fs",
            stats.reporting, stats.stale, stats.failed, stats.resets, stats.restarts, seconds,
        )
