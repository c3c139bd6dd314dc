"""Combining shards' partials (:mod:`.._partials`) into what one replica would have published.

Pure (no I/O, no clock): :class:`Combiner` holds each cycle's partials until the processor
publishes it (when all K shards reported, or at its deadline), and what spans cycles: each
shard's last report (carried, as stale targets are, while a shard is missing) and the counter
increases of reports that came after their cycle was published (carried into the next one).

Per metric and block, over the shards: sums and counter increases add (every shard's exact parts
summed once with ``math.fsum``, so the result is the value one replica's ``fsum`` over every
target gives, bit for bit), means are that sum over the samples of every shard, maxima take the
max, minima the min, target counts add, distributions add bucket by bucket, coverage adds. The
capacity metrics are worked out from the combined gauges, as a single replica works them out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pipeline import Batch, Cycle, Distribution, Metric, MetricKind

from .._derived import capacity_metrics, coverage_metrics
from .._exact_sum import exact_sum
from .._histogram import Contribution, merge_histograms
from .._partials import (
    AVG,
    COVERAGE,
    INTERVAL,
    MAX,
    MIN,
    OP,
    OPERATIONS,
    QUANTILE,
    REST,
    SHARD,
    SHARDS,
    SOURCE,
    Attributes,
    N,
    split_marks,
)
from .._rules import SHARDS_MISSING, TARGETS_FAILED, TARGETS_REPORTING, TARGETS_STALE

#: A received partial: the metric, its group-by dimensions and its ``cni.`` marks.
Entry = tuple[Metric, Attributes, dict[str, str]]

_COVERAGE_SLOT = {TARGETS_REPORTING: 0, TARGETS_STALE: 1, TARGETS_FAILED: 2}
_INF = float("inf")
SHARDS_MISSING_TEXT = ("Shards whose partials had not arrived at the cycle's deadline (their "
                        "last gauges carried as stale)")


class Added(StrEnum):
    """What :meth:`Combiner.add` did with a report."""

    #: The first report of a new cycle (the processor starts its deadline).
    FIRST = "first"
    PENDING = "pending"
    #: Every shard of its cycle has reported: publish it.
    COMPLETE = "complete"
    #: Its cycle was already published: its counter increases go into the next one.
    LATE = "late"
    #: The same shard's same cycle again (a retried request): ignored.
    DUPLICATE = "duplicate"


@dataclass(slots=True)
class Report:
    """One shard's partials of one cycle."""

    time: float
    shard: int
    shards: int
    interval: float
    entries: list[Entry] = field(default_factory=list)


class PartialError(ValueError):
    """A partial whose marks cannot be read (names the metric)."""


def reports_of(batch: Batch) -> tuple[list[Report], list[Metric]]:
    """The batch's partials by shard, and its other metrics (passed on untouched).

    Raises :class:`PartialError` for a partial with marks that cannot be read.
    """
    reports: dict[int, Report] = {}
    others: list[Metric] = []
    time = batch.cycle.time
    for metric in batch.metrics:
        dims, marks = split_marks(metric.attributes)
        if OP not in marks:
            others.append(metric)
            continue
        try:
            shard, shards = int(marks[SHARD]), int(marks[SHARDS])
            interval = float(marks.get(INTERVAL, "0"))
        except (KeyError, ValueError) as exc:
            raise PartialError(f"partial {metric.name}: unreadable shard marks {marks}") from exc
        if marks[OP] not in OPERATIONS or not 0 <= shard < shards:
            raise PartialError(f"partial {metric.name}: unknown op or shard in {marks}")
        report = reports.get(shard)
        if report is None:
            report = reports[shard] = Report(time, shard, shards, interval)
        report.entries.append((metric, dims, marks))
    return list(reports.values()), others


@dataclass(frozen=True, slots=True)
class Published:
    """A combined cycle: its batch, the shards it lacked and whether it was complete."""

    batch: Batch
    shards: int
    missing: tuple[int, ...]


#: How long published cycles' reporters are remembered (see :class:`Combiner`), in seconds.
REMEMBER = 900.0


