"""Soak: the real pipeline (``cni-pipeline --config``, its own process) on a simulated fleet with
restarts and faults for a bounded time; RSS over time, cycle p50/p99 and exact-value checks.

    .venv/bin/python bench/soak.py --minutes 10 --nodes 2000 [--interval 2s] [--seed 1]

The fleet (``simfleet``, its own processes) is scraped through static targets by the
``prometheus`` receiver, aggregated by ``cni_aggregate`` and served by the ``prometheus`` exporter,
all on loopback. After every cycle (seen on the pipeline's telemetry endpoint, where
``cni_pipeline_cycle_duration_seconds`` also gives each cycle's duration) the fleet moves one
step, seeded and bounded: every ``--advance-every`` cycles (10) every node's counters and gauges
advance; every 10 cycles one node restarts (counters to 0); every 7 cycles one node fails for 3
cycles (500, hang past the timeout, a page with an invalid line, a closed connection or refused
connections, in turn) and then recovers. (The invalid line is of a family the receiver does not
read, so that fault leaves the target up: simfleet has no broken page of a wanted family.)

Each advance may also give 3 % of the nodes a new labelled counter series (simfleet models a
client library creating a series on its first increment), and the pipeline's state grows with the
series it scrapes (about 1.3 KiB of RSS a series): advancing every cycle, 2,000 nodes gain about
18 % more series in 10 minutes and the RSS grew 33 %. Every tenth cycle keeps that growth small
enough for the RSS to tell a leak from state; the soak prints the series count at both ends to
show what the state did.

The mutations run between scrapes, so the pipeline sees every step; a step that may have run into
the next tick is counted and reported.

At the end, with every node recovered and the fleet still, the exporter's counter running totals
(the sum of every cycle's published increase) must equal the fleet's true increase since the first
scrape (restarts included), and its gauges the fleet's sums: exit 1 if any differs, or if the
pipeline's RSS grew 5 % or more from the end of warm-up (minute 2) to the end.

Churn of the node set itself is not simulated: the fleet has no add/remove, and the targets are
static. Ctrl-C stops the pipeline and the fleet.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._procs import stop_gracefully  # noqa: E402
from bench._soak_checks import (  # noqa: E402
    Check,
    counter_families,
    exact_checks,
    percentile,
    rss_growth,
    served_values,
    window_increase,
)
from cni_pipeline.demo import _free_port  # noqa: E402
from pipeline._units import Duration  # noqa: E402
from simfleet import FleetProcess, FleetTruth  # noqa: E402

#: The failure modes a faulty node goes through in turn (simfleet's names).
FAULTS = ("http_500", "hang", "garbage", "close", "down")
#: Growth of RSS from the end of warm-up to the end that fails the soak.
MAX_GROWTH_PERCENT = 5.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


@dataclass
class Options:
    minutes: float
    nodes: int
    interval: float
    seed: int = 1
    base: str = "127.60.0.1"
    restart_every: int = 10
    fault_every: int = 7
    fault_cycles: int = 3
    advance_every: int = 10
    sample_every: float = 5.0
    warmup: float = 60.0


@dataclass
class Result:
    """What a soak measured; ``ok`` is what its exit status says."""

    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    durations: list[float] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    cycles: int = 0
    restarts: int = 0
    faults: int = 0
    late_steps: int = 0
    growth: tuple[float, float, float] = (0.0, 0.0, 0.0)
    samples: tuple[float, float] = (0.0, 0.0)  # samples a cycle kept, first and last

    @property
    def exact_ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def ok(self) -> bool:
        return self.exact_ok and self.growth[2] < MAX_GROWTH_PERCENT


def _get(url: str) -> str:
    with _OPENER.open(url, timeout=10) as response:
        return str(response.read().decode())


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _raise_open_files() -> None:
    """Thousands of keep-alive connections: the soft open-file limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _config(addresses: list[str], interval: float, exporter: int, telemetry: int) -> dict[str, Any]:
    return {
        "receivers": {"prometheus": {
            "scrape_interval": str(Duration(interval)),
            "scrape_timeout": str(Duration(interval / 2)),
            "static_targets": addresses,
        }},
        "processors": {"cni_aggregate": {}},
        "exporters": {"prometheus": {"endpoint": f"127.0.0.1:{exporter}"}},
        "service": {
            "telemetry": {"endpoint": f"127.0.0.1:{telemetry}", "log_level": "warn"},
            "pipelines": {"metrics": {"receivers": ["prometheus"],
                                      "processors": ["cni_aggregate"],
                                      "exporters": ["prometheus"]}},
        },
    }


