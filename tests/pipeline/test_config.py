"""Config loading: every problem named by file and full key path, all reported at once."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Literal

import pytest

from pipeline import ByteSize, ComponentConfig, ComponentID, ConfigError, Duration
from pipeline._config import load_config, load_config_text
from pipeline._decode import overlay
from tests.support.components import ScaleConfig, SinkConfig, SourceConfig, test_registry

GOOD = """
receivers:
  source: {batches: 2}
  source/b: {}
processors:
  scale: {factor: 3}
exporters:
  sink: {}
service:
  pipelines:
    metrics:
      receivers: [source]
      processors: [scale]
      exporters: [sink]
"""


def load(text: str, env: dict[str, str] | None = None):
    return load_config_text(textwrap.dedent(text), "x.yaml", test_registry(), env or {})


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, env)
    return info.value.lines()


def test_good_config_loads_with_defaults_laid_under():
    config = load(GOOD)
    assert config.receivers[ComponentID("source")] == SourceConfig(batches=2)
    assert config.receivers[ComponentID("source", "b")] == SourceConfig()
    assert config.processors[ComponentID("scale")] == ScaleConfig(factor=3.0)
    assert config.exporters[ComponentID("sink")] == SinkConfig()
    (spec,) = config.pipelines
    assert spec.receivers == (ComponentID("source"),)


def test_unknown_key_names_the_path_and_the_valid_keys():
    text = GOOD.replace("scale: {factor: 3}", "scale: {factor: 3, facter: 4}")
    (line,) = problems_of(text)
    assert line.startswith("x.yaml: processors.scale.facter: unknown key")
    assert "factor" in line


def test_wrong_type():
    (line,) = problems_of(GOOD.replace("batches: 2", "batches: two"))
    assert line == "x.yaml: receivers.source.batches: expected an integer, got str 'two'"


def test_bool_is_not_an_integer():
    (line,) = problems_of(GOOD.replace("batches: 2", "batches: true"))
    assert "receivers.source.batches: expected an integer" in line


def test_unknown_component_type_lists_the_known_ones():
    text = GOOD.replace("sink: {}", "sink: {}\n  cloudwatch: {}")
    (line,) = problems_of(text)
    assert 'x.yaml: exporters.cloudwatch: unknown exporter type "cloudwatch"' in line
    assert "known exporters: sink" in line


def test_pipeline_naming_an_undefined_component():
    (line,) = problems_of(GOOD.replace("exporters: [sink]", "exporters: [sink/other]"))
    assert line.startswith("x.yaml: service.pipelines.metrics.exporters[0]: ")
    assert 'references exporter "sink/other" which is not configured' in line


def test_empty_pipeline():
    text = GOOD.replace("receivers: [source]", "receivers: []").replace(
        "exporters: [sink]", "exporters: []"
    )
    lines = problems_of(text)
    assert (
        "x.yaml: service.pipelines.metrics.receivers: the pipeline needs at least one receiver"
        in lines
    )
    assert (
        "x.yaml: service.pipelines.metrics.exporters: the pipeline needs at least one exporter"
        in lines
    )


def test_no_pipelines_at_all():
    text = GOOD.split("service:")[0] + "service: {}\n"
    (line,) = problems_of(text)
    assert line.startswith("x.yaml: service.pipelines: no pipeline is defined")


def test_missing_env_var_without_default():
    (line,) = problems_of(GOOD.replace("factor: 3", "factor: '${env:SCALE_FACTOR}'"))
    assert line.startswith("x.yaml: processors.scale.factor: environment variable SCALE_FACTOR")


def test_env_expansion_typed_when_whole_and_text_when_embedded():
    config = load(GOOD.replace("factor: 3", "factor: '${env:F}'"), {"F": "2.5"})
    assert config.processors[ComponentID("scale")].factor == 2.5
    config = load(GOOD.replace("factor: 3", "factor: '${env:F:-4}'"), {})
    assert config.processors[ComponentID("scale")].factor == 4.0
    text = GOOD.replace("scale: {factor: 3}", "scale: {wants: ['a_${env:X:-b}', '$$lit']}")
    config = load(text, {})
    assert config.processors[ComponentID("scale")].wants == ["a_b", "$lit"]


def test_component_validate_problems_carry_the_component_path():
    (line,) = problems_of(GOOD.replace("factor: 3", "factor: 0"))
    assert line == "x.yaml: processors.scale.factor: must not be 0"


def test_all_problems_at_once():
    text = GOOD.replace("batches: 2", "batches: x").replace("factor: 3", "factr: 3")
    lines = problems_of(text)
    assert len(lines) == 2


def test_bad_component_id():
    (line,) = problems_of(GOOD.replace("source/b: {}", "9source: {}"))
    assert line.startswith("x.yaml: receivers.9source: invalid component ID '9source'")


def test_unknown_top_level_key():
    (line,) = problems_of(GOOD + "extensions: {}\n")
    assert line.startswith("x.yaml: extensions: unknown key")


def test_invalid_yaml_names_the_line():
    (line,) = problems_of("receivers:\n  source: [\n")
    assert line.startswith("x.yaml: invalid YAML: line")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yaml"), test_registry())
    assert str(tmp_path / "nope.yaml") in str(info.value)


@dataclass(frozen=True, kw_only=True)
class Nested(ComponentConfig):
    enabled: bool = False
    size: ByteSize = ByteSize(1024)


@dataclass(frozen=True, kw_only=True)
class Typed(ComponentConfig):
    interval: Duration = Duration(30)
    mode: Literal["direct", "apiserver_proxy"] = "direct"
    nested: Nested = field(default_factory=Nested)
    maybe: Nested | None = None
    labels: dict[str, str] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"interval": "6O s"}, 'c.interval: not a duration: "6O s"'),
        ({"interval": 30}, "c.interval: not a duration: 30"),
        ({"mode": "proxy"}, "c.mode: must be one of 'direct', 'apiserver_proxy', got str 'proxy'"),
        ({"nested": {"size": "lots"}}, 'c.nested.size: not a size: "lots"'),
        ({"nested": {"enabled": "yes"}}, "c.nested.enabled: expected true or false"),
        ({"maybe": {"bogus": 1}}, "c.maybe.bogus: unknown key"),
        ({"labels": {"a": 1}}, "c.labels.a: expected a string, got int 1"),
        ({"nested": [1]}, "c.nested: expected a mapping of settings"),
    ],
)
def test_typed_fields(value, message):
    problems: list[tuple[str, str]] = []
    overlay(Typed(), value, "c", problems)
    assert problems, "expected a problem"
    key, text = problems[0]
    assert f"{key}: {text}".startswith(message)


def test_typed_fields_decode():
    problems: list[tuple[str, str]] = []
    result = overlay(
        Typed(),
        {"interval": "1m30s", "nested": {"size": "10MiB"}, "maybe": {"enabled": True}},
        "c",
        problems,
    )
    assert problems == []
    assert result.interval == 90.0 and isinstance(result.interval, Duration)
    assert result.nested.size == 10 * 1024 * 1024
    assert result.maybe == Nested(enabled=True)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("500ms", 0.5), ("5m", 300), ("1h", 3600), ("1m30s", 90), ("250us", 0.00025)],
)
def test_durations(text, seconds):
    assert Duration.from_config(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "", "s", "5 m", "-1s", "1d"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        Duration.from_config(text)


def test_a_broken_component_is_reported_once_not_again_at_its_references():
    lines = problems_of(GOOD.replace("sink: {}", "sink: {}\n  kafka: {}").replace(
        "exporters: [sink]", "exporters: [sink, kafka]"))
    assert len(lines) == 1 and 'unknown exporter type "kafka"' in lines[0]
