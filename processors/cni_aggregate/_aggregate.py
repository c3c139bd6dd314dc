"""One cycle's aggregation: every discovered target's scrape in, the cluster-level metrics out.

Pure (no I/O, no clock, no telemetry): :class:`Aggregator` keeps the state that spans cycles (each
target's counter state and the values of its last success) and returns the cycle's metrics with
a :class:`CycleStats` the processor turns into self-metrics.

How a cycle runs:

1. Each target's page is read once: its wanted lines flattened into a tuple of series texts and
   one of values, the texts matched to the target's :class:`~._layout.TargetLayout` (usually
   last cycle's: one tuple comparison), and its counters' increases taken (``_tracker``).
2. A failed target that is still discovered, and whose last success is younger than
   ``staleness`` (measured between cycle ticks, so the boundary does not depend on scrape jitter),
   contributes its last gauges and quantiles again, and a zero increase for its counters.
   A target missing from the batch has left discovery: its state is dropped at once.
3. The targets of a block (the cluster, or one group-by value) combine per rule. Each target
   contributes, per rule, the plain left-to-right float sum of its selected finite values (or
   increases), their count, min and max, as a per-target loop would. Sums over targets use
   ``math.fsum``, which is exactly rounded and so independent of target order: the output does
   not depend on the order targets were scraped or listed in.

Why it is built this way: this runs for every wanted sample of every target each cycle, and a
Python loop per sample per rule costs several times more (bench/bench_aggregate.py). Here the
per-target work is a few C-level passes (flatten, texts, values, increases), and step 3 works per
rule over all the targets of one :class:`~._layout.Shape` at once, with ``map`` (C-level) over
targets: one ``itemgetter`` per target for a one-line rule, two calls for a many-line one. Only a
rule whose values hold a NaN or an infinity somewhere in the block goes target by target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from pipeline import (
    Batch,
    Distribution,
    Metric,
    MetricKind,
    Target,
    TargetScrape,
)

from ._derived import Attributes, capacity_metrics, coverage_metrics
from ._exact_sum import exact_sum
from ._histogram import (
    Contribution,
    HistogramLines,
    HistogramReader,
    Histograms,
    histograms_of,
    merge_histograms,
    no_histogram_increase,
)
from ._layout import VALUES, GroupOf, Layouts, ReadPlan, Shape, TargetLayout
from ._rules import UNKNOWN_GROUP, Operation, Rule, RuleType
from ._tracker import CounterState, Tally, advance

_INF = math.inf
_REPORTING, _STALE, _FAILED = 0, 1, 2

_SERIES, _VALUE = itemgetter(0), itemgetter(1)


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


def _histogram_metric(rule: Rule, contributions: list[Contribution], attributes: Attributes
                      ) -> Metric:
    distribution = None
    if rule.operation is Operation.COUNT:
        value = float(len(contributions))
    else:
        distribution = merge_histograms(contributions)
        value = distribution.count
    return rule_metric(rule, rule.metric_kind, value, attributes, distribution)


def rule_metric(rule: Rule, kind: MetricKind, value: float, attributes: Attributes,
                distribution: Distribution | None = None) -> Metric:
    """A rule's metric: what exporters name and describe it by comes from the rule, shared
    objects rather than copies made per cycle."""
    return Metric(rule.name, kind, value, rule.unit, attributes, False, rule.description,
                  distribution, rule.family, rule.quantile)


class _Combined:
    """One block's combination of one rule over targets, fed shape by shape."""

    __slots__ = ("sums", "n", "targets", "highs", "lows")

    def __init__(self) -> None:
        #: Per-target sums (a one-line rule's values as they are: 0.0 + v is v, but for the sign
        #: of a zero, which the final + 0.0 settles as a per-target sum would have).
        self.sums: list[float] = []
        self.n = 0
        #: Targets that had at least one finite selected value.
        self.targets = 0
        self.highs: list[float] = []
        self.lows: list[float] = []

    def metric(self, rule: Rule, kind: MetricKind, attributes: Attributes) -> Metric:
        operation = rule.operation
        if operation is Operation.COUNT:
            value = float(self.targets)
        elif operation is Operation.SUM:
            value = exact_sum(self.sums) + 0.0
        elif operation is Operation.MAX:
            value = max(self.highs)
        elif operation is Operation.MIN:
            value = min(self.lows)
        else:
            value = (exact_sum(self.sums) + 0.0) / self.n
        # rule_metric's call written out: with group_by: [node] this runs for every rule on
        # every node, and the extra call was a tenth of a metric's cost.
        return Metric(rule.name, kind, value, rule.unit, attributes, False, rule.description,
                      None, rule.family, rule.quantile)


