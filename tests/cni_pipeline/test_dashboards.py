"""``dashboard`` and ``alarms`` against what a real pipeline published into moto's CloudWatch.

A real ``cni-pipeline`` process scrapes a simulated fleet and publishes to moto; then every metric
a dashboard widget draws (and every SEARCH expression's schema) and every metric an alarm watches
must be among the metrics moto lists: nothing on the dashboard is a metric the config does not
really publish. ``--apply`` is read back with GetDashboard and DescribeAlarms.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simfleet import FleetProcess
from tests.support.moto_server import Moto, aws_test_env, running_moto

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "dash-cluster"
COVERAGE = ["targetsDiscovered", "targetsReporting", "targetsStale", "targetsFailed"]
CONFIG = """\
receivers:
  prometheus:
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_targets: [{targets}]
processors:
  cni_aggregate:
    group_by: [zone]
exporters:
  awscloudwatch:
    endpoint_url: {endpoint}
    cluster_id: {cluster}
    flush_interval: 1s
    derived_metrics: {derived}
service:
  telemetry: {{endpoint: ""}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [awscloudwatch]}}
"""
SEARCH = re.compile(r"SEARCH\('\{([^}]*)\} MetricName=\"(\w+)\" CLUSTER_ID=\"([^\"]+)\"'")


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    aws_test_env(monkeypatch, region="us-west-2")


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with running_moto(region="us-west-2") as server:
        yield server


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetProcess]:
    with FleetProcess(4, base_address="127.42.0.1", seed=5,
                      start_time=time.time() - 3600) as running:
        yield running


def write_config(tmp_path: Path, fleet: FleetProcess, moto: Moto, derived: list[str]) -> Path:
    path = tmp_path / "cw.yaml"
    path.write_text(CONFIG.format(targets=", ".join(f'"{a}"' for a in fleet.addresses),
                                  endpoint=moto.endpoint, cluster=CLUSTER,
                                  derived=json.dumps(derived)))
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cni_pipeline", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)


def publish(config: Path, moto: Moto, expect: set[str]) -> list[dict[str, Any]]:
    """Run the pipeline until moto lists every name of ``expect`` (bounded), then stop it."""
    process = subprocess.Popen([sys.executable, "-m", "cni_pipeline", "--config", str(config)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = moto.list_metrics("Kubernetes")
            if expect <= {m["MetricName"] for m in listed}:
                break
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
    listed = moto.list_metrics("Kubernetes")
    assert expect <= {m["MetricName"] for m in listed}
    return listed


def listed_keys(listed: list[dict[str, Any]]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
            for m in listed}


def dashboard_metrics(body: dict[str, Any]) -> tuple[list[tuple[str, str, tuple[Any, ...]]],
                                                      list[tuple[str, str, tuple[str, ...]]]]:
    """(namespace, name, dimensions) drawn directly, and (namespace, name, schema dimension
    names) of the SEARCH expressions."""
    direct, searches = [], []
    for widget in body["widgets"]:
        for line in widget.get("properties", {}).get("metrics", []):
            if isinstance(line[0], dict):
                match = SEARCH.search(line[0]["expression"])
                assert match, line
                namespace, *dims = match.group(1).split(",")
                assert match.group(3) == CLUSTER
                searches.append((namespace, match.group(2), tuple(dims)))
            else:
                namespace, name, *rest = line
                pairs = [x for x in rest if not isinstance(x, dict)]
                direct.append((namespace, name, tuple(zip(pairs[::2], pairs[1::2], strict=True))))
    return direct, searches


def alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    stats = [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]
    if "MetricName" in alarm:
        stats.append(alarm)
    return [(m["Namespace"], m["MetricName"],
             tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"]))) for m in stats]


def test_every_widget_and_alarm_names_a_metric_the_pipeline_published(
    tmp_path: Path, fleet: FleetProcess, moto: Moto
) -> None:
    moto.reset()
    config = write_config(tmp_path, fleet, moto, COVERAGE)
    listed = publish(config, moto, {"assignIPAddresses", "awsAPIErr", *COVERAGE})
    keys = listed_keys(listed)

    result = cli("dashboard", "--config", str(config))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    direct, searches = dashboard_metrics(body)
    titles = [w["properties"].get("title", "") for w in body["widgets"]]
    assert "Coverage: aws-node pods" in titles and "AWS API and ipamd errors" in titles
    assert len(direct) >= 15 and searches  # the cluster views, and the per-zone views
    for namespace, name, dims in direct:
        assert namespace == "Kubernetes"
        assert (name, tuple(sorted(dims))) in keys, f"{name} {dims} is not in CloudWatch"
    for namespace, name, schema in searches:
        assert namespace == "Kubernetes"
        assert any(m["MetricName"] == name and {d["Name"] for d in m["Dimensions"]} == set(schema)
                   for m in listed), f"no {name} with dimensions {schema} in CloudWatch"

    result = cli("alarms", "--config", str(config))
    assert result.returncode == 0, result.stderr
    alarms = json.loads(result.stdout)
    names = {a["AlarmName"].removeprefix(f"cni-pipeline-{CLUSTER}-") for a in alarms}
    assert names == {"ip-utilization-high", "ipamd-errors", "aws-api-errors",
                     "nodes-not-reporting"}
    # not published by this config, so skipped with the reason
    assert "subnet-nearly-full: minSubnetAvailableIPs not published" in result.stderr
    assert "ip-exhaustion-forecast: ipExhaustionHours not published" in result.stderr
    for alarm in alarms:
        for namespace, name, dims in alarm_metrics(alarm):
            assert namespace == "Kubernetes" and (name, dims) in keys, (alarm["AlarmName"], name)


def test_apply_puts_them_into_cloudwatch(tmp_path: Path, fleet: FleetProcess, moto: Moto) -> None:
    moto.reset()
    config = write_config(tmp_path, fleet, moto, [])
    printed = json.loads(cli("dashboard", "--config", str(config)).stdout)
    result = cli("dashboard", "--config", str(config), "--apply", "--name", "cni")
    assert result.returncode == 0, result.stderr
    assert "dashboard cni (" in result.stdout and "put in us-west-2" in result.stdout
    stored = moto.client("cloudwatch").get_dashboard(DashboardName="cni")
    assert json.loads(stored["DashboardBody"]) == printed
    # without the derived coverage metrics the dashboard says how to send them
    notes = [w for w in printed["widgets"] if w["type"] == "text"]
    assert notes and "derived_metrics" in notes[0]["properties"]["markdown"]

    result = cli("alarms", "--config", str(config), "--apply", "--ip-utilization", "70",
                 "--alarm-action", "arn:aws:sns:us-west-2:123456789012:pager")
    assert result.returncode == 0, result.stderr
    described = {a["AlarmName"]: a for a in
                 moto.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    prefix = f"cni-pipeline-{CLUSTER}-"
    assert set(described) == {prefix + n for n in ("ip-utilization-high", "ipamd-errors",
                                                  "aws-api-errors")}
    utilization = described[prefix + "ip-utilization-high"]
    assert utilization["Threshold"] == 70.0
    assert utilization["AlarmActions"] == ["arn:aws:sns:us-west-2:123456789012:pager"]
    assert {q["Id"] for q in utilization["Metrics"]} == {"assigned", "capacity", "utilization"}
    assert described[prefix + "ipamd-errors"]["MetricName"] == "ipamdErr"


def test_cloudformation_template_holds_the_same_alarms(tmp_path: Path, fleet: FleetProcess,
                                                       moto: Moto) -> None:
    config = write_config(tmp_path, fleet, moto, COVERAGE)
    plain = json.loads(cli("alarms", "--config", str(config)).stdout)
    template = json.loads(cli("alarms", "--config", str(config),
                              "--format", "cloudformation").stdout)
    resources = template["Resources"]
    assert all(re.fullmatch(r"[A-Za-z0-9]+", logical) for logical in resources)
    assert all(r["Type"] == "AWS::CloudWatch::Alarm" for r in resources.values())
    assert sorted(r["Properties"]["AlarmName"] for r in resources.values()) == sorted(
        a["AlarmName"] for a in plain)


def test_a_missing_cluster_id_is_a_usage_error_naming_both_ways(tmp_path: Path,
                                                                 fleet: FleetProcess,
                                                                 moto: Moto) -> None:
    config = write_config(tmp_path, fleet, moto, []).read_text().replace(
        f"cluster_id: {CLUSTER}", "cluster_id: \"\"")
    path = tmp_path / "no-cluster.yaml"
    path.write_text(config)
    result = cli("dashboard", "--config", str(path))
    assert result.returncode == 2
    assert "exporters.awscloudwatch.cluster_id: not set: give --cluster-id or set " \
           "AWS_CLUSTER_ID" in result.stderr
    assert cli("dashboard", "--config", str(path), "--cluster-id", "x").returncode == 0
