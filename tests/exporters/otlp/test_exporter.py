"""The otlp exporter against real OTLP/gRPC and OTLP/HTTP receivers on loopback.

Every test drives create/start/consume/shutdown directly and asserts on what the receiver decoded:
names, values, temporality, start times, attributes, resources, headers, compression, and how a
dead or refusing receiver is handled (a logged, counted drop; never a hang, never our own retry).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from exporters.otlp import OtlpExporter, OtlpExporterConfig, TLSConfig, factory
from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
    Cycle,
    Distribution,
    Duration,
    Metric,
    MetricKind,
    Target,
    TargetHealth,
    TargetScrape,
)
from tests.support.otlp_receiver import (
    GrpcReceiver,
    HttpReceiver,
    Point,
    Received,
    TcpRelay,
    flatten,
    self_signed_certificate,
)

T0 = 1_800_000_000.0
NS = 1_000_000_000
ZONE = (("zone", "us-west-2a"),)
DELTA, CUMULATIVE = 1, 2
Receiver = GrpcReceiver | HttpReceiver
# Generous bound for "does not hang": the exporter's timeout is 1-2 s in these tests.
DEADLINE = 20.0


def cycle(n: int) -> Cycle:
    return Cycle(time=T0 + 30 * n, previous=T0 + 30 * (n - 1), index=n)


def cluster_batch(n: int = 1, add: float = 7.0) -> Batch:
    return Batch(cycle=cycle(n), metrics=(
        Metric("totalIPAddresses", MetricKind.GAUGE, 96.0, description="IPs"),
        Metric("totalIPAddresses", MetricKind.GAUGE, 32.0, attributes=ZONE),
        Metric("addReqCount", MetricKind.COUNTER, add),
        Metric("awsAPILatency", MetricKind.GAUGE, 812.5, unit="Milliseconds"),
        Metric("ipUtilization", MetricKind.GAUGE, 37.5, unit="Percent", derived=True),
        Metric("podSetupLatency", MetricKind.DISTRIBUTION, 6.0, unit="Milliseconds",
               distribution=Distribution(bounds=(10.0, 100.0), counts=(1.0, 2.0, 3.0),
                                         sum=640.0, count=6.0)),
    ))


def make_config(receiver: Receiver | None = None, **changes: Any) -> OtlpExporterConfig:
    base: dict[str, Any] = {"tls": TLSConfig(insecure=True), "timeout": Duration(2)}
    if isinstance(receiver, HttpReceiver):
        base.update(protocol="http/protobuf", endpoint=receiver.endpoint)
    elif receiver is not None:
        base.update(endpoint=receiver.endpoint)
    base.update(changes)
    return OtlpExporterConfig(**base)


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    rx: Receiver = GrpcReceiver() if request.param == "grpc" else HttpReceiver()
    with rx:
        yield rx


async def received(rx: Receiver, count: int = 1) -> list[Received]:
    return await asyncio.to_thread(rx.wait_for, count, 10.0)


def by_name(points: list[Point]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for point in points:
        out.setdefault(point.name, []).append(point)
    return out


def sample_value(settings: ComponentSettings, name: str) -> float:
    value = settings.telemetry.registry.get_sample_value(
        f"cni_pipeline_{name}", {"exporter": str(settings.id)}
    )
    return value or 0.0


async def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# -- what arrives ----------------------------------------------------------------------------------


async def test_aggregates_arrive_with_names_values_delta_and_resource(
    receiver: Receiver, make_settings: Any, host: Any
) -> None:
    settings = make_settings()
    exporter = factory.create(settings, make_config(receiver))
    await exporter.start(host)
    try:
        await exporter.consume(cluster_batch())
        (got,) = await received(receiver)
    finally:
        await exporter.shutdown()

    points = flatten([got.request])
    names = by_name(points)
    assert list(names) == ["totalIPAddresses", "addReqCount", "awsAPILatency", "ipUtilization",
                           "podSetupLatency"]
    assert {p.time for p in points} == {int(T0 + 30) * NS}  # one cycle, one time

    total = {tuple(p.attributes.items()): p for p in names["totalIPAddresses"]}
    assert total[()].value == 96.0 and total[ZONE].value == 32.0
    assert total[()].kind == "gauge" and total[()].unit == "1" and total[()].description == "IPs"

    (add,) = names["addReqCount"]
    assert (add.kind, add.value, add.temporality, add.monotonic) == ("sum", 7.0, DELTA, True)
    assert add.start == int(T0) * NS  # the previous tick

    (latency,) = names["awsAPILatency"]
    assert (latency.kind, latency.value, latency.unit) == ("gauge", 812.5, "ms")
    assert names["ipUtilization"][0].unit == "%"  # derived metrics are sent too

    (hist,) = names["podSetupLatency"]
    assert hist.kind == "histogram" and hist.temporality == DELTA
    assert list(hist.point.bucket_counts) == [1, 2, 3]
    assert list(hist.point.explicit_bounds) == [10.0, 100.0]
    assert (hist.point.count, hist.point.sum) == (6, 640.0)
    assert not hist.point.HasField("min")  # unknown, so unset

    assert points[0].resource == {
        "service.name": "cni-pipeline", "cloud.provider": "aws", "cloud.region": "us-west-2",
        "k8s.cluster.name": "test-cluster",
    }
    assert points[0].scope == "cni-pipeline"
    assert sample_value(settings, "exporter_sent_datapoints_total") == 6
    assert host.statuses and host.statuses[-1][0] is True


async def test_cumulative_temporality_keeps_running_totals(
    receiver: Receiver, make_settings: Any, host: Any
) -> None:
    exporter = factory.create(make_settings(), make_config(receiver, temporality="cumulative"))
    await exporter.start(host)
    try:
        for n, add in ((1, 7.0), (2, 0.0), (3, 5.0)):
            await exporter.consume(cluster_batch(n, add))
            await received(receiver, n)  # in order, one at a time
    finally:
        await exporter.shutdown()
    sums = [by_name(flatten([r.request]))["addReqCount"][0] for r in receiver.received]
    assert [(p.value, p.temporality) for p in sums] == [
        (7.0, CUMULATIVE), (7.0, CUMULATIVE), (12.0, CUMULATIVE)
    ]
    assert {p.start for p in sums} == {int(T0) * NS}  # where the running total began
    assert [p.time for p in sums] == [int(T0 + 30 * n) * NS for n in (1, 2, 3)]
    hists = [by_name(flatten([r.request]))["podSetupLatency"][0] for r in receiver.received]
    assert [list(h.point.bucket_counts) for h in hists] == [[1, 2, 3], [2, 4, 6], [3, 6, 9]]
    assert {h.temporality for h in hists} == {CUMULATIVE}


async def test_headers_arrive(receiver: Receiver, make_settings: Any, host: Any) -> None:
    config = make_config(receiver, headers={"X-Scope-OrgID": "tenant-1", "authorization": "t0k"})
    exporter = factory.create(make_settings(), config)
    await exporter.start(host)
    try:
        await exporter.consume(cluster_batch())
        (got,) = await received(receiver)
    finally:
        await exporter.shutdown()
    assert got.headers["x-scope-orgid"] == "tenant-1"
    assert got.headers["authorization"] == "t0k"


async def test_cluster_id_region_and_extra_resource_attributes_from_config(
    receiver: Receiver, make_settings: Any, host: Any
) -> None:
    config = make_config(receiver, cluster_id="prod-eks", region="eu-west-1",
                         resource_attributes={"deployment.environment": "prod"})
    exporter = factory.create(make_settings(), config)
    await exporter.start(host)
    try:
        await exporter.consume(cluster_batch())
        (got,) = await received(receiver)
    finally:
        await exporter.shutdown()
    resource = flatten([got.request])[0].resource
    assert resource["k8s.cluster.name"] == "prod-eks"  # config beats AWS_CLUSTER_ID
    assert resource["cloud.region"] == "eu-west-1"
    assert resource["deployment.environment"] == "prod"


async def test_cluster_id_falls_back_to_the_shared_discovery(
    monkeypatch: pytest.MonkeyPatch, make_settings: Any, host: Any
) -> None:
    for name in ("AWS_CLUSTER_ID", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with GrpcReceiver() as rx:
        exporter = factory.create(make_settings(), make_config(rx))
        await exporter.start(host)
        try:
            await exporter.consume(cluster_batch())
            (got,) = await received(rx)
        finally:
            await exporter.shutdown()
    resource = flatten([got.request])[0].resource
    # IMDS is disabled in tests, so discovery ends at the Go helper's default.
    assert resource["k8s.cluster.name"] == "k8s-cluster"
    assert "cloud.region" not in resource


def fleet_batch(nodes: int = 2, series: int = 3) -> Batch:
    targets = []
    for i in range(nodes):
        address = f"10.0.{i}.5:61678"
        families = {
            "awscni_eni_max": [("awscni_eni_max", 4.0 + i)],
            "awscni_add_ip_req_count": [("awscni_add_ip_req_count", 100.0 * (i + 1))],
            "awscni_assigned_ip_per_cidr": [
                (f'awscni_assigned_ip_per_cidr{{cidr="10.{i}.{j}.0/28"}}', float(j))
                for j in range(series)
            ],
        }
        targets.append(TargetScrape(
            target=Target(address, url=f"http://{address}/metrics", pod=f"aws-node-{i}",
                          node=f"ip-10-0-{i}-5", namespace="kube-system", attributes=ZONE),
            health=TargetHealth(up=True, scraped_at=T0 + 30),
            families=families, process_start_time=T0 - 100 * (i + 1),
        ))
    down = TargetScrape(target=Target("10.0.9.9:61678", pod="aws-node-down"),
                        health=TargetHealth(up=False, scraped_at=T0 + 30))
    return dataclasses.replace(cluster_batch(), targets=(*targets, down))


async def test_per_target_sends_one_resource_per_node(make_settings: Any, host: Any) -> None:
    with GrpcReceiver() as rx:
        config = make_config(rx, per_target=True)
        exporter = factory.create(make_settings(), config)
        assert exporter.wanted_families() is None
        await exporter.start(host)
        try:
            await exporter.consume(fleet_batch())
            (got,) = await received(rx)
        finally:
            await exporter.shutdown()
    resources = [rm.resource for rm in got.request.resource_metrics]
    assert len(resources) == 4  # the cluster, two nodes up, one down
    points = flatten([got.request])
    node0 = [p for p in points if p.resource.get("k8s.node.name") == "ip-10-0-0-5"]
    assert node0[0].resource == {
        "k8s.cluster.name": "test-cluster", "cloud.provider": "aws", "cloud.region": "us-west-2",
        "service.name": "aws-node", "service.instance.id": "10.0.0.5:61678",
        "k8s.pod.name": "aws-node-0", "k8s.node.name": "ip-10-0-0-5",
        "k8s.namespace.name": "kube-system", "url.full": "http://10.0.0.5:61678/metrics",
        "zone": "us-west-2a",
    }
    series = {(p.name, tuple(p.attributes.items())): p for p in node0}
    assert series[("up", ())].value == 1.0
    assert series[("awscni_eni_max", ())].kind == "gauge"
    assert series[("awscni_eni_max", ())].value == 4.0
    counter = series[("awscni_add_ip_req_count", ())]
    assert (counter.kind, counter.temporality, counter.value) == ("sum", CUMULATIVE, 100.0)
    assert counter.start == int(T0 - 100) * NS  # process_start_time_seconds
    assert series[("awscni_assigned_ip_per_cidr", (("cidr", "10.0.2.0/28"),))].value == 2.0
    down = [p for p in points if p.resource.get("k8s.pod.name") == "aws-node-down"]
    assert [(p.name, p.value) for p in down] == [("up", 0.0)]
    cluster = [p for p in points if p.resource["service.name"] == "cni-pipeline"]
    assert len(cluster) == 6  # the aggregates still arrive, under their own resource


async def test_per_target_families_limit_what_is_forwarded(make_settings: Any, host: Any) -> None:
    with HttpReceiver() as rx:
        config = make_config(rx, per_target=True, per_target_families=["awscni_eni_max"])
        exporter = factory.create(make_settings(), config)
        assert exporter.wanted_families() == frozenset({"awscni_eni_max"})
        await exporter.start(host)
        try:
            await exporter.consume(fleet_batch())
            (got,) = await received(rx)
        finally:
            await exporter.shutdown()
    points = flatten([got.request])
    node_names = {p.name for p in points if p.resource["service.name"] == "aws-node"}
    assert node_names == {"up", "awscni_eni_max"}


# -- compression and endpoints ---------------------------------------------------------------------


@pytest.mark.parametrize(("compression", "encoding"), [
    ("gzip", "gzip"), ("deflate", "deflate"), ("none", ""),
])
async def test_http_compression_header_and_body(
    compression: str, encoding: str, make_settings: Any, host: Any
) -> None:
    with HttpReceiver() as rx:
        exporter = factory.create(make_settings(), make_config(rx, compression=compression))
        await exporter.start(host)
        try:
            await exporter.consume(cluster_batch())
            (got,) = await received(rx)
        finally:
            await exporter.shutdown()
    assert got.encoding == encoding
    assert got.path == "/v1/metrics"
    assert len(flatten([got.request])) == 6  # the receiver decompressed and decoded it


async def test_http_metrics_endpoint_overrides_the_path(make_settings: Any, host: Any) -> None:
    with HttpReceiver(path="/api/v1/otlp/v1/metrics") as rx:
        config = make_config(rx, endpoint="http://127.0.0.1:1",  # unused when overridden
                             metrics_endpoint=f"{rx.endpoint}/api/v1/otlp/v1/metrics")
        exporter = factory.create(make_settings(), config)
        await exporter.start(host)
        try:
            await exporter.consume(cluster_batch())
            (got,) = await received(rx)
        finally:
            await exporter.shutdown()
    assert got.path == "/api/v1/otlp/v1/metrics"


async def test_grpc_gzip_shrinks_what_goes_on_the_wire(make_settings: Any, host: Any) -> None:
    sizes: dict[str, int] = {}
    batch = fleet_batch(nodes=20, series=30)  # repetitive, so it compresses well
    with GrpcReceiver() as rx:
        for compression in ("none", "gzip"):
            with TcpRelay(rx.port) as relay:
                config = make_config(rx, endpoint=relay.endpoint, per_target=True,
                                     compression=compression)
                exporter = factory.create(make_settings(), config)
                await exporter.start(host)
                try:
                    await exporter.consume(batch)
                    await received(rx, len(sizes) + 1)
                finally:
                    await exporter.shutdown()
                sizes[compression] = relay.bytes_up
    first, second = (flatten([r.request]) for r in rx.received)
    assert len(first) == len(second) > 600  # the same data arrived both times
    assert sizes["gzip"] * 3 < sizes["none"], sizes


async def test_grpc_over_tls_with_ca_file(tmp_path: Path, make_settings: Any, host: Any) -> None:
    pytest.importorskip("cryptography")
    key, cert = self_signed_certificate()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(cert)
    with GrpcReceiver(tls=(key, cert)) as rx:
        config = make_config(rx, tls=TLSConfig(ca_file=str(ca_file)))
        exporter = factory.create(make_settings(), config)
        await exporter.start(host)
        try:
            await exporter.consume(cluster_batch())
            (got,) = await received(rx)
        finally:
            await exporter.shutdown()
    assert len(flatten([got.request])) == 6


async def test_unreadable_tls_file_fails_start_naming_the_key(
    tmp_path: Path, make_settings: Any, host: Any
) -> None:
    for protocol in ("grpc", "http/protobuf"):
        endpoint = "localhost:4317" if protocol == "grpc" else "https://localhost:4318"
        config = OtlpExporterConfig(protocol=protocol, endpoint=endpoint,
                                    tls=TLSConfig(ca_file=str(tmp_path / "missing.pem")))
        exporter = factory.create(make_settings(), config)
        with pytest.raises(ComponentError, match=r"otlp: tls\.ca_file: cannot read .*missing"):
            await exporter.start(host)
        await exporter.shutdown()


# -- failures: logged drops, never a hang, never our own retry -------------------------------------


def endpoint_for(protocol: str, port: int) -> str:
    return f"127.0.0.1:{port}" if protocol == "grpc" else f"http://127.0.0.1:{port}"


async def send_until_given_up(exporter: Any, settings: Any, host: Any) -> None:
    """Start, hand over one cycle, wait until the exporter gives its datapoints up, stop."""
    await exporter.start(host)
    try:
        await exporter.consume(cluster_batch())
        await wait_until(lambda: sample_value(settings, "exporter_failed_datapoints_total") > 0)
    finally:
        await exporter.shutdown()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_dead_receiver_is_a_logged_drop_not_a_hang(
    protocol: str, make_settings: Any, host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    config = make_config(protocol=protocol, endpoint=endpoint_for(protocol, closed_port()),
                         timeout=Duration(1))
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    async with asyncio.timeout(DEADLINE):
        await send_until_given_up(factory.create(settings, config), settings, host)
    assert time.monotonic() - started < DEADLINE
    assert sample_value(settings, "exporter_failed_datapoints_total") == 6
    assert sample_value(settings, "exporter_sent_datapoints_total") == 0
    assert sample_value(settings, "exporter_retries_total") == 0  # the SDK retried, not us
    gave_up = [r for r in caplog.records if "gave up sending 6 datapoints" in r.getMessage()]
    assert len(gave_up) == 1 and gave_up[0].levelno == logging.ERROR
    assert host.statuses[-1][0] is False


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_silent_receiver_is_cut_at_the_timeout(
    protocol: str, black_hole: int, make_settings: Any, host: Any
) -> None:
    settings = make_settings()
    config = make_config(protocol=protocol, timeout=Duration(1),
                         endpoint=endpoint_for(protocol, black_hole))
    async with asyncio.timeout(DEADLINE):
        await send_until_given_up(factory.create(settings, config), settings, host)
    assert sample_value(settings, "exporter_failed_datapoints_total") == 6


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_shutdown_during_a_hung_export_is_bounded(
    protocol: str, black_hole: int, make_settings: Any, host: Any
) -> None:
    settings = make_settings()
    config = make_config(protocol=protocol, timeout=Duration(1),
                         endpoint=endpoint_for(protocol, black_hole))
    exporter = factory.create(settings, config)
    await exporter.start(host)
    await exporter.consume(cluster_batch(1))
    await exporter.consume(cluster_batch(2))
    await asyncio.sleep(0.2)  # the first is in flight, the second queued
    started = time.monotonic()
    async with asyncio.timeout(DEADLINE):
        await exporter.shutdown()
    # Within the grace (timeout + 2 s), and every datapoint accounted for, none sent.
    assert time.monotonic() - started < 1 + 2 + 1
    lost = (sample_value(settings, "exporter_failed_datapoints_total")
            + sample_value(settings, "exporter_dropped_datapoints_total"))
    assert lost == 12
    assert sample_value(settings, "exporter_sent_datapoints_total") == 0


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_permanent_refusal_is_sent_once(
    protocol: str, make_settings: Any, host: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rx: Receiver = (GrpcReceiver(fail_with=grpc.StatusCode.INVALID_ARGUMENT)
                    if protocol == "grpc" else HttpReceiver(status=400))
    settings = make_settings()
    with rx:
        await send_until_given_up(factory.create(settings, make_config(rx)), settings, host)
    assert len(rx.received) == 1  # neither the SDK nor we retried a permanent refusal
    assert any("gave up sending" in r.getMessage() for r in caplog.records)


async def test_retryable_refusal_is_retried_by_the_sdk_alone(
    make_settings: Any, host: Any
) -> None:
    settings = make_settings()
    with HttpReceiver(status=503) as rx:
        exporter = factory.create(settings, make_config(rx, timeout=Duration(2)))
        await send_until_given_up(exporter, settings, host)
    # The SDK backs off 1s, 2s, ... within its 2 s deadline: at least one retry, and no more
    # attempts than its own limit (a second loop of ours would multiply them).
    assert 2 <= len(rx.received) <= 6
    assert sample_value(settings, "exporter_retries_total") == 0


async def test_a_failed_batch_loses_no_increase_with_cumulative(
    make_settings: Any, host: Any
) -> None:
    """Running totals are taken when a batch is accepted, so the increase of a batch the backend
    refused arrives with the next one."""
    settings = make_settings()
    with HttpReceiver() as rx:
        exporter = factory.create(settings, make_config(rx, temporality="cumulative"))
        await exporter.start(host)
        try:
            rx.status = 400
            await exporter.consume(cluster_batch(1, add=7.0))
            await wait_until(lambda: sample_value(settings, "exporter_failed_datapoints_total") > 0)
            rx.status = 200
            await exporter.consume(cluster_batch(2, add=5.0))
            await received(rx, 2)
        finally:
            await exporter.shutdown()
    last = by_name(flatten([rx.received[-1].request]))["addReqCount"][0]
    assert (last.value, last.start) == (12.0, int(T0) * NS)


# -- lifecycle -----------------------------------------------------------------------------------


async def test_shutdown_without_start_and_twice(make_settings: Any) -> None:
    exporter = factory.create(make_settings(), OtlpExporterConfig())
    await exporter.consume(cluster_batch())  # queued, never sent: counted as dropped at shutdown
    await exporter.shutdown()
    await exporter.shutdown()


async def test_start_then_shutdown_is_prompt(make_settings: Any, host: Any) -> None:
    with GrpcReceiver() as rx:
        exporter = factory.create(make_settings(), make_config(rx))
        async with asyncio.timeout(DEADLINE):
            await exporter.start(host)
            await exporter.start(host)  # a second start changes nothing
            await exporter.shutdown()
            await exporter.shutdown()
    assert rx.received == []


async def test_shutdown_flushes_what_is_queued(make_settings: Any, host: Any) -> None:
    with GrpcReceiver() as rx:
        exporter = factory.create(make_settings(), make_config(rx))
        await exporter.start(host)
        for n in (1, 2, 3):
            await exporter.consume(cluster_batch(n))
        await exporter.shutdown()
        assert len(rx.received) == 3


def test_create_returns_an_exporter_with_the_queue_sized_by_config(make_settings: Any) -> None:
    exporter = factory.create(make_settings(), OtlpExporterConfig())
    assert isinstance(exporter, OtlpExporter)
    assert exporter.endpoint == "localhost:4317"
    assert math.isclose(exporter.settings.started_at, time.time(), abs_tol=60)
