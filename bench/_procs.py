"""Helpers of the benchmarks that run real processes: CPU and RSS from /proc, Prometheus pages,
a ``cni-pipeline`` process with its config and log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def page(port: int, path: str = "/metrics") -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def value(text: str, name: str) -> float | None:
    """The sum of a family's samples on a Prometheus page (None when absent)."""
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return sum(map(float, found)) if found else None


class Proc:
    def __init__(self, name: str, config: str, workdir: Path, port: int) -> None:
        self.name, self.port = name, port
        path = workdir / f"{name}.yaml"
        path.write_text(config)
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cni_pipeline", "--config", str(path)], cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                stderr=subprocess.STDOUT)

    def metric(self, name: str) -> float:
        return value(page(self.port), "cni_pipeline_" + name) or 0.0

    def stop(self) -> None:
        stop_gracefully(self.process)


def stop_gracefully(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (so the pipeline flushes and says it stopped), SIGKILL after ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float, procs: list[Proc]
             ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for proc in procs:
            if proc.process.poll() is not None:
                raise SystemExit(f"{proc.name} exited: {proc.log.read_text()[-2000:]}")
        time.sleep(0.2)
    raise SystemExit(f"not reached in {timeout:.0f}s: {what}")


