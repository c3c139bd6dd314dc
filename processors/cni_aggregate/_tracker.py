"""Per (target, series) counter state: cumulative values in, the cycle's increases out.

Modelled on contrib's cumulativetodelta tracker (``internal/tracking/tracker.go``), with the scrape
target as the resource: state is keyed by target key, then by raw series text. Pure: no I/O, no
clock, no telemetry, so table tests can drive it directly.

DESIGN.md's rules, as implemented here:

- A series' increase is taken against its value at the target's *last successful scrape* (a failed
  scrape never reaches the tracker, so a missed scrape loses no increase).
- A reset is a drop in value (that series only) or a change of the target's
  ``process_start_time_seconds`` (every series); after a reset the new value is the increase. A
  change needs both scrapes to carry a start time: without one, only drops are detected.
- A target's first successful scrape is a baseline (increase 0), unless its start time is later
  than the window start the caller passes (the previous cycle's tick, or the pipeline's start for
  the first cycle): then it started inside the observed window and counts from zero.
- A series new on a known target, with no restart, was created since the last scrape (client
  libraries create a labelled series on its first increment): its whole value is the increase.
- NaN and +-Inf samples are skipped; the series keeps its last finite value as the base for the
  next scrape, so one NaN does not turn the next value into a "new series".
- Within one page the first line of a series counts; repeats are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from enum import IntEnum

from pipeline import Sample

_INF = math.inf


class Mode(IntEnum):
    """How an observation turns values into increases."""

    #: First sight of a target that started before the window: every increase is 0.
    BASELINE = 0
    #: First sight of a target that started inside the window, or a restart: value = increase.
    FROM_ZERO = 1
    #: A known target with no restart: value minus the last value, per series.
    DIFF = 2


#: For a histogram's lines: (group, watched). Lines of one group (one label set without ``le``)
#: reset together; a drop in a ``watched`` line (buckets, ``_count``) marks the group reset. A
#: ``_sum`` is not watched: negative observations may lower it legitimately.
GroupOf = Callable[[str], tuple[Hashable, bool]]


class Observation:
    """One target's successful scrape, being turned into increases family by family.

    Created by :meth:`CounterTracker.observe`; every counter family of the scrape must be passed
    through :meth:`deltas` (or :meth:`grouped_deltas`) once, since series not passed are
    forgotten (a series gone from a page has gone from the process).
    """

    __slots__ = ("mode", "restarted", "_previous", "_current", "resets", "skipped")

    def __init__(
        self, mode: Mode, restarted: bool, previous: dict[str, float], current: dict[str, float]
    ) -> None:
        self.mode = mode
        #: The target's start time changed since its last successful scrape.
        self.restarted = restarted
        self._previous = previous
        self._current = current
        #: Series (or histogram groups) whose value dropped: resets detected without a restart.
        self.resets = 0
        #: Non-finite samples skipped.
        self.skipped = 0

    def deltas(self, samples: Iterable[Sample]) -> list[Sample]:
        """(series, increase) for every finite sample, in page order."""
        if self.mode is Mode.DIFF:
            return self._diff(samples)
        # First sight or restart: no previous values to diff against.
        counts = self.mode is Mode.FROM_ZERO
        out: list[Sample] = []
        current = self._current
        for series, value in samples:
            if series in current:
                continue
            if -_INF < value < _INF:
                current[series] = value
                out.append((series, value if counts else 0.0))
            else:
                self.skipped += 1
        return out

    def _diff(self, samples: Iterable[Sample]) -> list[Sample]:
        # One flat loop with locals bound once and the steady state (a series that grew or held)
        # tested first: this runs for every counter sample of every target each cycle
        # (bench/bench_aggregate.py).
        out: list[Sample] = []
        append = out.append
        previous = self._previous.get
        current = self._current
        for series, value in samples:
            if series in current:
                continue                        # a repeated line: the first one counts
            last = previous(series)
            if last is not None and last <= value < _INF:
                current[series] = value
                append((series, value - last))
            elif -_INF < value < _INF:
                current[series] = value
                append((series, value))         # a new series, or a reset (a drop)
                if last is not None:
                    self.resets += 1
            else:
                self.skipped += 1               # NaN/Inf: keep the last finite value as base
                if last is not None:
                    current[series] = last
        return out

    def grouped_deltas(self, samples: Sequence[Sample], group_of: GroupOf) -> list[Sample]:
        """Like :meth:`deltas`, but the lines of one group reset together (histograms).

        Bucket lines reset one by one would skew the distribution: after an unseen restart a
        bucket whose new count happens to exceed the old one would be diffed while its neighbours
        count from zero.
        """
        if self.mode is not Mode.DIFF:
            return self.deltas(samples)
        previous = self._previous
        reset_groups: set[Hashable] = set()
        for series, value in samples:
            last = previous.get(series)
            if last is not None and value < last:
                group, watched = group_of(series)
                if watched:
                    reset_groups.add(group)
        self.resets += len(reset_groups)
        out: list[Sample] = []
        current = self._current
        for series, value in samples:
            if series in current:
                continue
            if not -_INF < value < _INF:
                self.skipped += 1
                if series in previous:
                    current[series] = previous[series]
                continue
            current[series] = value
            last = previous.get(series)
            if last is None or group_of(series)[0] in reset_groups:
                out.append((series, value))
            else:
                out.append((series, value - last))
        return out


class CounterTracker:
    """Last finite value of every counter series of every target, and each target's start time."""

    __slots__ = ("_values", "_starts")

    def __init__(self) -> None:
        self._values: dict[str, dict[str, float]] = {}
        self._starts: dict[str, float | None] = {}

    def observe(self, key: str, start_time: float | None, window_start: float) -> Observation:
        """Begin a successful scrape of target ``key``; it replaces the target's stored state."""
        if start_time is not None and not math.isfinite(start_time):
            start_time = None
        previous = self._values.get(key)
        current: dict[str, float] = {}
        self._values[key] = current
        if previous is None:
            self._starts[key] = start_time
            counts_from_zero = start_time is not None and start_time > window_start
            return Observation(
                Mode.FROM_ZERO if counts_from_zero else Mode.BASELINE, False, {}, current
            )
        last_start = self._starts.get(key)
        self._starts[key] = start_time
        restarted = start_time is not None and last_start is not None and start_time != last_start
        if restarted:
            return Observation(Mode.FROM_ZERO, True, {}, current)
        return Observation(Mode.DIFF, False, previous, current)

    def forget(self, key: str) -> None:
        """Drop a target that left discovery: if it comes back, it is a first sight again."""
        self._values.pop(key, None)
        self._starts.pop(key, None)

    def keys(self) -> set[str]:
        return set(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def series_count(self) -> int:
        return sum(len(values) for values in self._values.values())
