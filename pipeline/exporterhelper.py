"""Queue, retry and timeout around an exporter's plain push function.

After the OpenTelemetry Collector's ``exporter/exporterhelper``: an exporter writes only
``async push(request)`` that sends one request and raises on failure; this module adds the rest, as
a chain ``queue -> retry -> timeout -> push``:

- **Queue.** ``consume``/``offer`` enqueue and return at once, so exporting never delays a cycle.
  The queue is bounded; when full it drops the *oldest* request (the newest data is worth most to a
  dashboard), logs the drop with its item count and counts it in self-metrics. ``num_consumers``
  workers take requests from it. With the queue disabled, ``consume`` sends in the caller (as the
  Collector does), retries included.
- **Retry.** Exponential backoff with jitter, as ``internal/retry_sender.go`` (cenkalti/backoff):
  the n-th delay is ``initial_interval * multiplier**n`` capped at ``max_interval``, randomised by
  ``± randomization_factor``. A :class:`~pipeline.ThrottledError` carrying the server's delay waits
  at least that long. A :class:`~pipeline.PermanentExportError` is never retried; every other error
  is (as in the Collector: a push function maps its library's errors, see STYLE.md), until
  ``max_elapsed_time`` has passed since the first attempt or the shutdown grace runs out.
- **Timeout.** Each attempt runs under ``asyncio.timeout``. A timeout, or an
  :class:`AmbiguousExportError`, means the server may have accepted the request before the failure,
  so retrying it may store the data twice: such retries are counted as possible duplicates.
- **Shutdown.** Stop accepting, let the workers drain the queue within ``shutdown_grace`` (backoff
  delays are shortened so a retry still fits in the grace), then cancel what is left, count it as
  dropped, and finally call ``on_shutdown``. Start runs ``on_start`` before the workers, so the
  exporter is ready before the queue feeds it.

Two layers: :class:`SendingQueue` is generic over the request type (the CloudWatch exporter queues
PutMetricData requests sized in datums); :class:`QueuedExporter` is the ready-made
:class:`pipeline.Exporter` whose requests are whole :class:`pipeline.Batch` objects.

Self-metrics (prefixed ``cni_pipeline_`` by :class:`pipeline.Telemetry`, labelled
``exporter=<component ID>``): ``exporter_sent_datapoints_total``,
``exporter_failed_datapoints_total`` (refused, or retries exhausted),
``exporter_retries_total``, ``exporter_dropped_datapoints_total`` (queue full, or left at the end
of the shutdown grace), ``exporter_possible_duplicate_datapoints_total`` (retried after an
ambiguous failure), ``exporter_queue_size`` and ``exporter_queue_capacity`` (in the queue's size
unit: requests, or what ``size_of`` counts), ``exporter_last_success_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from . import (
    Batch,
    ComponentSettings,
    Duration,
    FamilySet,
    Host,
    PermanentExportError,
    RetryableExportError,
    ThrottledError,
)

__all__ = [
    "AmbiguousExportError",
    "PushFunc",
    "QueueSettings",
    "QueuedExporter",
    "RetrySettings",
    "SendingQueue",
]

T = TypeVar("T")

#: Sends one batch; raises PermanentExportError, RetryableExportError/ThrottledError, or anything
#: else (retried) on failure.
PushFunc = Callable[[Batch], Awaitable[None]]

#: While draining at shutdown, a backoff delay is cut to this share of the grace left, so a few
#: more attempts fit in it; never below the floor, so a failing server is not hammered.
_DRAIN_DELAY_SHARE = 0.25
_DRAIN_DELAY_FLOOR = 0.05


class AmbiguousExportError(RetryableExportError):
    """The request may have reached the server before the failure (a read timeout, a connection
    dropped after sending). Retried like any retryable error, but counted as a possible duplicate,
    since the server may have stored it already."""


@dataclass(frozen=True, kw_only=True)
class QueueSettings:
    """``sending_queue:`` of an exporter config (as in the Collector).

    ``queue_size`` is in the queue's size unit: batches for :class:`QueuedExporter`, or whatever the
    exporter's ``size_of`` counts (datums, for CloudWatch).
    """

    enabled: bool = True
    num_consumers: int = 1
    queue_size: int = 100

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.num_consumers < 1:
            yield "num_consumers", "must be at least 1"
        if self.queue_size < 1:
            yield "queue_size", "must be at least 1"


@dataclass(frozen=True, kw_only=True)
class RetrySettings:
    """``retry_on_failure:`` of an exporter config (as in the Collector).

    ``max_elapsed_time`` of 0 means retry until shutdown.
    """

    enabled: bool = True
    initial_interval: Duration = Duration(5)
    max_interval: Duration = Duration(30)
    max_elapsed_time: Duration = Duration(300)
    multiplier: float = 1.5
    randomization_factor: float = 0.5

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.initial_interval <= 0:
            yield "initial_interval", "must be positive"
        if self.max_interval < self.initial_interval:
            yield "max_interval", "must be greater or equal to initial_interval"
        if self.max_elapsed_time < 0:
            yield "max_elapsed_time", "must not be negative (0 = retry until shutdown)"
        if self.multiplier < 1:
            yield "multiplier", "must be at least 1"
        if not 0 <= self.randomization_factor < 1:
            yield "randomization_factor", "must be in [0, 1)"


class _Backoff:
    """Exponential backoff with jitter (the algorithm of cenkalti/backoff, which the Collector
    uses): each call returns the next randomised delay and grows the interval."""

    def __init__(self, settings: RetrySettings, rng: random.Random) -> None:
        self._settings = settings
        self._interval = float(settings.initial_interval)
        self._rng = rng

    def next_delay(self) -> float:
        s = self._settings
        spread = s.randomization_factor * self._interval
        delay = self._rng.uniform(self._interval - spread, self._interval + spread)
        self._interval = min(self._interval * s.multiplier, float(s.max_interval))
        return delay


class _BoundedQueue(Generic[T]):
    """A FIFO bounded by the sum of its items' sizes, dropping the oldest when full.

    ``asyncio.Queue`` blocks or refuses when full and counts entries, not sizes; we need
    drop-oldest and a size per entry (datums per request), hence this small deque.
    """

    def __init__(self, capacity: int, size_of: Callable[[T], int]) -> None:
        self.capacity = capacity
        self._size_of = size_of
        self._items: deque[tuple[T, int]] = deque()
        self.size = 0
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> list[T]:
        """Add ``item``; return the items dropped to make room (oldest first), or ``[item]``
        itself when it alone is larger than the capacity."""
        size = self._size_of(item)
        if size > self.capacity:
            return [item]
        dropped: list[T] = []
        while self.size + size > self.capacity:
            old, old_size = self._items.popleft()
            self.size -= old_size
            dropped.append(old)
        self._items.append((item, size))
        self.size += size
        self._ready.set()
        return dropped

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, size = self._items.popleft()
        self.size -= size
        return item

    def drain_all(self) -> list[T]:
        items = [item for item, _ in self._items]
        self._items.clear()
        self.size = 0
        return items


class _Metrics:
    """The exporter self-metrics, bound to one exporter's label."""

    def __init__(self, settings: ComponentSettings) -> None:
        t = settings.telemetry
        label = {"exporter": str(settings.id)}
        names = ("exporter",)
        self.sent = t.counter(
            "exporter_sent_datapoints_total", "Datapoints the backend accepted.", names
        ).labels(**label)
        self.failed = t.counter(
            "exporter_failed_datapoints_total",
            "Datapoints given up on: refused by the backend, or retries exhausted.", names,
        ).labels(**label)
        self.retries = t.counter(
            "exporter_retries_total", "Send attempts retried after a failure.", names
        ).labels(**label)
        self.dropped = t.counter(
            "exporter_dropped_datapoints_total",
            "Datapoints dropped unsent: queue full (oldest dropped), or left at shutdown.", names,
        ).labels(**label)
        self.duplicates = t.counter(
            "exporter_possible_duplicate_datapoints_total",
            "Datapoints re-sent after an ambiguous failure (the backend may have stored them "
            "already).", names,
        ).labels(**label)
        self.queue_size = t.gauge(
            "exporter_queue_size", "Held in the sending queue (in the queue's size unit).", names
        ).labels(**label)
        self.queue_capacity = t.gauge(
            "exporter_queue_capacity", "Capacity of the sending queue (in its size unit).", names
        ).labels(**label)
        self.last_success = t.gauge(
            "exporter_last_success_timestamp_seconds",
            "When the backend last accepted a request (UTC seconds).", names,
        ).labels(**label)


