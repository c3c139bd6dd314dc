"""Reading a render of charts/cni-pipeline as Kubernetes would: its objects, the pipeline config
its pod runs, the permissions its RBAC grants and those that config needs.

What the pipeline needs is computed here from the config as the pipeline itself loads it (the
receiver's own defaults), never from the chart's templates, so the two can disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from cni_pipeline.cli import parse_args, with_overrides
from cni_pipeline.dropin import dropin_config_data
from pipeline import Kind
from pipeline._config import Config, build_config, load_config_text
from pipeline._registry import Registry
from receivers.aws_subnets import AwsSubnetsConfig
from receivers.prometheus.config import PrometheusReceiverConfig

Obj = dict[str, Any]
#: (namespace, or "*" for every namespace and for cluster-scoped resources; resource; verb)
Permission = tuple[str, str, str]
READ = ("get", "list", "watch")
#: Leases as a Permission's resource; one Lease by name is "coordination.k8s.io/leases/NAME".
LEASES = "coordination.k8s.io/leases"


def parse(rendered: dict[str, str]) -> list[Obj]:
    """Every object of the rendered templates (NOTES.txt is not a manifest)."""
    texts = (text for path, text in sorted(rendered.items()) if path.endswith(".yaml"))
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def only(objects: Iterable[Obj], kind: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def container(objects: list[Obj]) -> Obj:
    (main,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    found: Obj = main
    return found


def container_env(objects: list[Obj]) -> dict[str, str]:
    """The literal env values (those set from the downward API are left out)."""
    return {e["name"]: e["value"] for e in container(objects).get("env", []) if "value" in e}


def field_env(objects: list[Obj]) -> dict[str, str]:
    """The env variables set from the pod's own fields: name -> fieldPath."""
    return {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
            for e in container(objects).get("env", []) if "valueFrom" in e}


def mounted_config(objects: list[Obj]) -> str | None:
    """The text of the file the container's --config names, followed from its mount to the
    volume to the ConfigMap key; None without --config (drop-in mode)."""
    main = container(objects)
    args = main.get("args", [])
    if "--config" not in args:
        return None
    path = args[args.index("--config") + 1]
    # A file mounted by subPath, or a file in a directory the ConfigMap is mounted as.
    (mount,) = [m for m in main["volumeMounts"]
                if m["mountPath"] == path or path.startswith(m["mountPath"].rstrip("/") + "/")]
    key = mount["subPath"] if mount["mountPath"] == path else path[len(mount["mountPath"]) + 1:]
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"] == volume["configMap"]["name"]]
    text: str = configmap["data"][key]
    return text


def pipeline_config(objects: list[Obj]) -> Config:
    """The config the pod would run: the mounted one, or the drop-in one from its env; with the
    pod's env for ${env:...}. Raises ConfigError when it is invalid."""
    registry = Registry.load()
    env = container_env(objects)
    text = mounted_config(objects)
    if text is None:
        config = build_config(dropin_config_data(env), "drop-in", registry)
    else:
        config = load_config_text(text, "ConfigMap", registry, env)
    # The command line's leader flags, read by the command's own parser.
    return with_overrides(config, parse_args(container(objects).get("args", [])))


def needed(config: Config, namespace: str = "kube-system") -> set[Permission]:
    """What the receivers some pipeline uses read from the API server (unused ones are never
    built): pods, pods/proxy in proxy mode, nodes with node_metadata; with leader election, the
    Lease in the pod's ``namespace`` (create, then get and update of that one Lease)."""
    perms: set[Permission] = set()
    election = config.service.leader_election
    if election.enabled:
        where = election.lease_namespace or namespace
        perms.add((where, LEASES, "create"))
        perms |= {(where, f"{LEASES}/{election.lease_name}", verb) for verb in ("get", "update")}
    used = {rid for spec in config.pipelines for rid in spec.receivers}
    for rid in used:
        receiver = config.components(Kind.RECEIVER)[rid]
        if isinstance(receiver, AwsSubnetsConfig):
            if receiver.from_nodes:
                perms.add(("*", "nodes", "list"))
            if receiver.from_eniconfigs:
                perms.add(("*", "crd.k8s.amazonaws.com/eniconfigs", "list"))
            continue
        if not isinstance(receiver, PrometheusReceiverConfig) or receiver.kubernetes_sd is None:
            continue
        sd = receiver.kubernetes_sd
        scope = sd.namespace or "*"
        perms |= {(scope, "pods", verb) for verb in READ}
        if sd.mode == "apiserver_proxy":
            perms.add((scope, "pods/proxy", "get"))
        if sd.node_metadata:
            perms |= {("*", "nodes", verb) for verb in READ}
    return perms


def granted(objects: list[Obj]) -> set[Permission]:
    """What the RBAC objects grant the pods' service account (the Deployment's, or with
    sharding the StatefulSets', which must share one). Every role must be bound to it and every
    rule be in the core API group, so nothing is granted unseen."""
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    subjects = [{"kind": "ServiceAccount", "namespace": o["metadata"]["namespace"],
                 "name": o["spec"]["template"]["spec"]["serviceAccountName"]} for o in workloads]
    subject = subjects[0]
    assert all(other == subject for other in subjects), subjects
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    bound: set[tuple[str, str, str]] = set()
    perms: set[Permission] = set()
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["subjects"] == [subject], binding["metadata"]["name"]
        scope = binding["metadata"].get("namespace", "*")
        ref = binding["roleRef"]
        role_ns = scope if ref["kind"] == "Role" else ""
        key = (ref["kind"], role_ns, ref["name"])
        assert key in roles, f"{binding['metadata']['name']} refers to a role not rendered"
        bound.add(key)
        for rule in roles[key]["rules"]:
            (group,) = rule["apiGroups"]
            assert group in ("", "coordination.k8s.io", "crd.k8s.amazonaws.com"), rule
            prefix = f"{group}/" if group else ""
            names = rule.get("resourceNames")
            resources = [f"{prefix}{resource}" + (f"/{name}" if names else "")
                         for resource in rule["resources"] for name in (names or [""])]
            perms |= {(scope, resource, verb) for resource in resources for verb in rule["verbs"]}
    assert bound == set(roles), f"roles bound to nobody: {set(roles) - bound}"
    return perms
