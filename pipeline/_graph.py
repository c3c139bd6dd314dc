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
from ._config import Config, PipelineSpec
from ._errors import ComponentError, ConfigError, PipelineError
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
    #: What a reload compares (see :func:`build_graph`'s ``previous``): per exporter and
    #: receiver, its config (and a receiver's pipelines); per pipeline, its chain and entry.
    exporter_keys: dict[ComponentID, object] = field(default_factory=dict)
    receiver_keys: dict[ComponentID, object] = field(default_factory=dict)
    chains: dict[str, object] = field(default_factory=dict)
    entries: dict[str, MetricsConsumer] = field(default_factory=dict)

    def start_order(self) -> list[Node]:
        return [*self.exporters, *self.processors, *self.receivers]

    def nodes(self) -> list[Node]:
        return self.start_order()

    async def start_all(self, host_for: Callable[[Node], Host], logger: logging.Logger) -> None:
        """Start downstream first; on a failure, stop what started, raise naming the component.
        Nodes already started (kept by a reload) are left running.

        ``host_for(node)`` is the host that node's component reports its health to."""
        for node in self.start_order():
            if any(node is started for started in self._started):
                continue  # kept, running, across a reload
            logger.info("starting %s", node.label, extra={"component": log_tag(node.kind, node.id)})
            try:
                await node.component.start(host_for(node))
            except Exception as exc:
                await self.shutdown_all(logger)
                raise ComponentError(f"failed to start: {exc}", f"{node.label}") from exc
            self._started.append(node)

    async def stop(self, node: Node, logger: logging.Logger) -> None:
        """Stop one started node (a reload removing it); log and go on past a failure."""
        self._started = [n for n in self._started if n is not node]
        logger.info("stopping %s", node.label, extra={"component": log_tag(node.kind, node.id)})
        try:
            await node.component.shutdown()
        except Exception:
            tag = log_tag(node.kind, node.id)
            logger.exception("shutdown of %s failed", node.label, extra={"component": tag})

    async def shutdown_all(self, logger: logging.Logger) -> None:
        """Stop upstream first (receivers, processors, exporters); log and go on past failures."""
        while self._started:
            await self.stop(self._started[-1], logger)


def build_graph(
    config: Config,
    registry: Registry,
    make_settings: SettingsFactory,
    telemetry: Telemetry,
    logger: logging.Logger,
    gate: GateFactory | None = None,
    previous: Graph | None = None,
) -> Graph:
    """Create every component of every pipeline; creation has no side effects (start does).

    ``gate``, if given, sits between each pipeline's last processor and its exporters.

    With ``previous`` (a config reload), what did not change is kept, running, with its state:
    an exporter whose config is the same; a whole pipeline (its processors and the gate) whose
    processors and exporters are the same, with the same configs; a receiver whose config and
    pipelines are the same and all kept (a receiver reads the families its pipelines want once,
    at start, so a change behind it restarts it). Everything else is new; the nodes that are
    the same object in both graphs are already started."""
    graph = Graph()
    kept = previous or Graph()
    exporters: dict[ComponentID, MetricsConsumer] = {}
    for cid in _used(config, Kind.EXPORTER):
        key = config.exporters[cid]
        old = _node(kept.exporters, cid) if kept.exporter_keys.get(cid) == key else None
        if old is not None:
            graph.exporters.append(old)
        else:
            component = _create(registry, Kind.EXPORTER, cid, make_settings, config, None)
            graph.exporters.append(Node(cid, Kind.EXPORTER, component))
        graph.exporter_keys[cid] = key
        exporters[cid] = GuardedConsumer(
            cid, _consumer(graph.exporters[-1].component, cid), logger, telemetry, Kind.EXPORTER
        )

    for spec in config.pipelines:
        chain = _chain(config, spec)
        graph.chains[spec.id] = chain
        if spec.id in kept.entries and kept.chains.get(spec.id) == chain:
            graph.entries[spec.id] = kept.entries[spec.id]
            graph.processors += [n for n in kept.processors if n.pipeline == spec.id]
            continue
        consumer = fan_out([exporters[e] for e in spec.exporters])
        if gate is not None:
            ours = [n.component for n in graph.exporters if n.id in spec.exporters]
            consumer = gate(spec.id, consumer, ours)
        nodes: list[Node] = []
        for cid in reversed(spec.processors):
            component = _create(registry, Kind.PROCESSOR, cid, make_settings, config, consumer)
            nodes.insert(0, Node(cid, Kind.PROCESSOR, component, spec.id))
            consumer = GuardedConsumer(
                cid, _consumer(component, cid), logger, telemetry, Kind.PROCESSOR, consumer
            )
        graph.processors += nodes
        graph.entries[spec.id] = consumer

    for cid in _used(config, Kind.RECEIVER):
        fed = [p for p in config.pipelines if cid in p.receivers]
        wiring = (config.receivers[cid], tuple((p.id, graph.chains[p.id]) for p in fed))
        reusable = kept.receiver_keys.get(cid) == wiring and all(
            graph.entries[p.id] is kept.entries.get(p.id) for p in fed
        )
        old = _node(kept.receivers, cid) if reusable else None
        if old is not None:
            graph.receivers.append(old)
        else:
            feed = fan_out([graph.entries[p.id] for p in fed])
            component = _create(registry, Kind.RECEIVER, cid, make_settings, config, feed)
            graph.receivers.append(Node(cid, Kind.RECEIVER, component))
        graph.receiver_keys[cid] = wiring
    graph._started = [n for n in kept._started if any(n is m for m in graph.nodes())]
    return graph


def _chain(config: Config, spec: PipelineSpec) -> object:
    """What a pipeline's processors depend on: each processor and exporter with its config."""
    return (
        tuple((cid, config.processors[cid]) for cid in spec.processors),
        tuple((cid, config.exporters[cid]) for cid in spec.exporters),
    )


def _node(nodes: list[Node], cid: ComponentID) -> Node | None:
    return next((n for n in nodes if n.id == cid), None)


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
    except ConfigError:
        raise  # a setting only the component can check (from its environment): exit 2
    except Exception as exc:
        raise ComponentError(f"cannot create: {exc}", f"{kind} {cid}") from exc
    return component  # type: ignore[no-any-return]


def _consumer(component: Component, cid: ComponentID) -> MetricsConsumer:
    if not isinstance(component, MetricsConsumer):
        raise ComponentError("is not a metrics consumer (no consume/wanted_families)", str(cid))
    return component
