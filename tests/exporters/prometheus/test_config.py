"""The prometheus exporter's config and factory."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporters.prometheus import PrometheusExporterConfig, factory
from pipeline import ClusterShape, Kind, parse_endpoint, validate_config
from tests.exporters.aggregates import aggregate

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_factory_identity_and_default_config_is_valid() -> None:
    assert (factory.type, factory.kind) == ("prometheus", Kind.EXPORTER)
    config = factory.default_config()
    assert config == PrometheusExporterConfig()
    assert config.endpoint == "0.0.0.0:61681"  # the Go tool's USE_PROMETHEUS port
    assert list(validate_config(config)) == []


@pytest.mark.parametrize(("endpoint", "parsed"), [
    ("0.0.0.0:61681", ("0.0.0.0", 61681)),
    (":61681", ("0.0.0.0", 61681)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::]:9090", ("::", 9090)),
    ("[::1]:9090", ("::1", 9090)),
    ("localhost:8080", ("localhost", 8080)),
])
def test_parse_endpoint(endpoint: str, parsed: tuple[str, int]) -> None:
    assert parse_endpoint(endpoint) == parsed


@pytest.mark.parametrize(("changes", "key"), [
    ({"endpoint": "61681"}, "endpoint"),
    ({"endpoint": "host:port"}, "endpoint"),
    ({"endpoint": "0.0.0.0:70000"}, "endpoint"),
    ({"endpoint": "::1:9090"}, "endpoint"),
    ({"const_labels": {"bad-label": "x"}}, "const_labels.bad-label"),
    ({"const_labels": {"__name__": "x"}}, "const_labels.__name__"),
])
def test_each_bad_value_names_its_key(changes: dict[str, Any], key: str) -> None:
    problems = list(validate_config(dataclasses.replace(PrometheusExporterConfig(), **changes)))
    assert [k for k, _ in problems] == [key], problems


def test_describe_plan_lists_the_families() -> None:
    metrics = [aggregate("eniMaxAvailable", 0.0),
               aggregate("eniMaxAvailable", 0.0, (("zone", "a"),)),
               aggregate("addReqCount", 0.0)]
    lines = factory.describe_plan(PrometheusExporterConfig(), metrics, ClusterShape())
    assert "3 series in 2 families" in lines[0] and "0.0.0.0:61681" in lines[0]
    assert lines[1] == "families: awscni_add_ip_req_count_total, awscni_eni_max"


def test_configs_prometheus_yaml_uses_only_known_keys() -> None:
    document = yaml.safe_load((CONFIGS / "prometheus.yaml").read_text())
    section = document["exporters"]["prometheus"]
    fields = {f.name for f in dataclasses.fields(PrometheusExporterConfig)}
    assert set(section) <= fields
    assert section["endpoint"] == "0.0.0.0:61681"
    assert list(validate_config(dataclasses.replace(PrometheusExporterConfig(), **section))) == []
    assert document["service"]["pipelines"]["metrics"]["exporters"] == ["prometheus"]
