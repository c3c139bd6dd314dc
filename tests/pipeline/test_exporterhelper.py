"""pipeline.exporterhelper: queue, retry, timeout and shutdown around fake push functions.

The push functions here are the unit's input (what an exporter hands the helper), not mocks of a
real part. Intervals are tens of milliseconds; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest

from pipeline import (
    Batch,
    ComponentID,
    ComponentSettings,
    Cycle,
    Duration,
    Kind,
    Metric,
    MetricKind,
    PermanentExportError,
    RetryableExportError,
    Telemetry,
    ThrottledError,
    validate_config,
)
from pipeline.exporterhelper import (
    AmbiguousExportError,
    QueuedExporter,
    QueueSettings,
    RequestConverter,
    RetrySettings,
    SendingQueue,
    _Backoff,
)

FAST = RetrySettings(
    initial_interval=Duration(0.01),
    max_interval=Duration(0.05),
    max_elapsed_time=Duration(5),
    randomization_factor=0.0,
)


class RecordingHost:
    def __init__(self) -> None:
        self.statuses: list[tuple[bool, str]] = []

    def report_status(self, healthy: bool, message: str = "") -> None:
        self.statuses.append((healthy, message))


def make_settings(name: str = "fake") -> ComponentSettings:
    return ComponentSettings(
        id=ComponentID("fake", name),
        kind=Kind.EXPORTER,
        logger=logging.LoggerAdapter(logging.getLogger("test.exporterhelper"), {}),
        telemetry=Telemetry(),
        started_at=time.time(),
    )


def metric_value(settings: ComponentSettings, name: str) -> float:
    value = settings.telemetry.registry.get_sample_value(
        f"cni_pipeline_{name}", {"exporter": str(settings.id)}
    )
    return 0.0 if value is None else value


def batch(index: int, n: int = 3) -> Batch:
    metrics = tuple(Metric(f"m{i}", MetricKind.GAUGE, float(index)) for i in range(n))
    return Batch(
        cycle=Cycle(time=1000.0 + index, previous=999.0 + index, index=index), metrics=metrics
    )


class Recorder:
    """A push function that records what it was given and fails as scripted."""

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.failures = list(failures or [])
        self.calls: list[Batch] = []
        self.sent: list[Batch] = []

    async def __call__(self, b: Batch) -> None:
        self.calls.append(b)
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(b)


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_consume_returns_at_once_while_push_blocks() -> None:
    settings = make_settings()
    release = asyncio.Event()
    pushed: list[Batch] = []

    async def push(b: Batch) -> None:
        await release.wait()
        pushed.append(b)

    exporter = QueuedExporter(settings, push, retry=FAST)
    await exporter.start(RecordingHost())
    async with asyncio.timeout(1):
        for i in range(5):
            await exporter.consume(batch(i))
    assert pushed == []
    release.set()
    await wait_for(lambda: len(pushed) == 5)
    assert [b.cycle.index for b in pushed] == [0, 1, 2, 3, 4]
    assert metric_value(settings, "exporter_sent_datapoints_total") == 15
    assert metric_value(settings, "exporter_last_success_timestamp_seconds") > 0
    await exporter.shutdown()


async def test_full_queue_drops_oldest_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings()
    push = Recorder()
    exporter = QueuedExporter(settings, push, queue=QueueSettings(queue_size=2), retry=FAST)
    # Not started yet: nothing drains the queue, so the third batch pushes the first out.
    with caplog.at_level(logging.WARNING):
        await exporter.consume(batch(0, n=4))
        await exporter.consume(batch(1))
        await exporter.consume(batch(2))
    assert metric_value(settings, "exporter_dropped_datapoints_total") == 4
    assert metric_value(settings, "exporter_queue_size") == 2
    assert any(
        "4 datapoints" in r.getMessage() and "queue full" in r.getMessage() for r in caplog.records
    )
    await exporter.start(RecordingHost())
    await exporter.shutdown()
    assert [b.cycle.index for b in push.sent] == [1, 2]
    assert metric_value(settings, "exporter_queue_size") == 0


@pytest.mark.parametrize(
    "error",
    [
        RetryableExportError("503"),
        ThrottledError("slow down"),
        ConnectionResetError("reset"),
        RuntimeError("unexpected"),
    ],
    ids=["retryable", "throttled", "connection", "other"],
)
async def test_transient_errors_are_retried_until_success(error: Exception) -> None:
    settings = make_settings()
    host = RecordingHost()
    push = Recorder([error, error])
    exporter = QueuedExporter(settings, push, retry=FAST)
    await exporter.start(host)
    await exporter.consume(batch(0))
    await wait_for(lambda: push.sent)
    assert len(push.calls) == 3
    assert metric_value(settings, "exporter_retries_total") == 2
    assert metric_value(settings, "exporter_sent_datapoints_total") == 3
    assert metric_value(settings, "exporter_failed_datapoints_total") == 0
    assert metric_value(settings, "exporter_possible_duplicate_datapoints_total") == 0
    assert host.statuses[0][0] is False and host.statuses[-1] == (True, "")
    await exporter.shutdown()


async def test_permanent_error_is_never_retried() -> None:
    settings = make_settings()
    host = RecordingHost()
    push = Recorder([PermanentExportError("400 InvalidParameterValue")])
    exporter = QueuedExporter(settings, push, retry=FAST)
    await exporter.start(host)
    await exporter.consume(batch(0))
    await exporter.shutdown()
    assert len(push.calls) == 1
    assert metric_value(settings, "exporter_failed_datapoints_total") == 3
    assert metric_value(settings, "exporter_retries_total") == 0
    assert host.statuses[-1][0] is False and "InvalidParameterValue" in host.statuses[-1][1]


async def test_throttle_delay_from_server_is_honoured() -> None:
    settings = make_settings()
    push = Recorder([ThrottledError("Rate exceeded", retry_after=0.3)])
    exporter = QueuedExporter(settings, push, retry=FAST)
    await exporter.start(RecordingHost())
    started = time.monotonic()
    await exporter.consume(batch(0))
    await wait_for(lambda: push.sent)
    # The backoff alone would retry after 10ms; the server asked for 300ms.
    assert time.monotonic() - started >= 0.3
    await exporter.shutdown()


async def test_gives_up_after_max_elapsed_time() -> None:
    settings = make_settings()
    push = Recorder([RetryableExportError("down")] * 1000)
    retry = RetrySettings(
        initial_interval=Duration(0.02), max_interval=Duration(0.05), max_elapsed_time=Duration(0.3)
    )
    exporter = QueuedExporter(settings, push, retry=retry)
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0))
    await wait_for(lambda: metric_value(settings, "exporter_failed_datapoints_total") == 3)
    assert 2 <= len(push.calls) < 100
    assert push.sent == []
    await exporter.shutdown()


async def test_retry_disabled_fails_at_once() -> None:
    settings = make_settings()
    push = Recorder([RetryableExportError("down")])
    exporter = QueuedExporter(settings, push, retry=RetrySettings(enabled=False))
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0))
    await exporter.shutdown()
    assert len(push.calls) == 1
    assert metric_value(settings, "exporter_failed_datapoints_total") == 3


async def test_timeout_cuts_attempt_and_counts_possible_duplicate() -> None:
    settings = make_settings()
    attempts = 0
    sent: list[Batch] = []

    async def push(b: Batch) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.sleep(60)  # hangs past the timeout
        sent.append(b)

    exporter = QueuedExporter(settings, push, retry=FAST, timeout=0.05)
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0))
    await wait_for(lambda: sent, timeout=5)
    assert attempts == 2
    assert metric_value(settings, "exporter_possible_duplicate_datapoints_total") == 3
    await exporter.shutdown()


async def test_ambiguous_error_counts_possible_duplicate() -> None:
    settings = make_settings()
    push = Recorder([AmbiguousExportError("read timeout after sending")])
    exporter = QueuedExporter(settings, push, retry=FAST)
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0, n=7))
    await exporter.shutdown()
    assert len(push.sent) == 1
    assert metric_value(settings, "exporter_possible_duplicate_datapoints_total") == 7


async def test_shutdown_drains_queue_then_calls_on_shutdown() -> None:
    settings = make_settings()
    order: list[str] = []

    async def push(b: Batch) -> None:
        await asyncio.sleep(0.01)
        order.append(f"push{b.cycle.index}")

    async def on_start() -> None:
        order.append("start")

    async def on_shutdown() -> None:
        order.append("closed")

    exporter = QueuedExporter(
        settings, push, retry=FAST, on_start=on_start, on_shutdown=on_shutdown
    )
    await exporter.start(RecordingHost())
    for i in range(5):
        await exporter.consume(batch(i))
    await exporter.shutdown()
    assert order == ["start", "push0", "push1", "push2", "push3", "push4", "closed"]
    await exporter.shutdown()  # twice is safe
    assert order[-1] == "closed" and order.count("closed") == 1


async def test_shutdown_cuts_long_backoff_to_fit_the_grace() -> None:
    settings = make_settings()
    push = Recorder([RetryableExportError("503")])
    slow = RetrySettings(initial_interval=Duration(30), max_interval=Duration(60))
    exporter = QueuedExporter(settings, push, retry=slow, shutdown_grace=2.0)
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0))
    await wait_for(lambda: push.calls)  # the first attempt failed; a 30s backoff began
    started = time.monotonic()
    await exporter.shutdown()
    assert len(push.sent) == 1
    assert time.monotonic() - started < 2.5  # within the grace, not after the 30s backoff
    assert metric_value(settings, "exporter_dropped_datapoints_total") == 0


async def test_shutdown_grace_expiry_drops_and_counts_what_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings()

    async def push(b: Batch) -> None:
        await asyncio.sleep(60)

    exporter = QueuedExporter(settings, push, retry=FAST, timeout=60, shutdown_grace=0.2)
    await exporter.start(RecordingHost())
    for i in range(3):
        await exporter.consume(batch(i))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await exporter.shutdown()
    assert time.monotonic() - started < 3
    # One batch was in flight (cancelled), two were still queued: all are counted as dropped.
    assert metric_value(settings, "exporter_dropped_datapoints_total") == 9
    assert metric_value(settings, "exporter_sent_datapoints_total") == 0
    assert any("shutdown grace" in r.getMessage() for r in caplog.records)


async def test_consume_after_shutdown_is_dropped_and_counted() -> None:
    settings = make_settings()
    push = Recorder()
    exporter = QueuedExporter(settings, push, retry=FAST)
    await exporter.start(RecordingHost())
    await exporter.shutdown()
    await exporter.consume(batch(0))
    assert push.calls == []
    assert metric_value(settings, "exporter_dropped_datapoints_total") == 3


async def test_shutdown_without_start_is_safe() -> None:
    settings = make_settings()
    closed: list[bool] = []

    async def on_shutdown() -> None:
        closed.append(True)

    exporter = QueuedExporter(settings, Recorder(), on_shutdown=on_shutdown)
    await exporter.consume(batch(0))
    await exporter.shutdown()
    await exporter.shutdown()
    assert closed == []  # never started, so nothing to close
    assert metric_value(settings, "exporter_dropped_datapoints_total") == 3


async def test_queue_disabled_sends_in_the_caller() -> None:
    settings = make_settings()
    push = Recorder([RetryableExportError("once")])
    exporter = QueuedExporter(settings, push, queue=QueueSettings(enabled=False), retry=FAST)
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0))
    assert len(push.sent) == 1  # sent, retry included, before consume returned
    await exporter.shutdown()


async def test_several_consumers_push_concurrently() -> None:
    settings = make_settings()
    inside = 0
    peak = 0
    all_in = asyncio.Event()

    async def push(b: Batch) -> None:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        if inside == 3:
            all_in.set()
        async with asyncio.timeout(5):
            await all_in.wait()
        inside -= 1

    exporter = QueuedExporter(settings, push, queue=QueueSettings(num_consumers=3), retry=FAST)
    await exporter.start(RecordingHost())
    for i in range(3):
        await exporter.consume(batch(i))
    await exporter.shutdown()
    assert peak == 3
    assert metric_value(settings, "exporter_sent_datapoints_total") == 9


async def test_sending_queue_sizes_requests_by_items() -> None:
    settings = make_settings()
    sent: list[list[int]] = []

    async def push(request: list[int]) -> None:
        sent.append(request)

    sender: SendingQueue[list[int]] = SendingQueue(
        settings, push, items_of=len, size_of=len, queue=QueueSettings(queue_size=10), retry=FAST
    )
    await sender.offer(list(range(4)))
    await sender.offer(list(range(4)))
    assert sender.held == 8
    await sender.offer(list(range(5)))  # 13 > 10: the oldest request (4 items) goes
    assert sender.held == 9
    await sender.offer(list(range(11)))  # alone larger than the queue: refused, counted
    assert metric_value(settings, "exporter_dropped_datapoints_total") == 15
    await sender.start(RecordingHost())
    await sender.shutdown()
    assert [len(r) for r in sent] == [4, 5]


def test_backoff_grows_by_multiplier_and_caps() -> None:
    settings = RetrySettings(
        initial_interval=Duration(1),
        max_interval=Duration(3),
        multiplier=1.5,
        randomization_factor=0.0,
    )
    backoff = _Backoff(settings, random.Random(1))
    assert [round(backoff.next_delay(), 3) for _ in range(5)] == [1.0, 1.5, 2.25, 3.0, 3.0]


def test_backoff_jitter_stays_within_the_factor() -> None:
    backoff = _Backoff(
        RetrySettings(
            initial_interval=Duration(2), max_interval=Duration(2), randomization_factor=0.5
        ),
        random.Random(7),
    )
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(1.0 <= d <= 3.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # actually randomised


def test_default_settings_are_valid_and_bad_ones_name_the_key() -> None:
    assert list(validate_config(QueueSettings())) == []
    assert list(validate_config(RetrySettings())) == []
    bad = RetrySettings(
        initial_interval=Duration(10), max_interval=Duration(5), randomization_factor=1.5
    )
    keys = [key for key, _ in validate_config(bad)]
    assert keys == ["max_interval", "randomization_factor"]
    assert [key for key, _ in validate_config(QueueSettings(num_consumers=0, queue_size=0))] == [
        "num_consumers",
        "queue_size",
    ]


async def test_wanted_families_default_to_none_scraped() -> None:
    exporter = QueuedExporter(make_settings(), Recorder())
    assert exporter.wanted_families() == frozenset()
    await exporter.shutdown()


class Accumulator:
    """A converter that holds state, as CloudWatch's does: values gather into requests of
    ``full`` items across batches; a full request is ready at once, the rest waits for flush."""

    def __init__(self, full: int = 4) -> None:
        self.full = full
        self.pending: list[float] = []

    def convert(self, b: Batch) -> list[tuple[float, ...]]:
        ready = []
        for metric in b.metrics:
            self.pending.append(metric.value)
            if len(self.pending) == self.full:
                ready.append(tuple(self.pending))
                self.pending = []
        return ready

    def flush(self) -> list[tuple[float, ...]]:
        held, self.pending = self.pending, []
        return [tuple(held)] if held else []

    def converter(self, flush_interval: float | None = None) -> RequestConverter[tuple[float, ...]]:
        return RequestConverter(convert=self.convert, flush=self.flush, items_of=len,
                                size_of=len, flush_interval=flush_interval)


async def test_converter_sends_full_requests_at_once_and_the_rest_at_shutdown() -> None:
    settings = make_settings()
    sent: list[tuple[float, ...]] = []

    async def push(request: tuple[float, ...]) -> None:
        sent.append(request)

    acc = Accumulator(full=4)
    exporter = QueuedExporter(settings, push, converter=acc.converter(), retry=FAST)
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0, n=3))
    await exporter.consume(batch(1, n=3))  # 6 values: one full request of 4, 2 held
    await wait_for(lambda: len(sent) == 1)
    assert sent == [(0.0, 0.0, 0.0, 1.0)]
    assert acc.pending == [1.0, 1.0]
    await exporter.shutdown()  # what the converter holds goes out before the queue drains
    assert sent == [(0.0, 0.0, 0.0, 1.0), (1.0, 1.0)]
    assert metric_value(settings, "exporter_sent_datapoints_total") == 6


async def test_converter_flush_interval_hands_over_what_it_holds() -> None:
    settings = make_settings()
    sent: list[tuple[float, ...]] = []

    async def push(request: tuple[float, ...]) -> None:
        sent.append(request)

    exporter = QueuedExporter(
        settings, push, converter=Accumulator(full=100).converter(flush_interval=0.05), retry=FAST
    )
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0, n=2))
    await exporter.consume(batch(1, n=1))
    await wait_for(lambda: sent)  # the timer flushed both cycles as one request
    assert sent == [(0.0, 0.0, 1.0)]
    await exporter.shutdown()
    assert len(sent) == 1


async def test_queue_is_sized_in_the_converters_unit() -> None:
    settings = make_settings()
    acc = Accumulator(full=4)
    exporter = QueuedExporter(settings, Recorder(), converter=acc.converter(),
                              queue=QueueSettings(queue_size=8), retry=FAST)
    for i in range(3):  # not started: three full requests of 4 wait; the first is dropped
        await exporter.consume(batch(i, n=4))
    assert exporter.sender.held == 8
    assert metric_value(settings, "exporter_queue_size") == 8
    assert metric_value(settings, "exporter_dropped_datapoints_total") == 4
    await exporter.shutdown()


async def test_consume_after_shutdown_drops_what_the_converter_would_hold() -> None:
    settings = make_settings()
    exporter = QueuedExporter(settings, Recorder(), converter=Accumulator(full=4).converter(),
                              retry=FAST)
    await exporter.start(RecordingHost())
    await exporter.shutdown()
    await exporter.consume(batch(0, n=6))  # one full request and two held values: all dropped
    assert metric_value(settings, "exporter_dropped_datapoints_total") == 6


async def test_start_twice_starts_once() -> None:
    settings = make_settings()
    starts: list[int] = []

    async def on_start() -> None:
        starts.append(1)

    push = Recorder()
    exporter = QueuedExporter(settings, push, queue=QueueSettings(num_consumers=2),
                              retry=FAST, on_start=on_start)
    await exporter.start(RecordingHost())
    await exporter.start(RecordingHost())
    assert starts == [1]
    assert exporter.running
    await exporter.consume(batch(0))
    await exporter.shutdown()
    assert len(push.sent) == 1
    assert not exporter.running


async def test_delivered_returns_once_what_was_consumed_has_been_sent() -> None:
    """What the export gate of leader election waits on: held requests go out at once (no wait
    for the flush timer), and delivered() returns only after the push of each has finished."""
    settings = make_settings()
    release = asyncio.Event()
    sent: list[tuple[float, ...]] = []

    async def push(request: tuple[float, ...]) -> None:
        await release.wait()
        sent.append(request)

    exporter = QueuedExporter(settings, push, retry=FAST,
                              converter=Accumulator(full=100).converter(flush_interval=3600))
    await exporter.start(RecordingHost())
    await exporter.consume(batch(0, n=2))
    waiting = asyncio.create_task(exporter.delivered())
    await asyncio.sleep(0.05)
    assert not waiting.done() and sent == []  # flushed to the queue, its push still blocked
    release.set()
    async with asyncio.timeout(5):
        await waiting
    assert sent == [(0.0, 0.0)]
    async with asyncio.timeout(5):
        await exporter.delivered()  # nothing held: returns at once
    await exporter.shutdown()
