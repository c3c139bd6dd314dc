"""Config of the ``aws_subnets`` receiver: which subnets, how often, and the AWS and Kubernetes
clients it uses."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import ComponentConfig, Duration

#: DescribeSubnets shares EC2's request rate limits with aws-node itself: every 5 minutes is
#: plenty for a number that moves as nodes and pods come and go.
DEFAULT_COLLECTION_INTERVAL = Duration(300)
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")


@dataclass(frozen=True, kw_only=True)
class AwsSubnetsConfig(ComponentConfig):
    #: Subnets to watch, besides those found from the nodes and the ENIConfigs.
    subnet_ids: list[str] = field(default_factory=list)
    #: The subnets of the cluster's nodes: each Node's ``spec.providerID`` instance, its primary
    #: and secondary ENIs (DescribeInstances).
    from_nodes: bool = True
    #: The subnets custom networking puts pods in: ENIConfig objects' ``spec.subnet``
    #: (``crd.k8s.amazonaws.com/v1alpha1``), when that CRD exists.
    from_eniconfigs: bool = True
    collection_interval: Duration = DEFAULT_COLLECTION_INTERVAL
    #: Empty: the environment's (AWS_REGION), as boto3 finds it.
    region: str = ""
    #: EC2 endpoint (a VPC endpoint, or a test server); empty: the region's.
    endpoint_url: str = ""
    #: For the Node and ENIConfig lists; empty: in-cluster, else KUBECONFIG or ~/.kube/config.
    kubeconfig: str = ""

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.collection_interval < 10:
            yield "collection_interval", "must be at least 10s (EC2 rate limits are shared)"
        for i, subnet in enumerate(self.subnet_ids):
            if not _SUBNET_ID.match(subnet):
                yield f"subnet_ids[{i}]", f"not a subnet ID (subnet-0123abcd...): {subnet!r}"
        if not (self.subnet_ids or self.from_nodes or self.from_eniconfigs):
            yield "subnet_ids", "no subnets to watch: give subnet_ids, or keep from_nodes on"
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            yield "endpoint_url", "must start with http:// or https://"
