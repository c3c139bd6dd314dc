"""charts/cni-pipeline rendered and linted by Helm's own Go library (helm-python-sdk), with the
default values and each documented variant: every object valid against the Kubernetes OpenAPI
schemas and the client's models, RBAC exactly what the rendered pipeline needs, and
configs/kubernetes/ equal to the default render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from cni_pipeline.cli import main as cli
from scripts.render_manifests import CHART, OUT, manifest_files, render
from tests.charts.kube_objects import (
    LEASES,
    READ,
    Obj,
    container,
    container_env,
    field_env,
    granted,
    mounted_config,
    needed,
    only,
    parse,
    pipeline_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
#: The oldest and newest Kubernetes whose schemas kubernetes-validate ships offline.
KUBE_VERSIONS = ("1.25.0", "1.37.0")


def config_text(receivers: dict[str, Any], exporters: dict[str, Any] | None = None,
                telemetry: str = "0.0.0.0:8888") -> str:
    """A pipeline config: these receivers (all in the pipeline) -> cni_aggregate -> exporters."""
    exporters = exporters or {"debug": {}}
    data = {
        "receivers": receivers,
        "processors": {"cni_aggregate": {}},
        "exporters": exporters,
        "service": {
            "pipelines": {"metrics": {"receivers": list(receivers),
                                      "processors": ["cni_aggregate"],
                                      "exporters": list(exporters)}},
            "telemetry": {"endpoint": telemetry},
        },
    }
    return yaml.safe_dump(data, sort_keys=False)


def sd(**fields: Any) -> dict[str, Any]:
    return {"kubernetes_sd": {"label_selector": "k8s-app=aws-node", **fields}}


#: The documented variants: values over the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "configmap-config": {"config": (CONFIGS / "cloudwatch.yaml").read_text()},
    "drop-in-env": {"env": {"USE_CLOUDWATCH": "false", "USE_PROMETHEUS": "true",
                            "AWS_CLUSTER_ID": "prod", "METRIC_UPDATE_INTERVAL": "60",
                            "AWS_VPC_K8S_CNI_LOGLEVEL": "debug"}},
    "proxy-mode": {"config": config_text({"prometheus": sd(mode="apiserver_proxy")})},
    "node-metadata": {"config": config_text({"prometheus": sd(node_metadata=True)})},
    "all-namespaces": {"config": config_text({"prometheus": sd(namespace="")})},
    "two-receivers": {"config": config_text({
        "prometheus/system": sd(),
        "prometheus/other": sd(namespace="cni", mode="apiserver_proxy", node_metadata=True),
    })},
    "static-targets-only": {"config": config_text({"prometheus": {
        "static_targets": ["10.0.0.1:61678"]}})},
    "irsa": {"serviceAccount": {"annotations": {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/cni-pipeline"}}},
    "use-prometheus": {"env": {"USE_PROMETHEUS": "true"}},
    "prometheus-exporter": {"config": config_text(
        {"prometheus": sd()}, {"prometheus": {"endpoint": "0.0.0.0:9101"}},
        telemetry="0.0.0.0:9888")},
    "service-monitor": {"env": {"USE_PROMETHEUS": "true"},
                        "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}},
    "image-override": {"image": {"override": "123456789012.dkr.ecr.us-west-2.amazonaws.com/"
                                             "cni-pipeline@sha256:" + "a" * 64}},
    # The Go cni-metrics-helper chart's own values file (its image keys name that tool's ECR image,
    # so image.override points at ours): a Go-helper user's values install unchanged.
    "go-chart-values": {
        "nameOverride": "cni-metrics-helper", "fullnameOverride": "cni-metrics-helper",
        "image": {"region": "us-west-2", "tag": "v1.15.3", "account": "602401143452",
                  "domain": "amazonaws.com", "override": "registry.example.com/cni-pipeline:0.1.0"},
        "env": {"USE_CLOUDWATCH": "true", "USE_PROMETHEUS": "false", "AWS_CLUSTER_ID": "",
                "AWS_VPC_K8S_CNI_LOGLEVEL": "INFO"},
        "serviceAccount": {"create": True, "name": None, "annotations": {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/cni-metrics-helper"}},
        "resources": {},
    },
    "single-replica": {"replicas": 1, "leaderElection": {"enabled": False}},
    "subnets": {"config": (CONFIGS / "cloudwatch-subnets.yaml").read_text()},
    "drop-in-subnets": {"subnets": {"enabled": True}},
    "subnets-list-only": {"config": config_text({"prometheus": sd(), "aws_subnets": {
        "subnet_ids": ["subnet-0123456789abcdef0"], "from_nodes": False,
        "from_eniconfigs": False}})},
    "lease-name": {"leaderElection": {"leaseName": "cni-lease"},
                   "config": (CONFIGS / "cloudwatch.yaml").read_text()},
    "scheduling": {"priorityClassName": "system-cluster-critical",
                   "tolerations": [{"operator": "Exists"}],
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                       "nodeSelectorTerms": [{"matchExpressions": [{
                           "key": "kubernetes.io/arch", "operator": "In",
                           "values": ["amd64", "arm64"]}]}]}}},
                   "podAnnotations": {"example.com/team": "network"},
                   "extraArgs": ["--log-format", "json"]},
}


def objects_of(values: dict[str, Any]) -> list[Obj]:
    return parse(render(values))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: objects_of(values) for name, values in VARIANTS.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_is_clean(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace="kube-system")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert (problems, report["errors"]) == ([], [])
    assert report["total_charts_linted"] == 1


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_is_schema_valid(variant: str, version: str,
                                      rendered: dict[str, list[Obj]]) -> None:
    for obj in rendered[variant]:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema shipped; test_service_monitor checks its shape
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_refuses_a_misplaced_field() -> None:
    """The check above can fail: a field where Kubernetes has none is refused."""
    deployment = only(objects_of({}), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_loads_into_the_client_models(variant: str,
                                                   rendered: dict[str, list[Obj]]) -> None:
    """Each object survives the kubernetes client's typed model unchanged (a field the model does
    not know would be dropped on the way)."""
    from kubernetes import client

    api_client = client.ApiClient()
    for obj in rendered[variant]:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        model_name = obj["apiVersion"].split("/")[-1].capitalize() + obj["kind"]
        model = api_client.deserialize(json.dumps(obj), model_name, "application/json")
        assert _without_nulls(api_client.sanitize_for_serialization(model)) == obj


# --- RBAC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_is_exactly_what_the_pipeline_needs(variant: str,
                                                 rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[variant]
    assert granted(objects) == needed(pipeline_config(objects))


def test_rbac_per_variant(rendered: dict[str, list[Obj]]) -> None:
    """The rules the README states, spelt out (the test above compares two computations)."""
    pods = {("kube-system", "pods", v) for v in READ}
    proxy = {("kube-system", "pods/proxy", "get")}
    nodes = {("*", "nodes", v) for v in READ}
    lease = {("kube-system", LEASES, "create"),
             ("kube-system", f"{LEASES}/cni-pipeline", "get"),
             ("kube-system", f"{LEASES}/cni-pipeline", "update")}
    assert granted(rendered["default"]) == pods | proxy | lease  # drop-in mode: the pod proxy
    assert granted(rendered["single-replica"]) == pods | proxy  # no leader election, no Lease
    assert granted(rendered["configmap-config"]) == pods | lease  # direct mode: no pods/proxy
    assert granted(rendered["proxy-mode"]) == pods | proxy | lease
    assert granted(rendered["node-metadata"]) == pods | nodes | lease
    assert granted(rendered["all-namespaces"]) == {("*", "pods", v) for v in READ} | lease
    assert granted(rendered["two-receivers"]) == (
        pods | nodes | {("cni", "pods", v) for v in READ} | {("cni", "pods/proxy", "get")}
        | lease)
    assert granted(rendered["static-targets-only"]) == lease
    assert granted(rendered["subnets"]) == pods | lease | {
        ("*", "nodes", "list"), ("*", "crd.k8s.amazonaws.com/eniconfigs", "list")}
    assert granted(rendered["subnets-list-only"]) == pods | lease
    assert granted(rendered["drop-in-subnets"]) == pods | proxy | lease | {
        ("*", "nodes", "list"), ("*", "crd.k8s.amazonaws.com/eniconfigs", "list")}
    assert granted(rendered["lease-name"]) == pods | {
        ("kube-system", LEASES, "create"), ("kube-system", f"{LEASES}/cni-lease", "get"),
        ("kube-system", f"{LEASES}/cni-lease", "update")}


def test_an_unused_receiver_gets_no_rbac() -> None:
    text = config_text({"prometheus": sd()}).replace(
        "receivers:\n", "receivers:\n  prometheus/unused:\n    kubernetes_sd:\n"
                        "      node_metadata: true\n      mode: apiserver_proxy\n", 1)
    objects = objects_of({"config": text})
    assert "prometheus/unused" in yaml.safe_load(mounted_config(objects) or "")["receivers"]
    assert granted(objects) == needed(pipeline_config(objects))
    assert ("kube-system", "nodes", "get") not in granted(objects)


def test_rbac_create_false_renders_no_rbac() -> None:
    kinds = {o["kind"] for o in objects_of({"rbac": {"create": False}})}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize(("key", "fields"), [
    ("namespace", {"namespace": "${env:NS:-kube-system}"}),
    ("mode", {"mode": "${env:MODE}"}),
])
def test_rbac_inputs_must_be_literal(key: str, fields: dict[str, str]) -> None:
    with pytest.raises(helm.HelmRenderError, match=rf"receivers\.prometheus\.kubernetes_sd\.{key}"):
        render({"config": config_text({"prometheus": sd(**fields)})})


@pytest.mark.parametrize(("values", "where"), [
    ({"serviceMonitor": {"enable": True}}, "/serviceMonitor"),
    ({"config": {"receivers": {}}}, "/config"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
])
def test_values_schema_refuses_misspelt_or_mistyped_values(values: dict[str, Any],
                                                           where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=f"at '{where}'"):
        render(values)
    assert helm.lint(CHART, values)["errors"]


def test_a_config_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match="config: not a YAML mapping"):
        render({"config": "receivers: [unclosed"})


# --- the pod ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [v for v in VARIANTS if "config" in VARIANTS[v]])
def test_the_configmap_config_passes_validate(variant: str, rendered: dict[str, list[Obj]],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`cni-pipeline validate` accepts what the pod would mount, with the pod's env."""
    objects = rendered[variant]
    text = mounted_config(objects)
    assert text == VARIANTS[variant]["config"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in container_env(objects).items():
        monkeypatch.setenv(name, value)
    assert cli(["validate", "--config", str(path)]) == 0
    assert f"{path}: valid" in capsys.readouterr().out


@pytest.mark.parametrize("variant", [v for v in VARIANTS if "config" not in VARIANTS[v]])
def test_drop_in_mode_runs_from_the_env(variant: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[variant]
    main = container(objects)
    assert "--config" not in main.get("args", [])
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
    env = container_env(objects)
    for name, value in VARIANTS[variant].get("env", {}).items():
        assert env[name] == value
    config = pipeline_config(objects)  # the drop-in config is valid with this env
    exporters = {str(e) for e in config.exporters}
    assert ("awscloudwatch" in exporters) == (env["USE_CLOUDWATCH"] == "true")


def test_default_pod() -> None:
    objects = objects_of({})
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(objects)
    assert deployment["metadata"] == {**deployment["metadata"], "name": "cni-pipeline",
                                      "namespace": "kube-system"}
    assert pod["serviceAccountName"] == "cni-pipeline"
    assert only(objects, "ServiceAccount")["metadata"]["name"] == "cni-pipeline"
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]) == (
        2, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    assert main["args"] == ["--leader-elect", "--lease-name", "cni-pipeline"]
    assert field_env(objects) == {"POD_NAMESPACE": "metadata.namespace"}
    anti = pod["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {"weight": 100, "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}}]
    budget = only(objects, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1,
                              "selector": deployment["spec"]["selector"]}
    assert main["image"] == "cni-pipeline:0.1.0" and main["imagePullPolicy"] == "IfNotPresent"
    assert container_env(objects) == {
        "USE_CLOUDWATCH": "true", "USE_PROMETHEUS": "false", "AWS_CLUSTER_ID": "",
        "AWS_REGION": "", "METRIC_UPDATE_INTERVAL": "30", "AWS_VPC_K8S_CNI_LOGLEVEL": "info"}
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65534,
                                      "runAsGroup": 65534,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert main["securityContext"] == {"allowPrivilegeEscalation": False,
                                       "readOnlyRootFilesystem": True,
                                       "capabilities": {"drop": ["ALL"]}}
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    assert main["ports"] == [{"name": "telemetry", "containerPort": 8888, "protocol": "TCP"}]
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "telemetry"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "telemetry"}
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    assert "annotations" not in deployment["spec"]["template"]["metadata"]
    assert not [o for o in objects if o["kind"] == "ServiceMonitor"]


