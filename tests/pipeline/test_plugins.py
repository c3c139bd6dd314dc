"""A third-party plugin package, found through entry points and run, with no change to the engine.

The package is laid out on disk with its own ``.dist-info`` (what pip would install) and put on
the path of a real ``cni-pipeline`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline import Kind, RegistryError
from pipeline._registry import Registry

PLUGIN = '''
"""acme-cni-plugins: a receiver that emits one metric per tick and an exporter to a JSON file."""
import asyncio, json
from dataclasses import dataclass
from pipeline import Batch, ComponentConfig, Cycle, Kind, Metric, MetricKind, Ticker

@dataclass(frozen=True, kw_only=True)
class TickConfig(ComponentConfig):
    value: float = 1.0

class Tick:
    def __init__(self, settings, config, next_consumer):
        self.config, self.next, self.task = config, next_consumer, None
    async def start(self, host):
        self.task = asyncio.create_task(self.loop())
    async def loop(self):
        ticker = Ticker(0.1)
        while True:
            cycle = await ticker.next()
            metric = Metric(name="acmeValue", kind=MetricKind.GAUGE, value=self.config.value)
            await self.next.consume(Batch(cycle=cycle, metrics=(metric,)))
    async def shutdown(self):
        if self.task:
            self.task.cancel()

@dataclass(frozen=True, kw_only=True)
class FileConfig(ComponentConfig):
    path: str = ""

class FileExporter:
    def __init__(self, settings, config):
        self.config, self.rows = config, []
    async def start(self, host): pass
    def wanted_families(self): return frozenset()
    async def consume(self, batch):
        self.rows += [[m.name, m.value] for m in batch.metrics]
    async def shutdown(self):
        with open(self.config.path, "w") as f:
            json.dump(self.rows, f)

class _F:
    def __init__(self, type, kind, cfg, cls):
        self.type, self.kind, self.cfg, self.cls = type, kind, cfg, cls
    def default_config(self): return self.cfg()
    def create(self, *args): return self.cls(*args)

tick = _F("acme_tick", Kind.RECEIVER, TickConfig, Tick)
jsonfile = _F("acme_jsonfile", Kind.EXPORTER, FileConfig, FileExporter)
'''

ENTRY_POINTS = """
[cni_pipeline.receivers]
acme_tick = acme_plugin:tick

[cni_pipeline.exporters]
acme_jsonfile = acme_plugin:jsonfile
"""


@pytest.fixture()
def plugin_path(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    dist = site / "acme_cni_plugins-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "acme_plugin.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-cni-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def cli_env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return env


def test_components_lists_the_plugin_with_its_distribution(plugin_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "cni_pipeline", "components"],
        env=cli_env(plugin_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert any(
        line.split()[:3] == ["receiver", "acme_tick", "acme-cni-plugins"]
        for line in out.splitlines()
    )
    assert any(
        line.split()[:3] == ["exporter", "acme_jsonfile", "acme-cni-plugins"]
        for line in out.splitlines()
    )
    assert any(line.split()[:2] == ["exporter", "debug"] for line in out.splitlines())


def test_the_engine_runs_the_plugin(plugin_path: Path, tmp_path: Path):
    result = tmp_path / "out.json"
    config = tmp_path / "acme.yaml"
    config.write_text(
        textwrap.dedent(f"""
        receivers:
          acme_tick: {{value: 7}}
        exporters:
          acme_jsonfile: {{path: "{result}"}}
          debug: {{}}
        service:
          telemetry: {{endpoint: ""}}
          pipelines:
            metrics: {{receivers: [acme_tick], exporters: [acme_jsonfile, debug]}}
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cni_pipeline", "--config", str(config)],
        env=cli_env(plugin_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        seen = ""
        while time.monotonic() < deadline and "Produce GAUGE metrics: acmeValue" not in seen:
            seen += proc.stderr.readline()
        assert "Produce GAUGE metrics: acmeValue, value: 7.000000" in seen
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    rows = json.loads(result.read_text())
    assert rows and all(row == ["acmeValue", 7.0] for row in rows)


class _Bare:
    kind = Kind.EXPORTER

    def __init__(self, type_: str) -> None:
        self.type = type_

    def default_config(self) -> None:
        return None

    def create(self) -> None:
        return None


def test_registry_rejects_a_type_claimed_twice():
    registry = Registry()
    registry.register(Kind.EXPORTER, _Bare("dup"), distribution="first-dist")
    with pytest.raises(RegistryError, match="registered twice: by first-dist and by second-dist"):
        registry.register(Kind.EXPORTER, _Bare("dup"), distribution="second-dist")


def test_registry_rejects_an_entry_point_named_unlike_its_type():
    with pytest.raises(RegistryError, match="named 'other' but its factory's type is 'dup'"):
        Registry().register(Kind.EXPORTER, _Bare("dup"), distribution="d", name="other")
