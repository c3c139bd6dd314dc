"""The sending queue: bounded queue, workers, retry with backoff, per-attempt timeout, shutdown
drain and the exporter self-metrics, for any request type (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .. import (
    ComponentSettings,
    Host,
    PermanentExportError,
    RetryableExportError,
    ThrottledError,
)
from ._settings import DEFAULT_QUEUE, DEFAULT_RETRY, QueueSettings, RetrySettings

T = TypeVar("T")


#: While draining at shutdown, a backoff delay is cut to this share of the grace left, so a few
#: more attempts fit in it; never below the floor, so a failing server is not hammered.
_DRAIN_DELAY_SHARE = 0.25
_DRAIN_DELAY_FLOOR = 0.05


class AmbiguousExportError(RetryableExportError):
    """The request may have reached the server before the failure (a read timeout, a connection
    dropped after sending). Retried like any retryable error, but counted as a possible duplicate,
    since the server may have stored it already."""


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
        queue: QueueSettings = DEFAULT_QUEUE,
        retry: RetrySettings = DEFAULT_RETRY,
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
        self._drain_deadline: float | None = None
        self._wake = asyncio.Event()  # set at shutdown: cuts backoff sleeps short

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def held(self) -> int:
        """What the queue holds now, in its size unit."""
        return self._queue.size

    async def start(self, host: Host) -> None:
        self._host = host
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

    async def idle(self) -> None:
        """Return once the queue is empty and no send is in flight: everything offered before
        has been sent, refused or given up on (the export gate of leader election waits on it)."""
        await self._drained()

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
            self._host.report_status(healthy, message)