def test_values_reach_the_pod(rendered: dict[str, list[Obj]]) -> None:
    scheduling = VARIANTS["scheduling"]
    pod = only(rendered["scheduling"], "Deployment")["spec"]["template"]
    assert pod["spec"]["priorityClassName"] == scheduling["priorityClassName"]
    assert pod["spec"]["tolerations"] == scheduling["tolerations"]
    assert pod["spec"]["affinity"] == scheduling["affinity"]
    assert pod["metadata"]["annotations"] == scheduling["podAnnotations"]
    assert container(rendered["scheduling"])["args"][-2:] == scheduling["extraArgs"]
    override = VARIANTS["image-override"]["image"]["override"]
    assert container(rendered["image-override"])["image"] == override
    account = only(rendered["irsa"], "ServiceAccount")
    assert account["metadata"]["annotations"] == VARIANTS["irsa"]["serviceAccount"]["annotations"]
    go = VARIANTS["go-chart-values"]
    go_objects = rendered["go-chart-values"]
    account = only(go_objects, "ServiceAccount")
    assert account["metadata"]["name"] == "cni-metrics-helper"  # the name IRSA roles trust
    assert account["metadata"]["annotations"] == go["serviceAccount"]["annotations"]
    deployment_spec = only(go_objects, "Deployment")["spec"]["template"]["spec"]
    assert deployment_spec["serviceAccountName"] == "cni-metrics-helper"
    assert container(go_objects)["image"] == go["image"]["override"]


