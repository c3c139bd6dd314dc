"""A real Prometheus server (Debian's package) scrapes the exporter; its query API must return
the values we served."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from exporters.prometheus import PrometheusExporterConfig, factory
from pipeline import Batch, Cycle
from tests.exporters.aggregates import aggregate
from tests.support.prom_server import PROMETHEUS, PromServer, missing_reason

pytestmark = pytest.mark.skipif(
    missing_reason(PROMETHEUS) is not None, reason=str(missing_reason(PROMETHEUS))
)

T0 = 1_800_000_000.0
ZONE_A = (("zone", "us-west-2a"),)


def batch(n: int, add: float) -> Batch:
    return Batch(cycle=Cycle(time=T0 + 30 * n, previous=T0 + 30 * (n - 1)), metrics=(
        aggregate("eniMaxAvailable", 45.0),
        aggregate("maxIPAddresses", 690.0),
        aggregate("eniAllocated", 9.0),
        aggregate("totalIPAddresses", 96.0),
        aggregate("totalIPAddresses", 64.0, ZONE_A),
        aggregate("assignIPAddresses", 41.0 + n),
        aggregate("totalIPv4Prefixes", 0.0),
        aggregate("addReqCount", add),
        aggregate("awsAPILatency", 250.0),
    ))


async def test_prometheus_scrapes_and_answers_queries(
    tmp_path: Path, make_settings: Any, host: Any
) -> None:
    exporter = factory.create(make_settings(), PrometheusExporterConfig(endpoint="127.0.0.1:0"))
    await exporter.start(host)
    try:
        await exporter.consume(batch(1, add=7.0))
        await exporter.consume(batch(2, add=5.0))
        server = PromServer([f"127.0.0.1:{exporter.port}"], tmp_path / "prometheus")
        with server:
            await asyncio.to_thread(
                server.wait_for, "up", lambda r: bool(r) and r[0]["value"][1] == "1"
            )
            gauges = await asyncio.to_thread(server.values, '{__name__=~"awscni_.*"}')
            await exporter.consume(batch(3, add=4.0))
            counter = await asyncio.to_thread(
                server.wait_for, "awscni_add_ip_req_count_total",
                lambda r: bool(r) and r[0]["value"][1] == "16",
            )
            latest = await asyncio.to_thread(server.values, "awscni_assigned_ip_addresses")
            meta = await asyncio.to_thread(server.api, "metadata")
    finally:
        await exporter.shutdown()

    def series(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return gauges[(("__name__", name), *labels)]

    assert series("awscni_eni_max") == 45.0
    assert series("awscni_ip_max") == 690.0
    assert series("awscni_eni_allocated") == 9.0
    assert series("awscni_total_ip_addresses") == 96.0
    assert series("awscni_total_ip_addresses", ZONE_A) == 64.0
    assert series("awscni_total_ipv4_prefixes") == 0.0
    assert series("awscni_assigned_ip_addresses") == 43.0
    assert series("awscni_add_ip_req_count_total") == 12.0
    assert series("awscni_aws_api_latency_p99_seconds") == 0.25
    # The six gauges reach Prometheus with only the labels it adds itself.
    assert set(counter[0]["metric"]) == {"__name__", "instance", "job"}
    # The newest cycle replaced the old value.
    assert latest == {(("__name__", "awscni_assigned_ip_addresses"),): 44.0}
    # Prometheus asks for OpenMetrics, where the counter family is named without _total.
    assert [m["type"] for m in meta["awscni_add_ip_req_count"]] == ["counter"]
    assert [m["type"] for m in meta["awscni_eni_max"]] == ["gauge"]
    assert "ENIs" in meta["awscni_eni_max"][0]["help"]
