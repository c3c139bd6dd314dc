"""Consumers the graph puts between components: a guard per component and a fan-out.

Batches are frozen, so a fan-out hands the same batch to every branch (no clone is ever needed).
Every branch is called even when another fails, and a component that raises is logged with its ID
and counted: one broken exporter never hides another or stops the cycle loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ._component import (
    ComponentID,
    Kind,
    MetricsConsumer,
    log_tag,
    union_families,
    union_series,
    wanted_series_of,
)
from ._model import Batch, FamilySet, SeriesFilters
from ._telemetry import Telemetry


class GuardedConsumer:
    """Wraps a component's ``consume`` so its exceptions are logged with its ID, never raised.

    For a processor, ``downstream`` is its next consumer: what the processor is asked to have
    read is then what it wants itself plus what everything after it wants, merged here once so
    that no processor has to forward its next consumer's wants (one that forgot would starve
    the exporters after it)."""

    def __init__(
        self,
        component_id: ComponentID,
        inner: MetricsConsumer,
        logger: logging.Logger,
        telemetry: Telemetry,
        kind: Kind,
        downstream: MetricsConsumer | None = None,
    ) -> None:
        self.id = component_id
        self._tag = log_tag(kind, component_id)
        self.inner = inner
        self._downstream = downstream
        self._logger = logger
        self._errors = telemetry.counter(
            "component_errors_total",
            "Exceptions raised by a component while consuming a batch.",
            ["component"],
        ).labels(component=str(component_id))

    async def consume(self, batch: Batch) -> None:
        try:
            await self.inner.consume(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._errors.inc()
            self._logger.exception(
                "component %s failed on cycle %d; the pipeline goes on",
                self.id,
                batch.cycle.index,
                extra={"component": self._tag},
            )

    def wanted_families(self) -> FamilySet:
        if self._downstream is None:
            return self.inner.wanted_families()
        return union_families([self.inner.wanted_families(), self._downstream.wanted_families()])

    def wanted_series(self) -> SeriesFilters:
        if self._downstream is None:
            return wanted_series_of(self.inner)
        return union_series((c.wanted_families(), wanted_series_of(c))
                            for c in (self.inner, self._downstream))


class FanOut:
    """Hands each batch to every consumer concurrently."""

    def __init__(self, consumers: Sequence[MetricsConsumer]) -> None:
        self.consumers = tuple(consumers)

    async def consume(self, batch: Batch) -> None:
        if len(self.consumers) == 1:
            await self.consumers[0].consume(batch)
            return
        await asyncio.gather(*(c.consume(batch) for c in self.consumers), return_exceptions=True)

    def wanted_families(self) -> FamilySet:
        return union_families(c.wanted_families() for c in self.consumers)

    def wanted_series(self) -> SeriesFilters:
        return union_series((c.wanted_families(), wanted_series_of(c)) for c in self.consumers)


def fan_out(consumers: Sequence[MetricsConsumer]) -> MetricsConsumer:
    return consumers[0] if len(consumers) == 1 else FanOut(consumers)
