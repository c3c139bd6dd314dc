"""Delivery through a fault-injecting proxy in front of moto.

After the faults stop, a datum whose request failed before moto saw it is stored exactly once;
a request moto stored but whose answer was lost is re-sent (stored twice) and counted as a
possible duplicate; a full queue drops the oldest request, counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest

from exporters.awscloudwatch._client import map_error
from pipeline import Batch, Cycle, Duration, Metric, MetricKind, RetryableExportError
from pipeline.exporterhelper import AmbiguousExportError, RetrySettings
from tests.support.fault_proxy import PRINCIPAL, Fault, FaultProxy
from tests.support.moto_server import Moto

NS = "Kubernetes"
CLUSTER = [("CLUSTER_ID", "test-cluster")]
NAMES = ("addReqCount", "assignIPAddresses", "eniAllocated", "maxIPAddresses")


def batch(t: float, index: int, n: int = len(NAMES), value: float = 1.0) -> Batch:
    metrics = tuple(Metric(NAMES[k % len(NAMES)] if n <= len(NAMES) else f"m{k}",
                           MetricKind.GAUGE, value + index) for k in range(n))
    return Batch(cycle=Cycle(time=t, previous=t - 30, index=index), metrics=metrics)


def copies(moto: Moto, names: tuple[str, ...], times: list[float]) -> dict[str, list[float]]:
    """How many copies of each metric's datum moto holds, per cycle (SampleCount per period)."""
    cw = moto.client("cloudwatch")
    import datetime as dt

    start = dt.datetime.fromtimestamp(times[0], dt.UTC)
    end = dt.datetime.fromtimestamp(times[-1] + 30, dt.UTC)
    queries = [{"Id": f"q{i}", "MetricStat": {
        "Metric": {"Namespace": NS, "MetricName": name,
                   "Dimensions": [{"Name": k, "Value": v} for k, v in CLUSTER]},
        "Period": 30, "Stat": "SampleCount"}} for i, name in enumerate(names)]
    results = cw.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
    out: dict[str, list[float]] = {}
    for name, result in zip(names, results["MetricDataResults"], strict=True):
        by_time = {ts.timestamp(): v
                   for ts, v in zip(result["Timestamps"], result["Values"], strict=True)}
        out[name] = [by_time.get(t, 0.0) for t in times]
    return out


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def send_cycles_one_request_each(exporter: Any, times: list[float]) -> None:
    for i, t in enumerate(times):
        await exporter.consume(batch(t, i))
        await exporter.flush()


async def one_cycle_meeting(fault: Fault, moto: Moto, harness: Any, base_time: float,
                            slow_delay: float = 2.0, **config: Any) -> int:
    """Send one cycle through the proxy, whose first request meets ``fault``; how many
    requests reached moto."""
    with FaultProxy(moto.endpoint, slow_delay=slow_delay) as proxy:
        proxy.add(fault)
        exporter = await harness.start(harness.config(proxy.endpoint, **config))
        await exporter.consume(batch(base_time, 0))
        await exporter.shutdown()
        return proxy.forwarded


async def test_requests_failed_before_moto_saw_them_land_exactly_once(
    moto: Moto, harness: Any, base_time: float
) -> None:
    times = [base_time + 30 * i for i in range(5)]
    with FaultProxy(moto.endpoint) as proxy:
        # The first request meets six throttles in a row: more than botocore's own retries
        # (3 attempts) would survive. Then 500s and dropped connections for the others.
        proxy.add([Fault.THROTTLE] * 6, Fault.SERVER_ERROR, Fault.DROP_BEFORE,
                  Fault.SERVER_ERROR, Fault.THROTTLE, Fault.DROP_BEFORE)
        exporter = await harness.start(harness.config(proxy.endpoint))
        await send_cycles_one_request_each(exporter, times)
        await wait_until(lambda: harness.metric("exporter_sent_datapoints_total") == 20)
        await exporter.shutdown()
        assert not proxy.script
        assert proxy.faults_applied(Fault.THROTTLE) == 7
        assert proxy.forwarded == 5  # each request reached moto once
    assert copies(moto, NAMES, times) == {name: [1.0] * 5 for name in NAMES}
    assert harness.metric("exporter_retries_total") == 11
    assert harness.metric("exporter_failed_datapoints_total") == 0
    # A dropped connection is ambiguous from the client's side (it cannot tell whether the
    # request got through), so those re-sends are counted as possible duplicates, though
    # here moto never saw them.
    assert harness.metric("exporter_possible_duplicate_datapoints_total") == 8
    assert harness.host.statuses[-1][0] is True


async def test_answer_lost_after_moto_stored_it_is_a_counted_duplicate(
    moto: Moto, harness: Any, base_time: float
) -> None:
    assert await one_cycle_meeting(Fault.DROP_AFTER, moto, harness, base_time) == 2
    assert copies(moto, NAMES, [base_time]) == {name: [2.0] for name in NAMES}
    assert harness.metric("exporter_possible_duplicate_datapoints_total") == 4
    assert harness.metric("exporter_sent_datapoints_total") == 4


