"""Benchmark: one cycle's aggregation step of ``cni_aggregate`` on a large fleet.

Builds a fleet of aws-node scrapes (default 5,000 targets, 171 wanted samples each: the default
rules' families with realistic label sets, each node with CIDR blocks of its own), as the receiver
hands them over: counters growing, a few targets failing every third cycle. Then it times the
aggregation step (``Aggregator.aggregate`` plus ``Batch.with_metrics``, which is what ``consume``
does before handing on) and measures its allocations with tracemalloc in a separate, untimed run.

``--lines read`` (the default) hands over the lines the rules read, as the receiver does behind
the processor's line filters; ``--lines all`` every line of the wanted families (the summary's
0.5 and 0.9 quantiles, ``_sum`` and ``_count`` too).

``--texts shared`` (the default) hands series texts over as the receiver's parser does: one string
object per distinct text, reused across targets and cycles, and one float object per short value
text (its value cache). ``--texts fresh`` makes new string and float objects for every sample of
every cycle, as a parser without those caches would: more memory traffic, slower.

    .venv/bin/python bench/bench_aggregate.py [--targets 5000] [--cycles 5] [--group-by zone]
        [--texts shared|fresh] [--lines read|all]

Numbers are for comparing changes on one machine, not for asserting anything.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import (  # noqa: E402
    Batch,
    Cycle,
    ErrorClass,
    Sample,
    Target,
    TargetHealth,
    TargetScrape,
)
from processors.cni_aggregate._aggregate import Aggregator  # noqa: E402
from processors.cni_aggregate._wanted import series_filters  # noqa: E402
from processors.cni_aggregate.config import CniAggregateConfig, resolve_rules  # noqa: E402

INTERVAL = 30.0
T0 = 1_700_000_010.0
APIS = ("AssignPrivateIpAddresses", "AttachNetworkInterface", "CreateNetworkInterface",
        "CreateTags", "DeleteNetworkInterface", "DescribeInstances", "DescribeNetworkInterfaces",
        "DetachNetworkInterface", "GetMetadata", "ModifyNetworkInterfaceAttribute",
        "UnassignPrivateIpAddresses")


def page_template() -> dict[str, list[tuple[str, float, bool]]]:
    """family -> [(series text, base value, is a counter)] for one node: ~150 samples."""
    families: dict[str, list[tuple[str, float, bool]]] = {}

    def add(family: str, text: str, value: float, counter: bool) -> None:
        families.setdefault(family, []).append((text, value, counter))

    for family in ("awscni_add_ip_req_count", "awscni_aws_utils_error_count",
                   "awscni_ipamd_error_count", "awscni_pod_eni_error_count",
                   "awscni_reconcile_count", "awscni_force_removed_enis",
                   "awscni_force_removed_ips"):
        add(family, family, 100.0, True)
    for family in ("awscni_assigned_ip_addresses", "awscni_eni_allocated", "awscni_eni_max",
                   "awscni_ip_max", "awscni_total_ip_addresses", "awscni_total_ipv4_prefixes"):
        add(family, family, 12.0, False)
    for fn in ("increaseIPPool", "decreaseIPPool", "nodeInit", "reconcile", "warmPool"):
        add("awscni_ipamd_action_inprogress",
            f'awscni_ipamd_action_inprogress{{fn="{fn}"}}', 0.0, False)
    for reason in ("PodDeleted", "SetupNSFailed"):
        add("awscni_del_ip_req_count", f'awscni_del_ip_req_count{{reason="{reason}"}}', 50.0, True)
    for number in range(8):     # "{node}" becomes the node's own number: CIDRs differ by node
        add("awscni_assigned_ip_per_cidr",
            f'awscni_assigned_ip_per_cidr{{cidr="10.{{node}}.{number * 16}/28"}}', 3.0, False)
    latency = "awscni_aws_api_latency_ms"
    for api in APIS:
        add("awscni_ec2api_req_count", f'awscni_ec2api_req_count{{fn="{api}"}}', 10.0, True)
        add("awscni_ec2api_error_count", f'awscni_ec2api_error_count{{fn="{api}"}}', 1.0, True)
        add("awscni_aws_api_error_count",
            f'awscni_aws_api_error_count{{api="{api}",error="Throttling"}}', 2.0, True)
        for error in ("false", "true"):
            labels = f'api="{api}",error="{error}"'
            for quantile in ("0.5", "0.9", "0.99"):
                add(latency, f'{latency}{{{labels},quantile="{quantile}"}}',
                    float("nan") if quantile == "0.5" else 40.0, False)
            add(latency, f"{latency}_sum{{{labels}}}", 5000.0, True)
            add(latency, f"{latency}_count{{{labels}}}", 100.0, True)
    return families


def fleet(size: int) -> list[Target]:
    return [
        Target(address=f"10.{n // 65536}.{n // 256 % 256}.{n % 256}:61678",
               pod=f"aws-node-{n:05d}", node=f"ip-10-0-{n}.ec2.internal",
               attributes=(("instance_type", ("m5.large", "c5.xlarge")[n % 2]),
                           ("nodegroup", f"ng-{n % 4}"), ("zone", f"us-east-1{'abc'[n % 3]}")))
        for n in range(size)
    ]


class Texts:
    """Series texts and values as the receiver hands them over (see the module docstring)."""

    def __init__(self, fresh: bool) -> None:
        self.fresh = fresh
        self._texts: dict[str, str] = {}
        self._values: dict[float, float] = {}

    def text(self, template: str, node: int) -> str:
        if "{node}" in template:
            template = template.replace("{node}", f"{node // 256}.{node % 256}")
        text = template
        if self.fresh:
            return "".join((text[:1], text[1:]))    # a new object with the same text
        return self._texts.setdefault(text, text)

    def value(self, value: float) -> float:
        if self.fresh or not (value.is_integer() and 0 <= value < 1000):
            return float(str(value))                # a new object
        return self._values.setdefault(value, value)   # texts up to 3 characters are cached


def cycle_batch(index: int, targets: list[Target],
                template: dict[str, list[tuple[str, float, bool]]], texts: Texts) -> Batch:
    """One cycle's batch."""
    scrapes = []
    now = T0 + INTERVAL * index
    for n, target in enumerate(targets):
        if n % 100 == 7 and index % 3 == 2:   # 1% of targets fail every third cycle
            scrapes.append(TargetScrape(target, TargetHealth(
                up=False, scraped_at=now, error_class=ErrorClass.TIMEOUT)))
            continue
        families: dict[str, list[Sample]] = {}
        for family, lines in template.items():
            families[family] = [
                (texts.text(text, n),
                 texts.value(value + (index * (n % 5) if counter else n % 7)))
                for text, value, counter in lines
            ]
        scrapes.append(TargetScrape(
            target, TargetHealth(up=True, scraped_at=now, last_success=now), families,
            process_start_time=T0 - 3600.0,
        ))
    cycle = Cycle(time=now, previous=now - INTERVAL, index=index, started=T0 - 5)
    return Batch(cycle=cycle, targets=tuple(scrapes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=5000)
    parser.add_argument("--cycles", type=int, default=5, help="timed cycles after a warm-up")
    parser.add_argument("--group-by", action="append", default=[],
                        help="zone, nodegroup, instance_type or node (repeatable)")
    parser.add_argument("--texts", choices=("shared", "fresh"), default="shared",
                        help="series text and value objects as the receiver's caches hand them "
                             "over (shared), or new objects for every sample (fresh)")
    parser.add_argument("--lines", choices=("read", "all"), default="read",
                        help="the lines the rules read, as the receiver hands them over after "
                             "the processor's line filters (read), or every line of the "
                             "wanted families (all)")
    args = parser.parse_args()

    config = CniAggregateConfig(group_by=args.group_by)
    rules, problems = resolve_rules(config)
    if problems or list(config.validate()):
        raise SystemExit(f"bad config: {list(config.validate())}")
    aggregator = Aggregator(rules, config.group_by, config.staleness)
    template = page_template()
    if args.lines == "read":  # what the receiver hands over: the lines the rules read
        filters = series_filters(rules)
        template = {family: [line for line in lines
                             if family not in filters or filters[family](line[0])]
                    for family, lines in template.items()}
    targets = fleet(args.targets)
    per_target = sum(len(lines) for lines in template.values())
    total_cycles = args.cycles + 3
    texts = Texts(fresh=args.texts == "fresh")
    batches = [cycle_batch(index, targets, template, texts) for index in range(total_cycles)]

    # Warm-up: the first cycle is the baseline (and fills the series caches): timed apart, as
    # what a pipeline's first cycle after start (or a fleet of new nodes) costs.
    gc.collect()
    began = time.perf_counter()
    aggregator.aggregate(batches[0])
    first = time.perf_counter() - began
    times = []
    metrics_out = 0
    for index in range(1, args.cycles + 1):
        gc.collect()
        began = time.perf_counter()
        metrics, _ = aggregator.aggregate(batches[index])
        batches[index].with_metrics(metrics)
        times.append(time.perf_counter() - began)
        metrics_out = len(metrics)

    # Allocations, with tracemalloc (it slows code down, so these cycles are not timed). The
    # first traced cycle replaces the state built untraced; the second is the one measured, so
    # "retained" is the state's growth per cycle (0 when nothing leaks) and "peak" the memory a
    # cycle needs on top of it.
    gc.collect()
    tracemalloc.start()
    aggregator.aggregate(batches[args.cycles + 1])
    gc.collect()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    snapshot_before = tracemalloc.take_snapshot()
    metrics, _ = aggregator.aggregate(batches[args.cycles + 2])
    batches[args.cycles + 2].with_metrics(metrics)
    after, peak = tracemalloc.get_traced_memory()
    snapshot_after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    new_blocks = sum(max(stat.count_diff, 0)
                     for stat in snapshot_after.compare_to(snapshot_before, "lineno"))
    state = sum(stat.size for stat in snapshot_after.statistics("filename")
                if "cni_aggregate" in stat.traceback[0].filename)

    print(f"cni_aggregate: {args.targets} targets x {per_target} wanted samples, "
          f"group_by={args.group_by or '[]'}, texts {args.texts}, {metrics_out} metrics/cycle")
    median = statistics.median(times)
    print(f"  first cycle (every target new, every page's layout worked out): {first:.3f} s")
    print(f"  seconds/cycle: median {median:.3f}  min {min(times):.3f}  "
          f"max {max(times):.3f}  ({args.cycles} cycles, "
          f"{median / (args.targets * per_target) * 1e9:.0f} ns/sample at the median)")
    print(f"  allocations/cycle (tracemalloc): peak {(peak - before) / 2**20:.1f} MiB above "
          f"the state, {(after - before) / 2**20:+.2f} MiB retained, {new_blocks} blocks "
          f"still live after the cycle; state held: {state / 2**20:.1f} MiB")

if __name__ == "__main__":
    main()
