"""Config, factory and the ``validate`` plan (metric count and monthly cost; no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from exporters.awscloudwatch import CloudWatchExporter, CloudWatchExporterConfig, factory
from exporters.awscloudwatch._plan import metric_cost, plan
from pipeline import (
    ClusterShape,
    ComponentConfig,
    Distribution,
    Duration,
    Kind,
    Metric,
    MetricKind,
    validate_config,
)
from pipeline.exporterhelper import RetrySettings
from tests.support.imds import ImdsServer

ROOT = Path(__file__).resolve().parents[3]


def test_factory_identity_and_default_config_is_valid() -> None:
    assert factory.type == "awscloudwatch" and factory.kind is Kind.EXPORTER
    config = factory.default_config()
    assert isinstance(config, CloudWatchExporterConfig) and isinstance(config, ComponentConfig)
    assert list(validate_config(config)) == []
    assert config.namespace == "Kubernetes"
    assert config.flush_interval == Duration(60)
    assert factory.default_config() == config  # no shared mutable state between defaults


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"storage_resolution": 5}, "storage_resolution"),
        ({"namespace": "AWS/EC2"}, "namespace"),
        ({"namespace": ""}, "namespace"),
        ({"flush_interval": Duration(0)}, "flush_interval"),
        ({"max_datums_held": 999}, "max_datums_held"),
        ({"max_concurrent_requests": 0}, "max_concurrent_requests"),
        ({"read_timeout": Duration(0)}, "read_timeout"),
        ({"endpoint_url": "monitoring.local:443"}, "endpoint_url"),
        ({"retry_on_failure": RetrySettings(multiplier=0.5)}, "retry_on_failure.multiplier"),
    ],
)
def test_each_bad_value_names_its_key(overrides: dict[str, object], key: str) -> None:
    config = replace(CloudWatchExporterConfig(), **overrides)
    assert [k for k, _ in validate_config(config)] == [key]


def test_factory_creates_an_exporter(settings: object) -> None:
    exporter = factory.create(settings, factory.default_config())  # type: ignore[arg-type]
    assert isinstance(exporter, CloudWatchExporter)


def cni_plan(nodes: int, per_node: bool = False) -> list[Metric]:
    """20 cluster-wide metrics (the default rule table), plus one per node for each when grouped."""
    names = [f"metric{i}" for i in range(20)]
    metrics = [Metric(n, MetricKind.GAUGE, 0.0) for n in names]
    metrics.append(Metric("ipUtilization", MetricKind.GAUGE, 0.0, derived=True))
    if per_node:
        metrics += [Metric(n, MetricKind.GAUGE, 0.0, attributes=(("Node", f"ip-{k}"),))
                    for n in names for k in range(nodes)]
    return metrics


def test_plan_for_the_default_pipeline() -> None:
    config = CloudWatchExporterConfig()
    p = plan(config, cni_plan(100), ClusterShape(nodes=100, interval=30))
    assert p.metrics == 20 and p.derived_left_out == 1
    assert p.requests_per_flush == 1  # two cycles of 20 datums share one request
    assert p.requests_per_month == 43_200  # one a minute for 30 days
    assert p.metric_usd == pytest.approx(6.00)
    assert p.request_usd == pytest.approx(0.432)


def test_plan_for_per_node_metrics_on_a_large_cluster() -> None:
    config = CloudWatchExporterConfig()
    metrics = cni_plan(1000, per_node=True)
    shape = ClusterShape(nodes=1000, interval=30)
    p = plan(config, metrics, shape)
    assert p.metrics == 20_020
    assert p.requests_per_flush == 41  # 40,040 datums a minute, 1000 a request
    assert p.metric_usd == pytest.approx(10_000 * 0.30 + 10_020 * 0.10)
    lines = factory.describe_plan(config, metrics, shape)
    assert "20,020 CloudWatch metrics" in lines[0]
    assert "$4,002.00/month for metrics" in lines[2]
    assert not any(line.startswith("warning:") for line in lines)
    # The same cluster with a queue smaller than one cycle: validate says so.
    small = CloudWatchExporterConfig(max_datums_held=10_000)
    assert any(line.startswith("warning:") and "max_datums_held" in line
               for line in factory.describe_plan(small, metrics, shape))


def test_plan_counts_derived_metrics_when_sent_and_distributions_once() -> None:
    dist = Distribution(bounds=(1.0, 10.0), counts=(1.0, 1.0, 1.0))
    metrics = [*cni_plan(3), Metric("lat", MetricKind.DISTRIBUTION, 0.0, distribution=dist)]
    p = plan(CloudWatchExporterConfig(send_derived=True), metrics, ClusterShape(interval=30))
    assert p.metrics == 22 and p.derived_left_out == 0


def test_flush_shorter_than_the_cycle_sends_each_cycle() -> None:
    config = CloudWatchExporterConfig(flush_interval=Duration(10))
    p = plan(config, cni_plan(3), ClusterShape(interval=60))
    assert p.requests_per_month == 43_200  # once a cycle, not six times


def test_metric_price_tiers() -> None:
    assert metric_cost(0) == 0
    assert metric_cost(10_000) == pytest.approx(3_000)
    assert metric_cost(1_250_000) == pytest.approx(3_000 + 24_000 + 37_500 + 250_000 * 0.02)


def test_no_plan_without_planned_metrics() -> None:
    [line] = factory.describe_plan(CloudWatchExporterConfig(), [], ClusterShape())
    assert "no metric plan" in line


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent", "PYTHONPATH": str(ROOT),
           "AWS_EC2_METADATA_DISABLED": "true", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "cni_pipeline", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_shipped_config_validates_with_no_cluster_or_aws_at_hand() -> None:
    # IMDS enabled and every AWS endpoint pointed at a recording server on loopback: validate
    # must not ask any of them (nor need credentials, a region or a kubeconfig).
    with ImdsServer() as recorder:
        result = _cli("validate", "--config", "configs/cloudwatch.yaml", "--nodes", "5000",
                      env_extra={"AWS_EC2_METADATA_DISABLED": "false",
                                 "AWS_EC2_METADATA_SERVICE_ENDPOINT": recorder.endpoint,
                                 "AWS_ENDPOINT_URL": recorder.endpoint,
                                 "KUBECONFIG": "/nonexistent"})
    assert recorder.requests == []
    assert result.returncode == 0, result.stderr
    assert "prometheus -> cni_aggregate -> awscloudwatch" in result.stdout
    assert "CloudWatch metrics in namespace 'Kubernetes'" in result.stdout
    assert "estimated cost: $" in result.stdout


def test_bad_exporter_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    text = (ROOT / "configs/cloudwatch.yaml").read_text().replace(
        "storage_resolution: 60", "storage_resolution: 7")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = _cli("validate", "--config", str(bad))
    assert result.returncode == 2
    assert "exporters.awscloudwatch.storage_resolution" in result.stderr + result.stdout
