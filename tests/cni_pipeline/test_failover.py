"""Two replicas, one leader, end to end: real ``cni-pipeline --leader-elect`` processes, the test
API server's Leases, a simulated fleet and moto's CloudWatch read back with GetMetricData.

The run: replica A leads and B stands by; A is killed with SIGKILL mid-run and B takes over when
the Lease expires; a third replica C starts as a standby; B gets SIGTERM and hands over at once
(it releases the Lease); C leads until it is stopped. Then every cycle from the first published
to the last must be in CloudWatch exactly once (one cycle may repeat after the SIGKILL, and only
if B counted it), each with the fleet's true gauge sum and counter increase for that cycle.

The fleet moves half-way between two ticks (cycles fall on multiples of the interval), so every
replica scrapes the same state for a given cycle; a move that lands too near a tick leaves the
two cycles around it unchecked for values (they are still counted once). Leases are short (3 s)
so that the takeover takes seconds; every wait is bounded.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from simfleet import FleetProcess, FleetTruth
from tests.support.kube_apiserver import KubeAPIServer
from tests.support.moto_server import Moto, aws_test_env, running_moto

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 2.0
NAMESPACE = "monitoring"
CLUSTER = "failover"
GAUGE, GAUGE_FAMILY = "assignIPAddresses", "awscni_assigned_ip_addresses"
COUNTER, COUNTER_FAMILY = "addReqCount", "awscni_add_ip_req_count"
#: Bound on any single wait (a takeover after a SIGKILL takes lease_duration plus a retry).
SOON = 20.0
CONFIG = """\
receivers:
  prometheus:
    scrape_interval: {interval}s
    scrape_timeout: 1s
    static_targets: [{targets}]
processors:
  cni_aggregate: {{}}
exporters:
  awscloudwatch:
    endpoint_url: {endpoint}
    cluster_id: {cluster}
    # Longer than the run: what reaches CloudWatch is what the export gate had delivered.
    flush_interval: 10m
service:
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
  leader_election:
    lease_duration: 3s
    renew_deadline: 2s
    retry_period: 500ms
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [awscloudwatch]}}
"""


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
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
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

    def stop(self, sig: int) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=SOON)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Mover:
    """Moves the fleet one step half-way between ticks, and keeps (when, truth after)."""

    fleet: FleetProcess
    truths: list[tuple[float, FleetTruth]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Mover:
        self.truths.append((time.time(), self.fleet.client.truth()))
        threading.Thread(target=self._run, daemon=True, name="fleet-mover").start()
        return self

    def _run(self) -> None:
        for _ in range(200):  # bounded: 200 intervals is far more than the run
            now = time.time()
            due = math.floor(now / INTERVAL) * INTERVAL + INTERVAL / 2
            if due <= now:
                due += INTERVAL
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


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    aws_test_env(monkeypatch, region="us-west-2")
    with running_moto(region="us-west-2") as server:
        yield server


def eventually(predicate: Callable[[], bool], what: str, replicas: list[Replica]) -> None:
    deadline = time.monotonic() + SOON
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    logs = "\n".join(f"--- {r.name}\n{r.output()[-3000:]}" for r in replicas)
    ready = "; ".join(f"{r.name}: {r.readyz()!r}" for r in replicas)
    raise AssertionError(f"not reached in {SOON:.0f}s: {what} ({ready})\n{logs}")


def cycles_pass(count: int) -> None:
    time.sleep(count * INTERVAL)


def test_sigkill_then_sigterm_every_cycle_exactly_once(moto: Moto, tmp_path: Path) -> None:
    api = KubeAPIServer().start()
    fleet = FleetProcess(5, base_address="127.43.0.1", seed=11, start_time=time.time() - 3600)
    replicas: list[Replica] = []
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

    def start(name: str) -> Replica:
        port = free_port()
        config = tmp_path / f"{name}.yaml"
        config.write_text(CONFIG.format(
            interval=int(INTERVAL), targets=", ".join(f'"{a}"' for a in fleet.addresses),
            endpoint=moto.endpoint, cluster=CLUSTER, port=port))
        log = tmp_path / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOSTNAME": name,
               "POD_NAMESPACE": NAMESPACE, "KUBECONFIG": str(kubeconfig)}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "cni_pipeline", "--config", str(config),
                 "--leader-elect", "--lease-name", "cni-pipeline", "--log-level", "debug"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        replica = Replica(name, port, process, log)
        replicas.append(replica)
        return replica

    fleet.start()
    mover = Mover(fleet).start()
    try:
        a = start("replica-a")
        eventually(lambda: a.readyz() == "ok: leader", "replica-a leads", replicas)
        b = start("replica-b")
        eventually(lambda: b.readyz().startswith("ok: standby (leader: replica-a)"),
                   "replica-b stands by", replicas)
        cycles_pass(3)
        time.sleep(INTERVAL * 0.3)  # mid-cycle
        a.process.kill()
        a.process.wait(timeout=SOON)
        eventually(lambda: b.readyz() == "ok: leader", "replica-b takes over", replicas)
        cycles_pass(2)
        c = start("replica-c")
        eventually(lambda: c.readyz().startswith("ok: standby (leader: replica-b)"),
                   "replica-c stands by", replicas)
        cycles_pass(3)
        repeats = b.metric("cni_pipeline_leader_possible_repeats_total")
        b.stop(signal.SIGTERM)
        eventually(lambda: c.readyz() == "ok: leader", "replica-c takes over", replicas)
        cycles_pass(3)
        c.stop(signal.SIGTERM)
    finally:
        mover.stopped.set()
        for replica in replicas:
            if replica.process.poll() is None:
                replica.process.kill()
                replica.process.wait(timeout=SOON)
        fleet.stop()
        api.stop()

    assert b.process.returncode == 0 and c.process.returncode == 0, b.output() + c.output()
    assert "released the lease" in b.output()
    check_every_cycle_once(moto, mover, repeats)


def check_every_cycle_once(moto: Moto, mover: Mover, repeats: float) -> None:
    dims = [("CLUSTER_ID", CLUSTER)]
    copies = moto.series("Kubernetes", GAUGE, dims, stat="SampleCount", period=1)
    gauges = moto.series("Kubernetes", GAUGE, dims, stat="Sum", period=1)
    counters = moto.series("Kubernetes", COUNTER, dims, stat="Sum", period=1)
    assert copies, "nothing reached CloudWatch"
    ticks = sorted(copies)
    expected_ticks = [ticks[0] + i * INTERVAL
                      for i in range(round((ticks[-1] - ticks[0]) / INTERVAL) + 1)]
    assert ticks == expected_ticks, f"cycles missing: {sorted(set(expected_ticks) - set(ticks))}"
    assert len(ticks) >= 12  # about 14 intervals ran under three leaders
    twice = [t for t in ticks if copies[t] == 2]
    assert all(copies[t] in (1, 2) for t in ticks), copies
    assert len(twice) <= 1 and len(twice) <= repeats, (twice, repeats)

    checked = 0
    for tick in ticks[1:]:  # the first cycle is the baseline of every counter
        now, before = mover.state_at(tick), mover.state_at(tick - INTERVAL)
        if now is None or before is None:
            continue
        n = copies[tick]
        assert gauges[tick] == pytest.approx(n * now.gauge_sum(GAUGE_FAMILY)), tick
        assert counters[tick] == pytest.approx(
            n * now.counter_increase(COUNTER_FAMILY, before)), tick
        checked += 1
    assert checked >= len(ticks) - 4, f"only {checked} of {len(ticks)} cycles could be checked"
