"""The prometheus exporter over real HTTP: scraped with a real client, linted by promtool."""

from __future__ import annotations

import asyncio
import gzip
import socket
import urllib.request
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporters.prometheus import PrometheusExporter, PrometheusExporterConfig, factory
from pipeline import Batch, ComponentError, Cycle, Distribution, Metric, MetricKind
from tests.exporters.aggregates import aggregate
from tests.support.prom_server import PROMTOOL, missing_reason, promtool_check_metrics

T0 = 1_800_000_000.0
ZONE_A = (("zone", "us-west-2a"),)
ZONE_B = (("zone", "us-west-2b"),)
GO_GAUGES = {
    "eniMaxAvailable": ("awscni_eni_max", 45.0),
    "maxIPAddresses": ("awscni_ip_max", 690.0),
    "eniAllocated": ("awscni_eni_allocated", 9.0),
    "totalIPAddresses": ("awscni_total_ip_addresses", 96.0),
    "assignIPAddresses": ("awscni_assigned_ip_addresses", 41.0),
    "totalIPv4Prefixes": ("awscni_total_ipv4_prefixes", 0.0),
}


def full_batch(n: int = 1, add: float = 7.0) -> Batch:
    """Every kind of aggregate: the Go tool's six gauges, counters, latency, a derived ratio,
    group-by series and a histogram."""
    metrics = [aggregate(name, value) for name, (_, value) in GO_GAUGES.items()]
    metrics += [
        aggregate("totalIPAddresses", 64.0, ZONE_A),
        aggregate("totalIPAddresses", 32.0, ZONE_B),
        aggregate("addReqCount", add),
        aggregate("addReqCount", add - 2, ZONE_A),
        aggregate("awsAPIErr", 0.0),
        aggregate("awsAPILatency", 812.0),
        aggregate("ipamdActionInProgress", 1.0),
        Metric("ipUtilization", MetricKind.GAUGE, 42.5, unit="Percent", derived=True),
        Metric("availableIPAddresses", MetricKind.GAUGE, 55.0, derived=True,
               description="IPs not assigned to pods"),
        Metric("podSetupLatency", MetricKind.DISTRIBUTION, 6.0, unit="Milliseconds",
               distribution=Distribution(bounds=(10.0, 100.0), counts=(1.0, 2.0, 3.0),
                                         sum=640.0, count=6.0)),
    ]
    return Batch(cycle=Cycle(time=T0 + 30 * n, previous=T0 + 30 * (n - 1)), metrics=tuple(metrics))


def fetch(port: int, headers: dict[str, str] | None = None) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        return {k.lower(): v for k, v in response.headers.items()}, response.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def serving(make_settings: Any, host: Any, **changes: Any) -> PrometheusExporter:
    config = PrometheusExporterConfig(endpoint="127.0.0.1:0", **changes)
    exporter = factory.create(make_settings(), config)
    await exporter.start(host)
    return exporter


async def test_scrape_serves_the_latest_cycle(make_settings: Any, host: Any) -> None:
    exporter = await serving(make_settings, host)
    try:
        await exporter.consume(full_batch(1, add=7.0))
        await exporter.consume(full_batch(2, add=5.0))
        headers, body = await asyncio.to_thread(fetch, exporter.port)
    finally:
        await exporter.shutdown()
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    got = samples(text)
    for name, value in GO_GAUGES.values():  # the Go tool's six: same names, no labels
        assert got[(name, ())] == value, name
        label_sets = {labels for (sample, labels) in got if sample == name}
        if name != "awscni_total_ip_addresses":  # the one the batch also groups by zone
            assert label_sets == {()}, name
    assert got[("awscni_total_ip_addresses", (("zone", "us-west-2a"),))] == 64.0
    assert got[("awscni_total_ip_addresses", (("zone", "us-west-2b"),))] == 32.0
    assert got[("awscni_add_ip_req_count_total", ())] == 12.0  # a running total: 7 + 5
    assert got[("awscni_add_ip_req_count_total", (("zone", "us-west-2a"),))] == 8.0
    assert got[("awscni_aws_api_error_count_total", ())] == 0.0
    assert got[("awscni_aws_api_latency_p99_seconds", ())] == 0.812
    assert got[("awscni_ip_utilization_ratio", ())] == 0.425
    assert got[("awscni_available_ip_addresses", ())] == 55.0
    assert got[("awscni_pod_setup_latency_seconds_bucket", (("le", "0.01"),))] == 2.0
    assert got[("awscni_pod_setup_latency_seconds_bucket", (("le", "+Inf"),))] == 12.0
    assert got[("awscni_pod_setup_latency_seconds_count", ())] == 12.0
    assert "# TYPE awscni_add_ip_req_count_total counter" in text
    assert "# TYPE awscni_eni_max gauge" in text
    assert "# TYPE awscni_pod_setup_latency_seconds histogram" in text
    assert "# HELP awscni_eni_max " in text
    assert "process_" not in text and "python_" not in text  # no global registry collectors


