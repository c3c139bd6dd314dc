"""Per (target, series) counter state: cumulative values in, the cycle's increases out.

Modelled on contrib's cumulativetodelta tracker (``internal/tracking/tracker.go``), with the scrape
target as the resource. Pure: no I/O, no clock, no telemetry, so table tests can drive it directly.

docs/aggregation.md's rules, as implemented here:

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
- Within one page the first line of a series counts; repeats are ignored. Series not in a scrape
  are forgotten (a series gone from a page has gone from the process).

How state is kept, for speed: a target's state is its :class:`TargetLayout` at its last success
(which lists the tracked lines, family by family) and the tracked lines' values then, as a tuple by
position, NaN where a line left no base. Increases come out the same way, NaN where a line has
none (a real increase is never NaN: it is a difference of finite values, or a finite value).

In the steady state (same page shape as last time, every value finite, none dropped) the increases
are ``map(operator.sub, values, last)`` over the whole vector and the new state is the values
tuple itself: no Python loop over samples, no dict entry per series. Anything else (a drop, a NaN,
a new or vanished line, repeated texts, histograms) takes the exact path, a per-series loop over
dicts keyed by series text, which is the original tracker's; tests/processors/cni_aggregate/
test_fast_paths.py checks that switching the fast path off changes no output by a bit.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from enum import IntEnum
from operator import sub

from ._layout import GroupOf, TargetLayout

_INF = math.inf
#: Marks "no value": a line with no base (state) or no increase (output).
NAN = math.nan


class Mode(IntEnum):
    """How an observation turns values into increases."""

    #: First sight of a target that started before the window: every increase is 0.
    BASELINE = 0
    #: First sight of a target that started inside the window, or a restart: value = increase.
    FROM_ZERO = 1
    #: A known target with no restart: value minus the last value, per series.
    DIFF = 2


class CounterState:
    """A target's counter state between its successful scrapes."""

    __slots__ = ("start", "layout", "values", "tracked", "gaps", "fresh_families")

    def __init__(self, start: float | None) -> None:
        self.start = start
        #: Families this state has no base for because the rules did not track them until a
        #: config reload: at the next success their lines are a baseline (not new series counted
        #: whole), once.
        self.fresh_families: frozenset[str] = frozenset()
        #: The layout at the last success, and its tracked lines' values then (NaN: no base).
        self.layout: TargetLayout | None = None
        self.values: tuple[float, ...] = ()
        #: Series whose last value is kept (for self-metrics).
        self.tracked = 0
        #: None if every tracked line had an increase at the last success; else the increases
        #: a stale target contributes: 0.0 where a line had one, NaN where it had none.
        self.gaps: tuple[float, ...] | None = None


class Tally:
    """What a cycle's scrapes showed, summed over targets (for self-metrics)."""

    __slots__ = ("nan", "resets", "restarts", "from_start")

    def __init__(self) -> None:
        #: Non-finite samples skipped.
        self.nan = 0
        #: Series (or histogram groups) whose value dropped: resets detected without a restart.
        self.resets = 0
        #: Targets whose start time changed.
        self.restarts = 0
        #: First-seen targets that started inside the window, so counted from zero.
        self.from_start = 0


def advance(
    state: CounterState | None, layout: TargetLayout, values: tuple[float, ...],
    start_time: float | None, window_start: float, tally: Tally,
) -> tuple[CounterState, tuple[float, ...]]:
    """A target's successful scrape: the increases of its tracked lines (``layout.tracked_keys``,
    whose values are ``values``), aligned with them; the scrape replaces the target's state
    (``state`` None: its first success)."""
    if start_time is not None and not -_INF < start_time < _INF:
        start_time = None
    if state is not None:
        last_start = state.start
        restarted = (start_time is not None and last_start is not None
                     and start_time != last_start)
        state.start = start_time
        if not restarted and layout.fast and state.layout is layout:
            # The steady state, in C: the same lines as last time, each with a base. A sum below
            # +inf rules out NaN (a NaN value, or a NaN in the last values: a line with no base)
            # and +inf; a least increase >= 0 rules out a drop and -inf. Anything else, or a sum
            # that overflows, takes the exact path.
            deltas = tuple(map(sub, values, state.values))
            if sum(deltas, 0.0) < _INF and (not deltas or min(deltas) >= 0.0):
                state.values = values
                state.gaps = None
                return state, deltas
        mode = Mode.FROM_ZERO if restarted else Mode.DIFF
        tally.restarts += restarted
    else:
        state = CounterState(start_time)
        counts_from_zero = start_time is not None and start_time > window_start
        mode = Mode.FROM_ZERO if counts_from_zero else Mode.BASELINE
        tally.from_start += counts_from_zero
    return state, Observation(state, mode, tally).increases(layout, values)


