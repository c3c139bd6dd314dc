"""One cycle's aggregation: every discovered target's scrape in, the cluster-level metrics out.

Pure (no I/O, no clock, no telemetry): :class:`Aggregator` keeps the state that spans cycles (the
counter tracker, each target's last successful contributions) and returns the cycle's metrics with
a :class:`CycleStats` the processor turns into self-metrics.

How a cycle runs:

1. Each target is read once into *contributions*, one per rule: ``(sum, n, min, max)`` of the
   rule's selected finite values (gauges, quantiles) or increases (counters), ``None`` if it had
   none; for a histogram ``(count, n, sum, increments by bucket bound)``.
2. A failed target that is still discovered, and whose last success is younger than
   ``staleness`` (measured between cycle ticks, so the boundary does not depend on scrape jitter),
   contributes its last gauges and quantiles again, and a zero increase for its counters.
   A target missing from the batch has left discovery: its state is dropped at once.
3. The contributions of a block of targets (the cluster, or one group-by value) combine per rule.
   Sums use ``math.fsum``, which is exactly rounded and so independent of target order: the
   output does not depend on the order targets were scraped or listed in.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline import (
    Batch,
    ClusterShape,
    Distribution,
    Metric,
    MetricKind,
    Sample,
    Target,
    TargetScrape,
    parse_series,
)

from ._derived import Attributes, capacity_metrics, capacity_names, coverage_metrics
from ._rules import UNKNOWN_GROUP, Operation, Rule, RuleType
from ._tracker import CounterTracker, Mode, Observation

_INF = math.inf
#: A reader's series cache is cleared past this many entries, so a family with unbounded label
#: values cannot grow memory without limit (clearing costs only re-parsing).
_CACHE_LIMIT = 100_000

_REPORTING, _STALE, _FAILED = 0, 1, 2
_BUCKET, _SUM, _COUNT, _OTHER = 0, 1, 2, 3
_VALUES, _INCREASES, _HISTOGRAM = 0, 1, 2
_READS = {
    RuleType.GAUGE: _VALUES, RuleType.SUMMARY: _VALUES, RuleType.COUNTER: _INCREASES,
    RuleType.HISTOGRAM: _HISTOGRAM,
}

#: (sum, n, min, max) of finite values or increases; histograms: (count, n, sum, increments).
Contribution = tuple[float, int, float, Any]


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


class _Tally:
    __slots__ = ("nan", "resets", "restarts", "from_start")

    def __init__(self) -> None:
        self.nan = 0
        self.resets = 0
        self.restarts = 0
        self.from_start = 0


class _HistogramLines:
    """Classifies the lines of one histogram family, cached by series text."""

    __slots__ = ("family", "_names", "_cache")

    def __init__(self, family: str) -> None:
        self.family = family
        self._names = {
            f"{family}_bucket": _BUCKET, f"{family}_sum": _SUM, f"{family}_count": _COUNT,
        }
        self._cache: dict[str, tuple[int, Hashable, float, dict[str, str]]] = {}

    def info(self, series: str) -> tuple[int, Hashable, float, dict[str, str]]:
        """(role, group, bucket bound, labels without ``le``)."""
        found = self._cache.get(series)
        if found is None:
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()
            found = self._classify(series)
            self._cache[series] = found
        return found

    def _classify(self, series: str) -> tuple[int, Hashable, float, dict[str, str]]:
        try:
            name, labels = parse_series(series)
        except (ValueError, IndexError):
            return (_OTHER, series, math.nan, {})
        role = self._names.get(name, _OTHER)
        bound = math.nan
        if role == _BUCKET:
            try:
                bound = float(labels.pop("le"))
            except (KeyError, ValueError):
                role = _OTHER
        return (role, tuple(sorted(labels.items())), bound, labels)

    def group_of(self, series: str) -> tuple[Hashable, bool]:
        role, group, _, _ = self.info(series)
        return group, role == _BUCKET or role == _COUNT


class _Reader:
    """A rule at run time: which lines it selects (cached by series text) and how it reads them."""

    __slots__ = ("rule", "type", "lookup", "names", "selected", "histogram")

    def __init__(self, rule: Rule, histogram: _HistogramLines | None) -> None:
        self.rule = rule
        self.type = rule.type
        self.lookup = rule.lookup_families
        self.names = rule.line_names
        #: Series text -> selected? A plain dict read inline rather than functools.lru_cache:
        #: a dict.get per sample cost well under half a cached call here (measured), and this
        #: runs for every wanted sample of every target each cycle.
        self.selected: dict[str, bool] = {}
        self.histogram = histogram

    def _learn(self, series: str) -> bool:
        rule = self.rule
        try:
            name, labels = parse_series(series)
        except (ValueError, IndexError):
            name, labels = "", {}
        ok = name in self.names and rule.matches_labels(labels)
        if ok and rule.quantile is not None:
            try:
                ok = float(labels.get("quantile", "nan")) == rule.quantile
            except ValueError:
                ok = False
        if len(self.selected) > _CACHE_LIMIT:
            self.selected.clear()
        self.selected[series] = ok
        return ok

    def combine(self, samples: Sequence[Sample], tally: _Tally) -> Contribution | None:
        """(sum, n, min, max) of the selected finite values."""
        # The hot loop (every wanted sample of every target, every cycle): locals only, and
        # ``-inf < v < inf`` as the finiteness test, cheaper than a math.isfinite call.
        selected = self.selected
        total = 0.0
        n = 0
        low = _INF
        high = -_INF
        for series, value in samples:
            ok = selected.get(series)
            if ok is None:
                ok = self._learn(series)
            if not ok:
                continue
            if -_INF < value < _INF:
                total += value
                n += 1
                if value < low:
                    low = value
                if value > high:
                    high = value
            else:
                tally.nan += 1
        return (total, n, low, high) if n else None

    def combine_increases(self, deltas: Sequence[Sample]) -> Contribution | None:
        """(sum, n, min, max) of the selected increases (all finite: the tracker skipped the
        rest), with the finiteness test of :meth:`combine` left out of the loop."""
        selected = self.selected
        total = 0.0
        n = 0
        for series, delta in deltas:
            ok = selected.get(series)
            if ok is None:
                ok = self._learn(series)
            if ok:
                total += delta
                n += 1
        return (total, n, 0.0, 0.0) if n else None

    def combine_histogram(self, deltas: Sequence[Sample]) -> Contribution | None:
        """(count, n, sum, increments by bound) from one target's increases of this family."""
        lines = self.histogram
        assert lines is not None
        rule = self.rule
        n = 0
        total = 0.0
        count = 0.0
        buckets: dict[Hashable, list[tuple[float, float]]] = {}
        for series, delta in deltas:
            ok = self.selected.get(series)
            role, group, bound, labels = lines.info(series)
            if ok is None:
                ok = role != _OTHER and rule.matches_labels(labels)
                self.selected[series] = ok
            if not ok:
                continue
            n += 1
            if role == _BUCKET:
                buckets.setdefault(group, []).append((bound, delta))
            elif role == _SUM:
                total += delta
            else:
                count += delta
        if not n:
            return None
        increments: dict[float, float] = {}
        for cumulative in buckets.values():
            cumulative.sort()
            below = 0.0
            for bound, value in cumulative:
                increments[bound] = increments.get(bound, 0.0) + (value - below)
                below = value
        return (count, n, total, increments)

    def metric(self, contributions: list[Contribution], attributes: Attributes) -> Metric:
        rule = self.rule
        operation = rule.operation
        distribution = None
        if operation is Operation.COUNT:
            value = float(len(contributions))
        elif self.type is RuleType.HISTOGRAM:
            distribution = _merge_histograms(contributions)
            value = distribution.count
        elif operation is Operation.SUM:
            value = math.fsum([c[0] for c in contributions])
        elif operation is Operation.MAX:
            value = max([c[3] for c in contributions])
        elif operation is Operation.MIN:
            value = min([c[2] for c in contributions])
        else:
            value = math.fsum([c[0] for c in contributions]) / sum([c[1] for c in contributions])
        return Metric(rule.name, rule.metric_kind, value, rule.unit, attributes, False,
                      rule.description, distribution)