class SendingQueue(Generic[T]):
    """Queue + retry + timeout around ``push(request)``, for any request type ``T``.

    ``size_of(request)`` is the request's size in the queue's unit (``queue.queue_size`` is the
    capacity in that unit); ``items_of(request)`` its datapoint count for self-metrics and logs.
    ``rng`` makes the jitter reproducible in tests.
    """

    def __init__(
        self,
        settings: ComponentSettings,
        push: Callable[[T], Awaitable[None]],
        *,
        items_of: Callable[[T], int],
        size_of: Callable[[T], int] | None = None,
        queue: QueueSettings = QueueSettings(),
        retry: RetrySettings = RetrySettings(),
        timeout: float = 30.0,
        shutdown_grace: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._log = settings.logger
        self._push = push
        self._items_of = items_of
        self._queue_settings = queue
        self._retry = retry
        self._timeout = timeout
        self._grace = shutdown_grace
        self._rng = rng or random.Random()
        self._queue: _BoundedQueue[T] = _BoundedQueue(queue.queue_size, size_of or (lambda _: 1))
        self._metrics = _Metrics(settings)
        self._metrics.queue_capacity.set(queue.queue_size)
        self._host: Host | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True
        self._started = False
        self._drain_deadline: float | None = None
        self._wake = asyncio.Event()  # set at shutdown: cuts backoff sleeps short

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """What the queue holds now, in its size unit."""
        return self._queue.size

    async def start(self, host: Host) -> None:
        self._host = host
        self._started = True
        if self._queue_settings.enabled:
            self._workers = [
                asyncio.create_task(self._work(), name=f"{self._settings.id}-sender-{i}")
                for i in range(self._queue_settings.num_consumers)
            ]

    async def shutdown(self) -> None:
        """Stop accepting, drain within the grace period, then drop (and count) what is left.

        Safe without ``start`` (what was queued is counted as dropped) and safe twice.
        """
        if not self._accepting and not self._workers:
            return
        self._accepting = False
        if self._workers:
            self._drain_deadline = time.monotonic() + self._grace
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._grace):
                    await self._drained()
            for task in self._workers:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        self._drop(self._queue.drain_all(), "still queued at the end of the shutdown grace")
        self._update_gauge()

    async def _drained(self) -> None:
        while len(self._queue) or self._in_flight:
            self._idle.clear()
            await self._idle.wait()

    # -- enqueueing -------------------------------------------------------------------------

    async def offer(self, request: T) -> None:
        """Queue ``request`` and return at once (or, with the queue disabled, send it now)."""
        if not self._accepting:
            self._drop([request], "exporter is shutting down")
            return
        if not self._queue_settings.enabled:
            await self._send(request)
            return
        dropped = self._queue.put(request)
        if dropped:
            reason = (
                f"request larger than the sending queue (capacity {self._queue.capacity})"
                if dropped == [request]
                else f"sending queue full (capacity {self._queue.capacity}), oldest dropped"
            )
            self._drop(dropped, reason)
        self._update_gauge()

    def _drop(self, requests: list[T], reason: str) -> None:
        if not requests:
            return
        items = sum(self._items_of(r) for r in requests)
        self._metrics.dropped.inc(items)
        self._log.warning(
            "dropped %d request(s) holding %d datapoints: %s", len(requests), items, reason,
            extra={"component": self._settings.tag, "dropped_items": items},
        )

    def _update_gauge(self) -> None:
        self._metrics.queue_size.set(self._queue.size)

    # -- sending ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            request = await self._queue.get()
            self._in_flight += 1
            self._update_gauge()
            try:
                await self._send(request)
            except asyncio.CancelledError:
                # Only shutdown cancels a worker, once the grace has run out.
                self._drop([request], "in flight when the shutdown grace ran out (the server "
                           "may or may not have stored it)")
                raise
            finally:
                self._in_flight -= 1
                self._idle.set()

    async def _send(self, request: T) -> None:
        """Push with timeout and retry until success, a permanent error or the deadline."""
        items = self._items_of(request)
        backoff = _Backoff(self._retry, self._rng)
        first = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._push(request)
            except PermanentExportError as exc:
                self._give_up(items, f"refused, not retried: {exc}")
                return
            except Exception as exc:  # noqa: BLE001 - every other error is retried (Collector)
                ambiguous = isinstance(exc, AmbiguousExportError | TimeoutError)
                why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
                delay = self._retry_delay(exc, backoff, first)
                if delay is None:
                    self._give_up(items, f"{why} (no retry left)")
                    return
                self._note_retry(items, why, delay, ambiguous)
                await self._sleep(delay)
            else:
                self._succeeded(items)
                return

    def _retry_delay(self, exc: Exception, backoff: _Backoff, first: float) -> float | None:
        """The wait before the next attempt, or ``None`` when retrying must stop."""
        if not self._retry.enabled:
            return None
        delay = backoff.next_delay()
        if isinstance(exc, ThrottledError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        now = time.monotonic()
        if self._drain_deadline is not None:
            left = self._drain_deadline - now
            if left <= _DRAIN_DELAY_FLOOR:
                return None
            delay = max(_DRAIN_DELAY_FLOOR, min(delay, left * _DRAIN_DELAY_SHARE))
        max_elapsed = float(self._retry.max_elapsed_time)
        if max_elapsed and now + delay - first > max_elapsed:
            return None
        return delay

    async def _sleep(self, delay: float) -> None:
        """Sleep, but wake early when shutdown starts (the drain deadline then shortens it)."""
        if self._wake.is_set():
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    def _note_retry(self, items: int, why: str, delay: float, ambiguous: bool) -> None:
        self._metrics.retries.inc()
        if ambiguous:
            self._metrics.duplicates.inc(items)
        self._report(False, f"send failed, retrying: {why}")
        self._log.warning(
            "send of %d datapoints failed, retrying in %.1fs%s: %s", items, delay,
            " (may duplicate: the server may have stored the first attempt)" if ambiguous else "",
            why, extra={"component": self._settings.tag},
        )

    def _give_up(self, items: int, why: str) -> None:
        self._metrics.failed.inc(items)
        self._report(False, why)
        self._log.error(
            "gave up sending %d datapoints: %s", items, why,
            extra={"component": self._settings.tag, "failed_items": items},
        )

    def _succeeded(self, items: int) -> None:
        self._metrics.sent.inc(items)
        self._metrics.last_success.set(time.time())
        self._report(True, "")

    def _report(self, healthy: bool, message: str) -> None:
        if self._host is not None:
            self._host.report_status(self._settings.id, healthy, message)


class QueuedExporter:
    """A :class:`pipeline.Exporter` made of a push function plus queue, retry and timeout.

    ``on_start`` runs before the workers start (create clients there); ``on_shutdown`` runs after
    the queue has drained (close them there), and only if ``start`` ran.
    """

    def __init__(
        self,
        settings: ComponentSettings,
        push: PushFunc,
        *,
        queue: QueueSettings = QueueSettings(),
        retry: RetrySettings = RetrySettings(),
        timeout: float = 30.0,
        shutdown_grace: float = 10.0,
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        wanted_families: FamilySet = frozenset(),
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._on_start = on_start
        self._on_shutdown = on_shutdown
        self._wanted = wanted_families
        self._started = False
        self._stopped = False
        self.sender: SendingQueue[Batch] = SendingQueue(
            settings, push, items_of=lambda batch: len(batch.metrics), queue=queue, retry=retry,
            timeout=timeout, shutdown_grace=shutdown_grace, rng=rng,
        )

    async def start(self, host: Host) -> None:
        if self._on_start is not None:
            await self._on_start()
        self._started = True
        await self.sender.start(host)

    async def consume(self, batch: Batch) -> None:
        await self.sender.offer(batch)

    def wanted_families(self) -> FamilySet:
        return self._wanted

    async def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.sender.shutdown()
        if self._started and self._on_shutdown is not None:
            await self._on_shutdown()