def _two_free_ports() -> tuple[int, int]:
    """Two different free ports (asked for one at a time, the kernel may hand out one twice)."""
    first = _free_port()
    second = _free_port()
    while second == first:
        second = _free_port()
    return first, second


class _Pipeline:
    """``cni-pipeline --config`` in its own process; its telemetry and exporter on loopback."""

    def __init__(self, addresses: list[str], interval: float, workdir: Path) -> None:
        exporter, telemetry = _two_free_ports()
        self.exporter_url = f"http://127.0.0.1:{exporter}/metrics"
        self.telemetry_url = f"http://127.0.0.1:{telemetry}/metrics"
        config = workdir / "soak.yaml"
        config.write_text(yaml.safe_dump(_config(addresses, interval, exporter, telemetry)))
        self.log = workdir / "pipeline.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cni_pipeline", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)

    def cycle_stats(self) -> tuple[int, float, float]:
        """(cycles done, their total seconds, samples kept) from the telemetry endpoint."""
        count, total, kept = 0, 0.0, 0.0
        for line in _get(self.telemetry_url).splitlines():
            value = line.rsplit(" ", 1)[-1]
            if line.startswith("cni_pipeline_cycle_duration_seconds_count"):
                count = int(float(value))
            elif line.startswith("cni_pipeline_cycle_duration_seconds_sum"):
                total = float(value)
            elif line.startswith("cni_pipeline_samples_kept_total"):
                kept = float(value)
        return count, total, kept

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the pipeline exited {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        stop_gracefully(self.process)


class _Waiter:
    """Blocks until the pipeline finishes its next cycle; keeps each cycle's duration."""

    def __init__(self, pipeline: _Pipeline, interval: float) -> None:
        self.pipeline = pipeline
        self.interval = interval
        self.count, self.total = 0, 0.0
        self.durations: list[float] = []
        #: Samples the latest cycle kept: the fleet's series count, which new labelled
        #: counter series grow (the state the pipeline keeps grows with it).
        self.samples = 0.0
        self._kept = 0.0

    def next_cycle(self, timeout: float) -> float:
        """Seconds the finished cycle took (the mean when two finished between polls)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pipeline.check_alive()
            try:
                count, total, kept = self.pipeline.cycle_stats()
            except OSError:  # the telemetry endpoint not up yet
                count, total, kept = self.count, self.total, self._kept
            if count > self.count:
                duration = (total - self.total) / (count - self.count)
                self.samples = (kept - self._kept) / (count - self.count)
                self.count, self.total, self._kept = count, total, kept
                self.durations.append(duration)
                return duration
            time.sleep(0.05)
        raise RuntimeError(f"no pipeline cycle finished within {timeout:.0f} s")


class _Fleet:
    """The fleet's step between cycles, seeded, keeping the true counter increase as it goes.

    The increase is summed over windows that each hold at most one restart per node (a snapshot
    is taken just before every restart), as simfleet's ``counter_increase`` requires."""

    def __init__(self, fleet: FleetProcess, options: Options) -> None:
        self.fleet = fleet
        self.options = options
        self.random = random.Random(options.seed)
        self.failing: dict[int, int] = {}  # node -> cycles of failure left
        self.counted = dict.fromkeys(counter_families(), 0.0)
        self.snapshot = fleet.client.truth()
        self.restarts = self.faults = 0

    def _close_window(self) -> FleetTruth:
        now = self.fleet.client.truth()
        for family, increase in window_increase(now, self.snapshot).items():
            self.counted[family] += increase
        self.snapshot = now
        return now

    def step(self, cycle: int) -> None:
        client = self.fleet.client
        for node in [n for n, left in self.failing.items() if left <= 1]:
            client.set_failure(node, "ok")
            del self.failing[node]
        self.failing = {n: left - 1 for n, left in self.failing.items()}
        healthy = [n for n in range(self.fleet.nodes) if n not in self.failing]
        if cycle % self.options.restart_every == 0:
            self._close_window()  # the restarted node's count so far, before it is reset
            client.restart(self.random.choice(healthy))
            self.restarts += 1
        elif cycle % self.options.fault_every == 0 and len(healthy) > 1:
            node = self.random.choice(healthy)
            client.set_failure(node, FAULTS[self.faults % len(FAULTS)])
            self.failing[node] = self.options.fault_cycles
            self.faults += 1
        if cycle % self.options.advance_every == 0:
            client.advance_quietly()

    def recover_all(self) -> None:
        for node in self.failing:
            self.fleet.client.set_failure(node, "ok")
        self.failing.clear()

    def finish(self) -> FleetTruth:
        return self._close_window()


@contextmanager
def _running(options: Options) -> Iterator[tuple[FleetProcess, _Pipeline]]:
    _raise_open_files()
    fleet = FleetProcess(options.nodes, base_address=options.base, seed=options.seed,
                         start_time=time.time() - 3600)
    with tempfile.TemporaryDirectory(prefix="cni-soak-") as workdir:
        pipeline = None
        try:
            fleet.start(120.0)
            pipeline = _Pipeline(fleet.addresses, options.interval, Path(workdir))
            yield fleet, pipeline
        finally:
            if pipeline is not None:
                pipeline.stop()
            fleet.stop()


def _until_next_tick(duration: float, options: Options) -> float:
    """Seconds from a cycle's end to the next tick: a cycle that ran late skips the ticks it
    overlapped."""
    return options.interval * max(1, math.ceil(duration / options.interval)) - duration


def _sample(result: Result, pid: int, began: float, last: float, every: float) -> float:
    """Takes an RSS sample when one is due; returns when the latest was taken."""
    now = time.monotonic()
    if now - last >= every:
        result.rss.append((now - began, _rss_mib(pid)))
        return now
    return last


def run(options: Options, out: Any = sys.stdout) -> Result:
    result = Result()
    with _running(options) as (fleet, pipeline):
        waiter = _Waiter(pipeline, options.interval)
        waiter.next_cycle(timeout=120 + options.nodes / 20)  # every node's first scrape: baselines
        began = last_sample = time.monotonic()
        first_samples = waiter.samples
        result.rss.append((0.0, _rss_mib(pipeline.process.pid)))
        steps = _Fleet(fleet, options)
        end = began + options.minutes * 60
        cycle = shown = 0
        while time.monotonic() < end:
            cycle += 1
            mutated_at = time.monotonic()
            steps.step(cycle)
            if time.monotonic() - mutated_at > _until_next_tick(waiter.durations[-1], options):
                result.late_steps += 1  # this step may have run into the next tick's scrape
            waiter.next_cycle(timeout=options.interval * 4 + 60)
            last_sample = _sample(result, pipeline.process.pid, began, last_sample,
                                  options.sample_every)
            result.durations = waiter.durations
            shown = _progress(out, result, began, options, shown)
        steps.recover_all()
        steps.step(cycle + 1)  # recovered nodes' catch-up, counted by the next scrape
        final = steps.finish()
        for _ in range(2):  # the fleet is still now: the served values stop moving
            waiter.next_cycle(timeout=options.interval * 4 + 60)
        result.rss.append((time.monotonic() - began, _rss_mib(pipeline.process.pid)))
        served = served_values(_get(pipeline.exporter_url))
    result.checks = exact_checks(served, steps.counted, final)
    result.durations = waiter.durations[1:]  # the first cycle opens every connection
    result.samples = (first_samples, waiter.samples)
    result.cycles, result.restarts, result.faults = cycle, steps.restarts, steps.faults
    result.growth = rss_growth(result.rss, min(options.warmup, options.minutes * 12))
    return result


def _progress(out: Any, result: Result, began: float, options: Options, shown: int) -> int:
    """A line per minute (per ten seconds for runs under two minutes) as the soak goes; returns
    the number of the period last shown."""
    period = 60.0 if options.minutes >= 2 else 10.0
    current = int((time.monotonic() - began) // period)
    if current > shown and result.rss:
        print(f"  {current * period:6.0f} s  RSS {result.rss[-1][1]:7.1f} MiB  "
              f"cycles {len(result.durations)}", file=out, flush=True)
    return max(current, shown)


def report(result: Result, options: Options, out: Any = sys.stdout) -> None:
    print("\nRSS of the pipeline process (MiB), per minute (last sample in it):", file=out)
    by_minute: dict[int, float] = {}
    for seconds, mib in result.rss:
        by_minute[int(seconds // 60)] = mib
    for minute, mib in sorted(by_minute.items()):
        print(f"  minute {minute + 1:>3}  {mib:7.1f}", file=out)
    before, after, growth = result.growth
    print(f"RSS growth from the end of warm-up to the end: {before:.1f} -> {after:.1f} MiB "
          f"= {growth:+.2f} % (limit {MAX_GROWTH_PERCENT:.0f} %)", file=out)
    first, last = result.samples
    print(f"series scraped a cycle: {first:.0f} at the start, {last:.0f} at the end "
          f"({(last - first) / max(first, 1) * 100:+.1f} %: new labelled counter series)", file=out)
    durations = result.durations
    print(f"cycles {result.cycles} (every {options.interval:g} s, {options.nodes} nodes): "
          f"p50 {percentile(durations, 0.5):.3f} s, p99 {percentile(durations, 0.99):.3f} s, "
          f"max {max(durations, default=float('nan')):.3f} s; restarts {result.restarts}, "
          f"faults {result.faults}, steps late into a scrape {result.late_steps}", file=out)
    print("exact checks (served by the prometheus exporter vs the fleet's truth):", file=out)
    for check in result.checks:
        verdict = "ok" if check.ok else "MISMATCH"
        print(f"  {check.name:<45}{check.served:>18.6g}{check.expected:>18.6g}  {verdict}",
              file=out)
    print("PASS" if result.ok else "FAIL", file=out)


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--interval", default="2s", help="the receiver's scrape_interval")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base", default="127.60.0.1", help="the fleet's first address")
    parser.add_argument("--advance-every", type=int, default=10, metavar="N",
                        help="the fleet's counters move every N cycles (each move may add a "
                             "labelled series on 3 %% of the nodes, growing the state)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.nodes < 2:
        parser.error("--minutes must be positive and --nodes at least 2")
    return Options(args.minutes, args.nodes, float(Duration.from_config(args.interval)),
                   seed=args.seed, base=args.base, advance_every=args.advance_every)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    # Ctrl-C or a kill stops the pipeline and the fleet on the way out (SIGINT is ignored in a
    # shell's background job unless set back).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"soak: {options.nodes} nodes, scrape every {options.interval:g} s, "
          f"{options.minutes:g} min, seed {options.seed}", flush=True)
    try:
        result = run(options)
    except KeyboardInterrupt:
        print("soak: interrupted; the pipeline and the fleet are stopped", file=sys.stderr)
        return 130
    report(result, options)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
