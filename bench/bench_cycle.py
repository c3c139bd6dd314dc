"""Whole-cycle benchmark: a loopback fleet of N aws-node pods with 40 KB pages, scraped by the real
``prometheus`` receiver and aggregated by ``cni_aggregate``, as the running service does it.

Prints per cycle: wall seconds from the tick to the aggregated batch, this process's CPU seconds
(user + system; the fleet runs in its own processes, so its CPU is not counted here but shown
apart), the part of that CPU spent in the kernel (socket syscalls on loopback) and the time the
cyclic garbage collector took; at the end the peak RSS. The first cycle ("cold") is reported
apart from the warm ones: every series and page layout is new to the parser and the aggregator,
and its CPU column also holds the start-up, including the connections the receiver opens to
every target while it waits for the first tick (about 1 s of CPU for 5,000).
``--profile FILE`` writes a cProfile of the warm cycles.

    .venv/bin/python bench/bench_cycle.py --targets 1000 5000 [--cycles 4] [--interval 5s]
        [--max-concurrency N] [--gc default|freeze|manual]

The receiver runs with its default config but for the interval, the timeout (0.8 of the
interval) and, if given, ``--max-concurrency``. Raising that past a few hundred buys nothing
here and costs wall time: at 2,048 scrapes in flight a 5,000-target cycle took 4.7 s of wall
for 3.1 s of CPU, against 2.8-2.9 s for 2.8-2.9 s of CPU at 128 or 512 (one run each, with
the garbage-collector policy ``manual``).

``--gc`` compares garbage-collector policies. The service itself applies one (``service``, the
default here; ``pipeline/_gc.py``: freeze after start, automatic collection off, a collection
every 30 s); ``default`` and ``freeze`` undo part of it after start to show what it saves.
The cyclic collector's full collections walk every container
alive, and a cycle keeps a whole fleet's samples alive, so on a large fleet they cost a tenth
of the cycle or more; ``freeze`` moves what exists after start-up out of their way
(``gc.freeze()``); ``manual`` also turns automatic collection off and collects everything
every tenth cycle, when the batch arrives. Almost everything a cycle allocates is freed by
reference counting when the next cycle replaces it, so a collection finds about one cycle's
objects alive whenever it runs: running it every tenth cycle costs a tenth as much, and only
reference cycles (rare here) wait longer to be freed. Runs shorter than ten cycles never reach
that collection, so ``manual`` times one full collection after the last cycle and prints it.

The machine's two cores are shared: the fleet's processes run beside this one, so a cycle's wall
time is bounded below by this process's CPU plus whatever the fleet takes from the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import Batch, ComponentConfig, Duration, Kind, SimpleExporter  # noqa: E402
from pipeline._config import build_config  # noqa: E402
from pipeline._registry import Registry  # noqa: E402
from pipeline._runtime import Service  # noqa: E402
from simfleet import FleetProcess  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")


class _GcTimer:
    """Wall time spent in the cyclic garbage collector, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._began


def _cpu() -> tuple[float, float]:
    """(user + system, system) CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


def _fleet_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of the fleet's processes, from /proc (0 where unreadable)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


class _Arrivals(SimpleExporter):
    """An exporter registered only here: notes when each cycle's batch arrives, and the CPU."""

    type = "bench_arrivals"
    kind = Kind.EXPORTER

    def __init__(self, fleet_pids: list[int], gc_timer: _GcTimer,
                 profile: cProfile.Profile | None, gc_policy: str) -> None:
        self.rows: list[dict[str, float]] = []
        self._gc_policy = gc_policy
        #: CPU seconds of one full collection after the last cycle (``manual`` only).
        self.full_collection = 0.0
        self.event = asyncio.Event()
        self._fleet_pids = fleet_pids
        self._gc = gc_timer
        self._profile = profile

    def default_config(self) -> ComponentConfig:
        return ComponentConfig()

    def create(self, settings: Any, config: Any) -> _Arrivals:
        return self

    async def consume(self, batch: Batch) -> None:
        if self._gc_policy == "manual" and batch.cycle.index % 10 == 9:
            gc.collect()
        cpu, system = _cpu()
        up = sum(1 for t in batch.targets if t.health.up)
        self.rows.append({
            "wall": time.time() - batch.cycle.time, "cpu": cpu, "sys": system, "gc": self._gc.total,
            "fleet": _fleet_cpu(self._fleet_pids), "up": up, "targets": len(batch.targets),
        })
        if self._profile is not None:
            self._profile.enable()  # from the end of the cold cycle on
        self.event.set()