def test_one_replica_without_leader_election(rendered: dict[str, list[Obj]]) -> None:
    """The Go helper's shape: one pod, Recreate, no Lease, no budget, no anti-affinity."""
    objects = rendered["single-replica"]
    deployment = only(objects, "Deployment")
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]) == (
        1, {"type": "Recreate"})
    assert "args" not in container(objects) and field_env(objects) == {}
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert not pipeline_config(objects).service.leader_election.enabled


def test_the_subnets_switch(rendered: dict[str, list[Obj]]) -> None:
    """Drop-in mode gains the aws_subnets pipeline (SUBNET_CAPACITY); with a config the switch
    is refused, naming what to do instead."""
    config = pipeline_config(rendered["drop-in-subnets"])
    assert "metrics/subnets" in {spec.id for spec in config.pipelines}
    assert container_env(rendered["drop-in-subnets"])["SUBNET_CAPACITY"] == "true"
    with pytest.raises(helm.HelmRenderError, match="add an aws_subnets receiver to the config"):
        render({"subnets": {"enabled": True}, "config": VARIANTS["proxy-mode"]["config"]})


def test_several_replicas_need_a_leader() -> None:
    with pytest.raises(helm.HelmRenderError, match="replicas: 3 needs leaderElection.enabled"):
        render({"replicas": 3, "leaderElection": {"enabled": False}})
    assert pipeline_config(objects_of({"replicas": 3})).service.leader_election.enabled


