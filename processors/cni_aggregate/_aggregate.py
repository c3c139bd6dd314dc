"""One cycle's aggregation: every discovered target's scrape in, the cluster-level metrics out.

Pure (no I/O, no clock, no telemetry): :class:`Aggregator` keeps the state that spans cycles (each
target's counter state and the values of its last success) and returns the cycle's metrics with
a :class:`CycleStats` the processor turns into self-metrics.

How a cycle runs:

1. Each target's page is read once, in the page form the parser made (:class:`pipeline.Page`:
   a tuple of series texts, one of their values, and the families' runs): the texts matched to the
   target's :class:`~._layout.TargetLayout` (usually last cycle's: one tuple comparison, in C),
   and its counters' increases taken (``_tracker``).
2. A failed target that is still discovered, and whose last success is younger than
   ``staleness`` (measured between cycle ticks, so the boundary does not depend on scrape jitter),
   contributes its last gauges and quantiles again, and a zero increase for its counters.
   A target missing from the batch has left discovery: its state is dropped at once.
3. The targets of a block (the cluster, or one group-by value) combine per rule
   (:mod:`._combine`). Each target contributes, per rule, the plain left-to-right float sum of
   its selected finite values (or increases), their count, min and max, as a per-target loop
   would. Sums over targets use
   ``math.fsum``, which is exactly rounded and so independent of target order: the output does
   not depend on the order targets were scraped or listed in.

Why it is built this way: this runs for every wanted sample of every target each cycle, and a
Python loop per sample per rule costs several times more (bench/bench_aggregate.py). Here the
per-target work is a few C-level passes (compare the texts, pick values, increases), and step 3
works per rule over all the targets of one :class:`~._layout.Shape` at once, with ``map`` over
targets: one ``itemgetter`` per target for a one-line rule, two calls for a many-line one. Only a
rule whose values hold a NaN or an infinity somewhere in the block goes target by target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline import (
    Batch,
    Metric,
    Target,
    TargetScrape,
)

from ._combine import FAILED, REPORTING, STALE, Block, Rows, RuleFacts
from ._histogram import (
    HistogramLines,
    HistogramReader,
    Histograms,
    histograms_of,
    no_histogram_increase,
)
from ._layout import GroupOf, Layouts, ReadPlan, Shape, TargetLayout
from ._rules import UNKNOWN_GROUP, Rule, RuleType
from ._tracker import CounterState, Tally, advance

_INF = math.inf


@dataclass(frozen=True, slots=True)
class CycleStats:
    """What one cycle saw, for self-metrics and logs."""

    reporting: int = 0
    stale: int = 0
    failed: int = 0
    #: NaN / +-Inf samples skipped.
    nan_skipped: int = 0
    #: Counter series (or histogram series) whose value dropped: resets without a restart.
    resets: int = 0
    #: Targets whose process_start_time_seconds changed.
    restarts: int = 0
    #: First-seen targets that started inside the window, so counted from zero.
    counted_from_start: int = 0


class _TargetState:
    """What is kept of a target between cycles, from its last successful scrape."""

    __slots__ = ("time", "layout", "values", "histograms", "counters")

    def __init__(self) -> None:
        #: Cycle time of its last success.
        self.time = 0.0
        #: Its page's layout then: usually still right, and then found by comparing the series
        #: texts with it rather than hashing them all to look the layout up.
        self.layout: TargetLayout | None = None
        #: Its values that some rule reads (``Shape.kept``) and its histogram contributions
        #: then: carried while it is stale (its counters carry no increase).
        self.values: tuple[float, ...] = ()
        self.histograms: Histograms | None = None
        self.counters: CounterState | None = None


class Aggregator:
    """Turns each cycle's batch into metrics; keeps the state between cycles."""

    def __init__(self, rules: Sequence[Rule], group_by: Sequence[str], staleness: float,
                 partials: bool = False) -> None:
        self.rules = tuple(rules)
        #: Publish each block as a shard's partials (:mod:`._partials`) rather than its values.
        self.partials = partials
        self.group_by = tuple(group_by)
        self.staleness = float(staleness)
        #: Histogram families, and the names their lines may be filed under, to their lines.
        histograms: dict[str, HistogramLines] = {}
        readers: dict[int, object] = {}
        for index, rule in enumerate(self.rules):
            if rule.type is RuleType.HISTOGRAM:
                lines = histograms.get(rule.family) or HistogramLines(rule.family)
                for family in rule.lookup_families:
                    histograms.setdefault(family, lines)
                readers[index] = HistogramReader(rule, lines)
        group_of: dict[str, GroupOf] = {
            family: lines.group_of for family, lines in histograms.items()}
        reads = ReadPlan(self.rules, readers, group_of)
        self._layouts = Layouts(reads)
        #: Does any rule read increases (so the counter tracker runs)?
        self._tracks = any(rule.type in (RuleType.COUNTER, RuleType.HISTOGRAM)
                           for rule in self.rules)
        self._facts = RuleFacts(self.rules)
        #: Target key -> what is kept of it (targets with at least one successful scrape).
        self._states: dict[str, _TargetState] = {}

    # -- the cycle ------------------------------------------------------------------------------

    def aggregate(self, batch: Batch) -> tuple[list[Metric], CycleStats]:
        cycle = batch.cycle
        now = cycle.time
        window_start = cycle.previous if cycle.index > 0 else cycle.started
        tally = Tally()
        rows = Rows()
        seen: set[str] = set()
        states = self._states
        grouped = bool(self.group_by)
        for scrape in batch.targets:
            key = scrape.target.key
            if key in seen:
                continue  # the same target listed twice: the first counts
            seen.add(key)
            groups = self._groups(scrape.target) if grouped else ()
            state = states.get(key)
            if scrape.health.up:
                if state is None:
                    state = states[key] = _TargetState()
                shape, deltas = self._read(scrape, state, now, window_start, tally)
                rows.add(REPORTING, groups, shape, state.values, deltas, state.histograms)
            elif (state is not None and state.layout is not None
                  and now - state.time < self.staleness):
                shape = state.layout.shape
                rows.add(STALE, groups, shape, state.values, _no_increase(state, shape),
                         no_histogram_increase(state.histograms))
            else:
                rows.add_failed(groups)
        for key in states.keys() - seen:
            del states[key]
        cluster = self._block()
        cluster.add(rows, tally)    # only the cluster-wide block counts NaNs: each target once
        finish = Block.partials if self.partials else Block.metrics
        metrics = finish(cluster, ())
        for position, attribute in enumerate(self.group_by):
            parts = rows.split(position)
            for value in sorted(parts):
                block = self._block()
                block.add(parts[value], None)
                metrics.extend(finish(block, ((attribute, value),)))
        counts = cluster.counts
        stats = CycleStats(
            counts[REPORTING], counts[STALE], counts[FAILED], tally.nan, tally.resets,
            tally.restarts, tally.from_start,
        )
        return metrics, stats

    def _groups(self, target: Target) -> tuple[str, ...]:
        return tuple(
            (target.node or target.attribute("node") if key == "node" else target.attribute(key))
            or UNKNOWN_GROUP
            for key in self.group_by
        )

    def _read(self, scrape: TargetScrape, state: _TargetState, now: float,
              window_start: float, tally: Tally) -> tuple[Shape, tuple[float, ...]]:
        """One successful scrape into the target's state: (its shape, its increases).

        The hot path (every target, every cycle): the page form's vectors are used as the parser
        made them, and nothing here loops over samples in Python.
        """
        page = scrape.families
        keys, runs = page.series, page.runs
        layout = state.layout
        if layout is None or layout.runs != runs or layout.keys != keys:
            layout = state.layout = self._layouts.get(runs, keys)
        values = page.numbers
        shape = layout.shape
        state.time = now
        state.values = shape.kept(values)
        deltas: tuple[float, ...] = ()
        if self._tracks:
            state.counters, deltas = advance(
                state.counters, layout, shape.tracked(values), scrape.process_start_time,
                window_start, tally)
            if shape.histogram_rules:
                state.histograms = histograms_of(layout, deltas)
            elif state.histograms is not None:
                state.histograms = None
        return shape, deltas

    # -- combining ------------------------------------------------------------------------------

    def _block(self) -> Block:
        return Block(self._facts)

    # -- config reload ----------------------------------------------------------------------------

    def take_over(self, previous: Aggregator) -> list[Rule]:
        """Carry on from ``previous`` (the same processor before a config reload): every target's
        counter bases are kept, so increases continue exactly whatever changed (group_by,
        staleness, other rules). Returns the counter and histogram rules that read families the
        previous rules did not: those have no base, so their lines start from a baseline."""
        fresh = _tracked_families(self.rules) - _tracked_families(previous.rules)
        for key, state in previous._states.items():
            state.layout = None  # a layout belongs to the rules that made it: look it up again
            if fresh and state.counters is not None:
                state.counters.fresh_families = fresh
            self._states[key] = state
        return [rule for rule in self.rules if fresh & set(rule.lookup_families)]

    # -- introspection ----------------------------------------------------------------------------

    def series_tracked(self) -> int:
        return sum(state.counters.tracked for state in self._states.values()
                   if state.counters is not None)


def _tracked_families(rules: Sequence[Rule]) -> frozenset[str]:
    """The families whose lines the counter tracker keeps a base for under these rules."""
    return frozenset(family for rule in rules
                     if rule.type in (RuleType.COUNTER, RuleType.HISTOGRAM)
                     for family in rule.lookup_families)


def _no_increase(state: _TargetState, shape: Shape) -> tuple[float, ...]:
    """A stale target's increases: 0 for every line that had one at its last success (its next
    success is diffed against that one, so nothing is lost)."""
    counters = state.counters
    if counters is None or counters.gaps is None:
        return shape.zeros
    return counters.gaps