async def run(targets: int, cycles: int, interval: float, base: str, concurrency: int | None,
              gc_policy: str, profile: cProfile.Profile | None) -> list[dict[str, float]]:
    fleet = FleetProcess(targets, base_address=base, page_bytes=40_000,
                         start_time=time.time() - 3600)
    await asyncio.to_thread(fleet.start, 120.0)
    gc_timer = _GcTimer()
    gc.callbacks.append(gc_timer)
    try:
        registry = Registry.load()
        arrivals = _Arrivals(fleet.pids, gc_timer, profile, gc_policy)
        registry.register(Kind.EXPORTER, arrivals, distribution="bench")
        receiver: dict[str, Any] = {
            "scrape_interval": str(Duration(interval)),
            "scrape_timeout": str(Duration(interval * 0.8)),
            "static_targets": fleet.addresses,
        }
        if concurrency is not None:
            receiver["max_concurrency"] = concurrency
        config = build_config({
            "receivers": {"prometheus": receiver},
            "processors": {"cni_aggregate": {}},
            "exporters": {"bench_arrivals": {}},
            "service": {"telemetry": {"endpoint": ""}, "pipelines": {"metrics": {
                "receivers": ["prometheus"], "processors": ["cni_aggregate"],
                "exporters": ["bench_arrivals"]}}},
        }, "bench", registry, {})
        service = Service(config, registry)
        cpu, system = _cpu()
        before = {"cpu": cpu, "sys": system, "gc": gc_timer.total,
                  "fleet": _fleet_cpu(fleet.pids)}
        await service.start()
        # The service applied its own policy at start ("service"); the others undo part of it.
        if gc_policy == "default":
            gc.unfreeze()
            gc.enable()
        elif gc_policy == "freeze":
            gc.enable()
        try:
            while len(arrivals.rows) < cycles:
                arrivals.event.clear()
                await asyncio.wait_for(arrivals.event.wait(), timeout=interval * 4 + 60)
                # The fleet's counters move between cycles, as a live cluster's do.
                await asyncio.to_thread(fleet.client.advance_quietly)
        finally:
            if profile is not None:
                profile.disable()
            if gc_policy == "manual":  # what every tenth cycle pays, with the batch still alive
                began = time.process_time()
                gc.collect()
                arrivals.full_collection = time.process_time() - began
            await service.shutdown()
            gc.enable()
            gc.unfreeze()
    finally:
        gc.callbacks.remove(gc_timer)
        await asyncio.to_thread(fleet.stop)
    rows = []
    for row in arrivals.rows:  # cumulative counters -> per cycle
        rows.append({**row, **{key: row[key] - before[key] for key in before}})
        before = {key: row[key] for key in before}
    if arrivals.full_collection:
        print(f"{targets:>8} one full collection after the last cycle: "
              f"{arrivals.full_collection:.3f} s CPU (every tenth cycle: "
              f"{arrivals.full_collection / 10:.3f} s a cycle)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--cycles", type=int, default=4, help="cycles per size (first is cold)")
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--base", default="127.50.0.1")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="the receiver's max_concurrency (default: the receiver's default)")
    parser.add_argument("--gc", choices=("service", "default", "freeze", "manual"),
                        default="service",
                        help="garbage-collector policy to try (see the docstring)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the warm cycles here")
    args = parser.parse_args()
    interval = float(Duration.from_config(args.interval))
    profile = cProfile.Profile() if args.profile else None
    concurrency = args.max_concurrency or "default"
    print(f"40 KB pages, gzip'd; max_concurrency {concurrency}; gc policy {args.gc}; "
          f"cpu = this process, user + sys; fleet = the fleet's processes")
    print(f"{'targets':>8} {'cycle':>6} {'up':>6} {'wall s':>8} {'cpu s':>8} {'sys s':>7} "
          f"{'gc s':>6} {'fleet s':>8}")
    summary = []
    for n in args.targets:
        gc.collect()
        rows = asyncio.run(run(n, args.cycles, interval, args.base, args.max_concurrency,
                               args.gc, profile))
        for i, row in enumerate(rows):
            label = "cold" if i == 0 else str(i)
            print(f"{n:>8} {label:>6} {row['up']:>6} {row['wall']:>8.3f} {row['cpu']:>8.3f} "
                  f"{row['sys']:>7.3f} {row['gc']:>6.3f} {row['fleet']:>8.3f}")
        warm = rows[1:] or rows
        med = {key: statistics.median(row[key] for row in warm)
               for key in ("wall", "cpu", "sys", "gc", "fleet")}
        print(f"{n:>8} {'median':>6} {'':>6} {med['wall']:>8.3f} {med['cpu']:>8.3f} "
              f"{med['sys']:>7.3f} {med['gc']:>6.3f} {med['fleet']:>8.3f}")
        summary.append((n, med))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    for n, med in summary:
        print(f"{n:>5} targets: cycle {med['wall']:.2f} s wall, {med['cpu']:.2f} s CPU "
              f"= {med['cpu'] / n * 1e3:.3f} ms CPU per target-scrape "
              f"(HTTP, gunzip, parse and aggregation included)")
    print(f"peak RSS of the pipeline process: {peak_mb:.0f} MiB")
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"profile of the warm cycles: {args.profile}")


if __name__ == "__main__":
    main()
