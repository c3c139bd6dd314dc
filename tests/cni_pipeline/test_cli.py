"""The command line: exit codes, validate's messages, components, help, drop-in config, health."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from cni_pipeline.cli import main

GOOD = """
receivers:
  prometheus:
    scrape_interval: 1s
    scrape_timeout: 500ms
    static_targets: ["127.0.0.1:9"]
processors:
  cni_aggregate: {}
exporters:
  debug: {}
service:
  telemetry: {endpoint: "127.0.0.1:0"}
  pipelines:
    metrics: {receivers: [prometheus], processors: [cni_aggregate], exporters: [debug]}
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_validate_good_config(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["validate", "--config", path]) == 0
    out = capsys.readouterr().out
    assert f"{path}: valid" in out
    assert "pipeline metrics: prometheus -> cni_aggregate -> debug" in out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("scrape_timeout: 500ms", "scrape_timeout: 500"),
            "receivers.prometheus.scrape_timeout: not a duration: 500",
        ),
        (
            ("debug: {}", "debug: {verbosity: loud}"),
            "exporters.debug.verbosity: must be one of 'basic', 'detailed'",
        ),
        (("debug: {}", "debug: {colour: true}"), "exporters.debug.colour: unknown key"),
        (
            ("cni_aggregate: {}", "cni_agregate: {}"),
            'processors.cni_agregate: unknown processor type "cni_agregate"',
        ),
        (
            ("exporters: [debug]", "exporters: [awscloudwatch]"),
            'service.pipelines.metrics.exporters[0]: references exporter "awscloudwatch"',
        ),
        (
            ("exporters: [debug]", "exporters: []"),
            "service.pipelines.metrics.exporters: the pipeline needs at least one exporter",
        ),
        (
            ('static_targets: ["127.0.0.1:9"]', 'static_targets: ["${env:NO_SUCH_VAR_X}"]'),
            "receivers.prometheus.static_targets[0]: environment variable NO_SUCH_VAR_X is not set",
        ),
    ],
)
def test_validate_names_the_file_and_key_path_and_exits_2(tmp_path, capsys, change, expected):
    path = write(tmp_path, GOOD.replace(*change))
    assert main(["validate", "--config", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {expected}" in err


def test_unknown_type_lists_known_types(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("debug: {}", "debug: {}\n  kafka: {}"))
    assert main(["validate", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "known exporters: awscloudwatch, debug, otlp, prometheus" in err


def test_run_with_bad_config_exits_2_before_starting(tmp_path):
    path = write(tmp_path, GOOD.replace("1s", "fast"))
    proc = run_cli(path)
    assert proc.returncode == 2
    assert "receivers.prometheus.scrape_interval: not a duration" in proc.stderr
    assert "starting" not in proc.stderr


def test_usage_error_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "cni_pipeline", "validate"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "cni-pipeline --config configs/cloudwatch.yaml" in out
    assert "static_targets" in out


def test_print_config_is_the_go_helpers_pipeline(monkeypatch, capsys):
    monkeypatch.setenv("USE_CLOUDWATCH", "false")
    monkeypatch.setenv("USE_PROMETHEUS", "true")
    monkeypatch.setenv("METRIC_UPDATE_INTERVAL", "60")
    assert main(["print-config"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["receivers"]["prometheus"]["scrape_interval"] == "1m"
    assert data["receivers"]["prometheus"]["kubernetes_sd"]["mode"] == "apiserver_proxy"
    assert set(data["exporters"]) == {"prometheus"}
    assert data["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:61681"


def test_print_config_rejects_a_bad_interval(monkeypatch, capsys):
    monkeypatch.setenv("METRIC_UPDATE_INTERVAL", "30s")
    assert main(["print-config"]) == 2
    assert "METRIC_UPDATE_INTERVAL: expected whole seconds" in capsys.readouterr().err


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def run_cli(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cni_pipeline", "--config", path],
                          capture_output=True, text=True, timeout=60)


def wait_healthz(port: int, timeout: float = 30.0) -> int | None:
    """The /healthz status once the endpoint answers (None if it never did)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return _get(f"http://127.0.0.1:{port}/healthz")[0]
        except OSError:
            time.sleep(0.1)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_serves_health_and_stops_cleanly_on_sigterm(tmp_path):
    port = _free_port()
    path = write(tmp_path, GOOD.replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cni_pipeline", "--config", path], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        assert wait_healthz(port) == 200
        # Ready once the first cycle ran (the only target is down, which is still a cycle).
        while time.monotonic() < deadline:
            ready, body = _get(f"http://127.0.0.1:{port}/readyz")
            if ready == 200:
                break
            time.sleep(0.2)
        assert ready == 200, body
        code, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200 and "cni_pipeline_" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert "stopped" in proc.stderr.read()


def test_port_in_use_exits_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write(tmp_path, GOOD.replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        proc = run_cli(path)
    assert proc.returncode == 1
    assert f"service.telemetry.endpoint 127.0.0.1:{port}: cannot listen" in proc.stderr


def test_metrics_and_liveness_answer_before_discovery_syncs(tmp_path):
    """Probes can tell "starting" (/readyz 503, /healthz 200) from "dead" (no answer)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(textwrap.dedent("""
        apiVersion: v1
        kind: Config
        clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
        users: [{name: u, user: {token: t}}]
        contexts: [{name: x, context: {cluster: c, user: u}}]
        current-context: x
    """))
    port = _free_port()
    config = GOOD.replace("127.0.0.1:0", f"127.0.0.1:{port}").replace(
        'static_targets: ["127.0.0.1:9"]',
        f'kubernetes_sd: {{kubeconfig: "{kubeconfig}"}}').replace("1s", "30s").replace(
        "500ms", "10s")
    path = write(tmp_path, config)
    proc = subprocess.Popen([sys.executable, "-m", "cni_pipeline", "--config", path],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_healthz(port) == 200
        ready, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert ready == 503
        assert "waiting for the first cycle of receiver/prometheus" in body
        code, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
