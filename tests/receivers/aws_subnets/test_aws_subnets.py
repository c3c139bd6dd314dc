"""The ``aws_subnets`` receiver against moto's EC2 (a VPC, subnets, instances with secondary ENIs;
AvailableIpAddressCount moving as ENIs are created) and the test API server's Nodes (providerIDs)
and ENIConfigs; end to end, a real ``cni-pipeline`` process read back from moto's CloudWatch."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import Batch, ComponentID, ComponentSettings, Kind, Telemetry, validate_config
from receivers.aws_subnets import AwsSubnetsConfig, factory
from receivers.aws_subnets._metrics import subnet_metrics
from receivers.aws_subnets._sources import Subnet, instance_ids
from tests.support.kube_apiserver import KubeAPIServer
from tests.support.moto_server import Moto, aws_test_env, running_moto
from tests.support.pipeline_process import (
    Replica,
    eventually,
    free_port,
    kill_survivors,
    start_pipeline,
)
from tests.support.recording import RecordingHost, RecordingSink

ZONE_A, ZONE_B = "us-west-2a", "us-west-2b"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    aws_test_env(monkeypatch, region="us-west-2")
    with running_moto(region="us-west-2") as server:
        yield server


class VPC:
    """Subnets a (nodes, 10.0.1.0/24), b (secondary ENIs, /25 in another zone), c (named by an
    ENIConfig), d (named in subnet_ids), e (unused: never watched); two instances in a, the
    first with a secondary ENI in b."""

    def __init__(self, moto: Moto) -> None:
        self.ec2 = moto.client("ec2")
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]

        def subnet(cidr: str, zone: str) -> str:
            made = self.ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)
            subnet_id: str = made["Subnet"]["SubnetId"]
            return subnet_id

        self.a, self.b = subnet("10.0.1.0/24", ZONE_A), subnet("10.0.2.0/25", ZONE_B)
        self.c, self.d = subnet("10.0.3.0/24", ZONE_B), subnet("10.0.4.0/26", ZONE_A)
        self.e = subnet("10.0.5.0/24", ZONE_A)
        run = self.ec2.run_instances(ImageId="ami-12345678", MinCount=2, MaxCount=2,
                                     SubnetId=self.a)
        self.instances = [i["InstanceId"] for i in run["Instances"]]
        eni = self.ec2.create_network_interface(SubnetId=self.b)["NetworkInterface"]
        self.ec2.attach_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"],
                                          InstanceId=self.instances[0], DeviceIndex=1)

    def available(self) -> dict[str, int]:
        subnets = self.ec2.describe_subnets()["Subnets"]
        return {s["SubnetId"]: int(s["AvailableIpAddressCount"]) for s in subnets}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeAPIServer, Path]]:
    with KubeAPIServer() as api:
        yield api, api.write_kubeconfig(tmp_path / "kubeconfig")


def add_nodes(api: KubeAPIServer, vpc: VPC) -> None:
    for i, instance in enumerate(vpc.instances):
        api.add_node(f"ip-10-0-1-{i}", zone=ZONE_A, instance_id=instance)
    api.eniconfigs = [{"apiVersion": "crd.k8s.amazonaws.com/v1alpha1", "kind": "ENIConfig",
                       "metadata": {"name": ZONE_B}, "spec": {"subnet": vpc.c}}]


# -- units -----------------------------------------------------------------------------------------

def test_instance_ids_from_provider_ids() -> None:
    assert instance_ids(["aws:///us-west-2a/i-0abc", "aws:///us-west-2b/i-0def", "kind://x/y",
                         "aws:///us-west-2a/i-0abc", ""]) == ["i-0abc", "i-0def"]


def test_metrics_per_subnet_per_zone_and_the_fullest() -> None:
    metrics = subnet_metrics([Subnet("subnet-a", ZONE_A, 50, 251), Subnet("subnet-b", ZONE_A, 11,
                                                                          123),
                              Subnet("subnet-c", ZONE_B, 200, 251)])
    values = {(m.name, m.attributes): m.value for m in metrics}
    assert values[("subnetAvailableIPs", (("SubnetId", "subnet-a"),))] == 50
    assert values[("subnetTotalIPs", (("SubnetId", "subnet-b"),))] == 123
    assert values[("subnetIPUtilization", (("SubnetId", "subnet-a"),))] == pytest.approx(
        100 * 201 / 251, abs=0.001)
    assert values[("subnetAvailableIPs", (("AvailabilityZone", ZONE_A),))] == 61
    assert values[("subnetTotalIPs", (("AvailabilityZone", ZONE_A),))] == 374
    assert values[("minSubnetAvailableIPs", ())] == 11
    assert {m.unit for m in metrics if m.name == "subnetIPUtilization"} == {"Percent"}
    assert all(m.description for m in metrics)


def test_config_problems_name_their_key() -> None:
    def keys(**fields: Any) -> list[str]:
        return [k for k, _ in validate_config(AwsSubnetsConfig(**fields))]

    assert keys() == []
    assert keys(subnet_ids=["sub-123"]) == ["subnet_ids[0]"]
    assert keys(collection_interval=5) == ["collection_interval"]
    assert keys(from_nodes=False, from_eniconfigs=False) == ["subnet_ids"]


# -- against moto's EC2 and the test API server --------------------------------------------------

def settings() -> ComponentSettings:
    return ComponentSettings(id=ComponentID("aws_subnets"), kind=Kind.RECEIVER,
                             logger=logging.LoggerAdapter(logging.getLogger("test.subnets"), {}),
                             telemetry=Telemetry(), started_at=time.time())


async def first_batch(config: AwsSubnetsConfig) -> tuple[Batch, RecordingHost]:
    sink, host = RecordingSink(), RecordingHost()
    receiver = factory.create(settings(), config, sink)
    await receiver.start(host)
    try:
        async with asyncio.timeout(30):
            while not sink.batches and not host.statuses:
                await asyncio.sleep(0.05)
            while not sink.batches and host.statuses[-1][0]:
                await asyncio.sleep(0.05)
    finally:
        await receiver.shutdown()
    assert sink.batches, host.statuses
    return sink.batches[0], host


async def test_the_subnets_of_nodes_enis_eniconfigs_and_the_list(
    moto: Moto, cluster: tuple[KubeAPIServer, Path],
) -> None:
    api, kubeconfig = cluster
    vpc = VPC(moto)
    add_nodes(api, vpc)
    config = AwsSubnetsConfig(subnet_ids=[vpc.d], endpoint_url=moto.endpoint,
                              region="us-west-2", kubeconfig=str(kubeconfig))
    batch, host = await first_batch(config)
    available = vpc.available()
    values = {(m.name, m.attributes): m.value for m in batch.metrics}
    per_subnet = {dict(attrs)["SubnetId"]: value for (name, attrs), value in values.items()
                  if name == "subnetAvailableIPs" and dict(attrs).get("SubnetId")}
    assert per_subnet == {s: available[s] for s in (vpc.a, vpc.b, vpc.c, vpc.d)}  # not e
    assert values[("subnetTotalIPs", (("SubnetId", vpc.b),))] == 128 - 5
    assert values[("minSubnetAvailableIPs", ())] == min(per_subnet.values())
    assert values[("subnetAvailableIPs", (("AvailabilityZone", ZONE_B),))] == (
        available[vpc.b] + available[vpc.c])
    assert host.statuses[-1] == (True, "")


async def test_no_eniconfig_crd_and_an_ec2_failure(
    moto: Moto, cluster: tuple[KubeAPIServer, Path],
) -> None:
    api, kubeconfig = cluster
    vpc = VPC(moto)
    add_nodes(api, vpc)
    api.eniconfigs = None  # the CRD is not installed: a 404, not an error
    config = AwsSubnetsConfig(endpoint_url=moto.endpoint, region="us-west-2",
                              kubeconfig=str(kubeconfig))
    batch, _ = await first_batch(config)
    watched = {dict(m.attributes)["SubnetId"] for m in batch.metrics
               if m.name == "subnetAvailableIPs" and dict(m.attributes).get("SubnetId")}
    assert watched == {vpc.a, vpc.b}
    broken = AwsSubnetsConfig(subnet_ids=[vpc.a], from_nodes=False, from_eniconfigs=False,
                              endpoint_url="http://127.0.0.1:9", region="us-west-2")
    sink, host = RecordingSink(), RecordingHost()
    receiver = factory.create(settings(), broken, sink)
    await receiver.start(host)
    try:
        async with asyncio.timeout(60):
            while not host.statuses:
                await asyncio.sleep(0.05)
    finally:
        await receiver.shutdown()
    assert host.statuses[0][0] is False and "subnet capacity not collected" in host.statuses[0][1]
    assert not sink.batches


CONFIG = """\
receivers:
  aws_subnets:
    collection_interval: 10s
    endpoint_url: {endpoint}
    region: us-west-2