def test_unquoted_env_numbers_keep_their_digits() -> None:
    """Helm reads an unquoted number as a float; the pod still gets 60, not 6e+01."""
    env = container_env(objects_of({"env": {"METRIC_UPDATE_INTERVAL": 60,
                                            "AWS_CLUSTER_ID": 12345678901234,
                                            "USE_PROMETHEUS": True}}))
    assert (env["METRIC_UPDATE_INTERVAL"], env["AWS_CLUSTER_ID"], env["USE_PROMETHEUS"]) == (
        "60", "12345678901234", "true")


def test_names_follow_the_release_and_overrides() -> None:
    assert only(parse(render({}, name="metrics")), "Deployment")["metadata"]["name"] == (
        "metrics-cni-pipeline")
    objects = parse(render({"fullnameOverride": "cni-metrics-helper"}, name="metrics"))
    assert {o["metadata"]["name"] for o in objects} == {"cni-metrics-helper",
                                                        "cni-metrics-helper-pods",
                                                        "cni-metrics-helper-lease"}
    assert container(objects)["args"] == ["--leader-elect", "--lease-name", "cni-metrics-helper"]
    assert granted(objects) == needed(pipeline_config(objects))


def test_config_mode_reloads_in_place() -> None:
    """By default the ConfigMap is mounted as a directory (its ..data swap is what the kubelet
    does on a change) and the pod runs with --watch-config: no checksum rolls it."""
    objects = objects_of(VARIANTS["proxy-mode"])
    main = container(objects)
    assert main["args"] == ["--config", "/etc/cni-pipeline/config/config.yaml", "--watch-config",
                            "--leader-elect", "--lease-name", "cni-pipeline"]
    assert {"name": "config", "mountPath": "/etc/cni-pipeline/config",
            "readOnly": True} in main["volumeMounts"]
    assert "annotations" not in only(objects, "Deployment")["spec"]["template"]["metadata"]
    assert pipeline_config(objects).service.watch_config


