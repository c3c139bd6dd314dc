"""Combining the targets of one block (the cluster, or one group-by value) into the cycle's
metrics, rule by rule: per-target sums, counts, minima and maxima over all the targets of one
page shape at once (``map`` over targets, C-level), exactly-rounded sums over targets, and target
by target only where a NaN or an infinity is in the block. Step 3 of :mod:`._aggregate`'s
docstring; kept apart from the per-target state it is fed from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import chain, repeat
from typing import Any

from pipeline import (
    Distribution,
    Metric,
    MetricKind,
)

from ._derived import Attributes, capacity_metrics, coverage_metrics
from ._exact_sum import exact_sum
from ._histogram import (
    Contribution,
    Histograms,
    merge_histograms,
)
from ._layout import VALUES, Shape
from ._partials import AVG, COUNT, COVERAGE, MAX, MIN, SUM, exact_parts, partial
from ._rules import TARGETS_DISCOVERED, Operation, Rule
from ._tracker import Tally

_INF = math.inf
REPORTING, STALE, FAILED = 0, 1, 2


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
            # + 0.0: max(0.0, -0.0) is whichever came first; this way not even the sign of a
            # zero depends on the order of targets (or of shards, for a gateway).
            value = max(self.highs) + 0.0
        elif operation is Operation.MIN:
            value = min(self.lows) + 0.0
        else:
            value = (exact_sum(self.sums) + 0.0) / self.n
        # rule_metric's call written out: with group_by: [node] this runs for every rule on
        # every node, and the extra call was a tenth of a metric's cost.
        return Metric(rule.name, kind, value, rule.unit, attributes, False, rule.description,
                      None, rule.family, rule.quantile)

    def partial(self, rule: Rule, kind: MetricKind, attributes: Attributes) -> Metric:
        """What a gateway needs to combine this block with other shards' (:mod:`._partials`)."""
        operation = rule.operation
        if operation is Operation.COUNT:
            return partial(rule_metric(rule, kind, float(self.targets), attributes), COUNT)
        if operation is Operation.MAX:
            return partial(rule_metric(rule, kind, max(self.highs) + 0.0, attributes), MAX)
        if operation is Operation.MIN:
            return partial(rule_metric(rule, kind, min(self.lows) + 0.0, attributes), MIN)
        parts = exact_parts(self.sums)
        metric = rule_metric(rule, kind, parts[0], attributes)
        if operation is Operation.SUM:
            return partial(metric, SUM, parts[1:])
        return partial(metric, AVG, parts[1:], self.n)


class RuleFacts:
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


class Block:
    """One block's combination (the cluster, or one group-by value)."""

    __slots__ = ("_facts", "combined", "histograms", "counts")

    def __init__(self, facts: RuleFacts) -> None:
        self._facts = facts
        self.combined: dict[int, _Combined] = {}
        #: Histogram rule index -> the targets' contributions.
        self.histograms: dict[int, list[Contribution]] = {}
        #: Targets reporting, stale, failed.
        self.counts = [0, 0, 0]

    def add(self, rows: Rows, tally: Tally | None) -> None:
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

    def partials(self, attributes: Attributes) -> list[Metric]:
        """The block as a shard's partials: each rule's combinable form, and its coverage
        (capacity metrics are the gateway's to work out from the combined gauges)."""
        metrics: list[Metric] = []
        kinds = self._facts.kinds
        for index, rule in enumerate(self._facts.rules):
            into = self.combined.get(index)
            if into is not None and into.targets:
                metrics.append(into.partial(rule, kinds[index], attributes))
            elif index in self.histograms:
                contributions = self.histograms[index]
                metric = _histogram_metric(rule, contributions, attributes)
                if rule.operation is Operation.COUNT:
                    metrics.append(partial(metric, COUNT))
                else:   # the observations' sum, sent exactly as sums are
                    rest = exact_parts([c.sum_increase for c in contributions])[1:]
                    metrics.append(partial(metric, SUM, rest))
        reporting, stale, failed = self.counts
        metrics.extend(partial(metric, COVERAGE) for metric in
                       coverage_metrics(reporting, stale, failed, attributes)
                       if metric.name != TARGETS_DISCOVERED)  # the gateway adds them up
        return metrics


def _combine_each(
    pick: Callable[[tuple[float, ...]], Any], width: int, statuses: list[int],
    values: list[tuple[float, ...]], into: _Combined, tally: Tally | None,
) -> None:
    """A gauge or summary rule, target by target, skipping (and counting) non-finite values."""
    for status, chosen in zip(statuses, map(pick, values), strict=True):
        selected = (chosen,) if width == 1 else chosen
        kept = [value for value in selected if -_INF < value < _INF]
        if tally is not None and status == REPORTING:
            tally.nan += len(selected) - len(kept)
        if kept:
            into.sums.append(sum(kept, 0.0))
            into.n += len(kept)
            into.targets += 1
            into.highs.append(max(kept))
            into.lows.append(min(kept))


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


class Rows:
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
        self.statuses.append(FAILED)
        self.groups.append(groups)

    def counts(self) -> list[int]:
        statuses = self.statuses
        return [statuses.count(REPORTING), statuses.count(STALE), statuses.count(FAILED)]

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

    def split(self, position: int) -> dict[str, Rows]:
        """The rows by their ``position``-th group-by value."""
        parts: dict[str, Rows] = {}
        for status, groups in zip(self.statuses, self.groups, strict=True):
            part = parts.get(groups[position])
            if part is None:
                part = parts[groups[position]] = Rows()
            if status == FAILED:
                part.add_failed(groups)
        for row in zip(self.data_statuses, self.data_groups, self.shapes, self.values,
                       self.deltas, self.histograms, strict=True):
            parts[row[1][position]].add(*row)
        return parts
