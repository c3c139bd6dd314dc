"""Where the subnets come from, and what EC2 says of them: the cluster's nodes (providerID ->
instance -> its ENIs' subnets), ENIConfig objects, DescribeSubnets. Blocking calls (boto3, the
``kubernetes`` client): the receiver runs them in a thread."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: DescribeInstances takes at most 1000 instance IDs per call.
_BATCH = 1000
#: AWS keeps five addresses of every subnet (network, router, DNS, future, broadcast).
AWS_RESERVED = 5


@dataclass(frozen=True)
class Subnet:
    subnet_id: str
    zone: str
    available: int
    total: int


def instance_ids(provider_ids: Iterable[str]) -> list[str]:
    """Instance IDs from Nodes' ``spec.providerID`` (``aws:///us-west-2a/i-0abc...``)."""
    found = []
    for provider_id in provider_ids:
        last = provider_id.rsplit("/", 1)[-1]
        if provider_id.startswith("aws://") and last.startswith("i-"):
            found.append(last)
    return sorted(set(found))


def node_provider_ids(core_api: Any) -> list[str]:
    nodes = core_api.list_node(_request_timeout=30)
    return [n.spec.provider_id for n in nodes.items if n.spec and n.spec.provider_id]


def eniconfig_subnets(custom_api: Any, log: logging.LoggerAdapter[logging.Logger]) -> list[str]:
    """``spec.subnet`` of every ENIConfig; none when the CRD is not installed (a 404)."""
    from kubernetes.client.exceptions import ApiException

    try:
        listed = custom_api.list_cluster_custom_object(
            "crd.k8s.amazonaws.com", "v1alpha1", "eniconfigs", _request_timeout=30)
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise
    return sorted({str(item.get("spec", {}).get("subnet", "")) for item in listed.get("items", [])
                   if item.get("spec", {}).get("subnet")})


def instance_subnets(ec2: Any, ids: Sequence[str]) -> set[str]:
    """The subnets of these instances and of every ENI attached to them."""
    subnets: set[str] = set()
    for start in range(0, len(ids), _BATCH):
        pages = ec2.get_paginator("describe_instances").paginate(
            InstanceIds=list(ids[start:start + _BATCH]))
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    subnets.update(_subnets_of(instance))
    return subnets


def _subnets_of(instance: dict[str, Any]) -> Iterator[str]:
    if instance.get("SubnetId"):
        yield instance["SubnetId"]
    for eni in instance.get("NetworkInterfaces", []):
        if eni.get("SubnetId"):
            yield eni["SubnetId"]


def describe_subnets(ec2: Any, subnet_ids: Sequence[str]) -> list[Subnet]:
    out = []
    for page in ec2.get_paginator("describe_subnets").paginate(SubnetIds=list(subnet_ids)):
        for item in page.get("Subnets", []):
            size = ipaddress.ip_network(item["CidrBlock"]).num_addresses
            out.append(Subnet(item["SubnetId"], item.get("AvailabilityZone", ""),
                              int(item.get("AvailableIpAddressCount", 0)),
                              max(size - AWS_RESERVED, 0)))
    return sorted(out, key=lambda s: s.subnet_id)


def ec2_client(region: str, endpoint_url: str) -> Any:
    import boto3
    from botocore.config import Config

    # Standard retries back off on RequestLimitExceeded (EC2's throttling), a few times.
    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10,
                    read_timeout=30, user_agent_extra="cni-pipeline")
    return boto3.session.Session().client("ec2", region_name=region or None,
                                          endpoint_url=endpoint_url or None, config=config)


def kubernetes_apis(kubeconfig: str) -> tuple[Any, Any]:
    """CoreV1Api and CustomObjectsApi: in-cluster when in a pod, else the kubeconfig.

    (The prometheus receiver loads its client with more care: exec plugins, token rotation for its
    long watches. Two list calls every few minutes need none of that, and a component may not
    import another's modules.)"""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration, persist_config=False)
    else:
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration, persist_config=False)
    api = client.ApiClient(configuration)
    return client.CoreV1Api(api), client.CustomObjectsApi(api)
