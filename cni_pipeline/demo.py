"""``cni-pipeline demo``: the real pipeline on an embedded default, all on loopback.

A simulated fleet of aws-node pods (``simfleet``, its own process) is scraped by the real
``prometheus`` receiver, aggregated by ``cni_aggregate`` and published by the real
``awscloudwatch`` exporter to a local CloudWatch-compatible endpoint (moto's server). Between
cycles the fleet's counters move, its assigned IPs grow and one node restarts; at the end the demo
reads back what CloudWatch stored and prints it beside the fleet's truth, computed independently
here from the rule table of docs/aggregation.md. Beside them: the ``aws_subnets`` receiver's
subnet capacity, from moto's EC2 (a VPC whose subnets hold instances and ENIs), next to what EC2
says, and ``ip_forecast``'s hours until the nodes' IPs run out at the growth it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pipeline import Batch, ComponentConfig, ComponentSettings, Duration, Kind, SimpleExporter
from pipeline.service import Registry, Service, build_config

# docs/aggregation.md's rule table, the demo's independent truth: CloudWatch name -> (family, how).
TRUTH_TABLE: dict[str, tuple[str, str]] = {
    "addReqCount": ("awscni_add_ip_req_count", "counter"),
    "assignIPAddresses": ("awscni_assigned_ip_addresses", "gauge"),
    "awsAPIErr": ("awscni_aws_api_error_count", "counter"),
    "awsAPILatency": ("awscni_aws_api_latency_ms", "p99"),
    "awsUtilErr": ("awscni_aws_utils_error_count", "counter"),
    "delReqCount": ("awscni_del_ip_req_count", "counter"),
    "eniAllocated": ("awscni_eni_allocated", "gauge"),
    "eniMaxAvailable": ("awscni_eni_max", "gauge"),
    "ipamdActionInProgress": ("awscni_ipamd_action_inprogress", "gauge"),
    "ipamdErr": ("awscni_ipamd_error_count", "counter"),
    "maxIPAddresses": ("awscni_ip_max", "gauge"),
    "podENIErr": ("awscni_pod_eni_error_count", "counter"),
    "reconcileCount": ("awscni_reconcile_count", "counter"),
    "totalIPAddresses": ("awscni_total_ip_addresses", "gauge"),
    "totalIPv4Prefixes": ("awscni_total_ipv4_prefixes", "gauge"),
    "totalAssignedIPv4sPerCidr": ("awscni_assigned_ip_per_cidr", "gauge"),
    "forceRemoveENI": ("awscni_force_removed_enis", "counter"),
    "forceRemoveIPs": ("awscni_force_removed_ips", "counter"),
    "ec2ApiReqCount": ("awscni_ec2api_req_count", "counter"),
    "ec2ApiErrCount": ("awscni_ec2api_error_count", "counter"),
}
NAMESPACE = "Kubernetes"
CLUSTER_ID = "demo-cluster"
REGION = "us-west-2"
#: IPs each node assigns more every cycle, so that the forecast has a trend to see.
GROWTH_PER_NODE = 4


def expected_values(truth: Any, previous: Any | None) -> dict[str, float]:
    """What one cycle should publish, from the fleet's truth (and the truth a cycle earlier)."""
    values = {}
    for name, (family, how) in TRUTH_TABLE.items():
        if how == "gauge":
            values[name] = truth.gauge_sum(family)
        elif how == "p99":
            values[name] = truth.p99_max()
        else:
            values[name] = 0.0 if previous is None else truth.counter_increase(family, previous)
    return values


class _Recorder(SimpleExporter):
    """An in-process exporter registered only for the demo: hands each batch to the driver."""

    type = "demo_recorder"
    kind = Kind.EXPORTER

    def __init__(self) -> None:
        self.batches: asyncio.Queue[Batch] = asyncio.Queue()

    # factory side
    def default_config(self) -> Any:
        return ComponentConfig()

    def create(self, settings: ComponentSettings, config: Any) -> _Recorder:
        return self

    # exporter side (start, shutdown and wanted_families: SimpleExporter's)
    async def consume(self, batch: Batch) -> None:
        await self.batches.put(batch)


