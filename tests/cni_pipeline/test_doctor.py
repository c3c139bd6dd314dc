"""``cni-pipeline doctor`` as a user runs it (a subprocess) against the test API server (its
SelfSubjectAccessReviews answered from the RBAC rules the test sets), a simulated fleet the pods
point at, moto's STS, CloudWatch and EC2, and an OTLP port: all pass, then each check made to fail
once, with the fix it prints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simfleet import FleetProcess
from tests.support.kube_apiserver import KubeAPIServer
from tests.support.moto_server import Moto, running_moto
from tests.support.pipeline_process import ROOT

CONFIG = """\
receivers:
  prometheus:
    kubernetes_sd: {{namespace: kube-system, label_selector: "{selector}", mode: {mode}}}
  aws_subnets: {{endpoint_url: {ec2}, region: {region}, subnet_ids: [subnet-0123456789abcdef0]}}
processors:
  cni_aggregate: {{}}
exporters:
  awscloudwatch: {{endpoint_url: {cloudwatch}, region: {region}, cluster_id: doctor}}
  otlp: {{endpoint: "127.0.0.1:{otlp_port}", protocol: grpc, tls: {{insecure: true}}}}
service:
  telemetry: {{endpoint: ""}}
  pipelines:
    metrics:
      {{receivers: [prometheus], processors: [cni_aggregate], exporters: [awscloudwatch, otlp]}}
    metrics/subnets: {{receivers: [aws_subnets], exporters: [awscloudwatch]}}
"""


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with running_moto(region="us-west-2") as server:
        yield server


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetProcess]:
    with FleetProcess(2, base_address="127.47.0.1", seed=4,
                      start_time=time.time() - 3600) as running:
        yield running


@pytest.fixture
def api(fleet: FleetProcess) -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        for i, address in enumerate(fleet.addresses):
            server.add_pod(f"aws-node-{i}", address.split(":")[0], f"node-{i}")
        yield server


@pytest.fixture
def otlp_port() -> Iterator[int]:
    """A port that accepts connections (what the doctor checks of an OTLP endpoint)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def doctor(tmp_path: Path, api: KubeAPIServer, moto: Moto, otlp_port: int,
           **changes: Any) -> tuple[int, str]:
    fields = {"selector": "k8s-app=aws-node", "mode": "direct", "ec2": moto.endpoint,
              "cloudwatch": moto.endpoint, "otlp_port": otlp_port, "region": "us-west-2"}
    fields.update({k: v for k, v in changes.items() if k in fields})
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(**fields))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
           "KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kubeconfig")),
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL_STS": moto.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "NO_PROXY": "127.0.0.1"}
    for name in changes.get("unset", ()):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "cni_pipeline", "doctor", "--config", str(config),
         "--timeout", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout


def line(output: str, status: str, name: str) -> str:
    found = [text for text in output.splitlines() if text.startswith(f"{status:<5}{name}:")]
    assert found, f"no {status} {name} line in:\n{output}"
    return found[0]


def test_everything_passes(tmp_path: Path, api: KubeAPIServer, moto: Moto,
                           otlp_port: int) -> None:
    status, output = doctor(tmp_path, api, moto, otlp_port)
    assert status == 0, output
    assert not [text for text in output.splitlines() if text.startswith("fail")]
    for verb in ("get", "list", "watch"):
        assert f"ok   rbac: {verb} pods in kube-system" in output
    assert "ok   rbac: list nodes (cluster-wide)" in output
    assert "ok   rbac: list eniconfigs.crd.k8s.amazonaws.com (cluster-wide)" in output
    assert "2 found by k8s-app=aws-node in kube-system, 2 running" in line(output, "ok",
                                                                           "aws-node pods")
    line(output, "ok", "scrape direct")
    line(output, "ok", "scrape apiserver_proxy")
    assert "us-west-2 (from config)" in line(output, "ok", "region")
    assert "arn:aws:sts::123456789012:user/moto" in line(output, "ok", "aws credentials")
    line(output, "ok", "cloudwatch")
    assert "ec2:DescribeSubnets allowed" in output and "ec2:DescribeInstances allowed" in output
    line(output, "ok", "otlp")
    # The doctor asked the API server, it did not guess.
    assert [r for r in api.requests if r.path.endswith("selfsubjectaccessreviews")]


def test_rbac_denied(tmp_path: Path, api: KubeAPIServer, moto: Moto, otlp_port: int) -> None:
    api.deny("pods", "list")
    status, output = doctor(tmp_path, api, moto, otlp_port)
    assert status == 1
    assert "list pods in kube-system: not allowed — fix: grant it" in line(output, "fail", "rbac")


def test_no_aws_node_pods(tmp_path: Path, api: KubeAPIServer, moto: Moto,
                          otlp_port: int) -> None:
    status, output = doctor(tmp_path, api, moto, otlp_port, selector="k8s-app=aws-nod")
    assert status == 1
    assert "label_selector" in line(output, "fail", "aws-node pods")


def test_direct_scrape_refused_names_the_fix(tmp_path: Path, api: KubeAPIServer, moto: Moto,
                                             otlp_port: int) -> None:
    api.add_pod("aws-node-dead", "127.47.9.9", "node-9")  # nothing listens there
    for i in range(2):
        api.delete_pod(f"aws-node-{i}")
    status, output = doctor(tmp_path, api, moto, otlp_port)
    assert status == 1
    assert "fix: open port 61678" in line(output, "fail", "scrape direct")


def test_no_aws_credentials(tmp_path: Path, api: KubeAPIServer, moto: Moto,
                            otlp_port: int) -> None:
    status, output = doctor(tmp_path, api, moto, otlp_port,
                            unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    assert status == 1
    assert "IRSA" in line(output, "fail", "aws credentials")


def test_cloudwatch_unreachable(tmp_path: Path, api: KubeAPIServer, moto: Moto,
                                otlp_port: int) -> None:
    status, output = doctor(tmp_path, api, moto, otlp_port,
                            cloudwatch=f"http://127.0.0.1:{closed_port()}")
    assert status == 1
    assert "endpoint_url" in line(output, "fail", "cloudwatch")


def test_otlp_endpoint_closed(tmp_path: Path, api: KubeAPIServer, moto: Moto) -> None:
    status, output = doctor(tmp_path, api, moto, closed_port())
    assert status == 1
    assert "listens" in line(output, "fail", "otlp")


def test_no_kubernetes_credentials(tmp_path: Path, api: KubeAPIServer, moto: Moto,
                                   otlp_port: int) -> None:
    status, output = doctor(tmp_path, api, moto, otlp_port, unset=("KUBECONFIG",))
    assert status == 1
    assert "set KUBECONFIG" in line(output, "fail", "kubernetes credentials")
    assert line(output, "skip", "rbac")


def test_no_region(tmp_path: Path, api: KubeAPIServer, moto: Moto, otlp_port: int) -> None:
    status, output = doctor(tmp_path, api, moto, otlp_port, region='""')
    assert status == 1
    assert "AWS_REGION" in line(output, "fail", "region")


def test_ec2_unreachable(tmp_path: Path, api: KubeAPIServer, moto: Moto, otlp_port: int) -> None:
    status, output = doctor(tmp_path, api, moto, otlp_port,
                            ec2=f"http://127.0.0.1:{closed_port()}")
    assert status == 1
    assert "endpoint_url" in line(output, "fail", "ec2 permissions")

