"""Config problems an operator meets in the first hour: one run shows them all, each names the
file and key; odd files (binary, UTF-16, a directory) are one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import ConfigError, Duration, parse_endpoint
from pipeline._config import load_config, load_config_text
from tests.support.components import test_registry

GOOD = """
receivers:
  source: {batches: 2}
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


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), "x.yaml", test_registry(), {})
    return info.value.lines()


def load_file(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(str(path), test_registry(), {})
    return info.value.lines()


def test_problems_at_every_level_come_in_one_run():
    text = (
        GOOD.replace("batches: 2", "batches: x, bogus: 1")  # a type and an unknown key
        .replace("factor: 3", "factor: 0, fail: maybe")  # validate() and a type in one component
        .replace("exporters: [sink]", "exporters: [sink, nothere]")  # a reference
        .replace(
            "service:\n", "service:\n  telemetry: {endpoint: localhost, unhealthy_after: 0s}\n"
        )
    )
    lines = problems_of(text)
    assert len(lines) == 7, lines
    for expected in (
        "receivers.source.batches", "receivers.source.bogus", "processors.scale.factor: must not",
        "processors.scale.fail", "service.pipelines.metrics.exporters[1]",
        "service.telemetry.endpoint", "service.telemetry.unhealthy_after",
    ):
        assert any(expected in line for line in lines), (expected, lines)


@pytest.mark.parametrize(
    ("text", "path", "line"),
    [
        (GOOD + "receivers:\n  source: {}\n", "receivers", 14),
        (GOOD.replace("factor: 3", "factor: 3, factor: 4"), "processors.scale.factor", 5),
        (GOOD.replace("  receivers: [source]", "  receivers: [source]\n      receivers: []"),
         "service.pipelines.metrics.receivers", 12),
    ],
)
def test_a_duplicate_key_at_any_level_is_refused_with_its_path_and_line(text, path, line):
    (problem,) = problems_of(text)
    assert problem.startswith(f"x.yaml: {path}: duplicate key at line {line}"), problem


def test_negative_duration_says_negative_not_units():
    with pytest.raises(ValueError, match="must not be negative"):
        Duration.from_config("-30s")


def test_unhealthy_after_is_a_duration_with_units():
    config = load_config_text(
        GOOD + "  telemetry: {unhealthy_after: 3s}\n", "x.yaml", test_registry(), {}
    )
    assert config.service.telemetry.unhealthy_after == 3.0
    (line,) = problems_of(GOOD + "  telemetry: {unhealthy_after: 3}\n")
    assert "service.telemetry.unhealthy_after: not a duration" in line


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("localhost", "must be host:port"),
        ('"8888"', "must be host:port"),
        ("127.0.0.1:99999", "port 99999 out of range"),
        ('"::1:8888"', "IPv6 host must be in brackets"),
    ],
)
def test_telemetry_endpoint_is_checked_at_load(endpoint, message):
    (line,) = problems_of(GOOD + f"  telemetry: {{endpoint: {endpoint}}}\n")
    assert line.startswith("x.yaml: service.telemetry.endpoint: ") and message in line, line


def test_endpoint_forms_accepted():
    assert parse_endpoint(":8888") == ("0.0.0.0", 8888)
    assert parse_endpoint("[::1]:0") == ("::1", 0)
    assert parse_endpoint("127.0.0.1:8888") == ("127.0.0.1", 8888)


def test_utf16_file_is_named_not_a_traceback(tmp_path):
    path = tmp_path / "u16.yaml"
    path.write_bytes(textwrap.dedent(GOOD).encode("utf-16"))
    (line,) = load_file(path)
    assert line.startswith(f"{path}: not UTF-8 text"), line


def test_binary_file_is_named(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(bytes(range(256)))
    (line,) = load_file(path)
    assert line.startswith(f"{path}: not UTF-8 text"), line


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + textwrap.dedent(GOOD).encode())
    assert load_config(str(path), test_registry(), {}).pipelines[0].id == "metrics"


def test_a_directory_is_named(tmp_path):
    (line,) = load_file(tmp_path)
    assert line == f"{tmp_path}: cannot read config file: is a directory"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "no pipeline is defined"),
        (b"- a\n- b\n", "the config must be a mapping"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
    ],
)
def test_validate_odd_files_exit_2_with_one_line(tmp_path, content, expected):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "cni_pipeline", "validate", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
