"""The soak's numbers: RSS samples, cycle durations and the exact-value checks against the fleet.

Pure functions over what ``bench/soak.py`` collected, so the checks and the growth figure can be
read (and tested) apart from the processes that produced them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from cni_pipeline.demo import TRUTH_TABLE
from simfleet import FleetTruth


@dataclass(frozen=True, slots=True)
class Check:
    """One exact-value comparison: what the pipeline served beside the fleet's truth."""

    name: str
    served: float
    expected: float

    @property
    def ok(self) -> bool:
        if math.isnan(self.served) and math.isnan(self.expected):
            return True
        return math.isclose(self.served, self.expected, rel_tol=1e-9, abs_tol=1e-6)


def served_values(page: str) -> dict[str, float]:
    """The cluster-level samples (no labels) of the prometheus exporter's page, by sample name."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return values


def exact_checks(served: dict[str, float], counted: dict[str, float],
                 final: FleetTruth) -> list[Check]:
    """Counters: the exporter's running total (the sum of every cycle's published increase) ==
    ``counted``, the fleet's true increase over the window. Gauges: the last cycle's cluster sum ==
    the fleet's. A name missing from the page compares as NaN against a number: a failure."""
    checks = []
    for family, how in TRUTH_TABLE.values():
        if how == "counter":
            name = family + "_total"
            checks.append(Check(name, served.get(name, math.nan), counted[family]))
        elif how == "gauge" and family in served:
            checks.append(Check(family, served[family], final.gauge_sum(family)))
    return checks


def counter_families() -> list[str]:
    return [family for family, how in TRUTH_TABLE.values() if how == "counter"]


def window_increase(later: FleetTruth, earlier: FleetTruth) -> dict[str, float]:
    """Each counter family's true increase between two snapshots with at most one restart per
    node between them (the simfleet rule: a restarted node's new value is its increase)."""
    return {family: later.counter_increase(family, earlier) for family in counter_families()}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def rss_growth(samples: list[tuple[float, float]], warmup: float) -> tuple[float, float, float]:
    """(RSS at the end of warm-up, RSS at the end, growth %) from (seconds, MiB) samples.

    Each end is the median of its window (as long as the warm-up, at most a minute) so one
    sample taken during a collection does not decide the figure."""
    if not samples:
        return math.nan, math.nan, math.nan
    end_time = samples[-1][0]
    window = max(min(warmup, 60.0), 1e-9)
    start = [mib for t, mib in samples if warmup <= t < warmup + window] or [samples[0][1]]
    last = [mib for t, mib in samples if t >= end_time - window] or [samples[-1][1]]
    before, after = statistics.median(start), statistics.median(last)
    return before, after, (after - before) / before * 100.0
