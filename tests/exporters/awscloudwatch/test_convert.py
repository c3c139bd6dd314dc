"""Metric -> datum conversion and request packing (pure), checked against CloudWatch's limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import botocore.session
import pytest
from botocore.serialize import create_serializer

from exporters.awscloudwatch._convert import (
    MAX_DATUMS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    DatumOptions,
    distribution_values,
    estimate_size,
    pack,
    to_datums,
    valid_value,
)
from pipeline import Distribution, Metric, MetricKind

T = 1_700_000_010.0
OPTS = DatumOptions(cluster_id="prod")


def gauge(name: str, value: float, **kw: Any) -> Metric:
    return Metric(name, MetricKind.GAUGE, value, **kw)


def test_datum_carries_cluster_dimension_unit_and_cycle_time() -> None:
    out = to_datums([gauge("assignIPAddresses", 42, unit="Count")], T, OPTS)
    assert out.datums == [{
        "MetricName": "assignIPAddresses",
        "Dimensions": [{"Name": "CLUSTER_ID", "Value": "prod"}],
        "Timestamp": datetime.fromtimestamp(T, UTC),
        "Unit": "Count",
        "Value": 42.0,
    }]


def test_group_by_attributes_become_dimensions_after_cluster_id() -> None:
    metric = gauge("eniAllocated", 3, attributes=(("AvailabilityZone", "us-west-2a"),
                                                  ("NodeGroup", "")))
    dims = to_datums([metric], T, OPTS).datums[0]["Dimensions"]
    assert dims == [{"Name": "CLUSTER_ID", "Value": "prod"},
                    {"Name": "AvailabilityZone", "Value": "us-west-2a"},
                    {"Name": "NodeGroup", "Value": "unknown"}]  # CloudWatch refuses ""


def test_high_resolution_is_set_only_when_asked() -> None:
    hi = to_datums([gauge("x", 1)], T, DatumOptions(cluster_id="c", storage_resolution=1))
    assert hi.datums[0]["StorageResolution"] == 1
    assert "StorageResolution" not in to_datums([gauge("x", 1)], T, OPTS).datums[0]


def test_derived_metrics_are_sent_only_when_configured() -> None:
    metrics = [gauge("totalIPAddresses", 10), gauge("availableIPAddresses", 4, derived=True),
               gauge("ipUtilization", 60, unit="Percent", derived=True)]
    names = lambda opts: [d["MetricName"] for d in to_datums(metrics, T, opts).datums]  # noqa: E731
    assert names(OPTS) == ["totalIPAddresses"]
    assert names(DatumOptions(cluster_id="c", send_derived=True)) == [
        "totalIPAddresses", "availableIPAddresses", "ipUtilization"]
    assert names(DatumOptions(cluster_id="c", derived_names=frozenset({"ipUtilization"}))) == [
        "totalIPAddresses", "ipUtilization"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2.0**361, -(2.0**361), 1e-200])
def test_unstorable_values_are_rejected_alone(value: float) -> None:
    out = to_datums([gauge("bad", value), gauge("good", 1)], T, OPTS)
    assert [d["MetricName"] for d in out.datums] == ["good"]
    assert [r.name for r in out.rejected] == ["bad"]
    assert "not storable" in out.rejected[0].reason


@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, -5.5, 2.0**360, 2.0**-360, 1e100])
def test_storable_values(value: float) -> None:
    assert valid_value(value)


def test_unknown_unit_is_sent_as_none() -> None:
    out = to_datums([gauge("x", 1, unit="requests")], T, OPTS)
    assert out.datums[0]["Unit"] == "None"
    assert out.unknown_units == {"requests"}


def test_distribution_becomes_values_and_counts_at_bucket_midpoints() -> None:
    dist = Distribution(bounds=(10.0, 50.0, 100.0), counts=(4.0, 0.0, 2.0, 1.0), sum=300, count=7)
    metric = Metric("awsAPILatency", MetricKind.DISTRIBUTION, 0.0, unit="Milliseconds",
                    distribution=dist)
    [datum] = to_datums([metric], T, OPTS).datums
    assert datum["Values"] == [5.0, 75.0, 100.0]  # empty bucket skipped, overflow at last bound
    assert datum["Counts"] == [4.0, 2.0, 1.0]
    assert "Value" not in datum


def test_negative_first_bound_uses_itself_as_lower_edge() -> None:
    assert distribution_values(Distribution(bounds=(-4.0, 0.0), counts=(1.0, 1.0, 0.0))) == [
        (-4.0, 1.0), (-2.0, 1.0)]


def test_more_than_150_buckets_split_into_several_datums() -> None:
    bounds = tuple(float(i) for i in range(1, 401))
    dist = Distribution(bounds=bounds, counts=tuple(1.0 for _ in range(401)))
    metric = Metric("lat", MetricKind.DISTRIBUTION, 0.0, distribution=dist)
    datums = to_datums([metric], T, OPTS).datums
    assert [len(d["Values"]) for d in datums] == [150, 150, 101]
    assert sum(sum(d["Counts"]) for d in datums) == 401


def test_pack_respects_datum_limit() -> None:
    datums = to_datums([gauge(f"m{i}", i) for i in range(2500)], T, OPTS).datums
    requests = pack(datums)
    assert [len(r) for r in requests] == [1000, 1000, 500]
    assert [d for r in requests for d in r.datums] == datums


def test_pack_respects_byte_limit() -> None:
    dist = Distribution(bounds=tuple(float(i) for i in range(1, 150)),
                        counts=tuple(1.0 for _ in range(150)))
    metrics = [Metric(f"lat{i}", MetricKind.DISTRIBUTION, 0.0, distribution=dist,
                      attributes=(("node", f"ip-10-0-{i}.ec2.internal"),)) for i in range(400)]
    requests = pack(to_datums(metrics, T, OPTS).datums)
    assert len(requests) > 1
    assert all(r.size <= MAX_REQUEST_BYTES and len(r) <= MAX_DATUMS_PER_REQUEST
               for r in requests)
    assert sum(len(r) for r in requests) == 400


@pytest.mark.parametrize("protocol", ["query", "json"])
def test_size_estimate_is_above_the_real_body(protocol: str) -> None:
    """The estimate must never be below what botocore really sends, in any protocol it uses."""
    model = botocore.session.get_session().get_service_model("cloudwatch")
    operation = model.operation_model("PutMetricData")
    dist = Distribution(bounds=(0.5, 1.5, 1000.0), counts=(3.0, 2.0, 9.0, 1.0))
    metrics = [
        gauge("assignIPAddresses", 12345.678, attributes=(("AvailabilityZone", "us-west-2a"),)),
        gauge("a" * 255, -1e-100, unit="Percent", attributes=(("k" * 255, "v&=ü" * 256),)),
        Metric("awsAPILatency", MetricKind.DISTRIBUTION, 0, unit="Milliseconds",
               distribution=dist),
    ]
    datums = to_datums(metrics, T, DatumOptions(cluster_id="my cluster/ü", storage_resolution=1))
    serializer = create_serializer(protocol)

    def body_size(data: list[Any]) -> int:
        body = serializer.serialize_to_request(
            {"Namespace": "Kubernetes", "MetricData": data}, operation)["body"]
        # The query serializer leaves the form unencoded; botocore urlencodes it when sending.
        return len(urlencode(body).encode() if isinstance(body, dict) else body)

    for datum in datums.datums:
        real = body_size([datum, datum]) - body_size([datum])
        assert real > 50
        assert estimate_size(datum) >= real
