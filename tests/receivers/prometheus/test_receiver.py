"""The ``prometheus`` receiver end to end: factory, config, lifecycle and cycles against loopback
targets serving real aws-node pages, a dead one, a hung one and a garbage one."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import (
    Batch,
    ComponentID,
    ComponentSettings,
    Duration,
    ErrorClass,
    FamilySet,
    Kind,
    TargetScrape,
    Telemetry,
    aligned_tick,
    validate_config,
)
from receivers.prometheus import PrometheusReceiverConfig, factory
from receivers.prometheus.config import KubernetesSDConfig, static_target
from tests.support.fixtures import AWS_NODE_PAGES
from tests.support.kube_apiserver import KubeAPIServer

FIXTURES = AWS_NODE_PAGES
PAGE = (FIXTURES / "metrics-v1.data").read_bytes()
WANTED = frozenset({"awscni_assigned_ip_addresses", "awscni_eni_max", "awscni_add_ip_req_count"})
INTERVAL, TIMEOUT = 0.5, 0.3


# -- fakes and loopback targets -------------------------------------------------------------------

class RecordingConsumer:
    """The next consumer: records batches; can raise or be slow."""

    def __init__(self, wanted: FamilySet = WANTED, fail: bool = False, delay: float = 0.0):
        self.batches: list[Batch] = []
        self.arrived: list[float] = []
        self.wanted = wanted
        self.fail = fail
        self.delay = delay
        self.calls = 0
        self.wanted_calls = 0

    async def consume(self, batch: Batch) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("exporter exploded")
        self.arrived.append(time.time())
        self.batches.append(batch)

    def wanted_families(self) -> FamilySet:
        self.wanted_calls += 1
        return self.wanted

    async def wait_for(self, calls: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.calls < calls:
                await asyncio.sleep(0.02)


class RecordingHost:
    def __init__(self) -> None:
        self.statuses: list[tuple[bool, str]] = []

    def report_status(self, healthy: bool, message: str = "") -> None:
        self.statuses.append((healthy, message))


async def serve_page(host: str, mode: str, port: int = 0) -> asyncio.Server:
    """A fake aws-node: ``page``, ``page-gzip``, ``hang`` or ``garbage``, kept-alive."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                body, extra = PAGE, ""
                if mode == "hang":
                    await asyncio.sleep(3600)
                elif mode == "garbage":
                    body = PAGE.replace(b"\nawscni_eni_max 3", b"\nawscni_eni_max{ 3")
                elif mode == "page-gzip":
                    body, extra = gzip.compress(PAGE), "Content-Encoding: gzip\r\n"
                writer.write(f"HTTP/1.1 200 OK\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
                             .encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    return await asyncio.start_server(serve, host, port)


def address(server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"{host}:{port}"


@pytest.fixture
async def fleet() -> dict[str, str]:
    """name -> static target text (host:port, or a full URL for the gzip'd one)."""
    servers = {name: await serve_page(f"127.0.0.{i}", mode) for i, (name, mode) in enumerate(
        [("a", "page"), ("b", "page-gzip"), ("hang", "hang"), ("garbage", "garbage")], start=20)}
    with socket.socket() as sock:
        sock.bind(("127.0.0.29", 0))
        dead = f"127.0.0.29:{sock.getsockname()[1]}"
    targets = {name: address(server) for name, server in servers.items()}
    targets["b"] = f"http://{targets['b']}/metrics"
    targets["dead"] = dead
    yield targets
    for server in servers.values():
        server.close()


async def first_batch(
    consumer: RecordingConsumer, target: str, **changes: Any
) -> tuple[TargetScrape, ...]:
    """Run a receiver on one static target (``changes`` to its config) until its first batch;
    that batch's scrapes."""
    receiver = factory.create(settings(), replace(config([target]), **changes), consumer)
    await receiver.start(RecordingHost())
    try:
        await consumer.wait_for(1)
    finally:
        await receiver.shutdown()
    return consumer.batches[0].targets


def settings(telemetry: Telemetry | None = None, name: str = "cni") -> ComponentSettings:
    return ComponentSettings(
        id=ComponentID("prometheus", name),
        kind=Kind.RECEIVER,
        logger=logging.LoggerAdapter(logging.getLogger("test.prometheus"), {}),
        telemetry=telemetry or Telemetry(),
        started_at=time.time(),
    )


def config(targets: list[str]) -> PrometheusReceiverConfig:
    return PrometheusReceiverConfig(scrape_interval=Duration(INTERVAL),
                                    scrape_timeout=Duration(TIMEOUT), static_targets=targets)


# -- factory and config ---------------------------------------------------------------------------

def test_factory() -> None:
    assert factory.type == "prometheus"
    assert factory.kind == Kind.RECEIVER
    default = factory.default_config()
    assert isinstance(default, PrometheusReceiverConfig)
    assert default.scrape_interval == 30 and default.scrape_timeout == 10
    assert default.body_size_limit == 10 * 1024 * 1024
    assert default.kubernetes_sd is None and default.static_targets == []
    # Defaults are valid except that something must be scraped.
    assert list(validate_config(default)) == [
        ("static_targets", "set static_targets or kubernetes_sd (or both)")]
    assert list(validate_config(replace(default, static_targets=["10.0.1.5:61678"]))) == []


def test_config_cross_field_problems() -> None:
    bad = PrometheusReceiverConfig(
        scrape_interval=Duration(10), scrape_timeout=Duration(15),
        static_targets=["10.0.1.5:61678", "ftp://x:1/", "nohost", "10.0.1.5:61678", "h:99999"],
        max_concurrency=0, sample_limit=-1,
    )
    problems = dict(validate_config(bad))
    assert problems["scrape_timeout"] == "(15s) must not exceed scrape_interval (10s)"
    assert "scheme" in problems["static_targets[1]"]
    assert "no port" in problems["static_targets[2]"]
    assert "repeats static_targets[0]" in problems["static_targets[3]"]
    assert "port" in problems["static_targets[4]"]
    assert "max_concurrency" in problems and "sample_limit" in problems


def test_static_targets() -> None:
    assert static_target("10.0.1.5:61678").url == "http://10.0.1.5:61678/metrics"
    assert static_target("10.0.1.5:61678").address == "10.0.1.5:61678"
    assert static_target("https://node:8443/x?y=1").url == "https://node:8443/x?y=1"
    assert static_target("https://node").address == "node:443"
    assert static_target("http://[::1]:9100").url == "http://[::1]:9100/metrics"
    assert static_target("http://[::1]:9100").address == "[::1]:9100"


def test_yaml_lays_over_the_defaults() -> None:
    # The engine's loader (overlay) with this config class: field types it must understand.
    from pipeline._decode import overlay

    text = """
    scrape_interval: 1m
    scrape_timeout: 15s
    body_size_limit: 2MiB
    static_targets: ["10.0.1.5:61678", "https://10.0.1.6:8443/metrics"]
    kubernetes_sd: {namespace: kube-system, mode: apiserver_proxy, port: 61678}
    sample_limit: 5000
    """
    problems: list[tuple[str, str]] = []
    cfg = overlay(factory.default_config(), yaml.safe_load(text), "receivers.prometheus",
                  problems)
    assert problems == []
    assert cfg.scrape_interval == 60 and cfg.scrape_timeout == 15
    assert cfg.body_size_limit == 2 * 1024 * 1024 and cfg.sample_limit == 5000
    assert cfg.kubernetes_sd == KubernetesSDConfig(namespace="kube-system",
                                                   mode="apiserver_proxy", port=61678)
    assert [t.url for t in cfg.targets()] == ["http://10.0.1.5:61678/metrics",
                                              "https://10.0.1.6:8443/metrics"]
    assert list(validate_config(cfg)) == []
    overlay(factory.default_config(), {"scrape_interval": 30, "bogus": 1}, "r", problems)
    assert [key for key, _ in problems] == ["r.scrape_interval", "r.bogus"]


# -- lifecycle ------------------------------------------------------------------------------------

async def test_shutdown_without_start_and_twice() -> None:
    receiver = factory.create(settings(), config(["127.0.0.1:1"]), RecordingConsumer())
    await receiver.shutdown()
    await receiver.shutdown()


async def test_start_then_shutdown_twice() -> None:
    consumer = RecordingConsumer()
    receiver = factory.create(settings(), config(["127.0.0.1:1"]), consumer)
    await receiver.start(RecordingHost())
    await receiver.shutdown()
    await receiver.shutdown()
    assert consumer.wanted_calls == 1


# -- cycles ---------------------------------------------------------------------------------------

async def test_cycles_against_a_mixed_fleet(
    fleet: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.prometheus")
    telemetry = Telemetry()
    consumer, host = RecordingConsumer(), RecordingHost()
    cfg = replace(config(list(fleet.values())), count_all_samples=True)
    receiver = factory.create(settings(telemetry), cfg, consumer)
    await receiver.start(host)
    try:
        await consumer.wait_for(2)
    finally:
        await receiver.shutdown()
    assert consumer.wanted_calls == 1  # asked once, at start

    first, second = consumer.batches[:2]
    assert second.cycle.index == first.cycle.index + 1
    assert second.cycle.time == pytest.approx(first.cycle.time + INTERVAL)
    assert first.cycle.time % INTERVAL == pytest.approx(0, abs=1e-6)  # aligned ticks
    for batch, arrived in zip(consumer.batches, consumer.arrived, strict=False):
        # The hung target is cut at its timeout: the batch is not held up past it.
        assert arrived - batch.cycle.time < TIMEOUT + 1.0
        got = {scrape.target.address: scrape for scrape in batch.targets}
        assert len(batch.targets) == 5
        for name in ("a", "b"):
            scrape = got[static_target(fleet[name]).address]
            assert scrape.health.up
            assert set(scrape.families) == WANTED
            assert ("awscni_eni_max", 3.0) in scrape.families["awscni_eni_max"]
        classes = {name: got[static_target(fleet[name]).address].health.error_class
                   for name in ("hang", "garbage", "dead")}
        assert classes == {"hang": ErrorClass.TIMEOUT, "garbage": ErrorClass.PARSE,
                           "dead": ErrorClass.CONNECT}

    assert host.statuses and all(healthy for healthy, _ in host.statuses)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle ")]
    assert lines, "no summary line logged"
    assert "targets discovered=5 scraped=2 failed=3 (connect=1, parse=1, timeout=1)" in lines[0]
    assert f"samples kept={2 * 3}" in lines[0]

    sample = telemetry.registry.get_sample_value
    labels = {"receiver": "prometheus/cni"}
    cycles = sample("cni_pipeline_cycles_total", labels)
    assert cycles is not None and cycles >= 2
    assert sample("cni_pipeline_targets_discovered", labels) == 5
    assert sample("cni_pipeline_targets_up", labels) == 2
    assert sample("cni_pipeline_scrape_failures_total",
                  {**labels, "error_class": "timeout"}) == cycles
    assert sample("cni_pipeline_parse_errors_total", labels) == cycles
    assert sample("cni_pipeline_samples_kept_total", labels) == 6 * cycles
    scraped = sample("cni_pipeline_samples_scraped_total", labels)
    assert scraped is not None and scraped > 200 * cycles
    assert sample("cni_pipeline_cycle_duration_seconds_count", labels) == cycles
    assert sample("cni_pipeline_duplicate_series_total", labels) == 0


async def test_all_targets_failing_is_reported_unhealthy(fleet: dict[str, str]) -> None:
    consumer, host = RecordingConsumer(), RecordingHost()
    receiver = factory.create(settings(), config([fleet["dead"], fleet["garbage"]]), consumer)
    await receiver.start(host)
    try:
        await consumer.wait_for(1)
    finally:
        await receiver.shutdown()
    healthy, message = host.statuses[0]
    assert not healthy
    assert message == "all 2 targets failed (connect=1, parse=1)"
    assert [s.health.up for s in consumer.batches[0].targets] == [False, False]


async def test_a_failing_consumer_does_not_stop_the_loop(
    fleet: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    consumer = RecordingConsumer(fail=True)
    receiver = factory.create(settings(), config([fleet["a"]]), consumer)
    await receiver.start(RecordingHost())
    try:
        await consumer.wait_for(3)
    finally:
        await receiver.shutdown()
    assert consumer.calls >= 3
    assert any("next consumer failed" in r.getMessage() for r in caplog.records)


async def test_the_next_consumers_line_filters_reach_the_parser(fleet: dict[str, str]) -> None:
    latency = "awscni_aws_api_latency_ms"
    consumer = RecordingConsumer(wanted=WANTED | {latency})
    consumer.wanted_series = lambda: {  # type: ignore[attr-defined]
        latency: lambda series: 'quantile="0.99"' in series}
    (scrape,) = await first_batch(consumer, fleet["a"])
    lines = [series for series, _ in scrape.families[latency]]
    assert lines and all('quantile="0.99"' in series for series in lines)
    assert set(WANTED) <= set(scrape.families)  # unfiltered families are whole


async def test_connections_are_opened_ahead_of_the_first_cycle(
    fleet: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.prometheus")
    interval = 2.0
    while aligned_tick(time.time(), interval) - time.time() < 1.0:
        await asyncio.sleep(0.1)  # start with at least a second to go before the first tick
    consumer = RecordingConsumer()
    cfg = replace(config([fleet["a"], fleet["b"], fleet["dead"]]),
                  scrape_interval=Duration(interval))
    receiver = factory.create(settings(), cfg, consumer)
    await receiver.start(RecordingHost())
    try:
        async with asyncio.timeout(1.5):
            while not any("ahead of the first cycle" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.02)
        assert not consumer.batches  # before the first cycle
        assert receiver._client.idle_connections() == 2  # a and b; nobody listens at dead
        await consumer.wait_for(1, timeout=interval + 2.0)
    finally:
        await receiver.shutdown()
    assert any("connected to 2 of 3 targets" in r.getMessage() for r in caplog.records)
    assert receiver._client.connections_opened == 2  # the first cycle used them


async def test_shutdown_lets_a_batch_in_flight_arrive(fleet: dict[str, str]) -> None:
    consumer = RecordingConsumer(delay=0.3)
    receiver = factory.create(settings(), config([fleet["a"]]), consumer)
    await receiver.start(RecordingHost())
    await consumer.wait_for(1)  # the first consume has begun and is sleeping
    await receiver.shutdown()
    assert len(consumer.batches) == 1  # it finished before shutdown returned


async def test_a_slow_cycle_skips_ticks_and_counts_overruns(fleet: dict[str, str]) -> None:
    telemetry = Telemetry()
    consumer = RecordingConsumer(delay=2 * INTERVAL)
    receiver = factory.create(settings(telemetry), config([fleet["a"]]), consumer)
    await receiver.start(RecordingHost())
    try:
        await consumer.wait_for(2)
    finally:
        await receiver.shutdown()
    first, second = consumer.batches[:2]
    assert second.cycle.time - first.cycle.time >= 2 * INTERVAL - 1e-6  # no tick queued up
    overruns = telemetry.registry.get_sample_value(
        "cni_pipeline_cycle_overruns_total", {"receiver": "prometheus/cni"})
    assert overruns is not None and overruns >= 1


async def test_every_family_when_the_consumer_wants_all(fleet: dict[str, str]) -> None:
    (scrape,) = await first_batch(RecordingConsumer(wanted=None), fleet["b"])
    assert "go_goroutines" in scrape.families and "awscni_eni_max" in scrape.families
    assert scrape.process_start_time is not None


# -- with kubernetes discovery --------------------------------------------------------------------

def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def run_until(consumer: RecordingConsumer, done: Callable[[Batch], bool],
                    timeout: float = 10.0) -> Batch:
    async with asyncio.timeout(timeout):
        while True:
            for batch in consumer.batches:
                if done(batch):
                    return batch
            await asyncio.sleep(0.05)


async def test_kubernetes_sd_direct(tmp_path: Path) -> None:
    port = free_port("127.0.0.41")
    servers = [await serve_page("127.0.0.41", "page", port),
               await serve_page("127.0.0.42", "page-gzip", port)]
    consumer, host = RecordingConsumer(), RecordingHost()
    with KubeAPIServer() as api:
        api.add_pod("aws-node-a", "127.0.0.41", "node-a")
        api.add_pod("aws-node-b", "127.0.0.42", "node-b")
        api.add_pod("aws-node-c", "127.0.0.43", "node-c")  # nothing listens there
        api.add_pod("coredns", "127.0.0.44", "node-a", labels={"k8s-app": "kube-dns"})
        sd = KubernetesSDConfig(kubeconfig=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                                port=port)
        cfg = replace(config([]), kubernetes_sd=sd)
        assert list(validate_config(cfg)) == []
        receiver = factory.create(settings(), cfg, consumer)
        await receiver.start(host)
        try:
            await consumer.wait_for(1)
            # The first cycle waited for discovery: it has the whole cluster.
            first = consumer.batches[0]
            health = {s.target.pod: s.health for s in first.targets}
            assert set(health) == {"aws-node-a", "aws-node-b", "aws-node-c"}
            assert health["aws-node-a"].up and health["aws-node-b"].up
            assert health["aws-node-c"].error_class == ErrorClass.CONNECT
            assert {s.target.node for s in first.targets} == {"node-a", "node-b", "node-c"}
            api.delete_pod("aws-node-c")
            later = await run_until(consumer, lambda b: len(b.targets) == 2)
            assert all(s.health.up for s in later.targets)
        finally:
            await receiver.shutdown()
    for server in servers:
        server.close()
    assert host.statuses[0][0] is True


async def test_kubernetes_sd_through_the_apiserver_proxy(tmp_path: Path) -> None:
    port = free_port("127.0.0.45")
    server = await serve_page("127.0.0.45", "page-gzip", port)
    consumer = RecordingConsumer()
    with KubeAPIServer(token="s3cret", tls=True) as api:
        api.add_pod("aws-node-a", "127.0.0.45", "node-a", port=port)
        sd = KubernetesSDConfig(kubeconfig=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                                port=port, mode="apiserver_proxy")
        receiver = factory.create(settings(), replace(config([]), kubernetes_sd=sd), consumer)
        await receiver.start(RecordingHost())
        try:
            await consumer.wait_for(2)
        finally:
            await receiver.shutdown()
        proxied = [r for r in api.requests if "/proxy/" in r.path]
        pods_url = f"{api.url}/api/v1/namespaces/kube-system/pods/"
    server.close()
    for batch in consumer.batches[:2]:
        (scrape,) = batch.targets
        assert scrape.health.up, scrape.health.error  # https + bearer token were accepted
        assert scrape.target.url.startswith(pods_url)
        assert set(scrape.families) == WANTED
    assert len(proxied) >= 2
    assert all(r.headers.get("Authorization") == "Bearer s3cret" for r in proxied)


async def test_proxy_mode_holds_at_most_proxy_connections_to_the_api_server(
        tmp_path: Path) -> None:
    """Eight aws-node pods through the pod proxy with proxy_connections 2: every one scraped,
    over no more than two kept-alive connections to the API server (not one per scrape)."""
    port = free_port("127.0.0.45")
    server = await serve_page("127.0.0.45", "page-gzip", port)
    consumer = RecordingConsumer()
    with KubeAPIServer(tls=True) as api:
        for n in range(8):
            api.add_pod(f"aws-node-{n}", "127.0.0.45", f"node-{n}", port=port)
        sd = KubernetesSDConfig(kubeconfig=str(api.write_kubeconfig(tmp_path / "kubeconfig")),
                                port=port, mode="apiserver_proxy", proxy_connections=2)
        receiver = factory.create(settings(), replace(config([]), kubernetes_sd=sd), consumer)
        await receiver.start(RecordingHost())
        try:
            await consumer.wait_for(3)
            opened = receiver._client.connections_opened
        finally:
            await receiver.shutdown()
    server.close()
    for batch in consumer.batches[:3]:
        assert len(batch.targets) == 8 and all(s.health.up for s in batch.targets)
    assert 1 <= opened <= 2, opened
