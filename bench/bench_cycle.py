"""Whole-cycle benchmark: a loopback fleet of N aws-node pods with 40 KB pages, scraped by the real
``prometheus`` receiver and aggregated by ``cni_aggregate``, as the running service does it.

Prints per cycle: wall seconds from the tick to the aggregated batch, this process's CPU seconds
(the fleet runs in its own processes, so its CPU is not counted), and at the end the peak RSS.
The first cycle opens every connection and is reported apart from the warm ones.

    .venv/bin/python bench/bench_cycle.py --targets 1000 5000 [--cycles 4] [--interval 5s]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import Batch, ComponentConfig, Duration, FamilySet, Host, Kind  # noqa: E402
from pipeline._config import build_config  # noqa: E402
from pipeline._registry import Registry  # noqa: E402
from pipeline._runtime import Service  # noqa: E402
from simfleet import FleetProcess  # noqa: E402


class _Arrivals:
    """An exporter registered only here: notes when each cycle's batch arrives, and the CPU."""

    type = "bench_arrivals"
    kind = Kind.EXPORTER

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float, int, int]] = []
        self.event = asyncio.Event()

    def default_config(self) -> ComponentConfig:
        return ComponentConfig()

    def create(self, settings: Any, config: Any) -> _Arrivals:
        return self

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def wanted_families(self) -> FamilySet:
        return frozenset()

    async def consume(self, batch: Batch) -> None:
        up = sum(1 for t in batch.targets if t.health.up)
        self.rows.append((batch.cycle.index, time.time() - batch.cycle.time,
                          time.process_time(), up, len(batch.targets)))
        self.event.set()


async def run(targets: int, cycles: int, interval: float, base: str) -> dict[str, Any]:
    fleet = FleetProcess(targets, base_address=base, page_bytes=40_000,
                         start_time=time.time() - 3600)
    await asyncio.to_thread(fleet.start, 120.0)
    try:
        registry = Registry.load()
        arrivals = _Arrivals()
        registry.register(Kind.EXPORTER, arrivals, distribution="bench")
        config = build_config({
            "receivers": {"prometheus": {
                "scrape_interval": str(Duration(interval)),
                "scrape_timeout": str(Duration(interval * 0.8)),
                "static_targets": fleet.addresses, "max_concurrency": 1024,
            }},
            "processors": {"cni_aggregate": {}},
            "exporters": {"bench_arrivals": {}},
            "service": {"telemetry": {"endpoint": ""}, "pipelines": {"metrics": {
                "receivers": ["prometheus"], "processors": ["cni_aggregate"],
                "exporters": ["bench_arrivals"]}}},
        }, "bench", registry, {})
        service = Service(config, registry)
        cpu_before = time.process_time()
        await service.start()
        try:
            while len(arrivals.rows) < cycles:
                arrivals.event.clear()
                await asyncio.wait_for(arrivals.event.wait(), timeout=interval * 4 + 60)
                await asyncio.to_thread(fleet.client.advance_quietly)
        finally:
            await service.shutdown()
    finally:
        await asyncio.to_thread(fleet.stop)
    cpus, previous = [], cpu_before
    for _, _, cpu, _, _ in arrivals.rows:
        cpus.append(cpu - previous)
        previous = cpu
    walls = [row[1] for row in arrivals.rows]
    return {"targets": targets, "walls": walls, "cpus": cpus,
            "up": [row[3] for row in arrivals.rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--cycles", type=int, default=4, help="cycles per size (first is cold)")
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--base", default="127.50.0.1")
    args = parser.parse_args()
    interval = float(Duration.from_config(args.interval))
    print(f"{'targets':>8} {'cycle':>6} {'up':>6} {'wall s':>8} {'cpu s':>8}  (40 KB pages, gzip)")
    for n in args.targets:
        gc.collect()
        result = asyncio.run(run(n, args.cycles, interval, args.base))
        for i, (wall, cpu, up) in enumerate(zip(result["walls"], result["cpus"], result["up"],
                                                strict=True)):
            label = "cold" if i == 0 else str(i)
            print(f"{n:>8} {label:>6} {up:>6} {wall:>8.3f} {cpu:>8.3f}")
        warm_wall = statistics.median(result["walls"][1:] or result["walls"])
        warm_cpu = statistics.median(result["cpus"][1:] or result["cpus"])
        print(f"{n:>8} {'median':>6} {'':>6} {warm_wall:>8.3f} {warm_cpu:>8.3f}   "
              f"= {warm_cpu / n * 1e3:.3f} ms CPU per target-scrape (parse + aggregation incl.)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the pipeline process: {peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