@dataclass
class _Cycle:
    index: int
    time: float
    note: str
    expected: dict[str, float]
    published: dict[str, float]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _aws_sandbox(endpoint: str) -> Iterator[None]:
    """Point boto3 at the local endpoint with dummy credentials and no IMDS, then restore."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


#: The fleet's first address, and where to move when another fleet holds it (``make demo`` twice).
FLEET_BASES = tuple(f"127.{second}.0.1" for second in range(20, 30))
FLEET_PORT = 61678


def _addresses_free(base: str, nodes: int) -> str | None:
    """None when ``nodes`` addresses from ``base`` can all listen on the fleet's port, else the
    first address already in use."""
    first = int(IPv4Address(base))
    for index in range(nodes):
        address = str(IPv4Address(first + index))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((address, FLEET_PORT))
            except OSError:
                return address
    return None


def _fleet_base(nodes: int) -> str | None:
    """The first of :data:`FLEET_BASES` whose addresses are free (saying so when it moved)."""
    for base in FLEET_BASES:
        busy = _addresses_free(base, nodes)
        if busy is None:
            return base
        print(
            f"cni-pipeline demo: {busy}:{FLEET_PORT} is in use (another fleet or demo?); "
            "trying the next 127.x range",
            file=sys.stderr,
            flush=True,
        )
    return None


def _config_data(addresses: list[str], interval: float, cw_endpoint: str,
                 subnets: list[str]) -> dict[str, Any]:
    return {
        "receivers": {
            "prometheus": {
                "scrape_interval": str(Duration(interval)),
                "scrape_timeout": str(Duration(max(0.5, interval / 2))),
                "static_targets": addresses,
            },
            "aws_subnets": {
                "subnet_ids": subnets, "from_nodes": False, "from_eniconfigs": False,
                "collection_interval": "5m", "region": REGION, "endpoint_url": cw_endpoint,
            },
        },
        # A window of two cycles: a forecast from the third cycle on (an hour by default).
        "processors": {"cni_aggregate": {}, "ip_forecast": {"window": str(Duration(2 * interval))}},
        "exporters": {
            "awscloudwatch": {
                "namespace": NAMESPACE,
                "cluster_id": CLUSTER_ID,
                "region": REGION,
                "endpoint_url": cw_endpoint,
                "flush_interval": str(Duration(interval)),
            },
            "demo_recorder": {},
        },
        "service": {
            "telemetry": {"endpoint": ""},
            "pipelines": {
                "metrics": {
                    "receivers": ["prometheus"],
                    "processors": ["cni_aggregate", "ip_forecast"],
                    "exporters": ["awscloudwatch", "demo_recorder"],
                },
                "metrics/subnets": {"receivers": ["aws_subnets"], "exporters": ["awscloudwatch"]},
            },
        },
    }


async def _drive(service: Service, recorder: _Recorder, fleet: Any, cycles: int) -> list[_Cycle]:
    """Run the pipeline for ``cycles`` cycles, moving the fleet between them."""
    results: list[_Cycle] = []
    truth = await asyncio.to_thread(fleet.client.truth)
    previous = None
    note = "baseline: first scrape of every node"
    await service.start()
    try:
        for index in range(cycles):
            batch = await asyncio.wait_for(recorder.batches.get(), timeout=120)
            published = {m.name: m.value for m in batch.metrics if not m.attributes}
            results.append(
                _Cycle(index, batch.cycle.time, note, expected_values(truth, previous), published)
            )
            print(
                f"  cycle {index}: {note}; {len(batch.targets)} targets scraped, "
                f"{len(published)} metrics",
                flush=True,
            )
            if index == cycles - 1:
                break
            previous = truth
            if index == 1:
                await asyncio.to_thread(fleet.client.restart, 2)
                note = f"node {fleet.addresses[2]} restarted (counters reset), others counted"
            else:
                note = "counters and gauges moved on every node"
            truth = await asyncio.to_thread(_advance_and_grow, fleet)
    finally:
        await service.shutdown()
    return results


def _advance_and_grow(fleet: Any) -> Any:
    """The fleet moves on, and every node assigns :data:`GROWTH_PER_NODE` more IPs."""
    truth = fleet.client.advance()
    family = "awscni_assigned_ip_addresses"
    for node in range(len(fleet.addresses)):
        fleet.client.set_gauge(node, family, truth.gauge_sum(family, [node]) + GROWTH_PER_NODE)
    return fleet.client.truth()


def _make_subnets(endpoint: str) -> list[str]:
    """A VPC in moto's EC2: two subnets in two zones, addresses taken by instances and ENIs."""
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]
               ["SubnetId"] for cidr, zone in (("10.0.1.0/24", "us-west-2a"),
                                               ("10.0.2.0/26", "us-west-2b"))]
    ec2.run_instances(ImageId="ami-12345678", MinCount=3, MaxCount=3, SubnetId=subnets[0])
    for _ in range(40):
        ec2.create_network_interface(SubnetId=subnets[1])
    return subnets


