"""What a component is, as the engine sees it.

The lifecycle contract (from the OpenTelemetry Collector's ``component.Component``):

- ``start(host)`` returns quickly; long-running work goes into ``asyncio`` tasks the component keeps
  on itself and cancels on shutdown.
- ``shutdown()`` is safe without ``start`` and safe twice; it stops the component's background work
  before returning and, for exporters, flushes what they hold downstream.

Components never import each other. A receiver or processor is *handed* the consumer that follows
it (``next_consumer``), so it does not know what is downstream.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._model import Batch, FamilySet, SeriesFilter, SeriesFilters

if TYPE_CHECKING:
    from ._telemetry import Telemetry

_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_NAME_RE = re.compile(r"^[^\s/]{1,1024}$")


class Kind(StrEnum):
    RECEIVER = "receiver"
    PROCESSOR = "processor"
    EXPORTER = "exporter"

    @property
    def plural(self) -> str:
        return f"{self.value}s"

    @property
    def entry_point_group(self) -> str:
        return f"cni_pipeline.{self.plural}"


@dataclass(frozen=True, slots=True, order=True)
class ComponentID:
    """A component's identity: ``type`` or ``type/name`` (e.g. ``prometheus/cni``)."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentID:
        if not isinstance(text, str) or not text:
            raise ValueError(f"invalid component ID {text!r}: it is empty")
        type_, sep, name = text.partition("/")
        if not _TYPE_RE.match(type_):
            raise ValueError(
                f"invalid component ID {text!r}: type {type_!r} must start with a letter and "
                "contain only letters, digits and '_'"
            )
        if sep and not _NAME_RE.match(name):
            raise ValueError(
                f"invalid component ID {text!r}: name after '/' must be non-empty, without spaces"
            )
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


@dataclass(frozen=True, kw_only=True)
class ComponentConfig:
    """Base of every component's config dataclass.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)`` with a default for every field (the
    defaults are the component's defaults). The engine's loader lays the user's YAML over them,
    rejecting unknown keys and wrong types; ``validate`` checks only cross-field rules and yields
    ``(key, message)`` for each problem, ``key`` relative to the component's config.
    """

    def validate(self) -> Iterable[tuple[str, str]]:
        return ()


class Host(Protocol):
    """What a running component may ask of the service around it. Each component instance gets
    a host of its own (bound to its kind and ID, as the Collector's per-component host), so it
    reports only for itself."""

    def report_status(self, healthy: bool, message: str = "") -> None:
        """Record that this component is working or failing (feeds ``/readyz``)."""


@dataclass(frozen=True, slots=True)
class ComponentSettings:
    """Handed to every component at creation: its ID, logger, self-telemetry and start time."""

    id: ComponentID
    kind: Kind
    logger: logging.LoggerAdapter[logging.Logger]
    telemetry: Telemetry
    #: When the pipeline started (UTC seconds); the window a new target is judged against.
    started_at: float

    @property
    def tag(self) -> str:
        """What its log lines are tagged with: ``receiver/prometheus``, ``exporter/prometheus``."""
        return log_tag(self.kind, self.id)


def log_tag(kind: Kind, cid: ComponentID) -> str:
    """Kind and ID, so a receiver and an exporter of one type are told apart in the log."""
    return f"{kind}/{cid}"


@runtime_checkable
class Component(Protocol):
    async def start(self, host: Host) -> None: ...

    async def shutdown(self) -> None: ...


@runtime_checkable
class MetricsConsumer(Protocol):
    """Takes batches. ``consume`` must not change the batch and should return quickly."""

    async def consume(self, batch: Batch) -> None: ...

    def wanted_families(self) -> FamilySet:
        """The scraped families this consumer (and what follows it) reads; ``None`` = all.

        A receiver asks its next consumer once at start and parses only these families.

        A consumer that reads only some lines of a family (a summary's p99 lines, say) may also
        have ``wanted_series() -> SeriesFilters``, found with :func:`wanted_series_of` (so
        consumers without it, plugins included, read every line of their families).
        """
        ...


class Receiver(Component, Protocol):
    pass


class SimpleExporter:
    """A base for exporters with no background work that read no scraped families: ``start``
    and ``shutdown`` do nothing and ``wanted_families`` asks for none; write ``consume``."""

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def wanted_families(self) -> FamilySet:
        return frozenset()


class Processor(Component, MetricsConsumer, Protocol):
    pass


class Exporter(Component, MetricsConsumer, Protocol):
    pass


@dataclass(frozen=True, slots=True)
class ClusterShape:
    """The cluster ``validate`` plans for (from its flags; it makes no network call)."""

    nodes: int = 100
    zones: int = 3
    nodegroups: int = 2
    instance_types: int = 2
    interval: float = 30.0


class Factory(Protocol):
    """Creates components of one type. ``default_config`` has no side effects.

    Optional hooks ``validate`` reports with (found with ``getattr``, so a plugin may omit them):
    a receiver factory's ``cycle_interval(config) -> float`` (seconds between its batches), a
    receiver or processor factory's ``planned_metrics(config, shape, upstream) -> list[Metric]``
    (given the metrics planned to reach it, those leaving it each cycle on a cluster of that
    shape) and an exporter factory's ``describe_plan(config, metrics, shape) -> list[str]``
    (lines for the user: what it would create and what that costs).
    """

    @property
    def type(self) -> str: ...

    @property
    def kind(self) -> Kind: ...

    def default_config(self) -> ComponentConfig: ...


class ReceiverFactory(Factory, Protocol):
    def create(
        self, settings: ComponentSettings, config: Any, next_consumer: MetricsConsumer
    ) -> Receiver: ...


class ProcessorFactory(Factory, Protocol):
    def create(
        self, settings: ComponentSettings, config: Any, next_consumer: MetricsConsumer
    ) -> Processor: ...


class ExporterFactory(Factory, Protocol):
    def create(self, settings: ComponentSettings, config: Any) -> Exporter: ...


def union_families(sets: Iterable[FamilySet]) -> FamilySet:
    """Union of wanted-family sets, where ``None`` (all families) absorbs everything."""
    result: set[str] = set()
    for wanted in sets:
        if wanted is None:
            return None
        result |= wanted
    return frozenset(result)


def wanted_series_of(consumer: MetricsConsumer) -> SeriesFilters:
    """A consumer's optional ``wanted_series()``: its line filters by family ({} if it has none)."""
    method = getattr(consumer, "wanted_series", None)
    return method() if method is not None else {}


def union_series(wants: Iterable[tuple[FamilySet, SeriesFilters]]) -> SeriesFilters:
    """The line filters of several consumers, from each one's (wanted families, filters).

    A family keeps a filter only while every consumer that wants it filters it; a line is then
    read if any of their filters reads it. Filters of families a consumer does not want are
    ignored, and a consumer that wants every family (``None``) leaves no filter at all.
    """
    filters: dict[str, list[SeriesFilter]] = {}
    unfiltered: set[str] = set()
    for families, series in wants:
        if families is None:
            return {}
        for family in families:
            wanted = series.get(family)
            if wanted is None:
                unfiltered.add(family)
            else:
                filters.setdefault(family, []).append(wanted)
    return {family: _any_of(tuple(each)) for family, each in filters.items()
            if family not in unfiltered}


def _any_of(filters: tuple[SeriesFilter, ...]) -> SeriesFilter:
    if len(filters) == 1:
        return filters[0]
    return lambda series: any(wanted(series) for wanted in filters)
