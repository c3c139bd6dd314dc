"""Failing targets are visible: a warning naming the target when it starts failing, a line when it
recovers, and no line per cycle while it keeps failing (debug has each failure)."""

from __future__ import annotations

import logging
import socket

import pytest

from pipeline import ErrorClass, Target, TargetHealth, TargetScrape
from receivers.prometheus import factory
from receivers.prometheus._target_log import FAILING_NAMED_PER_CYCLE, FAILING_REPEAT, TargetLog
from tests.receivers.prometheus.test_receiver import (
    RecordingConsumer,
    RecordingHost,
    config,
    serve_page,
    settings,
)

LOGGER = "test.prometheus"


def closed_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == LOGGER]


async def test_a_target_that_fails_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    host = "127.0.0.31"
    port = closed_port(host)
    consumer = RecordingConsumer()
    receiver = factory.create(settings(), config([f"{host}:{port}"]), consumer)
    await receiver.start(RecordingHost())
    server = None
    try:
        await consumer.wait_for(3)  # three failed cycles
        warnings = messages(caplog, logging.WARNING)
        assert len([w for w in warnings if f"{host}:{port}" in w]) == 1, warnings
        (warning,) = warnings
        assert warning.startswith(f"target {host}:{port} failing: connect: "), warning
        assert len([d for d in messages(caplog, logging.DEBUG) if "failed: connect" in d]) >= 2
        server = await serve_page(host, "page", port)  # the target comes back
        calls = consumer.calls
        await consumer.wait_for(calls + 2)
    finally:
        await receiver.shutdown()
        if server is not None:
            server.close()
    recovered = [m for m in messages(caplog, logging.INFO) if "recovered" in m]
    assert len(recovered) == 1 and recovered[0].startswith(f"target {host}:{port} recovered after")


def failing(target: Target) -> TargetScrape:
    health = TargetHealth(up=False, scraped_at=0.0, error_class=ErrorClass.TIMEOUT, error="5s")
    return TargetScrape(target=target, health=health)


def test_pod_and_node_are_named_and_repeats_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    now = [1000.0]
    log = TargetLog(logging.LoggerAdapter(logging.getLogger(LOGGER), {}), clock=lambda: now[0])
    target = Target("10.0.1.5:61678", pod="aws-node-x", node="ip-10-0-1-5", namespace="kube-system")
    for _ in range(5):  # five cycles within the repeat window: one warning
        log.cycle([failing(target)])
        now[0] += 10
    (first,) = messages(caplog, logging.WARNING)
    assert first == ("target 10.0.1.5:61678 (pod kube-system/aws-node-x on node ip-10-0-1-5) "
                     "failing: timeout: 5s")
    now[0] += FAILING_REPEAT
    log.cycle([failing(target)])
    assert "still failing after" in messages(caplog, logging.WARNING)[-1]


def test_a_failing_fleet_names_a_bounded_number_per_cycle(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log = TargetLog(logging.LoggerAdapter(logging.getLogger(LOGGER), {}))
    fleet = [failing(Target(f"10.0.{i // 250}.{i % 250}:61678")) for i in range(500)]
    log.cycle(fleet)
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == FAILING_NAMED_PER_CYCLE + 1
    assert warnings[-1].startswith(f"{500 - FAILING_NAMED_PER_CYCLE} more target(s) failing")