exporters:
  awscloudwatch:
    endpoint_url: {endpoint}
    cluster_id: subnets
    flush_interval: 1s
service:
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
  pipelines:
    metrics/subnets: {{receivers: [aws_subnets], exporters: [awscloudwatch]}}
"""


def test_end_to_end_into_cloudwatch(moto: Moto, cluster: tuple[KubeAPIServer, Path],
                                    tmp_path: Path) -> None:
    """What EC2 says is what CloudWatch holds, and it follows EC2 when an ENI takes addresses."""
    api, kubeconfig = cluster
    vpc = VPC(moto)
    add_nodes(api, vpc)
    port = free_port()
    config = tmp_path / "subnets.yaml"
    config.write_text(CONFIG.format(endpoint=moto.endpoint, port=port))
    pipeline = start_pipeline("pipeline", ["--config", str(config)], tmp_path / "p.log", port,
                              {"KUBECONFIG": str(kubeconfig)})
    replicas: list[Replica] = [pipeline]

    def in_cloudwatch(subnet: str) -> list[float]:
        series = moto.series("Kubernetes", "subnetAvailableIPs",
                             [("CLUSTER_ID", "subnets"), ("SubnetId", subnet)],
                             stat="Minimum", period=1)
        return [series[t] for t in sorted(series)]

    try:
        eventually(lambda: bool(in_cloudwatch(vpc.a)), "subnet a in CloudWatch", replicas, 45)
        assert in_cloudwatch(vpc.a)[0] == vpc.available()[vpc.a]
        for _ in range(5):  # five more addresses taken in subnet a
            vpc.ec2.create_network_interface(SubnetId=vpc.a)
        after = vpc.available()[vpc.a]
        eventually(lambda: in_cloudwatch(vpc.a)[-1] == after, "the next collection", replicas, 45)
        minimum = moto.series("Kubernetes", "minSubnetAvailableIPs", [("CLUSTER_ID", "subnets")],
                              stat="Minimum", period=1)
        assert min(minimum.values()) == min(
            v for s, v in vpc.available().items() if s in (vpc.a, vpc.b, vpc.c))
        pipeline.stop(signal.SIGTERM)
    finally:
        kill_survivors([pipeline])
    log = pipeline.output()
    assert "watching 3 subnet(s)" in log and pipeline.process.returncode == 0
    assert "no processor aggregates" not in log  # a receiver that makes metrics itself
