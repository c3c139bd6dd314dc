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


def test_a_summary_is_quantile_gauges_and_counted_sum_and_count() -> None:
    """As the scrape side reads a Prometheus summary: a gauge per quantile, kept apart by a
    ``quantile`` attribute, and ``_sum`` and ``_count`` as counters (cumulative: increases)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from receivers.otlp._convert import Converter

    def request(at: float, p50: float, p99: float, total: float, count: int
                ) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        metric = req.resource_metrics.add().scope_metrics.add().metrics.add()
        metric.name, metric.unit, metric.description = "apiLatency", "ms", "API latency"
        point = metric.summary.data_points.add()
        point.time_unix_nano, point.start_time_unix_nano = int(at * 1e9), int(T0 * 1e9)
        attribute = point.attributes.add()
        attribute.key, attribute.value.string_value = "api", "CreateTags"
        for quantile, value in ((0.5, p50), (0.99, p99)):
            entry = point.quantile_values.add()
            entry.quantile, entry.value = quantile, value
        point.sum, point.count = total, count
        return req

    converter = Converter(started_at=T0 - 1)    # the series began after we listened
    (first,) = converter.batches(request(T0 + 30, 12.0, 80.0, 300.0, 10))
    (second,) = converter.batches(request(T0 + 60, 14.0, 95.0, 500.0, 14))
    api = ("api", "CreateTags")
    assert [(m.name, m.kind, m.value, m.unit, m.attributes, m.quantile)
            for m in second.metrics] == [
        ("apiLatency", MetricKind.GAUGE, 14.0, "Milliseconds", (api, ("quantile", "0.5")), 0.5),
        ("apiLatency", MetricKind.GAUGE, 95.0, "Milliseconds", (api, ("quantile", "0.99")), 0.99),
        ("apiLatency_sum", MetricKind.COUNTER, 200.0, "Milliseconds", (api,), None),
        ("apiLatency_count", MetricKind.COUNTER, 4.0, "Count", (api,), None),
    ]
    assert [m.value for m in first.metrics] == [12.0, 80.0, 300.0, 10.0]  # counted whole
    assert converter.dropped == 0


@pytest.mark.parametrize("max_size", [160, 4])
def test_an_sdk_exponential_histogram_keeps_every_observation_in_its_bucket(
    max_size: int,
) -> None:
    """The OpenTelemetry SDK's own exponential histogram (its scale chosen by the SDK, rescaled
    down when ``max_size`` buckets cannot hold the range) through the OTLP encoder: each
    observation lands between the explicit bounds it lies between, and count and sum hold."""
    import random

    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

    from receivers.otlp._convert import Converter

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=[View(
        instrument_name="reconcile", aggregation=ExponentialBucketHistogramAggregation(
            max_size=max_size))])
    histogram = provider.get_meter("test").create_histogram("reconcile", unit="s")
    rng = random.Random(max_size)
    # Zeros, exact powers of two (bucket edges at every scale), and values spread over decades.
    values = [0.0, 0.0, 1.0, 2.0, 0.5, 1024.0] + [
        rng.choice([1e-3, 1.0, 1e3]) * rng.random() for _ in range(300)]
    for value in values:
        histogram.record(value)
    request = encode_metrics(reader.get_metrics_data())
    provider.shutdown()
    (batch_,) = Converter(started_at=0.0).batches(request)
    (metric,) = batch_.metrics
    dist = metric.distribution
    assert metric.kind is MetricKind.DISTRIBUTION and dist is not None
    assert list(dist.bounds) == sorted(dist.bounds) and len(dist.counts) == len(dist.bounds) + 1
    expected = [0.0] * len(dist.counts)
    for value in values:
        expected[next((i for i, bound in enumerate(dist.bounds) if value <= bound),
                      len(dist.bounds))] += 1
    assert list(dist.counts) == expected
    assert dist.count == metric.value == len(values)
    assert dist.sum == pytest.approx(sum(values))
