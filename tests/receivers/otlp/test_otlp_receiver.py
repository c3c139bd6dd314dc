"""The ``otlp`` receiver fed by the real ``otlp`` exporter, over gRPC and HTTP, with delta and
cumulative counters and histograms: what the exporter was handed comes out of the receiver as
the same metrics (names, kinds, values, units, attributes, descriptions), one batch per cycle
time; and over TLS."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from exporters.otlp import OtlpExporterConfig
from exporters.otlp import factory as exporter_factory
from pipeline import (
    Batch,
    ComponentError,
    ComponentID,
    ComponentSettings,
    Cycle,
    Distribution,
    Kind,
    Metric,
    MetricKind,
    Telemetry,
    validate_config,
)
from pipeline.configtls import ClientTLSConfig, ServerTLSConfig
from receivers.otlp import OtlpReceiverConfig
from receivers.otlp import factory as receiver_factory
from receivers.otlp.config import ProtocolConfig, ProtocolsConfig
from tests.support.kube_apiserver import make_certificates
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
        Metric("reconcileSeconds", MetricKind.DISTRIBUTION, 3.0 + n, "Seconds",
               description="reconcile time", distribution=Distribution(
                   (0.1, 1.0), (1.0 + n, 2.0, 0.0), 0.25 * n + 1.5, 3.0 + n)),
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
        histogram = got[("reconcileSeconds", ())]
        assert histogram.kind is MetricKind.DISTRIBUTION and histogram.unit == "Seconds"
        assert histogram.distribution == batch(n, 0.0).metrics[-1].distribution
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


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_tls_with_the_exporter_trusting_our_ca(protocol: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """protocols.<p>.tls: the exporter verifies the receiver's certificate against the CA and
    its batches arrive; a plaintext sender gets nothing in. REQUESTS_CA_BUNDLE is set, as many
    images set it: the exporter's ca_file must still win (requests would let it override)."""
    import requests.certs
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    cert, key, ca = make_certificates(tmp_path)
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    tls = ServerTLSConfig(cert_file=str(cert), key_file=str(key))
    on = ProtocolConfig(endpoint=endpoint, tls=tls)
    protocols = (ProtocolsConfig(grpc=on, http=ProtocolConfig()) if protocol == "grpc"
                 else ProtocolsConfig(grpc=ProtocolConfig(), http=on))
    sink = RecordingSink()
    receiver = receiver_factory.create(settings(Kind.RECEIVER, "receiver"),
                                       OtlpReceiverConfig(protocols=protocols), sink)
    await receiver.start(RecordingHost())
    url = endpoint if protocol == "grpc" else f"https://{endpoint}"
    try:
        exporter = exporter_factory.create(settings(Kind.EXPORTER, "exporter"), OtlpExporterConfig(
            endpoint=url, protocol=protocol, cluster_id="c", region="us-west-2",
            tls=ClientTLSConfig(ca_file=str(ca))))
        await exporter.start(RecordingHost())
        try:
            await exporter.consume(batch(0, 4.0))
            await exporter.delivered()
            async with asyncio.timeout(20):
                while not sink.batches:
                    await asyncio.sleep(0.05)
        finally:
            await exporter.shutdown()
        got = {m.name: m.value for m in sink.batches[0].metrics if not m.attributes}
        assert got["addReqCount"] == 4.0
        if protocol == "http":  # plaintext to a TLS port: refused, nothing handed on
            received = len(sink.batches)
            request = urllib.request.Request(f"http://{endpoint}/v1/metrics", data=b"",
                                             method="POST")
            with pytest.raises((urllib.error.URLError, ConnectionError)):
                urllib.request.urlopen(request, timeout=5)
            assert len(sink.batches) == received
    finally:
        await receiver.shutdown()


async def test_a_tls_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    tls = ServerTLSConfig(cert_file=str(tmp_path / "missing.crt"),
                          key_file=str(tmp_path / "missing.key"))
    protocols = ProtocolsConfig(grpc=ProtocolConfig(endpoint=f"127.0.0.1:{free_port()}",
                                                    tls=tls))
    receiver = receiver_factory.create(settings(Kind.RECEIVER, "receiver"),
                                       OtlpReceiverConfig(protocols=protocols), RecordingSink())
    with pytest.raises(ComponentError, match=r"tls\.cert_file: cannot read .*missing\.crt"):
        await receiver.start(RecordingHost())


def test_tls_config_problems_are_named() -> None:
    half = ProtocolConfig(endpoint="127.0.0.1:4317", tls=ServerTLSConfig(cert_file="a.crt"))
    mutual = ProtocolConfig(endpoint="127.0.0.1:4318",
                            tls=ServerTLSConfig(client_ca_file="ca.crt"))
    problems = validate_config(OtlpReceiverConfig(protocols=ProtocolsConfig(grpc=half,
                                                                            http=mutual)))
    assert ("protocols.grpc.tls.key_file", "cert_file and key_file go together") in problems
    assert any(key == "protocols.http.tls.client_ca_file" for key, _ in problems), problems
