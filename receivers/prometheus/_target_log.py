"""Which targets are failing, logged so that a failing fleet is visible without one line per
target per cycle."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from pipeline import Target, TargetScrape

#: A target that keeps failing is warned about again this often (seconds), not every cycle.
FAILING_REPEAT = 300.0
#: At most this many targets are named per cycle at warning level; the rest are counted.
FAILING_NAMED_PER_CYCLE = 20


def describe_target(target: Target) -> str:
    """``10.0.1.5:61678 (pod kube-system/aws-node-x on node ip-10-0-1-5)``: what an operator
    needs to find the failing pod."""
    where = []
    if target.pod:
        where.append(f"pod {target.namespace}/{target.pod}" if target.namespace else
                     f"pod {target.pod}")
    if target.node:
        where.append(f"on node {target.node}")
    return f"{target.address} ({' '.join(where)})" if where else target.address


class TargetLog:
    """Logs targets that start failing (warning), recover (info) and keep failing (a warning
    every :data:`FAILING_REPEAT` seconds; debug every cycle), so a failing fleet is visible
    without one line per target per cycle."""

    def __init__(
        self, log: logging.LoggerAdapter[logging.Logger], clock: Callable[[], float] = time.time
    ) -> None:
        self._log = log
        self._clock = clock
        #: target key -> (failing since, last warned, failed scrapes so far)
        self._failing: dict[str, tuple[float, float, int]] = {}

    def cycle(self, scrapes: Sequence[TargetScrape]) -> None:
        now = self._clock()
        named = skipped = 0
        seen: set[str] = set()
        for scrape in scrapes:
            key, health = scrape.target.key, scrape.health
            seen.add(key)
            entry = self._failing.get(key)
            if health.up:
                if entry is not None:
                    del self._failing[key]
                    self._log.info("target %s recovered after %.0fs (%d failed scrape(s))",
                                   describe_target(scrape.target), now - entry[0], entry[2])
                continue
            why = f"{health.error_class}: {health.error}"
            since, warned, count = entry if entry is not None else (now, 0.0, 0)
            due = entry is None or now - warned >= FAILING_REPEAT
            if due and named < FAILING_NAMED_PER_CYCLE:
                named += 1
                warned = now
                state = "failing" if entry is None else f"still failing after {now - since:.0f}s"
                self._log.warning("target %s %s: %s", describe_target(scrape.target), state, why)
            else:
                skipped += due
                self._log.debug("target %s failed: %s", describe_target(scrape.target), why)
            self._failing[key] = (since, warned, count + 1)
        if skipped:
            self._log.warning("%d more target(s) failing, not named here (debug level names "
                              "each failure)", skipped)
        for key in set(self._failing) - seen:  # gone from discovery: nothing left to report
            del self._failing[key]
