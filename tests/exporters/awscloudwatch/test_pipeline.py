"""The whole pipeline, as users run it, into moto: ``cni-pipeline --config`` scraping a simulated
fleet, stopped by SIGTERM in the middle of a flush interval.

The flush interval is an hour, so nothing reaches moto before the signal: every datapoint found in
moto afterwards was flushed by the shutdown. What moto holds is checked against the fleet's truth:
gauges equal the fleet's sums; the counter datums of all cycles add up to the fleet's increase over
the run (deltas telescope, so this holds however the fleet's steps fell between ticks).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simfleet import FleetProcess, FleetTruth
from tests.support.moto_server import Moto

ROOT = Path(__file__).resolve().parents[3]
NODES = 6
CLUSTER = [("CLUSTER_ID", "sim-cluster")]
GAUGES = {
    "assignIPAddresses": "awscni_assigned_ip_addresses",
    "totalIPAddresses": "awscni_total_ip_addresses",
    "eniAllocated": "awscni_eni_allocated",
    "maxIPAddresses": "awscni_ip_max",
}
COUNTERS = {
    "addReqCount": "awscni_add_ip_req_count",
    "delReqCount": "awscni_del_ip_req_count",
    "ec2ApiReqCount": "awscni_ec2api_req_count",
}
CYCLE_LINE = re.compile(r"cycle (\d+) @(\S+): (\d+) metrics")

CONFIG = """\
receivers:
  prometheus:
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_targets: [{targets}]
processors:
  cni_aggregate: {{}}
exporters:
  awscloudwatch:
    endpoint_url: {endpoint}
    cluster_id: ${{env:AWS_CLUSTER_ID:-}}
    region: ${{env:AWS_REGION:-}}
    flush_interval: 1h
    shutdown_grace: 20s
  debug: {{}}
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      processors: [cni_aggregate]
      exporters: [awscloudwatch, debug]
  telemetry:
    endpoint: ""
    log_level: info
"""


class Output:
    """Collects a child's output lines from a thread; counts the cycles the debug exporter saw."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.cycle_times: list[str] = []
        assert process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip())
            if match := CYCLE_LINE.search(line):
                self.cycle_times.append(match.group(2))

    def wait_cycles(self, count: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.cycle_times) < count:
            assert process.poll() is None, "pipeline exited:\n" + "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, "no cycles:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.05)


@pytest.fixture
def fleet() -> Iterator[FleetProcess]:
    # Started an hour ago, so each node's first scrape is a baseline.
    with FleetProcess(NODES, base_address="127.41.0.1", seed=11,
                      start_time=time.time() - 3600) as running:
        yield running


def test_sigterm_mid_flush_sends_every_pending_cycle_and_values_match_the_fleet(
    fleet: FleetProcess, moto: Moto, tmp_path: Path
) -> None:
    config = tmp_path / "cloudwatch.yaml"
    targets = ", ".join(f'"{a}"' for a in fleet.addresses)
    config.write_text(CONFIG.format(targets=targets, endpoint=moto.endpoint))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_CLUSTER_ID": "sim-cluster",
           "AWS_REGION": moto.region, "PYTHONUNBUFFERED": "1"}
    start_truth: FleetTruth = fleet.client.truth()
    started = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "cni_pipeline", "--config", str(config)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = Output(process)
    try:
        output.wait_cycles(2, process)
        fleet.client.advance()
        output.wait_cycles(4, process)
        fleet.client.advance()
        output.wait_cycles(len(output.cycle_times) + 2, process)  # both steps were scraped
        end_truth = fleet.client.truth()
        assert moto.list_metrics("Kubernetes") == []  # nothing flushed yet: the hour runs on
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0, "\n".join(output.lines[-30:])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert any("Using REGION=us-west-2 and CLUSTER_ID=sim-cluster" in line
               for line in output.lines)

    cycles = len(output.cycle_times)
    window = (started - 5, time.time() + 5)
    stored = {m["MetricName"] for m in moto.list_metrics("Kubernetes")}
    assert set(GAUGES) | set(COUNTERS) <= stored

    for name, family in GAUGES.items():
        values = moto.series("Kubernetes", name, CLUSTER, stat="Maximum", start=window[0],
                             end=window[1], period=1)
        assert len(values) == cycles, f"{name}: {len(values)} datapoints for {cycles} cycles"
        last = values[max(values)]
        assert last == pytest.approx(end_truth.gauge_sum(family)), name
    for name, family in COUNTERS.items():
        values = moto.series("Kubernetes", name, CLUSTER, stat="Sum", start=window[0],
                             end=window[1], period=1)
        assert len(values) == cycles, name
        increase = end_truth.counter_increase(family, since=start_truth)
        assert increase > 0, f"{family} did not move; the check below would be vacuous"
        assert sum(values.values()) == pytest.approx(increase), name
