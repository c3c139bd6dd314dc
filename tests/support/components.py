"""Small components for engine tests: a source the test drives, a recording sink, failing ones.

They are units of the tests (like the Collector's consumertest), not stand-ins for real parts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import (
    Batch,
    ComponentConfig,
    ComponentSettings,
    Cycle,
    FamilySet,
    Host,
    Kind,
    Metric,
    MetricKind,
    MetricsConsumer,
    union_families,
)
from pipeline._registry import Registry

EVENTS: list[str] = []


@dataclass(frozen=True, kw_only=True)
class SourceConfig(ComponentConfig):
    batches: int = 1
    values: list[float] = field(default_factory=lambda: [1.0])


class Source:
    """Emits ``batches`` batches, one metric ``value`` each, right after start."""

    def __init__(
        self, settings: ComponentSettings, config: SourceConfig, next_consumer: MetricsConsumer
    ) -> None:
        self.id = settings.id
        self.config = config
        self.next = next_consumer
        self.task: asyncio.Task[None] | None = None
        self.wanted: FamilySet = frozenset()

    async def start(self, host: Host) -> None:
        EVENTS.append(f"start {self.id}")
        self.wanted = self.next.wanted_families()
        self.task = asyncio.create_task(self._emit())

    async def _emit(self) -> None:
        for i in range(self.config.batches):
            metrics = tuple(
                Metric(name="value", kind=MetricKind.GAUGE, value=v) for v in self.config.values
            )
            await self.next.consume(
                Batch(cycle=Cycle(time=float(i), previous=i - 1.0, index=i), metrics=metrics)
            )

    async def shutdown(self) -> None:
        EVENTS.append(f"stop {self.id}")
        if self.task is not None:
            await self.task


@dataclass(frozen=True, kw_only=True)
class ScaleConfig(ComponentConfig):
    factor: float = 2.0
    fail: bool = False
    wants: list[str] = field(default_factory=list)

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.factor == 0:
            yield "factor", "must not be 0"


class Scale:
    """Multiplies every value by ``factor``; raises on every batch when ``fail``."""

    def __init__(
        self, settings: ComponentSettings, config: ScaleConfig, next_consumer: MetricsConsumer
    ) -> None:
        self.id = settings.id
        self.config = config
        self.next = next_consumer

    async def start(self, host: Host) -> None:
        EVENTS.append(f"start {self.id}")

    async def shutdown(self) -> None:
        EVENTS.append(f"stop {self.id}")

    def wanted_families(self) -> FamilySet:
        return union_families([frozenset(self.config.wants), self.next.wanted_families()])

    async def consume(self, batch: Batch) -> None:
        if self.config.fail:
            raise RuntimeError("scale failed on purpose")
        metrics = tuple(
            Metric(name=m.name, kind=m.kind, value=m.value * self.config.factor)
            for m in batch.metrics
        )
        await self.next.consume(Batch(cycle=batch.cycle, metrics=metrics))


@dataclass(frozen=True, kw_only=True)
class SinkConfig(ComponentConfig):
    fail: bool = False


class Sink:
    """Records every batch; with ``fail`` it raises instead."""

    instances: dict[str, Sink] = {}

    def __init__(self, settings: ComponentSettings, config: SinkConfig) -> None:
        self.id = settings.id
        self.config = config
        self.batches: list[Batch] = []
        self.flushed = False
        Sink.instances[str(settings.id)] = self

    async def start(self, host: Host) -> None:
        EVENTS.append(f"start {self.id}")

    async def shutdown(self) -> None:
        EVENTS.append(f"stop {self.id}")
        self.flushed = True

    def wanted_families(self) -> FamilySet:
        return frozenset()

    async def consume(self, batch: Batch) -> None:
        if self.config.fail:
            raise RuntimeError("sink failed on purpose")
        self.batches.append(batch)


class _Factory:
    def __init__(self, type_: str, kind: Kind, config: type, cls: type) -> None:
        self.type = type_
        self.kind = kind
        self._config = config
        self._cls = cls

    def default_config(self) -> ComponentConfig:
        return self._config()  # type: ignore[no-any-return]

    def create(self, settings: ComponentSettings, config: ComponentConfig, *rest: object) -> object:
        return self._cls(settings, config, *rest)


def test_registry() -> Registry:
    """A registry with only the test components (no entry points involved)."""
    registry = Registry()
    registry.register(Kind.RECEIVER, _Factory("source", Kind.RECEIVER, SourceConfig, Source))
    registry.register(Kind.PROCESSOR, _Factory("scale", Kind.PROCESSOR, ScaleConfig, Scale))
    registry.register(Kind.EXPORTER, _Factory("sink", Kind.EXPORTER, SinkConfig, Sink))
    return registry


test_registry.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