def _merge_histograms(contributions: list[Contribution]) -> Distribution:
    """Sum per-bucket increments over targets, on the union of their bucket bounds.

    Increments are kept per bound (not cumulative), so series with different bucket layouts merge
    exactly as step functions: a count lands in the first merged bucket at or above its bound.
    """
    per_bound: dict[float, list[float]] = {}
    for contribution in contributions:
        for bound, increment in contribution[3].items():
            per_bound.setdefault(bound, []).append(increment)
    bounds = sorted(bound for bound in per_bound if bound != _INF)
    counts = [math.fsum(per_bound[bound]) for bound in bounds]
    counts.append(math.fsum(per_bound.get(_INF, ())))
    return Distribution(
        bounds=tuple(bounds),
        counts=tuple(counts),
        sum=math.fsum([c[2] for c in contributions]),
        count=math.fsum([c[0] for c in contributions]),
    )


@dataclass(slots=True)
class _Row:
    status: int
    groups: tuple[str, ...]
    contributions: list[Contribution | None] | None


class Aggregator:
    """Turns each cycle's batch into metrics; keeps the state between cycles."""

    def __init__(self, rules: Sequence[Rule], group_by: Sequence[str], staleness: float) -> None:
        self.rules = tuple(rules)
        self.group_by = tuple(group_by)
        self.staleness = float(staleness)
        #: Histogram families, and the names their lines may be filed under, to their lines.
        self._histograms: dict[str, _HistogramLines] = {}
        for rule in self.rules:
            if rule.type is RuleType.HISTOGRAM:
                lines = self._histograms.get(rule.family) or _HistogramLines(rule.family)
                for family in rule.lookup_families:
                    self._histograms.setdefault(family, lines)
        self._readers = [
            _Reader(rule, self._histograms[rule.family]
                    if rule.type is RuleType.HISTOGRAM else None)
            for rule in self.rules
        ]
        #: Per reader: (index, family, fallback family, what it reads, reader), flattened once so
        #: the per-target loop does no attribute lookups (5,000 targets x 20 rules per cycle).
        self._plan = [
            (index, reader.lookup[0], reader.lookup[1] if len(reader.lookup) > 1 else "",
             _READS[reader.type], reader)
            for index, reader in enumerate(self._readers)
        ]
        #: Readers whose contribution is an increase: a stale target contributes 0 for them.
        self._increase_readers = [
            (index, rule.type is RuleType.HISTOGRAM) for index, rule in enumerate(self.rules)
            if rule.type in (RuleType.COUNTER, RuleType.HISTOGRAM)
        ]
        self._tracker = CounterTracker()
        #: Target key -> (cycle time of its last success, its contributions then).
        self._last: dict[str, tuple[float, list[Contribution | None]]] = {}

    # -- the cycle ------------------------------------------------------------------------------

    def aggregate(self, batch: Batch) -> tuple[list[Metric], CycleStats]:
        cycle = batch.cycle
        window_start = cycle.previous if cycle.index > 0 else cycle.started
        tally = _Tally()
        rows: list[_Row] = []
        seen: set[str] = set()
        for scrape in batch.targets:
            key = scrape.target.key
            if key in seen:
                continue  # the same target listed twice: the first counts
            seen.add(key)
            rows.append(self._row(scrape, key, cycle.time, window_start, tally))
        for key in self._last.keys() - seen:
            del self._last[key]
            self._tracker.forget(key)
        metrics = self._blocks(rows)
        counts = [0, 0, 0]
        for row in rows:
            counts[row.status] += 1
        stats = CycleStats(
            counts[_REPORTING], counts[_STALE], counts[_FAILED], tally.nan, tally.resets,
            tally.restarts, tally.from_start,
        )
        return metrics, stats

    def _row(
        self, scrape: TargetScrape, key: str, now: float, window_start: float, tally: _Tally
    ) -> _Row:
        groups = self._groups(scrape.target) if self.group_by else ()
        if scrape.health.up:
            contributions = self._read(scrape, key, window_start, tally)
            self._last[key] = (now, contributions)
            return _Row(_REPORTING, groups, contributions)
        last = self._last.get(key)
        if last is not None and now - last[0] < self.staleness:
            return _Row(_STALE, groups, self._carried(last[1]))
        return _Row(_FAILED, groups, None)

    def _groups(self, target: Target) -> tuple[str, ...]:
        return tuple(
            (target.node or target.attribute("node") if key == "node" else target.attribute(key))
            or UNKNOWN_GROUP
            for key in self.group_by
        )

    def _read(
        self, scrape: TargetScrape, key: str, window_start: float, tally: _Tally
    ) -> list[Contribution | None]:
        """One successful scrape's contributions, rule by rule; advances the counter state."""
        families = scrape.families
        observation: Observation | None = None
        if self._increase_readers:
            observation = self._tracker.observe(key, scrape.process_start_time, window_start)
        out: list[Contribution | None] = [None] * len(self._readers)
        increases: dict[str, list[Sample]] = {}
        get = families.get
        for index, family, fallback, reads, reader in self._plan:
            if reads == _HISTOGRAM:
                assert observation is not None
                out[index] = reader.combine_histogram([
                    delta for name in reader.lookup if name in families
                    for delta in self._increases(name, families[name], observation, increases)
                ])
                continue
            samples = get(family)
            if not samples and fallback:
                family = fallback
                samples = get(family)
            if not samples:
                continue
            if reads == _VALUES:
                out[index] = reader.combine(samples, tally)
            else:
                assert observation is not None
                out[index] = reader.combine_increases(
                    self._increases(family, samples, observation, increases))
        if observation is not None:
            tally.nan += observation.skipped
            tally.resets += observation.resets
            tally.restarts += observation.restarted
            tally.from_start += observation.mode is Mode.FROM_ZERO and not observation.restarted
        return out

    def _increases(
        self, family: str, samples: Sequence[Sample], observation: Observation,
        done: dict[str, list[Sample]],
    ) -> list[Sample]:
        """A family's increases on this target, computed once however many rules read them."""
        deltas = done.get(family)
        if deltas is None:
            lines = self._histograms.get(family)
            deltas = (observation.grouped_deltas(samples, lines.group_of) if lines
                      else observation.deltas(samples))
            done[family] = deltas
        return deltas

    def _carried(self, contributions: list[Contribution | None]) -> list[Contribution | None]:
        """A stale target's last contributions: gauges as they were, no increase for counters
        (its next success is diffed against its last one, so nothing is lost)."""
        carried = list(contributions)
        for index, histogram in self._increase_readers:
            old = carried[index]
            if old is not None:
                carried[index] = (0.0, old[1], 0.0, {} if histogram else 0.0)
        return carried

    # -- combining ------------------------------------------------------------------------------

    def _blocks(self, rows: list[_Row]) -> list[Metric]:
        """The cluster-wide block, then one block per group-by attribute value (sorted)."""
        metrics = self._block(rows, ())
        for position, attribute in enumerate(self.group_by):
            parts: dict[str, list[_Row]] = {}
            for row in rows:
                parts.setdefault(row.groups[position], []).append(row)
            for value in sorted(parts):
                metrics.extend(self._block(parts[value], ((attribute, value),)))
        return metrics

    def _block(self, rows: list[_Row], attributes: Attributes) -> list[Metric]:
        metrics: list[Metric] = []
        by_name: dict[str, Metric] = {}
        present = [row.contributions for row in rows if row.contributions is not None]
        for index, reader in enumerate(self._readers):
            contributions: list[Contribution] = []
            for row_contributions in present:
                contribution = row_contributions[index]
                if contribution is not None:
                    contributions.append(contribution)
            if contributions:
                metric = reader.metric(contributions, attributes)
                metrics.append(metric)
                by_name[metric.name] = metric
        metrics.extend(capacity_metrics(by_name, attributes))
        counts = [0, 0, 0]
        for row in rows:
            counts[row.status] += 1
        metrics.extend(coverage_metrics(counts[0], counts[1], counts[2], attributes))
        return metrics

    # -- introspection ----------------------------------------------------------------------------

    def series_tracked(self) -> int:
        return self._tracker.series_count()

    def targets_tracked(self) -> int:
        return len(self._last)