class Observation:
    """One target's successful scrape (not the steady state), being turned into increases."""

    __slots__ = ("mode", "_tally", "_state")

    def __init__(self, state: CounterState, mode: Mode, tally: Tally) -> None:
        self.mode = mode
        self._tally = tally
        self._state = state

    def increases(self, layout: TargetLayout, values: tuple[float, ...]) -> tuple[float, ...]:
        """Increases of the tracked lines (``layout.tracked_keys``), aligned with them."""
        # A first sight or a restart whose values are all finite (a finite sum proves it; an
        # overflow falls to the exact path) needs no per-series look at all.
        if layout.fast and self.mode is not Mode.DIFF and -_INF < sum(values, 0.0) < _INF:
            state = self._state
            state.layout = layout
            state.values = values
            state.tracked = len(values)
            state.gaps = None
            return values if self.mode is Mode.FROM_ZERO else layout.shape.zeros
        return self._exact(layout, values)

    # -- the exact per-series path ------------------------------------------------------------

    def _exact(self, layout: TargetLayout, values: tuple[float, ...]) -> tuple[float, ...]:
        state = self._state
        previous: dict[str, float] = {}
        if self.mode is Mode.DIFF and state.layout is not None:
            for series, value in zip(state.layout.tracked_keys, state.values, strict=True):
                if value == value and series not in previous:   # NaN: the line left no base
                    previous[series] = value
        keys = layout.tracked_keys
        current: dict[str, float] = {}
        deltas: list[float] = []
        kept: list[float] = []
        fresh = state.fresh_families
        for begin, end, group_of in layout.shape.tracked_families:
            family_keys, family_values = keys[begin:end], values[begin:end]
            if self.mode is not Mode.DIFF or (fresh and _in_families(family_keys, fresh)):
                self._first(family_keys, family_values, current, deltas, kept)
            elif group_of is None:
                self._diff(family_keys, family_values, previous, current, deltas, kept)
            else:
                self._grouped_diff(family_keys, family_values, previous, current, deltas, kept,
                                   group_of)
        state.layout = layout
        state.values = tuple(kept)
        state.tracked = len(current)
        state.fresh_families = frozenset()
        gaps = [0.0 if delta == delta else NAN for delta in deltas]
        state.gaps = tuple(gaps) if NAN in gaps else None  # (``in`` matches the object itself)
        return tuple(deltas)

    def _first(self, keys: Sequence[str], values: Sequence[float], current: dict[str, float],
               deltas: list[float], kept: list[float]) -> None:
        """First sight or restart: no previous values to diff against."""
        counts = self.mode is Mode.FROM_ZERO
        for series, value in zip(keys, values, strict=True):
            if series in current:
                deltas.append(NAN)
                kept.append(NAN)
            elif -_INF < value < _INF:
                current[series] = value
                deltas.append(value if counts else 0.0)
                kept.append(value)
            else:
                self._tally.nan += 1
                deltas.append(NAN)
                kept.append(NAN)

    def _diff(self, keys: Sequence[str], values: Sequence[float], previous: dict[str, float],
              current: dict[str, float], deltas: list[float], kept: list[float]) -> None:
        for series, value in zip(keys, values, strict=True):
            if series in current:               # a repeated line: the first one counts
                deltas.append(NAN)
                kept.append(NAN)
                continue
            last = previous.get(series)
            if last is not None and last <= value < _INF:
                current[series] = value
                deltas.append(value - last)
                kept.append(value)
            elif -_INF < value < _INF:
                current[series] = value
                deltas.append(value)            # a new series, or a reset (a drop)
                kept.append(value)
                if last is not None:
                    self._tally.resets += 1
            else:
                self._tally.nan += 1               # NaN/Inf: keep the last finite value as base
                deltas.append(NAN)
                if last is not None:
                    current[series] = last
                    kept.append(last)
                else:
                    kept.append(NAN)

    def _grouped_diff(
        self, keys: Sequence[str], values: Sequence[float], previous: dict[str, float],
        current: dict[str, float], deltas: list[float], kept: list[float], group_of: GroupOf,
    ) -> None:
        """Like :meth:`_diff`, but the lines of one group reset together (histograms).

        Bucket lines reset one by one would skew the distribution: after an unseen restart a
        bucket whose new count happens to exceed the old one would be diffed while its neighbours
        count from zero.
        """
        reset_groups: set[Hashable] = set()
        for series, value in zip(keys, values, strict=True):
            last = previous.get(series)
            if last is not None and value < last:
                group, watched = group_of(series)
                if watched:
                    reset_groups.add(group)
        self._tally.resets += len(reset_groups)
        for series, value in zip(keys, values, strict=True):
            if series in current:
                deltas.append(NAN)
                kept.append(NAN)
                continue
            if not -_INF < value < _INF:
                self._tally.nan += 1
                deltas.append(NAN)
                if series in previous:
                    current[series] = previous[series]
                    kept.append(previous[series])
                else:
                    kept.append(NAN)
                continue
            current[series] = value
            kept.append(value)
            last = previous.get(series)
            if last is None or group_of(series)[0] in reset_groups:
                deltas.append(value)
            else:
                deltas.append(value - last)


_SUFFIXES = ("_count", "_sum", "_bucket")


def _in_families(keys: Sequence[str], families: frozenset[str]) -> bool:
    """Are these lines (one family's, as filed) of one of ``families``? A ``_count``, ``_sum``
    or ``_bucket`` line may be filed under its base family."""
    if not keys:
        return False
    name = keys[0].partition("{")[0]
    if name in families:
        return True
    return any(name.endswith(s) and name[: -len(s)] in families for s in _SUFFIXES)
