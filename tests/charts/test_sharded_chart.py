"""The chart's sharded layout (``sharding.enabled``): a StatefulSet of K shards and one of the
gateways, with the configs of configs/sharded/ written for this release. Rendered and linted by
Helm's own library, every object schema-valid and loadable by the client's models, the configs
loaded by the pipeline's own loader, and the RBAC exactly what both configs need."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from cni_pipeline.cli import parse_args, with_overrides
from pipeline import Kind
from pipeline._config import Config, load_config_text
from pipeline._registry import Registry
from receivers.prometheus._sharding import resolve_shard
from receivers.prometheus.config import PrometheusReceiverConfig
from scripts.render_manifests import CHART, render
from tests.charts.kube_objects import LEASES, READ, Obj, granted, needed, parse

KUBE_VERSIONS = ("1.25.0", "1.37.0")
VARIANTS: dict[str, dict[str, Any]] = {
    "sharded": {"sharding": {"enabled": True}},
    "sharded-proxy-one-gateway": {
        "sharding": {"enabled": True, "shards": 5, "scrapeMode": "apiserver_proxy",
                     "gateway": {"replicas": 1}},
        "leaderElection": {"enabled": False}, "replicas": 1,
        "env": {"METRIC_UPDATE_INTERVAL": "60", "AWS_CLUSTER_ID": "prod"}},
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: parse(render(values)) for name, values in VARIANTS.items()}


def statefulset(objects: list[Obj], role: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == "StatefulSet"
                and o["metadata"]["name"].endswith(f"-{role}")]
    return found


def configs(objects: list[Obj], role: str) -> Config:
    """The config a pod of ``role`` runs: its --config file from the ConfigMap, with its env and
    its command line's flags, through the pipeline's own loader."""
    pod = statefulset(objects, role)["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    args = main["args"]
    path = args[args.index("--config") + 1]
    (mount,) = [m for m in main["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"] == volume["configMap"]["name"]]
    env = {e["name"]: e["value"] for e in main.get("env", []) if "value" in e}
    config = load_config_text(configmap["data"][path.rsplit("/", 1)[1]], path, Registry.load(),
                              env)
    return with_overrides(config, parse_args(args))


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_is_clean(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace="kube-system")
    assert ([m for m in report["messages"] if m["severity"] >= 2], report["errors"]) == ([], [])


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_is_schema_valid_and_loads(variant: str, version: str,
                                                rendered: dict[str, list[Obj]]) -> None:
    from kubernetes import client

    api_client = client.ApiClient()
    for obj in rendered[variant]:
        kubernetes_validate.validate(obj, version, strict=True)
        model = obj["apiVersion"].split("/")[-1].capitalize() + obj["kind"]
        assert api_client.deserialize(json.dumps(obj), model, "application/json") is not None


@pytest.mark.parametrize("variant", VARIANTS)
def test_shards_and_gateways_are_wired_to_each_other(variant: str,
                                                     rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[variant]
    sharding = VARIANTS[variant]["sharding"]
    shards, gateways = sharding.get("shards", 3), sharding.get("gateway", {}).get("replicas", 2)
    assert not [o for o in objects if o["kind"] == "Deployment"]
    shard_set, gateway_set = statefulset(objects, "shard"), statefulset(objects, "gateway")
    assert (shard_set["spec"]["replicas"], gateway_set["spec"]["replicas"]) == (shards, gateways)

    shard = configs(objects, "shard")
    (receiver,) = [c for c in shard.components(Kind.RECEIVER).values()
                   if isinstance(c, PrometheusReceiverConfig)]
    assert receiver.sharding.shards == shards and receiver.sharding.shard is None
    assert receiver.kubernetes_sd is not None
    assert receiver.kubernetes_sd.mode == sharding.get("scrapeMode", "direct")
    # Each shard pod's name gives it its own shard, 0 to K-1.
    name = shard_set["metadata"]["name"]
    assert [resolve_shard(shards, None, {"HOSTNAME": f"{name}-{i}"}, "x").index
            for i in range(shards)] == list(range(shards))
    # Every shard sends to every gateway pod, by its stable name behind the headless Service.
    service = gateway_set["spec"]["serviceName"]
    (headless,) = [o for o in objects if o["kind"] == "Service"
                   and o["metadata"]["name"] == service]
    assert headless["spec"]["clusterIP"] == "None"
    assert 4317 in [p["port"] for p in headless["spec"]["ports"]]
    endpoints = sorted(str(c.endpoint) for c in shard.components(Kind.EXPORTER).values())
    assert endpoints == [f"{gateway_set['metadata']['name']}-{i}.{service}.kube-system.svc:4317"
                         for i in range(gateways)]
    (spec,) = shard.pipelines
    assert [p.type for p in spec.processors] == ["cni_aggregate"]
    assert shard.components(Kind.PROCESSOR)[spec.processors[0]].output == "partials"

    gateway = configs(objects, "gateway")
    (spec,) = gateway.pipelines
    assert ([r.type for r in spec.receivers], [p.type for p in spec.processors],
            [e.type for e in spec.exporters]) == (["otlp"], ["cni_combine"], ["awscloudwatch"])
    assert gateway.service.leader_election.enabled is (gateways > 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_is_exactly_what_shards_and_gateways_need(variant: str,
                                                      rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[variant]
    assert granted(objects) == (needed(configs(objects, "shard"))
                                | needed(configs(objects, "gateway")))


def test_rbac_spelt_out(rendered: dict[str, list[Obj]]) -> None:
    pods = {("kube-system", "pods", v) for v in READ}
    lease = {("kube-system", LEASES, "create"),
             ("kube-system", f"{LEASES}/cni-pipeline", "get"),
             ("kube-system", f"{LEASES}/cni-pipeline", "update")}
    assert granted(rendered["sharded"]) == pods | lease
    assert granted(rendered["sharded-proxy-one-gateway"]) == pods | {
        ("kube-system", "pods/proxy", "get")}


@pytest.mark.parametrize(("values", "message"), [
    ({"config": "receivers: {}"}, "leave config empty"),
    ({"subnets": {"enabled": True}}, "not with sharding.enabled"),
    ({"serviceMonitor": {"enabled": True}}, "PodMonitor"),
    ({"leaderElection": {"enabled": False}}, "needs leaderElection.enabled"),
])
def test_what_sharding_cannot_go_with_is_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render({"sharding": {"enabled": True}, **values})


def test_off_by_default_and_the_default_render_has_no_statefulset() -> None:
    objects = parse(render({}))
    assert [o["kind"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")] == [
        "Deployment"]
