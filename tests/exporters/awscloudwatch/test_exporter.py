"""The exporter against moto's server: what CloudWatch stored is what the cycles said."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import pytest

from exporters.awscloudwatch import CloudWatchExporter
from pipeline import (
    Batch,
    ComponentError,
    Cycle,
    Distribution,
    Duration,
    Metric,
    MetricKind,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.imds import ImdsServer
from tests.support.moto_server import Moto

NS = "Kubernetes"
CLUSTER = [("CLUSTER_ID", "test-cluster")]


def cycle_batch(t: float, index: int, metrics: list[Metric]) -> Batch:
    return Batch(cycle=Cycle(time=t, previous=t - 30, index=index), metrics=tuple(metrics))


def cni_metrics(i: int) -> list[Metric]:
    """A cycle's worth of what cni_aggregate emits: counters, gauges, group-by, a distribution."""
    return [
        Metric("addReqCount", MetricKind.COUNTER, 10.0 + i),
        Metric("assignIPAddresses", MetricKind.GAUGE, 100.0 + i),
        Metric("awsAPILatency", MetricKind.GAUGE, 250.5 + i, unit="Milliseconds"),
        Metric("assignIPAddresses", MetricKind.GAUGE, 40.0 + i,
               attributes=(("AvailabilityZone", "us-west-2a"),)),
        Metric("assignIPAddresses", MetricKind.GAUGE, 60.0,
               attributes=(("AvailabilityZone", "us-west-2b"),)),
        Metric("ipUtilization", MetricKind.GAUGE, 55.0, unit="Percent", derived=True),
        Metric("ec2ApiLatency", MetricKind.DISTRIBUTION, 0.0, unit="Milliseconds",
               distribution=Distribution(bounds=(10.0, 100.0), counts=(3.0, 1.0 + i, 0.0))),
    ]


