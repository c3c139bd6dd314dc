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

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simfleet import FleetProcess
from tests.support.kube_apiserver import KubeAPIServer
from tests.support.moto_server import Moto, aws_test_env, running_moto
from tests.support.pipeline_process import (
    Mover,
    Replica,
    eventually,
    free_port,
    kill_survivors,
    start_pipeline,
)

INTERVAL = 2.0
NAMESPACE = "monitoring"
CLUSTER = "failover"
GAUGE, GAUGE_FAMILY = "assignIPAddresses", "awscni_assigned_ip_addresses"
COUNTER, COUNTER_FAMILY = "addReqCount", "awscni_add_ip_req_count"
#: Bound on any single wait (a takeover after a SIGKILL takes lease_duration plus a retry).
SOON = 45.0
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


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    aws_test_env(monkeypatch, region="us-west-2")
    with running_moto(region="us-west-2") as server:
        yield server


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
        replica = start_pipeline(
            name, ["--config", str(config), "--leader-elect", "--lease-name", "cni-pipeline",
                   "--log-level", "debug"],
            tmp_path / f"{name}.log", port,
            {"HOSTNAME": name, "POD_NAMESPACE": NAMESPACE, "KUBECONFIG": str(kubeconfig)})
        replicas.append(replica)
        return replica

    fleet.start()
    mover = Mover(fleet, INTERVAL).start()
    try:
        a = start("replica-a")
        eventually(lambda: a.readyz() == "ok: leader", "replica-a leads", replicas, SOON)
        b = start("replica-b")
        eventually(lambda: b.readyz().startswith("ok: standby (leader: replica-a)"),
                   "replica-b stands by", replicas, SOON)
        cycles_pass(3)
        time.sleep(INTERVAL * 0.3)  # mid-cycle
        a.process.kill()
        a.process.wait(timeout=SOON)
        eventually(lambda: b.readyz() == "ok: leader", "replica-b takes over", replicas, SOON)
        cycles_pass(2)
        c = start("replica-c")
        eventually(lambda: c.readyz().startswith("ok: standby (leader: replica-b)"),
                   "replica-c stands by", replicas, SOON)
        cycles_pass(3)
        repeats = b.metric("cni_pipeline_leader_possible_repeats_total")
        b.stop(signal.SIGTERM)
        eventually(lambda: c.readyz() == "ok: leader", "replica-c takes over", replicas, SOON)
        cycles_pass(3)
        c.stop(signal.SIGTERM)
    finally:
        mover.stopped.set()
        kill_survivors(replicas, SOON)
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
