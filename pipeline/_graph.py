"""Building pipelines from component IDs, then starting and stopping them in order.

As the OpenTelemetry Collector's ``service/internal/graph``: build in reverse topological order
(exporters, then each pipeline's processors back to front, then receivers), so every component is
handed a ``next_consumer`` that already exists. An exporter or receiver named in several pipelines
is one instance; processors are per pipeline, since each holds its own state. Start runs downstream
first (exporters, processors, receivers); shutdown runs upstream first, so receivers stop feeding
before the exporters they feed flush and close.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ._component import (
    Component,
    ComponentID,
    ComponentSettings,
    Host,
    Kind,
    MetricsConsumer,
    log_tag,
)
from ._config import Config
from ._errors import ComponentError, PipelineError
from ._fanout import GuardedConsumer, fan_out
from ._registry import Registry
from ._telemetry import Telemetry

SettingsFactory = Callable[[ComponentID, Kind], ComponentSettings]
#: Puts a consumer in front of a pipeline's exporters (leader election's export gate):
#: ``gate(pipeline ID, the exporters' fan-out, the exporter components)``.
GateFactory = Callable[[str, MetricsConsumer, list[Component]], MetricsConsumer]


@dataclass(frozen=True, slots=True)
class Node:
    id: ComponentID
    kind: Kind
    component: Component
    pipeline: str = ""

    @property
    def label(self) -> str:
        where = f" in pipeline {self.pipeline}" if self.pipeline else ""
        return f"{self.kind} {self.id}{where}"


@dataclass
class Graph:
    exporters: list[Node] = field(default_factory=list)
    processors: list[Node] = field(default_factory=list)
    receivers: list[Node] = field(default_factory=list)
    _started: list[Node] = field(default_factory=list)

    def start_order(self) -> list[Node]:
        return [*self.exporters, *self.processors, *self.receivers]

    async def start_all(self, host_for: Callable[[Kind], Host], logger: logging.Logger) -> None:
        """Start downstream first; on a failure, stop what started, raise naming the component.

        ``host_for(kind)`` is the host components of that kind report their health to."""
        for node in self.start_order():
            logger.info("starting %s", node.label, extra={"component": log_tag(node.kind, node.id)})
            try:
                await node.component.start(host_for(node.kind))
            except Exception as exc:
                await self.shutdown_all(logger)
                raise ComponentError(f"failed to start: {exc}", f"{node.label}") from exc
            self._started.append(node)

    async def shutdown_all(self, logger: logging.Logger) -> None:
        """Stop upstream first (receivers, processors, exporters); log and go on past failures."""
        while self._started:
            node = self._started.pop()
            logger.info("stopping %s", node.label, extra={"component": log_tag(node.kind, node.id)})
            try:
                await node.component.shutdown()
            except Exception:
                tag = log_tag(node.kind, node.id)
                logger.exception("shutdown of %s failed", node.label, extra={"component": tag})


def build_graph(
    config: Config,
    registry: Registry,
    make_settings: SettingsFactory,
    telemetry: Telemetry,
    logger: logging.Logger,
    gate: GateFactory | None = None,
) -> Graph:
    """Create every component of every pipeline; creation has no side effects (start does).

    ``gate``, if given, sits between each pipeline's last processor and its exporters."""
    graph = Graph()
    exporters: dict[ComponentID, MetricsConsumer] = {}
    for cid in _used(config, Kind.EXPORTER):
        component = _create(registry, Kind.EXPORTER, cid, make_settings, config, None)
        graph.exporters.append(Node(cid, Kind.EXPORTER, component))
        exporters[cid] = GuardedConsumer(
            cid, _consumer(component, cid), logger, telemetry, Kind.EXPORTER
        )

    entries: dict[str, MetricsConsumer] = {}
    for spec in config.pipelines:
        consumer = fan_out([exporters[e] for e in spec.exporters])
        if gate is not None:
            ours = [n.component for n in graph.exporters if n.id in spec.exporters]
            consumer = gate(spec.id, consumer, ours)
        for cid in reversed(spec.processors):
            component = _create(registry, Kind.PROCESSOR, cid, make_settings, config, consumer)
            graph.processors.insert(0, Node(cid, Kind.PROCESSOR, component, spec.id))
            consumer = GuardedConsumer(
                cid, _consumer(component, cid), logger, telemetry, Kind.PROCESSOR, consumer
            )
        entries[spec.id] = consumer

    for cid in _used(config, Kind.RECEIVER):
        feeds = [entries[p.id] for p in config.pipelines if cid in p.receivers]
        component = _create(registry, Kind.RECEIVER, cid, make_settings, config, fan_out(feeds))
        graph.receivers.append(Node(cid, Kind.RECEIVER, component))
    return graph


def _used(config: Config, kind: Kind) -> list[ComponentID]:
    """Components of a kind some pipeline uses, in first-use order (unused ones aren't built)."""
    seen: dict[ComponentID, None] = {}
    for spec in config.pipelines:
        for cid in getattr(spec, kind.plural):
            seen.setdefault(cid, None)
    return list(seen)


def _create(
    registry: Registry,
    kind: Kind,
    cid: ComponentID,
    make_settings: SettingsFactory,
    config: Config,
    next_consumer: MetricsConsumer | None,
) -> Component:
    factory = registry.get(kind, cid.type)
    if factory is None:
        raise PipelineError(f"{kind} type {cid.type!r} is not registered")
    settings = make_settings(cid, kind)
    component_config = config.components(kind)[cid]
    try:
        if kind is Kind.EXPORTER:
            component = factory.create(settings, component_config)  # type: ignore[attr-defined]
        else:
            component = factory.create(settings, component_config, next_consumer)  # type: ignore[attr-defined]
    except Exception as exc:
        raise ComponentError(f"cannot create: {exc}", f"{kind} {cid}") from exc
    return component  # type: ignore[no-any-return]


def _consumer(component: Component, cid: ComponentID) -> MetricsConsumer:
    if not isinstance(component, MetricsConsumer):
        raise ComponentError("is not a metrics consumer (no consume/wanted_families)", str(cid))
    return component
