"""Sharded benchmark: K shard processes and a gateway over one loopback fleet, as
configs/sharded/ runs them (``prometheus{sharding} -> cni_aggregate{output: partials} -> otlp``
into ``otlp -> cni_combine -> prometheus``), each a real ``cni-pipeline`` process.

Prints, per process, the CPU seconds per cycle (from /proc, over the warm cycles) and the peak
RSS, the shards' cycle wall time (their ``cycle_duration_seconds``), and checks the combined
result exact: the gateway's published assigned-IP sum and targets reporting against the fleet's
own truth (the fleet holds still during the run, so each cycle's gauges are known).

    .venv/bin/python bench/bench_sharded.py [--nodes 20000] [--shards 4] [--interval 20s]
        [--cycles 3]

The fleet is split across its own processes (simfleet); every process here shares the machine's
cores with it, so wall times are bounded below by everyone's CPU together.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._procs import Proc, cpu_seconds, free_port, page, peak_rss_mib, value, wait_for  # noqa: E402
from pipeline import Duration  # noqa: E402
from simfleet import FleetProcess  # noqa: E402

SHARD = """\
receivers:
  prometheus:
    scrape_interval: {interval}
    scrape_timeout: {timeout}
    static_targets: [{targets}]
    sharding: {{shards: {shards}, shard: {shard}}}
processors:
  cni_aggregate: {{output: partials}}
exporters:
  otlp: {{endpoint: "127.0.0.1:{grpc}", tls: {{insecure: true}}, temporality: delta}}
service:
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [otlp]}}
"""
GATEWAY = """\
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{grpc}"}}}}}}
processors:
  cni_combine: {{}}
exporters:
  prometheus: {{endpoint: "127.0.0.1:{served}"}}
service:
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [cni_combine], exporters: [prometheus]}}
"""


def run(nodes: int, shards: int, interval: float, cycles: int, base: str) -> int:
    fleet = FleetProcess(nodes, base_address=base, page_bytes=40_000,
                         start_time=time.time() - 3600)
    began = time.monotonic()
    fleet.start(300.0)
    print(f"fleet of {nodes} nodes (40 KB pages, gzip'd) up in {time.monotonic() - began:.0f}s, "
          f"{len(fleet.pids)} processes", flush=True)
    procs: list[Proc] = []
    try:
        truth = fleet.client.truth()
        expected_assigned = truth.gauge_sum("awscni_assigned_ip_addresses")
        workdir = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
        grpc, served = free_port(), free_port()
        targets = ", ".join(f'"{a}"' for a in fleet.addresses)
        port = free_port()
        gateway = Proc("gateway", GATEWAY.format(grpc=grpc, served=served, port=port),
                       workdir, port)
        procs.append(gateway)
        for shard in range(shards):
            port = free_port()
            procs.append(Proc(f"shard-{shard}", SHARD.format(
                interval=Duration(interval), timeout=Duration(interval * 0.8), targets=targets,
                shards=shards, shard=shard, grpc=grpc, port=port), workdir, port))
        wait_for(lambda: gateway.metric("combine_cycles_total") >= 2, "two combined cycles",
                 interval * 4 + 120, procs)
        start_cycles = gateway.metric("combine_cycles_total")
        cpu0 = {p.name: cpu_seconds(p.process.pid) for p in procs}
        wait_for(lambda: gateway.metric("combine_cycles_total") >= start_cycles + cycles,
                 f"{cycles} more cycles", interval * (cycles + 2) + 60, procs)
        done = gateway.metric("combine_cycles_total") - start_cycles
        cpu1 = {p.name: cpu_seconds(p.process.pid) for p in procs}
        served_page = page(served)
        print(f"\n{shards} shards + gateway, interval {Duration(interval)}, over {done:.0f} warm "
              f"cycles; cpu = user + sys of each process")
        print(f"{'process':>10} {'targets':>8} {'cpu s/cycle':>12} {'ms/target':>10} "
              f"{'wall s':>8} {'peak MiB':>9}")
        for proc in procs:
            per_cycle = (cpu1[proc.name] - cpu0[proc.name]) / done
            if proc is gateway:
                share, wall = nodes, 0.0
            else:
                share = int(value(page(proc.port), "cni_pipeline_targets_discovered") or 0)
                duration = proc.metric("cycle_duration_seconds_sum")
                count = proc.metric("cycle_duration_seconds_count") or 1.0
                wall = duration / count
            per_target = per_cycle / share * 1e3 if share else 0.0
            print(f"{proc.name:>10} {share:>8} {per_cycle:>12.3f} {per_target:>10.3f} "
                  f"{wall:>8.2f} {peak_rss_mib(proc.process.pid):>9.0f}")
        assigned = value(served_page, "awscni_assigned_ip_addresses")
        reporting = value(served_page, "awscni_targets_reporting")
        missing = value(served_page, "awscni_shards_missing")
        exact = assigned == expected_assigned and reporting == nodes and missing == 0
        print(f"\ncombined at the gateway: assigned IPs {assigned} (fleet truth "
              f"{expected_assigned}), targets reporting {reporting} of {nodes}, shards missing "
              f"{missing}: {'EXACT' if exact else 'MISMATCH'}")
        return 0 if exact else 1
    finally:
        for proc in procs[1:] + procs[:1]:
            proc.stop()
        fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--interval", default="20s")
    parser.add_argument("--cycles", type=int, default=3, help="warm cycles measured")
    parser.add_argument("--base", default="127.60.0.1")
    args = parser.parse_args()
    sys.exit(run(args.nodes, args.shards, float(Duration.from_config(args.interval)),
                 args.cycles, args.base))


if __name__ == "__main__":
    main()
