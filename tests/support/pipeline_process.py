"""A real ``cni-pipeline`` process for end-to-end tests, and a simulated fleet that moves
half-way between cycles (so the state each cycle scraped is known exactly).

``Mover.state_at(tick)`` is the fleet's truth as scraped at a cycle time; a move that came too
near a tick makes it unknown (None) rather than guessed.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from simfleet import FleetProcess, FleetTruth

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Replica:
    """One ``cni-pipeline`` process: its identity, telemetry port and captured log."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> str:
        """A page of its telemetry endpoint ("" if it does not answer)."""
        return self.get_from(self.port, path)

    @staticmethod
    def get_from(port: int, path: str) -> str:
        """A page from a loopback port ("" if nothing answers there)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return str(r.read().decode())
        except (urllib.error.URLError, OSError):
            return ""

    def readyz(self) -> str:
        return self.get("/readyz").strip()

    def metric(self, name: str) -> float:
        """A self-metric's value summed over its labels (0 if absent)."""
        total = 0.0
        for line in self.get("/metrics").splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig: int, timeout: float = 45.0) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Mover:
    """Moves the fleet one step half-way between ticks (of ``interval``), and keeps (when,
    truth after), so that every replica scrapes the same state for a given cycle."""

    fleet: FleetProcess
    interval: float = 2.0
    truths: list[tuple[float, FleetTruth]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Mover:
        self.truths.append((time.time(), self.fleet.client.truth()))
        threading.Thread(target=self._run, daemon=True, name="fleet-mover").start()
        return self

    def _run(self) -> None:
        for _ in range(200):  # bounded: 200 intervals is far more than the run
            now = time.time()
            due = math.floor(now / self.interval) * self.interval + self.interval / 2
            if due <= now:
                due += self.interval
            if self.stopped.wait(due - now):
                return
            self.truths.append((time.time(), self.fleet.client.advance()))

    def state_at(self, tick: float) -> FleetTruth | None:
        """The fleet as scraped at ``tick``; None when a move came too near it to say."""
        state = None
        for moved, truth in self.truths:
            if abs(moved - tick) < 0.4:
                return None
            if moved < tick:
                state = truth
        return state


def start_pipeline(name: str, args: list[str], log: Path, port: int,
                   env: dict[str, str] | None = None) -> Replica:
    """``python -m cni_pipeline ARGS`` with stdout and stderr in ``log``."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "cni_pipeline", *args], cwd=ROOT,
                                   env=full_env, stdout=out, stderr=subprocess.STDOUT)
    return Replica(name, port, process, log)


def kill_survivors(replicas: Iterable[Replica], timeout: float = 30.0) -> None:
    """A test's cleanup: kill, and wait for, every process still running, so that none
    outlives a failed test (a stopped one, SIGSTOP'd by a test, is continued first)."""
    for replica in replicas:
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGCONT)
            replica.process.kill()
            replica.process.wait(timeout=timeout)


def eventually(predicate: Callable[[], bool], what: str, replicas: list[Replica],
               timeout: float = 20.0) -> None:
    """Wait (bounded) for ``predicate``; on timeout, fail with each process's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    ready = "; ".join(f"{r.name}: {r.readyz()!r}" for r in replicas)
    logs = "\n".join(f"--- {r.name}\n{r.output()[-3000:]}" for r in replicas)
    raise AssertionError(f"not reached in {timeout:.0f}s: {what} ({ready})\n{logs}")
