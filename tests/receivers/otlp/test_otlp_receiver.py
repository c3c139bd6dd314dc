"""The ``otlp`` receiver fed by the real ``otlp`` exporter, over gRPC and HTTP, with delta and
cumulative counters: what the exporter was handed comes out of the receiver as the same metrics
(names, kinds, values, units, attributes, descriptions), one batch per cycle time."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.error
import urllib.request

import pytest

from exporters.otlp import OtlpExporterConfig
from exporters.otlp import factory as exporter_factory
from pipeline import (
    Batch,
    ComponentError,
    ComponentID,
    ComponentSettings,
    Cycle,
    Kind,
    Metric,
    MetricKind,
    Telemetry,
    validate_config,
)
from receivers.otlp import OtlpReceiverConfig
from receivers.otlp import factory as receiver_factory
from receivers.otlp.config import ProtocolConfig, ProtocolsConfig
from tests.support.recording import RecordingHost, RecordingSink

T0 = 1_800_000_000.0
ZONE = (("zone", "us-west-2a"),)


def settings(kind: Kind, name: str) -> ComponentSettings:
    cid = ComponentID("otlp")
    return ComponentSettings(id=cid, kind=kind, telemetry=Telemetry(), started_at=time.time(),
                             logger=logging.LoggerAdapter(logging.getLogger(f"test.{name}"), {}))


def batch(n: int, added: float) -> Batch:
    return Batch(cycle=Cycle(time=T0 + 30 * n, previous=T0 + 30 * (n - 1), index=n), metrics=(
        Metric("assignIPAddresses", MetricKind.GAUGE, 262.0 + n, "Count",
               description="IPs assigned"),
        Metric("assignIPAddresses", MetricKind.GAUGE, 100.0 + n, "Count", ZONE,
               description="IPs assigned"),
        Metric("addReqCount", MetricKind.COUNTER, added, "Count", description="add requests"),
        Metric("awsAPILatency", MetricKind.GAUGE, 842.5, "Milliseconds"),
    ))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(("protocol", "temporality"), [
    ("grpc", "delta"), ("http", "delta"), ("grpc", "cumulative"), ("http", "cumulative")])
async def test_what_the_exporter_sends_the_receiver_hands_on(protocol: str,
                                                             temporality: str) -> None:
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    protocols = ProtocolsConfig(grpc=ProtocolConfig(endpoint=endpoint if protocol == "grpc"
                                                    else ""),
                                http=ProtocolConfig(endpoint=endpoint if protocol == "http"
                                                    else ""))
    sink = RecordingSink()
    receiver = receiver_factory.create(settings(Kind.RECEIVER, "receiver"),
                                       OtlpReceiverConfig(protocols=protocols), sink)
    await receiver.start(RecordingHost())
    exporter_config = OtlpExporterConfig(
        endpoint=endpoint if protocol == "grpc" else f"http://{endpoint}", protocol=protocol,
        temporality=temporality, cluster_id="c", region="us-west-2")
    exporter_config = OtlpExporterConfig(**{**exporter_config.__dict__,
                                            "tls": exporter_config.tls.__class__(insecure=True)})
    exporter = exporter_factory.create(settings(Kind.EXPORTER, "exporter"), exporter_config)
    await exporter.start(RecordingHost())
    try:
        for n, added in enumerate((7.0, 5.0, 9.0)):
            await exporter.consume(batch(n, added))
            await exporter.delivered()
        async with asyncio.timeout(20):
            while len({b.cycle.time for b in sink.batches}) < 3:
                await asyncio.sleep(0.05)
    finally:
        await exporter.shutdown()
        await receiver.shutdown()
    by_time = {b.cycle.time: b for b in sink.batches}
    assert sorted(by_time) == [T0, T0 + 30, T0 + 60]
    for n, at in enumerate(sorted(by_time)):
        got = {(m.name, m.attributes): m for m in by_time[at].metrics}
        assert got[("assignIPAddresses", ())].value == 262.0 + n
        assert got[("assignIPAddresses", ZONE)].value == 100.0 + n
        assert got[("assignIPAddresses", ())].description == "IPs assigned"
        assert got[("awsAPILatency", ())].unit == "Milliseconds"
        assert got[("awsAPILatency", ())].kind is MetricKind.GAUGE
        counter = got[("addReqCount", ())]
        assert counter.kind is MetricKind.COUNTER and counter.unit == "Count"
        # Cumulative totals come back as the same increases (the first total: the first one).
        assert counter.value == (7.0, 5.0, 9.0)[n]


def test_config() -> None:
    assert validate_config(OtlpReceiverConfig()) == []
    off = ProtocolsConfig(grpc=ProtocolConfig(), http=ProtocolConfig())
    assert [k for k, _ in validate_config(OtlpReceiverConfig(protocols=off))] == ["protocols"]
    bad = ProtocolsConfig(http=ProtocolConfig(endpoint="4318"))
    assert "protocols.http.endpoint" in [k for k, _ in validate_config(
        OtlpReceiverConfig(protocols=bad))]


async def test_http_refuses_what_is_not_otlp_and_a_busy_port() -> None:
    port = free_port()
    protocols = ProtocolsConfig(grpc=ProtocolConfig(),
                                http=ProtocolConfig(endpoint=f"127.0.0.1:{port}"))
    receiver = receiver_factory.create(settings(Kind.RECEIVER, "r"),
                                       OtlpReceiverConfig(protocols=protocols), RecordingSink())
    await receiver.start(RecordingHost())
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/metrics",
                                         data=b"\xff\xfe not protobuf", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(urllib.request.urlopen, request, None, 5)
        assert refused.value.code == 400
        again = receiver_factory.create(settings(Kind.RECEIVER, "r2"),
                                        OtlpReceiverConfig(protocols=protocols), RecordingSink())
        with pytest.raises(ComponentError, match="cannot listen"):
            await again.start(RecordingHost())
    finally:
        await receiver.shutdown()


def test_a_cumulative_series_older_than_the_receiver_starts_from_a_baseline() -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from receivers.otlp._convert import Converter

    def request(total: float, at: float) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        metric = req.resource_metrics.add().scope_metrics.add().metrics.add()
        metric.name, metric.unit = "addReqCount", "1"
        metric.sum.is_monotonic, metric.sum.aggregation_temporality = True, 2
        point = metric.sum.data_points.add()
        point.as_double, point.time_unix_nano = total, int(at * 1e9)
        point.start_time_unix_nano = int((T0 - 3600) * 1e9)  # began an hour before we listened
        return req

    converter = Converter(started_at=T0)
    assert converter.batches(request(500.0, T0)) == []  # a baseline, not 500 new requests
    (second,) = converter.batches(request(512.0, T0 + 30))
    assert [(m.name, m.value) for m in second.metrics] == [("addReqCount", 12.0)]
    (reset,) = converter.batches(request(3.0, T0 + 60))
    assert reset.metrics[0].value == 3.0  # a drop is a reset: the new total counts whole