@pytest.mark.skipif(missing_reason(PROMTOOL) is not None, reason=str(missing_reason(PROMTOOL)))
async def test_promtool_check_metrics_passes(make_settings: Any, host: Any) -> None:
    exporter = await serving(make_settings, host, const_labels={"cluster": "prod"})
    try:
        await exporter.consume(full_batch())
        _, body = await asyncio.to_thread(fetch, exporter.port)
    finally:
        await exporter.shutdown()
    result = await asyncio.to_thread(promtool_check_metrics, body)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""
    assert 'awscni_eni_max{cluster="prod"} 45.0' in body.decode()


@pytest.mark.skipif(missing_reason(PROMTOOL) is not None, reason=str(missing_reason(PROMTOOL)))
def test_promtool_would_catch_a_bad_page() -> None:
    """The lint check above can fail: promtool flags what we avoid (ms units, no HELP)."""
    result = promtool_check_metrics("# TYPE awscni_latency_ms gauge\nawscni_latency_ms 1\n")
    assert result.returncode != 0


async def test_openmetrics_and_gzip_negotiation(make_settings: Any, host: Any) -> None:
    exporter = await serving(make_settings, host)
    try:
        await exporter.consume(full_batch())
        om_headers, om_body = await asyncio.to_thread(
            fetch, exporter.port, {"Accept": "application/openmetrics-text; version=1.0.0"})
        gz_headers, gz_body = await asyncio.to_thread(
            fetch, exporter.port, {"Accept-Encoding": "gzip"})
    finally:
        await exporter.shutdown()
    assert om_headers["content-type"].startswith("application/openmetrics-text")
    om_text = om_body.decode()
    assert om_text.endswith("# EOF\n")
    assert "# TYPE awscni_add_ip_req_count counter" in om_text
    assert "awscni_add_ip_req_count_total 7.0" in om_text
    assert gz_headers.get("content-encoding") == "gzip"
    assert b"awscni_eni_max 45.0" in gzip.decompress(gz_body)


async def test_empty_page_before_the_first_cycle(make_settings: Any, host: Any) -> None:
    exporter = await serving(make_settings, host)
    try:
        _, body = await asyncio.to_thread(fetch, exporter.port)
    finally:
        await exporter.shutdown()
    assert body == b""


async def test_port_in_use_fails_start_naming_the_endpoint(make_settings: Any, host: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = factory.create(
            make_settings("prometheus/cni"),
            PrometheusExporterConfig(endpoint=f"127.0.0.1:{port}"),
        )
        with pytest.raises(ComponentError) as caught:
            await exporter.start(host)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and message.startswith("prometheus/cni: ")
    await exporter.shutdown()


async def test_two_instances_side_by_side_share_nothing(make_settings: Any, host: Any) -> None:
    first = await serving(make_settings, host)
    second = await serving(make_settings, host)
    try:
        await first.consume(full_batch())
        await second.consume(Batch(cycle=Cycle(time=T0, previous=T0 - 30), metrics=(
            aggregate("eniMaxAvailable", 1.0),)))
        _, one = await asyncio.to_thread(fetch, first.port)
        _, two = await asyncio.to_thread(fetch, second.port)
    finally:
        await first.shutdown()
        await second.shutdown()
    assert samples(one.decode())[("awscni_eni_max", ())] == 45.0
    assert samples(two.decode()) == {("awscni_eni_max", ()): 1.0}
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not {n for n in global_names if n.startswith("awscni")}


async def test_lifecycle_and_port_released(make_settings: Any, host: Any) -> None:
    idle = factory.create(make_settings(), PrometheusExporterConfig())
    await idle.shutdown()  # never started
    await idle.shutdown()
    assert idle.wanted_families() == frozenset()

    exporter = await serving(make_settings, host)
    port = exporter.port
    assert port > 0
    await exporter.start(host)  # a second start changes nothing
    assert exporter.port == port
    await exporter.shutdown()
    await exporter.shutdown()
    assert exporter.port == 0
    with socket.socket() as again:  # the port is free again
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