def dims(metric: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"]))


async def test_every_metric_dimension_unit_and_value_is_stored(
    moto: Moto, harness: Any, base_time: float
) -> None:
    exporter = await harness.start(harness.config(moto.endpoint))
    times = [base_time + 30 * i for i in range(3)]
    for i, t in enumerate(times):
        await exporter.consume(cycle_batch(t, i, cni_metrics(i)))
    await exporter.shutdown()

    stored = {(m["MetricName"], dims(m)) for m in moto.list_metrics(NS)}
    assert stored == {
        ("addReqCount", (("CLUSTER_ID", "test-cluster"),)),
        ("assignIPAddresses", (("CLUSTER_ID", "test-cluster"),)),
        ("awsAPILatency", (("CLUSTER_ID", "test-cluster"),)),
        ("assignIPAddresses", (("AvailabilityZone", "us-west-2a"), ("CLUSTER_ID", "test-cluster"))),
        ("assignIPAddresses", (("AvailabilityZone", "us-west-2b"), ("CLUSTER_ID", "test-cluster"))),
        ("ec2ApiLatency", (("CLUSTER_ID", "test-cluster"),)),
    }  # the derived ipUtilization is not sent by default

    def per_cycle(name: str, dimensions: list[tuple[str, str]], stat: str = "Sum",
                  unit: str | None = None) -> dict[float, float]:
        return moto.series(NS, name, dimensions, stat=stat, start=times[0], end=times[-1] + 30,
                           period=30, unit=unit)

    # Each datum sits at its own cycle's time, with its own value.
    assert per_cycle("addReqCount", CLUSTER, unit="Count") == {
        t: 10.0 + i for i, t in enumerate(times)}
    assert per_cycle("assignIPAddresses", CLUSTER, stat="Maximum") == {
        t: 100.0 + i for i, t in enumerate(times)}
    assert per_cycle("assignIPAddresses", [*CLUSTER, ("AvailabilityZone", "us-west-2a")]) == {
        t: 40.0 + i for i, t in enumerate(times)}
    # Units: latency is stored in Milliseconds, not Count.
    assert per_cycle("awsAPILatency", CLUSTER, stat="Average", unit="Milliseconds") == {
        t: 250.5 + i for i, t in enumerate(times)}
    assert per_cycle("awsAPILatency", CLUSTER, unit="Count") == {}
    # The distribution went out as Values/Counts: CloudWatch counts every observation.
    assert per_cycle("ec2ApiLatency", CLUSTER, stat="SampleCount") == {
        t: 4.0 + i for i, t in enumerate(times)}
    assert per_cycle("ec2ApiLatency", CLUSTER, stat="Sum") == {
        t: 3 * 5.0 + (1.0 + i) * 55.0 for i, t in enumerate(times)}
    assert harness.metric("exporter_sent_datapoints_total") == 18  # 6 datums x 3 cycles


async def test_cycles_coalesce_into_one_request_per_flush(
    moto: Moto, harness: Any, base_time: float
) -> None:
    with FaultProxy(moto.endpoint) as proxy:
        exporter = await harness.start(harness.config(proxy.endpoint,
                                                      flush_interval=Duration(0.3)))
        for i in range(4):
            await exporter.consume(cycle_batch(base_time + 30 * i, i, cni_metrics(i)))
        deadline = time.monotonic() + 10
        while proxy.forwarded < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert proxy.forwarded == 1  # the timer flushed four cycles in one request
        await exporter.consume(cycle_batch(base_time + 120, 4, cni_metrics(4)))
        await exporter.shutdown()  # the last cycle goes out on shutdown
        assert proxy.forwarded == 2
    assert harness.metric("exporter_sent_datapoints_total") == 30


async def test_large_cycle_splits_at_1000_datums_gzipped(
    moto: Moto, harness: Any, base_time: float
) -> None:
    metrics = [Metric("assignIPAddresses", MetricKind.GAUGE, float(n),
                      attributes=(("Node", f"ip-10-0-{n // 250}-{n % 250}"),))
               for n in range(2500)]
    with FaultProxy(moto.endpoint) as proxy:
        exporter = await harness.start(harness.config(proxy.endpoint))
        await exporter.consume(cycle_batch(base_time, 0, metrics))
        await exporter.shutdown()
        assert proxy.forwarded == 3
        assert proxy.compressed == 3  # botocore gzips bodies this large; moto accepted them
    stored = moto.list_metrics(NS)
    assert len(stored) == 2500
    assert moto.series(NS, "assignIPAddresses",
                       [*CLUSTER, ("Node", "ip-10-0-9-249")], start=base_time,
                       end=base_time + 60) == {base_time: 2499.0}


async def test_unstorable_values_are_dropped_with_a_log_line(
    moto: Moto, harness: Any, base_time: float, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = await harness.start(harness.config(moto.endpoint))
    metrics = [Metric("awsAPILatency", MetricKind.GAUGE, math.nan, unit="Milliseconds"),
               Metric("eniAllocated", MetricKind.GAUGE, math.inf),
               Metric("assignIPAddresses", MetricKind.GAUGE, 7.0)]
    with caplog.at_level(logging.WARNING):
        await exporter.consume(cycle_batch(base_time, 0, metrics))
        await exporter.shutdown()
    assert [m["MetricName"] for m in moto.list_metrics(NS)] == ["assignIPAddresses"]
    assert harness.metric("exporter_invalid_datapoints_total") == 2
    assert harness.metric("exporter_failed_datapoints_total") == 0
    line = next(r.getMessage() for r in caplog.records if "cannot store" in r.getMessage())
    assert "awsAPILatency" in line and "eniAllocated" in line


async def test_derived_metrics_sent_when_configured(
    moto: Moto, harness: Any, base_time: float
) -> None:
    exporter = await harness.start(harness.config(moto.endpoint,
                                                  derived_metrics=["ipUtilization"]))
    await exporter.consume(cycle_batch(base_time, 0, cni_metrics(0)))
    await exporter.shutdown()
    assert moto.series(NS, "ipUtilization", CLUSTER, stat="Maximum", unit="Percent",
                       start=base_time, end=base_time + 60) == {base_time: 55.0}


async def test_high_resolution_datums_are_accepted(
    moto: Moto, harness: Any, base_time: float
) -> None:
    exporter = await harness.start(harness.config(moto.endpoint, storage_resolution=1))
    for i in range(3):
        await exporter.consume(cycle_batch(base_time + i, i, cni_metrics(0)[:1]))
    await exporter.shutdown()
    assert moto.series(NS, "addReqCount", CLUSTER, start=base_time, end=base_time + 3,
                       period=1) == {base_time: 10.0, base_time + 1: 10.0, base_time + 2: 10.0}


async def test_startup_logs_region_and_cluster_id(
    moto: Moto, harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        exporter = await harness.start(harness.config(moto.endpoint))
    await exporter.shutdown()
    assert "Using REGION=us-west-2 and CLUSTER_ID=test-cluster" in caplog.text


async def test_identity_from_imds_and_instance_tags(
    moto: Moto, harness: Any, base_time: float, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ec2 = moto.client("ec2")
    instance = ec2.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1)[
        "Instances"][0]["InstanceId"]
    ec2.create_tags(Resources=[instance], Tags=[{"Key": "eks:cluster-name", "Value": "eks-prod"},
                                                {"Key": "Name", "Value": "node-1"}])
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", moto.endpoint)
    with ImdsServer(region="us-west-2", instance_id=instance) as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint)
        with caplog.at_level(logging.INFO):
            exporter = await harness.start(harness.config(moto.endpoint, region="",
                                                          cluster_id=""))
    assert "Using REGION=us-west-2 and CLUSTER_ID=eks-prod" in caplog.text
    await exporter.consume(cycle_batch(base_time, 0, cni_metrics(0)[:1]))
    await exporter.shutdown()
    assert [dims(m) for m in moto.list_metrics(NS)] == [(("CLUSTER_ID", "eks-prod"),)]


async def test_endpoint_from_boto3_environment(
    moto: Moto, harness: Any, base_time: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", moto.endpoint)
    exporter = await harness.start(harness.config(""))
    await exporter.consume(cycle_batch(base_time, 0, cni_metrics(0)[:2]))
    await exporter.shutdown()
    assert len(moto.list_metrics(NS)) == 2


async def test_no_region_anywhere_fails_start_naming_the_fix(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ComponentError, match="AWS_REGION"):
        await harness.start(harness.config("http://127.0.0.1:9", region=""))


async def test_shutdown_without_start_and_twice(settings: Any, harness: Any) -> None:
    exporter = CloudWatchExporter(settings, harness.config("http://127.0.0.1:9"))
    await exporter.shutdown()
    await exporter.shutdown()
    assert exporter.wanted_families() == frozenset()