def _report_subnets_and_forecast(endpoint: str, subnets: list[str], results: list[_Cycle],
                                 interval: float) -> bool:
    import boto3

    cloudwatch = boto3.client("cloudwatch", region_name=REGION, endpoint_url=endpoint)
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
    start, end = results[0].time - 600, results[-1].time + interval

    def stored(name: str, dimensions: list[tuple[str, str]], period: int) -> list[float]:
        result = cloudwatch.get_metric_data(
            MetricDataQueries=[{"Id": "q", "MetricStat": {"Metric": {
                "Namespace": NAMESPACE, "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions]},
                "Period": period, "Stat": "Minimum"}}],
            StartTime=start, EndTime=end, ScanBy="TimestampAscending")["MetricDataResults"][0]
        return list(result["Values"])

    print("Subnet capacity (aws_subnets, from moto's EC2), read back from CloudWatch:\n")
    print(f"  {'subnet':<27}{'zone':<12}{'available (CloudWatch)':<28}{'EC2 says':>12}")
    all_ok = True
    described = ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
    for subnet in sorted(described, key=lambda s: s["SubnetId"]):
        values = stored("subnetAvailableIPs",
                        [("CLUSTER_ID", CLUSTER_ID), ("SubnetId", subnet["SubnetId"])], 600)
        truth = float(subnet["AvailableIpAddressCount"])
        ok = bool(values) and values[-1] == truth
        all_ok &= ok
        shown = ", ".join(f"{v:g}" for v in values) or "nothing"
        print(f"  {subnet['SubnetId']:<27}{subnet['AvailabilityZone']:<12}{shown:<28}"
              f"{truth:>12g} {'ok' if ok else 'MISMATCH'}")
    fullest = stored("minSubnetAvailableIPs", [("CLUSTER_ID", CLUSTER_ID)], 600)
    least = min(float(s["AvailableIpAddressCount"]) for s in described)
    ok = bool(fullest) and fullest[-1] == least
    all_ok &= ok
    print(f"  {'minSubnetAvailableIPs':<39}{', '.join(f'{v:g}' for v in fullest) or 'nothing':<28}"
          f"{least:>12g} {'ok' if ok else 'MISMATCH'}")
    hours = stored("ipExhaustionHours", [("CLUSTER_ID", CLUSTER_ID)], max(1, int(interval)))
    print(f"\nForecast (ip_forecast): each node assigns {GROWTH_PER_NODE} more IPs a cycle; hours "
          "until the nodes' IPs run out at that rate,\nper cycle once its window is full: "
          f"ipExhaustionHours {', '.join(f'{v:.4f}' for v in hours) or 'none yet'}\n")
    return all_ok


def _read_back(endpoint: str, results: list[_Cycle], interval: float) -> dict[str, list[float]]:
    import boto3

    client = boto3.client("cloudwatch", region_name=REGION, endpoint_url=endpoint)
    start = results[0].time - interval
    end = results[-1].time + interval
    queries = [
        {
            "Id": f"m{i}",
            "MetricStat": {
                "Metric": {
                    "Namespace": NAMESPACE,
                    "MetricName": name,
                    "Dimensions": [{"Name": "CLUSTER_ID", "Value": CLUSTER_ID}],
                },
                "Period": max(1, int(interval)),
                "Stat": "Sum" if how == "counter" else "Maximum",
            },
        }
        for i, (name, (_, how)) in enumerate(TRUTH_TABLE.items())
    ]
    response = client.get_metric_data(
        MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending"
    )
    stored: dict[str, list[float]] = {}
    for result, name in zip(response["MetricDataResults"], TRUTH_TABLE, strict=True):
        stored[name] = list(result["Values"])
    return stored


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _report(results: list[_Cycle], stored: dict[str, list[float]]) -> bool:
    last = results[-1]
    print(
        f"\nCloudWatch namespace {NAMESPACE}, dimension CLUSTER_ID={CLUSTER_ID}, read back with "
        "GetMetricData (Sum for counters, Maximum for gauges):\n"
    )
    print(f"  {'metric':<27}{'kind':<9}{'stored per cycle':<40}{'fleet truth':>12}")
    all_ok = True
    for name, (_, how) in TRUTH_TABLE.items():
        values = stored.get(name, [])
        expected = [c.expected[name] for c in results]
        ok = len(values) == len(expected) and all(map(_same, values, expected))
        all_ok &= ok
        shown = ", ".join(f"{v:g}" for v in values)
        print(
            f"  {name:<27}{how:<9}{shown:<40}{last.expected[name]:>12g} "
            f"{'ok' if ok else 'MISMATCH: expected ' + ', '.join(f'{e:g}' for e in expected)}"
        )
    print(
        "\nThe Go helper would have published each counter as one node's delta, not the "
        "cluster's.\n"
        if all_ok
        else ""
    )
    return all_ok


def run_demo(registry: Registry, *, nodes: int, cycles: int, interval: str) -> int:
    try:
        from moto.server import ThreadedMotoServer

        from simfleet import FleetProcess
    except ImportError as exc:
        print(
            f"cni-pipeline demo needs the demo extra (pip install 'cni-pipeline[demo]'): {exc}",
            file=sys.stderr,
        )
        return 1
    seconds = float(Duration.from_config(interval))
    base = _fleet_base(nodes)
    if base is None:
        print(
            f"cni-pipeline demo: every address range {FLEET_BASES[0]} ... {FLEET_BASES[-1]} "
            f"has port {FLEET_PORT} in use; stop the other fleets (cni-simfleet) and retry",
            file=sys.stderr,
        )
        return 1
    recorder = _Recorder()
    registry.register(Kind.EXPORTER, recorder, distribution="demo")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    fleet = FleetProcess(nodes, base_address=base, port=FLEET_PORT, start_time=time.time() - 3600)
    try:
        fleet.start()
        print(
            f"cni-pipeline demo: {nodes} simulated aws-node pods "
            f"({fleet.addresses[0]} ... {fleet.addresses[-1]}), local CloudWatch at {endpoint}, "
            f"{cycles} cycles every {interval}",
            flush=True,
        )
        with _aws_sandbox(endpoint):
            subnets = _make_subnets(endpoint)
            data = _config_data(fleet.addresses, seconds, endpoint, subnets)
            config = build_config(data, "demo (embedded)", registry, {})
            results = asyncio.run(_drive(Service(config, registry), recorder, fleet, cycles))
            stored = _read_back(endpoint, results, seconds)
            ok = _report(results, stored)
            ok &= _report_subnets_and_forecast(endpoint, subnets, results, seconds)
    finally:
        fleet.stop()
        moto.stop()
    return 0 if ok else 1