class _RuleFacts:
    """What a block asks of each rule, worked out once (``Rule.metric_kind`` is a property that
    cost microseconds a call: with ``group_by: [node]`` it ran for every metric of every node)."""

    __slots__ = ("rules", "kinds", "wants_sums", "wants_high", "wants_low")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.kinds = [rule.metric_kind for rule in rules]
        #: Does a block need the targets' sums (sum, avg), the max, the min?
        self.wants_sums = [rule.operation in (Operation.SUM, Operation.AVG) for rule in rules]
        self.wants_high = [rule.operation is Operation.MAX for rule in rules]
        self.wants_low = [rule.operation is Operation.MIN for rule in rules]


class _Block:
    """One block's combination (the cluster, or one group-by value)."""

    __slots__ = ("_facts", "combined", "histograms", "counts")

    def __init__(self, facts: _RuleFacts) -> None:
        self._facts = facts
        self.combined: dict[int, _Combined] = {}
        #: Histogram rule index -> the targets' contributions.
        self.histograms: dict[int, list[Contribution]] = {}
        #: Targets reporting, stale, failed.
        self.counts = [0, 0, 0]

    def add(self, rows: _Rows, tally: Tally | None) -> None:
        """Combine these targets in; ``tally`` counts the NaNs met (None: not this block)."""
        for status, count in enumerate(rows.counts()):
            self.counts[status] += count
        combined = self.combined
        for shape, (statuses, values, deltas) in rows.by_shape().items():
            for index, reads, pick, width in shape.specs:
                into = combined.get(index)
                if into is None:
                    into = combined[index] = _Combined()
                if reads == VALUES:
                    self._values(index, pick, width, statuses, values, into, tally)
                else:
                    _combine_increases(pick, width, deltas, into)
        for histograms in rows.histograms:
            if histograms is not None:
                for index, contribution in histograms.items():
                    if contribution is not None:
                        self.histograms.setdefault(index, []).append(contribution)

    def _values(
        self, index: int, pick: Callable[[tuple[float, ...]], Any], width: int,
        statuses: list[int], values: list[tuple[float, ...]], into: _Combined,
        tally: Tally | None,
    ) -> None:
        """A gauge or summary rule over the targets of one shape.

        A one-line rule's picks are floats; a many-line rule's picks are tuples, made and summed
        one at a time (a list of thousands of tuples outgrows the tuple free list and sets off the
        garbage collector).
        """
        flat: list[float] = []
        if width == 1:
            sums = flat = list(map(pick, values))
            total = sum(sums, 0.0)
        elif self._facts.wants_sums[index]:
            sums = list(map(sum, map(pick, values), repeat(0.0)))
            total = sum(sums, 0.0)
        else:
            # Max, min or count: no per-target sums needed; the max of all the values is the
            # max of the targets' maxima (the very same value, the first of equals).
            sums = []
            flat = list(chain.from_iterable(map(pick, values)))
            total = sum(flat, 0.0)
        if not -_INF < total < _INF:    # a NaN or an infinity somewhere: target by target
            _combine_each(pick, width, statuses, values, into, tally)
            return
        into.sums += sums
        into.n += len(values) * width
        into.targets += len(values)
        if self._facts.wants_high[index]:
            into.highs.append(max(flat))
        if self._facts.wants_low[index]:
            into.lows.append(min(flat))

    def metrics(self, attributes: Attributes) -> list[Metric]:
        metrics: list[Metric] = []
        by_name: dict[str, Metric] = {}
        kinds = self._facts.kinds
        for index, rule in enumerate(self._facts.rules):
            into = self.combined.get(index)
            if into is not None and into.targets:
                metric = into.metric(rule, kinds[index], attributes)
            elif index in self.histograms:
                metric = _histogram_metric(rule, self.histograms[index], attributes)
            else:
                continue
            metrics.append(metric)
            by_name[metric.name] = metric
        metrics.extend(capacity_metrics(by_name, attributes))
        reporting, stale, failed = self.counts
        metrics.extend(coverage_metrics(reporting, stale, failed, attributes))
        return metrics


