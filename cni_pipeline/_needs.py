"""What a config needs from the Kubernetes API, permission by permission: what ``doctor`` asks
the API server about (the Helm chart's RBAC grants the same; its tests compute it apart)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.service import Config
from receivers.aws_subnets import AwsSubnetsConfig
from receivers.prometheus import PrometheusReceiverConfig

READ = ("get", "list", "watch")


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    #: "" for the core group.
    group: str = ""
    #: "": cluster-wide (or every namespace).
    namespace: str = ""
    subresource: str = ""
    #: Limited to one object (the Lease).
    name: str = ""

    def __str__(self) -> str:
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        if self.group:
            what += f".{self.group}"
        if self.name:
            what += f" {self.name}"
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{self.verb} {what}{where}"


def kubernetes_permissions(config: Config, environ: Mapping[str, str] | None = None
                           ) -> list[Permission]:
    """Every permission the receivers some pipeline uses and leader election need."""
    env = os.environ if environ is None else environ
    needed: dict[Permission, None] = {}
    used = {rid for spec in config.pipelines for rid in spec.receivers}
    for rid in sorted(used, key=str):
        receiver = config.receivers[rid]
        if isinstance(receiver, PrometheusReceiverConfig) and receiver.kubernetes_sd:
            sd = receiver.kubernetes_sd
            for verb in READ:
                needed[Permission(verb, "pods", namespace=sd.namespace)] = None
            if sd.mode == "apiserver_proxy":
                needed[Permission("get", "pods", namespace=sd.namespace,
                                  subresource="proxy")] = None
            if sd.node_metadata:
                for verb in READ:
                    needed[Permission(verb, "nodes")] = None
        elif isinstance(receiver, AwsSubnetsConfig):
            if receiver.from_nodes:
                needed[Permission("list", "nodes")] = None
            if receiver.from_eniconfigs:
                needed[Permission("list", "eniconfigs", group="crd.k8s.amazonaws.com")] = None
    election = config.service.leader_election
    if election.enabled:
        namespace = (election.lease_namespace or env.get("POD_NAMESPACE", "").strip()
                     or "kube-system")
        group = "coordination.k8s.io"
        needed[Permission("create", "leases", group, namespace)] = None
        for verb in ("get", "update"):
            needed[Permission(verb, "leases", group, namespace, name=election.lease_name)] = None
    return list(needed)
