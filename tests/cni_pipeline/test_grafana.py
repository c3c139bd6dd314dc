"""``dashboard --format grafana`` against a real Prometheus (Debian's package) scraping a real
``cni-pipeline`` prometheus exporter fed by a simulated fleet: every panel's PromQL expression
returns series, so no panel of the dashboard draws a name the exporter does not serve. The
committed configs/grafana/cni-pipeline.json is the command's output for configs/prometheus.yaml.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simfleet import FleetProcess
from tests.support.pipeline_process import ROOT, Replica, eventually, free_port, start_pipeline
from tests.support.prom_server import PromServer, missing_reason

CONFIG = """\
receivers:
  prometheus:
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_targets: [{targets}]
processors:
  cni_aggregate: {{group_by: [instance_type]}}
exporters:
  prometheus: {{endpoint: "127.0.0.1:{prom_port}"}}
service:
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [prometheus]}}
"""


def dashboard(config: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "cni_pipeline", "dashboard", "--format", "grafana",
         "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    board: dict[str, Any] = json.loads(result.stdout)
    return board


def expressions(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_the_committed_dashboard_is_the_commands_output() -> None:
    committed = json.loads((ROOT / "configs/grafana/cni-pipeline.json").read_text())
    assert committed == dashboard(ROOT / "configs/prometheus.yaml"), (
        "run `make dashboards`")
    titles = [panel["title"] for panel in committed["panels"]]
    assert "IP addresses: capacity and assigned" in titles
    assert "Coverage: aws-node pods" in titles


@pytest.fixture
def fleet() -> Iterator[FleetProcess]:
    with FleetProcess(3, base_address="127.45.0.1", seed=3,
                      start_time=time.time() - 3600) as running:
        yield running


@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_every_panel_draws_what_prometheus_scraped(fleet: FleetProcess, tmp_path: Path) -> None:
    port, prom_port = free_port(), free_port()
    config = tmp_path / "prom.yaml"
    config.write_text(CONFIG.format(targets=", ".join(f'"{a}"' for a in fleet.addresses),
                                    prom_port=prom_port, port=port))
    board = dashboard(config)
    exprs = expressions(board)
    assert any(e.startswith("sum by (instance_type)") for e in exprs)  # the group_by view
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in board["panels"])
    pipeline = start_pipeline("pipeline", ["--config", str(config)], tmp_path / "p.log", port)
    replicas: list[Replica] = [pipeline]
    try:
        eventually(lambda: "awscni_" in pipeline.get_from(prom_port, "/metrics"),
                   "the exporter serves", replicas)
        with PromServer([f"127.0.0.1:{prom_port}"], tmp_path / "prom") as prometheus:
            for expr in exprs:
                # Grafana's $__rate_interval is at least four scrape intervals.
                query = expr.replace("$__rate_interval", "10s")
                prometheus.wait_for(query, lambda result: len(result) > 0, timeout=30)
    finally:
        pipeline.process.terminate()
        pipeline.process.wait(timeout=30)
