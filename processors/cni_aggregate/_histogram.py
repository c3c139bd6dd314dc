"""Histogram rules: which lines of a histogram family a rule selects, each target's increases
read as one :class:`Contribution`, and the contributions of a block merged into a distribution."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from pipeline import Distribution, Sample, parse_series

from ._exact_sum import exact_sum
from ._rules import Rule

if TYPE_CHECKING:
    from ._layout import TargetLayout

_INF = math.inf
_BUCKET, _SUM, _COUNT, _OTHER = 0, 1, 2, 3
#: A histogram's series cache is cleared past this many entries, so a family with unbounded label
#: values cannot grow memory without limit (clearing costs only re-parsing).
_CACHE_LIMIT = 100_000


class Contribution(NamedTuple):
    """A histogram's increases on one target."""

    count_increase: float
    #: How many of the target's lines were selected.
    n: int
    sum_increase: float
    #: Increment by bucket bound (not cumulative).
    increments: dict[float, float]

#: Histogram rule index -> its contribution (None: the target had no selected line).
Histograms = dict[int, "Contribution | None"]


class HistogramLines:
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


class HistogramReader:
    """A histogram rule at run time: which lines it selects (cached by series text)."""

    __slots__ = ("rule", "lines", "selected")

    def __init__(self, rule: Rule, lines: HistogramLines) -> None:
        self.rule = rule
        self.lines = lines
        self.selected: dict[str, bool] = {}

    def combine(self, deltas: Sequence[Sample]) -> Contribution | None:
        """(count, n, sum, increments by bound) from one target's increases of this family."""
        lines = self.lines
        rule = self.rule
        n = 0
        total = 0.0
        count = 0.0
        buckets: dict[Hashable, list[tuple[float, float]]] = {}
        for series, delta in deltas:
            ok = self.selected.get(series)
            role, group, bound, labels = lines.info(series)
            if ok is None:
                if len(self.selected) > _CACHE_LIMIT:
                    self.selected.clear()
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
        return Contribution(count, n, total, increments)


def merge_histograms(contributions: list[Contribution]) -> Distribution:
    """Sum per-bucket increments over targets, on the union of their bucket bounds.

    Increments are kept per bound (not cumulative), so series with different bucket layouts merge
    exactly as step functions: a count lands in the first merged bucket at or above its bound.
    """
    per_bound: dict[float, list[float]] = {}
    for contribution in contributions:
        for bound, increment in contribution.increments.items():
            per_bound.setdefault(bound, []).append(increment)
    bounds = sorted(bound for bound in per_bound if bound != _INF)
    counts = [exact_sum(per_bound[bound]) for bound in bounds]
    counts.append(exact_sum(per_bound.get(_INF, ())))
    return Distribution(
        bounds=tuple(bounds),
        counts=tuple(counts),
        sum=exact_sum([c.sum_increase for c in contributions]),
        count=exact_sum([c.count_increase for c in contributions]),
    )


def histograms_of(layout: TargetLayout, deltas: tuple[float, ...]) -> Histograms:
    """Each histogram rule's contribution: the increases of every family its lines may be filed
    under, read as one."""
    keys = layout.tracked_keys
    return {
        index: reader.combine([
            (keys[position], deltas[position])
            for begin, end in spans for position in range(begin, end)
            if deltas[position] == deltas[position]
        ])
        for index, reader, spans in layout.shape.histogram_rules
    }


def no_histogram_increase(last: Histograms | None) -> Histograms | None:
    """A stale target's contributions: no increase, over the lines it had selected."""
    if last is None:
        return None
    return {index: None if old is None else Contribution(0.0, old.n, 0.0, {})
            for index, old in last.items()}
