"""The ``prometheus`` receiver's self-metrics, and the summary of a cycle they record."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline import ComponentSettings, Cycle, ErrorClass, TargetScrape

CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SelfMetrics:
    """The receiver's self-metrics, every one labelled with the receiver's ID."""

    def __init__(self, settings: ComponentSettings) -> None:
        telemetry = settings.telemetry
        self.receiver = receiver = str(settings.id)
        r = ("receiver",)
        self.cycles = telemetry.counter("cycles_total", "Scrape cycles run.", r).labels(receiver)
        self.cycle_duration = telemetry.histogram(
            "cycle_duration_seconds",
            "Time from a cycle's tick to its batch being handed downstream.",
            r, CYCLE_BUCKETS,
        ).labels(receiver)
        self.overruns = telemetry.counter(
            "cycle_overruns_total", "Cycle ticks skipped because a cycle ran late.", r
        ).labels(receiver)
        self.discovered = telemetry.gauge(
            "targets_discovered", "Targets of the latest cycle.", r).labels(receiver)
        self.up = telemetry.gauge(
            "targets_up", "Targets scraped successfully in the latest cycle.", r).labels(receiver)
        self.failures = telemetry.counter(
            "scrape_failures_total", "Failed target scrapes, by error class.",
            ("receiver", "error_class"))
        self.scraped = telemetry.counter(
            "samples_scraped_total",
            "Sample lines read from target pages: the wanted lines, or every line with "
            "count_all_samples.", r).labels(receiver)
        self.kept = telemetry.counter(
            "samples_kept_total", "Samples of wanted families handed downstream.", r
        ).labels(receiver)
        self.parse_errors = telemetry.counter(
            "parse_errors_total", "Target pages that failed to parse.", r).labels(receiver)
        self.duplicates = telemetry.counter(
            "duplicate_series_total", "Repeated series lines dropped from target pages.", r
        ).labels(receiver)

    def record(self, summary: CycleSummary, duration: float) -> None:
        """Count one cycle that took ``duration`` seconds from its tick."""
        self.cycles.inc()
        self.cycle_duration.observe(duration)
        self.discovered.set(summary.discovered)
        self.up.set(summary.up)
        for error_class, count in summary.failed_by_class.items():
            self.failures.labels(self.receiver, error_class).inc(count)
        self.parse_errors.inc(summary.failed_by_class.get(str(ErrorClass.PARSE), 0))
        self.scraped.inc(summary.samples_scraped)
        self.kept.inc(summary.samples_kept)
        self.duplicates.inc(summary.duplicates)


@dataclass(frozen=True, slots=True)
class CycleSummary:
    """The numbers of one cycle, as logged and recorded."""

    discovered: int
    up: int
    failed_by_class: Mapping[str, int]
    samples_scraped: int
    samples_kept: int
    duplicates: int

    @classmethod
    def of(cls, scrapes: Sequence[TargetScrape]) -> CycleSummary:
        failed: Counter[str] = Counter()
        up = scraped = kept = duplicates = 0
        for scrape in scrapes:
            health = scrape.health
            if health.up:
                up += 1
                scraped += health.samples
                kept += len(scrape.families.series)
                duplicates += scrape.duplicates
            else:
                failed[str(health.error_class)] += 1
        return cls(len(scrapes), up, dict(sorted(failed.items())), scraped, kept, duplicates)

    @property
    def failed(self) -> int:
        return self.discovered - self.up

    def line(self, cycle: Cycle, duration: float) -> str:
        when = datetime.fromtimestamp(cycle.time, UTC)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
        if when.microsecond:
            stamp += f".{when.microsecond // 1000:03d}"
        classes = ", ".join(f"{name}={count}" for name, count in self.failed_by_class.items())
        failed = f"failed={self.failed}" + (f" ({classes})" if classes else "")
        return (f"cycle {cycle.index} @{stamp}Z: targets discovered={self.discovered} "
                f"scraped={self.up} {failed} samples kept={self.samples_kept} in {duration:.3f}s")