def test_config_mode_without_reload_mounts_a_file_and_rolls_on_change() -> None:
    no_reload = {"reloadConfig": False}
    first = objects_of({**VARIANTS["proxy-mode"], **no_reload})
    again = objects_of({**VARIANTS["proxy-mode"], **no_reload})
    changed = objects_of({**VARIANTS["node-metadata"], **no_reload})
    assert container(first)["args"] == ["--config", "/etc/cni-pipeline/config.yaml",
                                        "--leader-elect", "--lease-name", "cni-pipeline"]
    assert not pipeline_config(first).service.watch_config

    def checksum(objects: list[Obj]) -> str:
        annotations = only(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    assert checksum(first) == checksum(again)
    assert checksum(first) != checksum(changed)


def test_ports_follow_the_config(rendered: dict[str, list[Obj]]) -> None:
    def ports(variant: str) -> dict[str, int]:
        main = container(rendered[variant])
        declared = {p["name"]: p["containerPort"] for p in main["ports"]}
        service = only(rendered[variant], "Service")["spec"]["ports"]
        assert {p["name"]: p["port"] for p in service} == declared
        assert all(p["targetPort"] == p["name"] for p in service)
        return declared

    assert ports("default") == {"telemetry": 8888}
    assert ports("use-prometheus") == {"telemetry": 8888, "prometheus": 61681}
    assert ports("prometheus-exporter") == {"telemetry": 9888, "prometheus": 9101}
    with pytest.raises(helm.HelmRenderError, match="service.telemetry.endpoint is empty"):
        render({"config": config_text({"prometheus": sd()}, telemetry="")})


def test_service_monitor(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["service-monitor"]
    monitor = only(objects, "ServiceMonitor")
    service = only(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["kube-system"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]] == ["telemetry", "prometheus"]
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


def test_notes_say_where_to_look() -> None:
    notes = render({})["cni-pipeline/templates/NOTES.txt"]
    assert "kubectl -n kube-system logs deployment/cni-pipeline" in notes
    assert "port-forward deployment/cni-pipeline 8888:8888" in notes and "/readyz" in notes
    assert 'namespace "Kubernetes"' in notes and "CLUSTER_ID" in notes
    assert "kubectl -n kube-system get lease cni-pipeline" in notes
    single = render(VARIANTS["single-replica"])["cni-pipeline/templates/NOTES.txt"]
    assert "get lease" not in single
    prom = render(VARIANTS["use-prometheus"])["cni-pipeline/templates/NOTES.txt"]
    assert ":61681/metrics" in prom


# --- configs/kubernetes -------------------------------------------------------------------------


def test_configs_kubernetes_is_the_default_render() -> None:
    """`make manifests` output is committed: the same files, the same objects (comments aside),
    each opening with the header that says it is generated and how to apply it."""
    fresh = manifest_files(render())
    committed = {p.name: p.read_text() for p in sorted(OUT.glob("*.yaml"))}
    assert sorted(committed) == sorted(fresh), "run `make manifests`"
    for name, text in committed.items():
        assert list(yaml.safe_load_all(text)) == list(yaml.safe_load_all(fresh[name])), (
            f"configs/kubernetes/{name} differs from the chart's default render: "
            "run `make manifests`")
        assert text.startswith("# Generated by `make manifests` from charts/cni-pipeline")
        assert "kubectl apply -f configs/kubernetes/" in text