async def test_slow_answer_within_read_timeout_is_not_resent(
    moto: Moto, harness: Any, base_time: float
) -> None:
    forwarded = await one_cycle_meeting(Fault.SLOW, moto, harness, base_time, slow_delay=1.0,
                                        read_timeout=Duration(5))
    assert forwarded == 1
    assert copies(moto, NAMES, [base_time]) == {name: [1.0] for name in NAMES}
    assert harness.metric("exporter_retries_total") == 0


async def test_slow_answer_past_read_timeout_is_resent_and_counted(
    moto: Moto, harness: Any, base_time: float
) -> None:
    forwarded = await one_cycle_meeting(Fault.SLOW, moto, harness, base_time, slow_delay=2.0,
                                        read_timeout=Duration(0.5))
    assert forwarded == 2
    assert copies(moto, NAMES, [base_time]) == {name: [2.0] for name in NAMES}
    assert harness.metric("exporter_possible_duplicate_datapoints_total") == 4


async def test_access_denied_names_permission_and_principal_and_is_not_retried(
    moto: Moto, harness: Any, base_time: float, caplog: pytest.LogCaptureFixture
) -> None:
    with FaultProxy(moto.endpoint) as proxy:
        proxy.add(Fault.ACCESS_DENIED)
        exporter = await harness.start(harness.config(proxy.endpoint))
        with caplog.at_level(logging.ERROR):
            await exporter.consume(batch(base_time, 0))
            await exporter.shutdown()
        assert [f for op, f in proxy.log if op == "PutMetricData"] == [Fault.ACCESS_DENIED]
    error = next(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "cloudwatch:PutMetricData" in error and PRINCIPAL in error
    assert harness.metric("exporter_failed_datapoints_total") == 4
    assert harness.host.statuses[-1][0] is False
    assert moto.list_metrics(NS) == []


async def test_full_queue_drops_the_oldest_request_only(
    moto: Moto, harness: Any, base_time: float, caplog: pytest.LogCaptureFixture
) -> None:
    times = [base_time + 30 * i for i in range(3)]
    with FaultProxy(moto.endpoint) as proxy:
        proxy.add([Fault.THROTTLE] * 10_000)
        cfg = harness.config(proxy.endpoint, max_datums_held=1000, max_concurrent_requests=1,
                             retry_on_failure=RetrySettings(initial_interval=Duration(0.05),
                                                            max_interval=Duration(0.1),
                                                            max_elapsed_time=Duration(0)))
        exporter = await harness.start(cfg)
        with caplog.at_level(logging.WARNING):
            # 1000 datums a cycle: each is a full request, queued as soon as consumed.
            await exporter.consume(batch(times[0], 0, n=1000))
            await wait_until(lambda: proxy.log)  # the worker has taken cycle 0
            for i, t in enumerate(times[1:], start=1):
                await exporter.consume(batch(t, i, n=1000))
            # Cycle 0 is being retried, cycle 1 waits in the queue; cycle 2 arrives, the queue
            # (1000 datums) is full, and cycle 1, the oldest waiting, is dropped.
            assert harness.metric("exporter_dropped_datapoints_total") == 1000
            await wait_until(lambda: harness.metric("exporter_retries_total") >= 3)
            proxy.script.clear()  # throttling ends
            await exporter.shutdown()
    assert any("1000 datapoints" in r.getMessage() and "queue full" in r.getMessage()
               for r in caplog.records)
    counts = copies(moto, ("m0", "m999"), times)
    assert counts == {"m0": [1.0, 0.0, 1.0], "m999": [1.0, 0.0, 1.0]}
    assert harness.metric("exporter_sent_datapoints_total") == 2000


async def test_refused_connection_is_retried_and_not_ambiguous(
    harness: Any, base_time: float
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        exporter = await harness.start(harness.config(endpoint, shutdown_grace=Duration(0.5)))
        await exporter.consume(batch(base_time, 0))
        await exporter.shutdown()  # flushes the one request; it cannot land within the grace
    assert harness.metric("exporter_retries_total") >= 1
    assert harness.metric("exporter_possible_duplicate_datapoints_total") == 0
    # Nothing vanishes silently: given up at the grace's end (failed) or cut off (dropped).
    assert (harness.metric("exporter_failed_datapoints_total")
            + harness.metric("exporter_dropped_datapoints_total")) == 4


def test_botocore_errors_map_to_retry_classes() -> None:
    from botocore import exceptions as be

    closed = be.ConnectionClosedError(endpoint_url="http://x")
    assert isinstance(map_error(closed, NS), AmbiguousExportError)
    read = be.ReadTimeoutError(endpoint_url="http://x")
    assert isinstance(map_error(read, NS), AmbiguousExportError)
    connect = be.EndpointConnectionError(endpoint_url="http://x")
    mapped = map_error(connect, NS)
    assert isinstance(mapped, RetryableExportError) and not isinstance(mapped,
                                                                       AmbiguousExportError)
