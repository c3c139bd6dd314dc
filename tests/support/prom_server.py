"""A real Prometheus server (Debian's ``prometheus`` package) scraping loopback targets in tests.

:class:`PromServer` writes a config that scrapes the given ``host:port`` targets every second,
starts ``/usr/bin/prometheus`` on a free loopback port with its TSDB in a temporary directory,
waits for ``/-/ready``, and stops it (SIGTERM, then SIGKILL) on exit. :meth:`PromServer.query`
asks the HTTP query API, :meth:`PromServer.wait_for` polls it until a condition holds.

:func:`missing_reason` says why the binaries are unusable (tests skip with it); CI installs the
package.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROMETHEUS = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool") or "/usr/bin/promtool"

_READY_TIMEOUT = 30.0


def missing_reason(binary: str = PROMETHEUS) -> str | None:
    """Why ``binary`` cannot be run, or ``None`` when it can."""
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        return f"{binary} not installed (Debian package 'prometheus'; CI installs it)"
    return None


def promtool_check_metrics(text: str | bytes) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check metrics`` on exposition text; returns the finished process."""
    data = text.decode() if isinstance(text, bytes) else text
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=data, capture_output=True, text=True, timeout=30,
        check=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PromServer:
    """One Prometheus server scraping ``targets`` (``host:port``) every ``scrape_interval``."""

    def __init__(
        self,
        targets: Sequence[str],
        workdir: Path,
        *,
        job: str = "cni-pipeline",
        scrape_interval: str = "1s",
        metrics_path: str = "/metrics",
        relabel_configs: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.targets = list(targets)
        self.relabel_configs = list(relabel_configs)
        self.workdir = Path(workdir)
        self.job = job
        self.scrape_interval = scrape_interval
        self.metrics_path = metrics_path
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": self.job,
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "metrics_path": self.metrics_path,
                "static_configs": [{"targets": self.targets}],
                "relabel_configs": self.relabel_configs,
            }],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def start(self) -> PromServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self.port = _free_port()
        log = open(self._log_path, "wb")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log = log
        self._proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {_READY_TIMEOUT}s: {self.log()}")

    def log(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()

    def __enter__(self) -> PromServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- API ----------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.load(response)
        if payload.get("status") != "success":
            raise RuntimeError(f"prometheus API {path} failed: {payload}")
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query as ``{sorted labels without job/instance: value}``."""
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for row in self.query(expr):
            labels = tuple(sorted((k, v) for k, v in row["metric"].items()
                                  if k not in ("job", "instance")))
            out[labels] = float(row["value"][1])
        return out

    def wait_for(
        self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; the last result, or TimeoutError."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr}: condition not met in {timeout}s; last {result}; "
                                   f"targets {self.api('targets')}; log {self.log()}")
            time.sleep(0.25)