def _combine_each(
    pick: Callable[[tuple[float, ...]], Any], width: int, statuses: list[int],
    values: list[tuple[float, ...]], into: _Combined, tally: Tally | None,
) -> None:
    """A gauge or summary rule, target by target, skipping (and counting) non-finite values."""
    for status, chosen in zip(statuses, map(pick, values), strict=True):
        selected = (chosen,) if width == 1 else chosen
        kept = [value for value in selected if -_INF < value < _INF]
        if tally is not None and status == _REPORTING:
            tally.nan += len(selected) - len(kept)
        if kept:
            into.sums.append(sum(kept, 0.0))
            into.n += len(kept)
            into.targets += 1
            into.highs.append(max(kept))
            into.lows.append(min(kept))


class Aggregator:
    """Turns each cycle's batch into metrics; keeps the state between cycles."""

    def __init__(self, rules: Sequence[Rule], group_by: Sequence[str], staleness: float) -> None:
        self.rules = tuple(rules)
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
        #: The wanted families, in the order of a page's flat vector, and as many empty defaults.
        self._families = reads.families
        self._empty = ((),) * len(reads.families)
        #: Does any rule read increases (so the counter tracker runs)?
        self._tracks = any(rule.type in (RuleType.COUNTER, RuleType.HISTOGRAM)
                           for rule in self.rules)
        self._facts = _RuleFacts(self.rules)
        #: Target key -> what is kept of it (targets with at least one successful scrape).
        self._states: dict[str, _TargetState] = {}

    # -- the cycle ------------------------------------------------------------------------------

    def aggregate(self, batch: Batch) -> tuple[list[Metric], CycleStats]:
        cycle = batch.cycle
        now = cycle.time
        window_start = cycle.previous if cycle.index > 0 else cycle.started
        tally = Tally()
        rows = _Rows()
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
                rows.add(_REPORTING, groups, shape, state.values, deltas, state.histograms)
            elif (state is not None and state.layout is not None
                  and now - state.time < self.staleness):
                shape = state.layout.shape
                rows.add(_STALE, groups, shape, state.values, _no_increase(state, shape),
                         no_histogram_increase(state.histograms))
            else:
                rows.add_failed(groups)
        for key in states.keys() - seen:
            del states[key]
        cluster = self._block()
        cluster.add(rows, tally)    # only the cluster-wide block counts NaNs: each target once
        metrics = cluster.metrics(())
        for position, attribute in enumerate(self.group_by):
            parts = rows.split(position)
            for value in sorted(parts):
                block = self._block()
                block.add(parts[value], None)
                metrics.extend(block.metrics(((attribute, value),)))
        counts = cluster.counts
        stats = CycleStats(
            counts[_REPORTING], counts[_STALE], counts[_FAILED], tally.nan, tally.resets,
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

        The hot path (every target, every cycle): the page is flattened into a tuple of series
        texts and one of values by C-level passes, and nothing here loops over samples in Python.
        """
        per_family = list(map(scrape.families.get, self._families, self._empty))
        lens = tuple(map(len, per_family))
        samples = list(chain.from_iterable(per_family))
        keys = tuple(map(_SERIES, samples))
        values = tuple(map(_VALUE, samples))
        layout = state.layout
        if layout is None or layout.lens != lens or layout.keys != keys:
            layout = state.layout = self._layouts.get(lens, keys)
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

    def _block(self) -> _Block:
        return _Block(self._facts)

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


def _combine_increases(pick: Callable[[tuple[float, ...]], Any], width: int,
                       deltas: list[tuple[float, ...]], into: _Combined) -> None:
    """A counter rule over the targets of one shape. NaN marks a line without an increase (see
    ``_tracker``); a real increase is never NaN."""
    if width == 1:
        sums = list(map(pick, deltas))
    else:
        sums = list(map(sum, map(pick, deltas), repeat(0.0)))
    total = sum(sums, 0.0)
    if total == total:
        into.sums += sums
        into.n += len(deltas) * width
        into.targets += len(deltas)
        return
    for chosen in map(pick, deltas):
        kept = [delta for delta in ((chosen,) if width == 1 else chosen) if delta == delta]
        if kept:
            into.sums.append(sum(kept, 0.0))
            into.n += len(kept)
            into.targets += 1


class _Rows:
    """A block's targets, as parallel lists that ``map`` runs over (and no object per target:
    thousands of them outgrow the tuple free list and set off the garbage collector).

    Every target has a status and its group-by values; those with values to combine (reporting,
    or stale and carried) also have their shape, values, increases and histogram contributions.
    """

    __slots__ = ("statuses", "groups", "data_statuses", "data_groups", "shapes", "values",
                 "deltas", "histograms")

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.groups: list[tuple[str, ...]] = []
        self.data_statuses: list[int] = []
        self.data_groups: list[tuple[str, ...]] = []
        self.shapes: list[Shape] = []
        self.values: list[tuple[float, ...]] = []
        self.deltas: list[tuple[float, ...]] = []
        self.histograms: list[Histograms | None] = []

    def add(self, status: int, groups: tuple[str, ...], shape: Shape,
            values: tuple[float, ...], deltas: tuple[float, ...],
            histograms: Histograms | None) -> None:
        self.statuses.append(status)
        self.groups.append(groups)
        self.data_statuses.append(status)
        self.data_groups.append(groups)
        self.shapes.append(shape)
        self.values.append(values)
        self.deltas.append(deltas)
        self.histograms.append(histograms)

    def add_failed(self, groups: tuple[str, ...]) -> None:
        self.statuses.append(_FAILED)
        self.groups.append(groups)

    def counts(self) -> list[int]:
        statuses = self.statuses
        return [statuses.count(_REPORTING), statuses.count(_STALE), statuses.count(_FAILED)]

    def by_shape(self) -> dict[Shape, tuple[list[int], list[tuple[float, ...]],
                                            list[tuple[float, ...]]]]:
        """(statuses, values, increases) of the targets of each shape."""
        shapes = self.shapes
        if shapes and shapes.count(shapes[0]) == len(shapes):   # one shape (the usual case)
            return {shapes[0]: (self.data_statuses, self.values, self.deltas)}
        out: dict[Shape, tuple[list[int], list[tuple[float, ...]], list[tuple[float, ...]]]]
        out = {}
        for shape, status, values, deltas in zip(shapes, self.data_statuses, self.values,
                                                 self.deltas, strict=True):
            found = out.get(shape)
            if found is None:
                found = out[shape] = ([], [], [])
            found[0].append(status)
            found[1].append(values)
            found[2].append(deltas)
        return out

    def split(self, position: int) -> dict[str, _Rows]:
        """The rows by their ``position``-th group-by value."""
        parts: dict[str, _Rows] = {}
        for status, groups in zip(self.statuses, self.groups, strict=True):
            part = parts.get(groups[position])
            if part is None:
                part = parts[groups[position]] = _Rows()
            if status == _FAILED:
                part.add_failed(groups)
        for row in zip(self.data_statuses, self.data_groups, self.shapes, self.values,
                       self.deltas, self.histograms, strict=True):
            parts[row[1][position]].add(*row)
        return parts