class Combiner:
    """Cycles of partials in, combined cycles out (see the module's docstring).

    ``remember``: for how long (in cycle time) the reporters of published cycles are kept, to
    tell a retried report (ignored) from a late one (its increases carried). A shard's exporter
    retries a report for up to its ``max_elapsed_time`` (300 s by default); 15 minutes covers
    that three times over at any interval (a count of cycles would not: 20 cycles are only
    100 s at a 5 s interval). A report older than that is taken as late."""

    def __init__(self, staleness: float, remember: float = REMEMBER) -> None:
        self.staleness = staleness
        self._remember_for = remember
        #: Cycle time -> shard -> its report, for cycles not yet published.
        self._pending: dict[float, dict[int, Report]] = {}
        #: (time, shard) of the reports of recent published cycles (duplicates are dropped).
        self._seen: dict[float, set[int]] = {}
        self.published_upto = -_INF
        #: Each shard's latest report (carried while it is missing, up to ``staleness``).
        self._last: dict[int, Report] = {}
        #: Counter increases of late reports, for the next published cycle.
        self._carry: list[Entry] = []
        self._index = 0
        self.late = 0

    def add(self, report: Report) -> Added:
        time, shard = report.time, report.shard
        seen = self._seen.get(time)
        if time <= self.published_upto:
            if seen is not None and shard in seen:
                return Added.DUPLICATE
            self._seen.setdefault(time, set()).add(shard)
            self._carry.extend(entry for entry in report.entries if _is_increase(entry))
            self._remember(report)
            self.late += 1
            return Added.LATE
        pending = self._pending.setdefault(time, {})
        if shard in pending:
            return Added.DUPLICATE
        first = not pending
        pending[shard] = report
        shards = max(r.shards for r in pending.values())
        if len(pending) >= shards:
            return Added.COMPLETE
        return Added.FIRST if first else Added.PENDING

    def pending_before(self, time: float) -> list[float]:
        """The pending cycles up to ``time``, in order (a cycle completes only after those
        before it are published)."""
        return sorted(t for t in self._pending if t <= time)

    def publish(self, time: float) -> Published:
        """Combine cycle ``time`` from what arrived; shards that did not report are missing."""
        reports = self._pending.pop(time, {})
        shards = max((r.shards for r in reports.values()), default=1)
        interval = max((r.interval for r in reports.values()), default=0.0)
        cycle_sum = _Sum()
        for shard in sorted(reports):
            cycle_sum.add(reports[shard].entries)
            self._remember(reports[shard])
        missing = tuple(shard for shard in range(shards) if shard not in reports)
        for shard in missing:
            last = self._last.get(shard)
            if last is not None and last.shards == shards and time - last.time < self.staleness:
                cycle_sum.add((e for e in last.entries if not _is_increase(e)), stale=True)
        cycle_sum.add(self._carry)
        self._carry = []
        self._seen[time] = set(reports)
        for old in [t for t in self._seen if t < time - self._remember_for]:
            del self._seen[old]
        previous = self.published_upto if self.published_upto > -_INF else time - interval
        self.published_upto = time
        cycle = Cycle(time=time, previous=previous, index=self._index, interval=interval)
        self._index += 1
        metrics = cycle_sum.metrics()
        metrics.append(Metric(SHARDS_MISSING, MetricKind.GAUGE, float(len(missing)), "Count",
                              (), True, SHARDS_MISSING_TEXT))
        return Published(Batch(cycle=cycle, metrics=tuple(metrics)), shards, missing)

    def _remember(self, report: Report) -> None:
        last = self._last.get(report.shard)
        if last is None or report.time > last.time:
            self._last[report.shard] = report


def _is_increase(entry: Entry) -> bool:
    """A counter's increase or a distribution: what a shard counts once, in one cycle."""
    return entry[0].kind is not MetricKind.GAUGE


class _Part:
    """One metric of one block, over the shards so far."""

    __slots__ = ("metric", "marks", "op", "parts", "n", "distributions", "sum_parts")

    def __init__(self, metric: Metric, marks: dict[str, str]) -> None:
        #: The first shard's partial: what the result is named, described and united by.
        self.metric = metric
        self.marks = marks
        self.op = marks[OP]
        self.parts: list[float] = []
        self.n = 0
        self.distributions: list[Distribution] = []
        #: A distribution's observation sums, each shard's sent exactly (value and rest).
        self.sum_parts: list[float] = []

    def add(self, metric: Metric, marks: dict[str, str]) -> None:
        rest = marks.get(REST)
        rests = list(map(float, rest.split())) if rest else []
        if metric.distribution is not None:
            self.distributions.append(metric.distribution)
            self.sum_parts += [metric.distribution.sum, *rests]
            return
        self.parts.append(metric.value)
        self.parts += rests
        if self.op == AVG:
            self.n += int(marks.get(N, "0"))

    def value(self) -> float:
        op = self.op
        if op == MAX:
            return max(self.parts)
        if op == MIN:
            return min(self.parts)
        total = exact_sum(self.parts) + 0.0
        if op == AVG:
            return total / self.n if self.n else float("nan")
        return total

    def result(self, dims: Attributes) -> Metric:
        metric, marks = self.metric, self.marks
        distribution = None
        if self.distributions:
            merged = merge_histograms([_as_contribution(d) for d in self.distributions])
            distribution = replace(merged, sum=exact_sum(self.sum_parts))
            value = distribution.count
        else:
            value = self.value()
        quantile = marks.get(QUANTILE)
        return Metric(metric.name, metric.kind, value, metric.unit, dims, False,
                      metric.description, distribution, marks.get(SOURCE, ""),
                      float(quantile) if quantile else None)


def _as_contribution(distribution: Distribution) -> Contribution:
    bounds = (*distribution.bounds, _INF)
    return Contribution(distribution.count, 1, distribution.sum,
                        dict(zip(bounds, distribution.counts, strict=False)))


class _Block:
    __slots__ = ("parts", "coverage", "covered")

    def __init__(self) -> None:
        self.parts: dict[str, _Part] = {}
        #: Targets reporting, stale, failed.
        self.coverage = [0.0, 0.0, 0.0]
        self.covered = False


class _Sum:
    """One cycle's blocks (the cluster, and each group-by value), in the order first seen."""

    def __init__(self) -> None:
        self.blocks: dict[Attributes, _Block] = {}

    def add(self, entries: Iterable[Entry], stale: bool = False) -> None:
        for metric, dims, marks in entries:
            block = self.blocks.get(dims)
            if block is None:
                block = self.blocks[dims] = _Block()
            if marks[OP] == COVERAGE:
                slot = _COVERAGE_SLOT.get(metric.name)
                if slot is not None:
                    block.covered = True
                    # A missing shard's targets count as stale: their last values are carried.
                    block.coverage[1 if stale and slot == 0 else slot] += metric.value
                continue
            part = block.parts.get(metric.name)
            if part is None:
                part = block.parts[metric.name] = _Part(metric, marks)
            part.add(metric, marks)

    def metrics(self) -> list[Metric]:
        out: list[Metric] = []
        for dims, block in self.blocks.items():
            by_name: dict[str, Metric] = {}
            for name, part in block.parts.items():
                metric = by_name[name] = part.result(dims)
                out.append(metric)
            out.extend(capacity_metrics(by_name, dims))
            if block.covered:
                reporting, stale, failed = block.coverage
                out.extend(coverage_metrics(int(reporting), int(stale), int(failed), dims))
        return out

