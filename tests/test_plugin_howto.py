"""The README's "Adding a plugin" example, taken from the README as written, built into a real
wheel, installed into a directory of its own and run by a real ``cni-pipeline`` process.

If the example stops matching the engine (a renamed import, a changed protocol), this fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.support.fixtures import AWS_NODE_PAGES
from tests.support.http_server import BackgroundHTTPServer

ROOT = Path(__file__).resolve().parents[1]
PAGE = (AWS_NODE_PAGES / "metrics-v1.data").read_bytes()


def howto_blocks() -> tuple[str, str]:
    """The how-to's Python module and its pyproject entry-point table, from the README."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Adding a plugin", 1)[1].split("\n## ", 1)[0]
    blocks = dict(re.findall(r"```(python|toml)\n(.*?)```", section, re.S))
    assert set(blocks) == {"python", "toml"}, "the how-to has one python and one toml block"
    return blocks["python"], blocks["toml"]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                   check=True, capture_output=True, timeout=180)


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    code, entry_points = howto_blocks()
    module = re.search(r"^# (\w+)\.py$", code, re.M)
    assert module, "the python block names its file in a first-line comment"
    source = tmp_path_factory.mktemp("acme-src")
    (source / f"{module.group(1)}.py").write_text(code)
    (source / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "acme-exporter"
            version = "0.1"

            [tool.setuptools]
            py-modules = ["{module.group(1)}"]
        """)
        + entry_points.split("\n", 1)[1]  # the block without its "# its pyproject.toml" line
    )
    wheels = tmp_path_factory.mktemp("acme-wheel")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(source))
    site = tmp_path_factory.mktemp("acme-site")
    (wheel,) = wheels.glob("acme_exporter-0.1-*.whl")
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel))
    return site


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return env


class _AwsNode(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def aws_node() -> Iterator[BackgroundHTTPServer]:
    with BackgroundHTTPServer(_AwsNode, name="howto-aws-node") as server:
        yield server


def test_components_lists_the_installed_example(installed_plugin: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cni_pipeline", "components"],
                         env=_env(installed_plugin), capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert ["exporter", "acme", "acme-exporter"] in [line.split()[:3] for line in out.splitlines()]


def test_the_example_exporter_receives_the_cluster_metrics(
    installed_plugin: Path, aws_node: BackgroundHTTPServer, tmp_path: Path
) -> None:
    config = tmp_path / "acme.yaml"
    config.write_text(textwrap.dedent(f"""\
        receivers:
          prometheus:
            scrape_interval: 1s
            scrape_timeout: 500ms
            static_targets: ["{aws_node.host}:{aws_node.port}"]
        processors:
          cni_aggregate: {{}}
        exporters:
          acme: {{}}
        service:
          telemetry: {{endpoint: ""}}
          pipelines:
            metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [acme]}}
    """))
    proc = subprocess.Popen([sys.executable, "-m", "cni_pipeline", "--config", str(config)],
                            env=_env(installed_plugin), stderr=subprocess.PIPE, text=True)
    seen = ""
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "[exporter/acme] maxIPAddresses=" not in seen:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, seen + rest
    # The one node's page, aggregated: the exporter logs what the processor computed from it.
    assigned = re.search(r"^awscni_assigned_ip_addresses (\S+)$", PAGE.decode(), re.M)
    assert assigned, "the fixture page has awscni_assigned_ip_addresses"
    assert f"[exporter/acme] assignIPAddresses={float(assigned.group(1))}" in seen, seen
