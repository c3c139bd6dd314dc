"""The otlp exporter's config: defaults, endpoint resolution, cross-field validation, factory."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporters.otlp import OtlpExporter, OtlpExporterConfig, TLSConfig, factory
from pipeline import ClusterShape, Duration, Kind, Metric, MetricKind, validate_config
from pipeline.exporterhelper import QueueSettings

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def problems(**changes: Any) -> list[tuple[str, str]]:
    return list(validate_config(dataclasses.replace(OtlpExporterConfig(), **changes)))


def test_factory_identity_and_default_config_is_valid() -> None:
    assert (factory.type, factory.kind) == ("otlp", Kind.EXPORTER)
    config = factory.default_config()
    assert config == OtlpExporterConfig()
    assert list(validate_config(config)) == []
    assert (config.protocol, config.compression, config.temporality) == ("grpc", "gzip", "delta")
    assert config.timeout == Duration(10)


@pytest.mark.parametrize(("changes", "endpoint"), [
    ({}, "localhost:4317"),
    ({"endpoint": "collector:4317"}, "collector:4317"),
    ({"protocol": "http/protobuf"}, "http://localhost:4318/v1/metrics"),
    ({"protocol": "http/protobuf", "endpoint": "https://otlp.example:4318"},
     "https://otlp.example:4318/v1/metrics"),
    ({"protocol": "http/protobuf", "endpoint": "https://otlp.example/otlp/"},
     "https://otlp.example/otlp/v1/metrics"),
    ({"protocol": "http/protobuf", "endpoint": "http://a:4318",
      "metrics_endpoint": "http://b:9090/api/v1/otlp/v1/metrics"},
     "http://b:9090/api/v1/otlp/v1/metrics"),
])
def test_resolved_endpoint(changes: dict[str, Any], endpoint: str) -> None:
    assert dataclasses.replace(OtlpExporterConfig(), **changes).resolved_endpoint() == endpoint


@pytest.mark.parametrize(("changes", "key"), [
    ({"timeout": Duration(0)}, "timeout"),
    ({"sending_queue": QueueSettings(queue_size=0)}, "sending_queue.queue_size"),
    ({"sending_queue": QueueSettings(num_consumers=0)}, "sending_queue.num_consumers"),
    ({"tls": TLSConfig(cert_file="c.pem")}, "tls.key_file"),
    ({"tls": TLSConfig(key_file="k.pem")}, "tls.cert_file"),
    ({"tls": TLSConfig(insecure_skip_verify=True)}, "tls.insecure_skip_verify"),
    ({"per_target_families": ["awscni_eni_max"]}, "per_target_families"),
    ({"metrics_endpoint": "http://x/v1/metrics"}, "metrics_endpoint"),
    ({"endpoint": "unix:///tmp/otlp.sock"}, "endpoint"),
    ({"endpoint": "https://collector:4317", "tls": TLSConfig(insecure=True)}, "tls.insecure"),
    ({"protocol": "http/protobuf", "endpoint": "collector:4318"}, "endpoint"),
    ({"protocol": "http/protobuf", "metrics_endpoint": "collector:4318/v1/metrics"},
     "metrics_endpoint"),
])
def test_each_bad_combination_names_its_key(changes: dict[str, Any], key: str) -> None:
    found = problems(**changes)
    assert [k for k, _ in found] == [key], found


@pytest.mark.parametrize("changes", [
    {"endpoint": "http://collector:4317"},
    {"endpoint": "https://collector:4317", "tls": TLSConfig(ca_file="/ca.pem")},
    {"tls": TLSConfig(cert_file="c.pem", key_file="k.pem")},
    {"per_target": True, "per_target_families": ["awscni_eni_max"]},
    {"protocol": "http/protobuf", "endpoint": "http://c:4318", "tls": TLSConfig(insecure=True)},
    {"temporality": "cumulative", "compression": "none"},
])
def test_good_combinations(changes: dict[str, Any]) -> None:
    assert problems(**changes) == []


def test_wanted_families(make_settings: Any) -> None:
    settings = make_settings()
    plain = OtlpExporter(settings, OtlpExporterConfig())
    assert plain.wanted_families() == frozenset()
    every = OtlpExporter(settings, OtlpExporterConfig(per_target=True))
    assert every.wanted_families() is None
    some = OtlpExporter(settings, OtlpExporterConfig(
        per_target=True, per_target_families=["awscni_eni_max", "awscni_ip_max"]))
    assert some.wanted_families() == frozenset({"awscni_eni_max", "awscni_ip_max"})


def test_describe_plan_names_endpoint_and_per_target() -> None:
    metrics = [Metric("totalIPAddresses", MetricKind.GAUGE, 0.0)] * 3
    config = OtlpExporterConfig(per_target=True, endpoint="collector:4317")
    lines = factory.describe_plan(config, metrics, ClusterShape(nodes=50))
    assert "3 data points" in lines[0] and "collector:4317" in lines[0]
    assert "50 node resources" in lines[1]


def _check_keys(section: dict[str, Any], cls: type, path: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in section.items():
        assert key in fields, f"{path}.{key} is not a field of {cls.__name__}"
        nested = getattr(cls(), key)
        if dataclasses.is_dataclass(nested) and isinstance(value, dict):
            _check_keys(value, type(nested), f"{path}.{key}")


def test_configs_otlp_yaml_uses_only_known_keys() -> None:
    document = yaml.safe_load((CONFIGS / "otlp.yaml").read_text())
    exporters = document["exporters"]
    otlp_ids = [k for k in exporters if k.split("/")[0] == "otlp"]
    assert otlp_ids, "configs/otlp.yaml defines no otlp exporter"
    for component_id in otlp_ids:
        _check_keys(exporters[component_id] or {}, OtlpExporterConfig, f"exporters.{component_id}")
    for pipeline in document["service"]["pipelines"].values():
        assert any(e.split("/")[0] == "otlp" for e in pipeline["exporters"])
