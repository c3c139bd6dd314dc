"""Cycle scheduling: ticks aligned to wall-clock multiples of the interval (UTC).

Aligning ticks (as Prometheus rounds scrape times) gives every replica, and every restart, the same
cycle times, so CloudWatch datapoints of one cycle share one timestamp whoever produced them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from ._model import Cycle


def aligned_tick(now: float, interval: float) -> float:
    """The first tick at or after ``now`` (a multiple of ``interval`` since the epoch)."""
    return math.ceil(now / interval - 1e-9) * interval


class Ticker:
    """Yields :class:`Cycle` objects on aligned ticks.

    ``next()`` sleeps until the next tick after the last one handed out. If the caller was busy
    past one or more ticks, those ticks are skipped (never queued up) and ``overruns`` says how
    many were lost, so a slow cycle cannot pile up work behind it.
    """

    def __init__(
        self,
        interval: float,
        started: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self._clock = clock
        self.started = clock() if started is None else started
        self._last: float | None = None
        self._index = 0
        self.skipped = 0

    def _due(self) -> tuple[float, int]:
        """(when the next tick is due, how many ticks that skips)."""
        now = self._clock()
        if self._last is None:
            return aligned_tick(now, self.interval), 0
        due = self._last + self.interval
        if now > due + self.interval * 0.5:
            # We are late by more than half an interval: skip to the next aligned tick.
            nxt = aligned_tick(now, self.interval)
            return nxt, round((nxt - due) / self.interval)
        return due, 0

    def next_due(self) -> float:
        """When the tick ``next()`` would hand out now is due."""
        return self._due()[0]

    async def next(self) -> Cycle:
        due, skipped = self._due()
        self.skipped += skipped
        delay = due - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        previous = self._last if self._last is not None else due - self.interval
        cycle = Cycle(time=due, previous=previous, index=self._index, started=self.started,
                      interval=self.interval)
        self._last = due
        self._index += 1
        return cycle
