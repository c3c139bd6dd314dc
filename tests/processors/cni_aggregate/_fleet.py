"""Builders shared by the cni_aggregate tests: targets, scrapes, cycles, a recording sink.

Scrapes are built directly as ``TargetScrape`` objects (no network): that is exactly what the
receiver hands the processor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from pipeline import (
    Batch,
    ComponentID,
    ComponentSettings,
    Cycle,
    ErrorClass,
    FamilySet,
    Kind,
    Metric,
    Target,
    TargetHealth,
    TargetScrape,
    Telemetry,
)

INTERVAL = 30.0
#: Tick of cycle 0 (a multiple of the interval), and the pipeline's start just before it.
T0 = 1_700_000_010.0
STARTED = T0 - 12.0
#: A process start time well before the pipeline started: first scrapes are baselines.
OLD_START = T0 - 86_400.0


def tick(index: int) -> float:
    return T0 + INTERVAL * index


def cycle(index: int) -> Cycle:
    return Cycle(time=tick(index), previous=tick(index - 1), index=index, started=STARTED)


def series(name: str, **labels: str) -> str:
    """Series text as a Prometheus page writes it."""
    if not labels:
        return name
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{name}{{{inner}}}"


def target(
    name: str, zone: str = "", nodegroup: str = "", instance_type: str = "", number: int = 0
) -> Target:
    attributes = tuple(sorted(
        (key, value)
        for key, value in (("zone", zone), ("nodegroup", nodegroup),
                           ("instance_type", instance_type))
        if value
    ))
    number = number or (sum(map(ord, name)) % 250 + 1)
    return Target(
        address=f"127.0.1.{number}:61678", pod=f"aws-node-{name}", node=name,
        namespace="kube-system", attributes=attributes,
    )


Families = Mapping[str, Sequence[tuple[str, float]]]


def up(
    node: Target, index: int, families: Families, start: float | None = OLD_START
) -> TargetScrape:
    at = tick(index) + 0.01
    return TargetScrape(
        target=node,
        health=TargetHealth(up=True, scraped_at=at, duration=0.005, last_success=at),
        families={name: list(samples) for name, samples in families.items()},
        process_start_time=start,
    )


def down(
    node: Target, index: int, last_success: float | None = None,
    error_class: ErrorClass = ErrorClass.TIMEOUT,
) -> TargetScrape:
    return TargetScrape(
        target=node,
        health=TargetHealth(
            up=False, scraped_at=tick(index) + 0.01, duration=10.0, last_success=last_success,
            error_class=error_class, error="timed out",
        ),
    )


def batch(index: int, scrapes: Iterable[TargetScrape]) -> Batch:
    return Batch(cycle=cycle(index), targets=tuple(scrapes))


def by_key(metrics: Iterable[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], Metric]:
    """Metrics by (name, attributes), refusing duplicates (each must be published once)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Metric] = {}
    for metric in metrics:
        key = (metric.name, metric.attributes)
        assert key not in out, f"{key} emitted twice"
        out[key] = metric
    return out


def values(metrics: Iterable[Metric], attributes: tuple[tuple[str, str], ...] = ()
           ) -> dict[str, float]:
    """Values of one block (cluster-wide by default), by name."""
    return {m.name: m.value for m in metrics if m.attributes == attributes}


def settings(name: str = "", telemetry: Telemetry | None = None) -> ComponentSettings:
    component = ComponentID("cni_aggregate", name)
    return ComponentSettings(
        id=component,
        kind=Kind.PROCESSOR,
        logger=logging.LoggerAdapter(logging.getLogger("test.cni_aggregate"),
                                     {"component": str(component)}),
        telemetry=telemetry or Telemetry(),
        started_at=STARTED,
    )


class RecordingSink:
    """A consumer that keeps every batch it is handed (consumertest.MetricsSink)."""

    def __init__(self, wanted: FamilySet = frozenset()) -> None:
        self.batches: list[Batch] = []
        self._wanted = wanted

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)

    def wanted_families(self) -> FamilySet:
        return self._wanted


class FailingSink(RecordingSink):
    """Records, then raises (consumertest.NewErr): the error must reach the caller."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def consume(self, batch: Batch) -> None:
        await super().consume(batch)
        raise self.error
