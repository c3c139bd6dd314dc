"""QueuedExporter: a complete exporter made of a request converter and a push function."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .. import Batch, ComponentSettings, FamilySet, Host
from ._queue import SendingQueue
from ._settings import DEFAULT_QUEUE, DEFAULT_RETRY, QueueSettings, RetrySettings

R = TypeVar("R")

#: Sends one batch; raises PermanentExportError, RetryableExportError/ThrottledError, or anything
#: else (retried) on failure.
PushFunc = Callable[[Batch], Awaitable[None]]


def _one(request: object) -> int:
    return 1


def _nothing() -> tuple[()]:
    return ()


@dataclass(frozen=True, kw_only=True)
class RequestConverter(Generic[R]):
    """How an exporter's batches become the requests its push function sends.

    ``convert(batch)`` returns the requests ready to send now (often exactly one). A converter
    that accumulates across cycles keeps the rest and returns it from ``flush()``: the helper
    calls ``flush`` every ``flush_interval`` seconds (``None``: no timer), on
    :meth:`QueuedExporter.flush`, and once at shutdown before draining the queue.
    ``items_of(request)`` is the request's datapoint count (self-metrics and logs);
    ``size_of(request)`` its size in the queue's unit, which ``sending_queue.queue_size`` bounds
    (1 by default: the queue counts requests).
    """

    convert: Callable[[Batch], Iterable[R]]
    items_of: Callable[[R], int]
    size_of: Callable[[R], int] = _one
    flush: Callable[[], Iterable[R]] = _nothing
    flush_interval: float | None = None


#: The default converter: each batch is one request of ``len(batch.metrics)`` datapoints.
BATCHES: RequestConverter[Batch] = RequestConverter(
    convert=lambda batch: (batch,), items_of=lambda batch: len(batch.metrics)
)
#: BATCHES as the parameter default: mypy cannot tie Batch to a request type R, but ``push``'s
#: type fixes R, and the default is only meant with a push that takes batches.
_DEFAULT_CONVERTER: RequestConverter[Any] = BATCHES


class QueuedExporter(Generic[R]):
    """A :class:`pipeline.Exporter` made of a converter and a push function, plus queue, retry
    and timeout (see the package docstring).

    ``on_start`` runs before the workers start (create clients there); ``on_shutdown`` runs after
    the queue has drained (close them there), and only if ``start`` succeeded. ``start`` and
    ``shutdown`` are idempotent; ``shutdown`` is safe without ``start`` (what was queued is
    counted as dropped).
    """

    def __init__(
        self,
        settings: ComponentSettings,
        push: Callable[[R], Awaitable[None]],
        *,
        converter: RequestConverter[R] = _DEFAULT_CONVERTER,
        queue: QueueSettings = DEFAULT_QUEUE,
        retry: RetrySettings = DEFAULT_RETRY,
        timeout: float = 30.0,
        shutdown_grace: float = 10.0,
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        wanted_families: FamilySet = frozenset(),
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._converter = converter
        self._on_start = on_start
        self._on_shutdown = on_shutdown
        self._wanted = wanted_families
        self._started = False
        self._stopped = False
        self._flusher: asyncio.Task[None] | None = None
        self.sender: SendingQueue[R] = SendingQueue(
            settings, push, items_of=converter.items_of, size_of=converter.size_of, queue=queue,
            retry=retry, timeout=timeout, shutdown_grace=shutdown_grace, rng=rng,
        )

    @property
    def running(self) -> bool:
        """Started and not shut down."""
        return self._started and not self._stopped

    async def start(self, host: Host) -> None:
        if self._started or self._stopped:
            return
        if self._on_start is not None:
            await self._on_start()
        self._started = True
        await self.sender.start(host)
        interval = self._converter.flush_interval
        if interval is not None:
            self._flusher = asyncio.create_task(
                self._flush_every(interval), name=f"{self.settings.id}-flush"
            )

    async def consume(self, batch: Batch) -> None:
        for request in self._converter.convert(batch):
            await self.sender.offer(request)
        if self._stopped:
            await self.flush()  # nothing may stay behind in the converter: dropped, counted

    async def flush(self) -> None:
        """Hand what the converter holds to the queue now, without waiting for the timer."""
        for request in self._converter.flush():
            await self.sender.offer(request)

    async def delivered(self) -> None:
        """Return once everything consumed before the call has been sent or given up on: what
        the converter holds goes to the queue now (as ``flush``), then the queue drains. The
        export gate of leader election waits on it before it records a cycle as delivered."""
        await self.flush()
        await self.sender.idle()

    async def _flush_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.flush()

    def wanted_families(self) -> FamilySet:
        return self._wanted

    async def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
        await self.sender.shutdown()
        if self._started and self._on_shutdown is not None:
            await self._on_shutdown()