def plan(rules: Sequence[Rule], group_by: Sequence[str], shape: ClusterShape) -> list[Metric]:
    """The metrics one cycle emits on a cluster of ``shape`` when every family is reported, with
    synthesized group-by values (``zone-1``, ...) and values 0: what ``validate`` prices."""
    sizes = {"zone": shape.zones, "nodegroup": shape.nodegroups,
             "instance_type": shape.instance_types, "node": shape.nodes}
    metrics = _planned_block(rules, ())
    for attribute in group_by:
        for number in range(1, max(sizes.get(attribute, 1), 1) + 1):
            metrics.extend(_planned_block(rules, ((attribute, f"{attribute}-{number}"),)))
    return metrics


def _planned_block(rules: Sequence[Rule], attributes: Attributes) -> list[Metric]:
    metrics = [
        Metric(rule.name, rule.metric_kind, 0.0, rule.unit, attributes, False, rule.description,
               Distribution((), (0.0,)) if rule.metric_kind is MetricKind.DISTRIBUTION else None)
        for rule in rules
    ]
    gauges = {rule.name for rule in rules if rule.metric_kind is MetricKind.GAUGE}
    metrics += [Metric(name, MetricKind.GAUGE, 0.0, unit, attributes, True, text)
                for name, unit, text in capacity_names(gauges)]
    metrics += coverage_metrics(0, 0, 0, attributes)
    return metrics
