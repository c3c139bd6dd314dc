"""The aggregator's shortcuts change nothing: same metrics and stats, exactly, with them or not.

The counter tracker diffs a target's whole vector of counter values at once when it can prove that
exact (same page shape as last time, every value finite, none dropped), and takes a per-series
path otherwise. Layouts are cached and the caches cleared when full. Here the fast path is
switched off, and the caches shrunk to almost nothing, on random fleets with NaNs, resets,
restarts, new and vanished series, repeated lines, failing and leaving targets: the output must
not change by a bit. (The oracle test checks both against
docs/aggregation.md; this checks them against each
other, more tightly.)
"""

from __future__ import annotations

import dataclasses
import math
import operator
import random
from collections.abc import Callable, Iterator

import pytest

from pipeline import Metric, Target, TargetScrape
from pipeline import Page as PageForm
from processors.cni_aggregate import _layout
from processors.cni_aggregate._aggregate import Aggregator
from processors.cni_aggregate._layout import Layouts, TargetLayout
from processors.cni_aggregate.config import CniAggregateConfig, RuleConfig, resolve_rules
from tests.processors.cni_aggregate._fleet import batch, down, series, target, tick, up

ADD = "awscni_add_ip_req_count"
API_ERR = "awscni_aws_api_error_count"
EC2 = "awscni_ec2api_req_count"
ASSIGNED = "awscni_assigned_ip_addresses"
CIDR = "awscni_assigned_ip_per_cidr"
LATENCY = "awscni_aws_api_latency_ms"
HIST = "awscni_reconcile_duration_seconds"

RULES = [
    RuleConfig(name="apiCalls", family=f"{LATENCY}_count", type="counter"),
    RuleConfig(name="apiErrA", family=API_ERR, type="counter", label_regex={"api": "A"}),
    RuleConfig(name="cidrMax", family=CIDR, type="gauge", operation="max"),
    RuleConfig(name="latencyAvg", family=LATENCY, type="summary", operation="avg"),
    RuleConfig(name="reconcileSeconds", family=HIST, type="histogram", unit="Seconds"),
]


def odd(rng: random.Random, value: float) -> float:
    """Now and then NaN, an infinity, a drop to 0 or -0.0 instead of ``value``."""
    if rng.random() < 0.9:
        return value
    return rng.choice([math.nan, math.inf, -math.inf, 0.0, -0.0])


Page = dict[str, list[tuple[str, float]]]


def page(rng: random.Random, node: int, counts: dict[str, float]) -> Page:
    for name in counts:
        counts[name] += rng.randrange(4)
    out: Page = {
        ADD: [(ADD, odd(rng, counts["add"]))],
        API_ERR: [(series(API_ERR, api=api), odd(rng, counts["err" + api]))
                  for api in "AB"[: rng.randint(0, 2)]],
        EC2: [(series(EC2, fn=str(n)), odd(rng, counts[f"ec2{n}"])) for n in range(3)],
        ASSIGNED: [(ASSIGNED, odd(rng, float(rng.randrange(30))))],
        CIDR: [(series(CIDR, cidr=f"10.{node}.{n}.0/28"), float(rng.randrange(16)))
               for n in range(rng.choice([4, 4, 3]))],
        LATENCY: [(series(LATENCY, api="A", quantile=q), odd(rng, rng.randrange(900) / 7))
                  for q in ("0.5", "0.99")] + [
                      (series(f"{LATENCY}_count", api="A"), odd(rng, counts["calls"]))],
    }
    if node % 2:
        total = counts["add"]
        out[HIST] = [(series(f"{HIST}_bucket", le="1"), total),
                     (series(f"{HIST}_bucket", le="+Inf"), 2 * total),
                     (f"{HIST}_sum", total / 3), (f"{HIST}_count", 2 * total)]
    if rng.random() < 0.05:
        out[EC2].append(out[EC2][0])            # a repeated line
    for family in list(out):
        if rng.random() < 0.05:
            del out[family]
    return out


def fleet(seed: int) -> Iterator[list[TargetScrape]]:
    """Cycles of scrapes of a few nodes, some failing, restarting or leaving discovery."""
    rng = random.Random(seed)
    nodes: list[Target] = [target(f"n{n}", zone="ab"[n % 2], number=n + 1) for n in range(4)]
    counts = [{"add": 10.0, "errA": 1.0, "errB": 1.0, "ec20": 0.0, "ec21": 5.0, "ec22": 9.0,
               "calls": 3.0} for _ in nodes]
    starts: list[float | None] = [1000.0, None, 2000.0, 3000.0]
    for index in range(6):
        scrapes = []
        for n, node in enumerate(nodes):
            if index and rng.random() < 0.08:
                continue                         # left discovery this cycle
            if rng.random() < 0.08:
                starts[n] = tick(index) - 5.0    # restarted
                counts[n] = {name: 0.0 for name in counts[n]}
            if rng.random() < 0.12:
                scrapes.append(down(node, index))
            else:
                scrapes.append(up(node, index, page(rng, n, counts[n]), start=starts[n]))
        yield scrapes


def run(seed: int, reorder: Callable[[TargetScrape], TargetScrape] | None = None
        ) -> list[tuple[list[Metric], tuple[int, ...], int]]:
    config = CniAggregateConfig(rules=RULES, group_by=["zone"])
    rules, problems = resolve_rules(config)
    assert problems == []
    aggregator = Aggregator(rules, config.group_by, 60.0)
    out = []
    for index, scrapes in enumerate(fleet(seed)):
        if reorder is not None:
            scrapes = [reorder(scrape) for scrape in scrapes]
        metrics, stats = aggregator.aggregate(batch(index, scrapes))
        out.append((metrics, (stats.nan_skipped, stats.resets, stats.restarts,
                              stats.counted_from_start, stats.stale, stats.failed),
                    aggregator.series_tracked()))
    return out


def exactly(results: list[tuple[list[Metric], tuple[int, ...], int]]) -> list[object]:
    """Results with every float as its repr, so -0.0 differs from 0.0 and NaN equals NaN."""
    return [([(m.name, m.attributes, repr(m.value), m.distribution and repr(m.distribution))
              for m in metrics], stats, tracked) for metrics, stats, tracked in results]


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_trackers_fast_path_changes_nothing(seed: int, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    expected = exactly(run(seed))
    build = Layouts._build

    def never_fast(self: Layouts, runs: tuple[tuple[str, int], ...], keys: tuple[str, ...]
                   ) -> TargetLayout:
        layout = build(self, runs, keys)
        return TargetLayout(layout.runs, layout.keys, layout.shape, False)

    monkeypatch.setattr(Layouts, "_build", never_fast)
    assert exactly(run(seed)) == expected


@pytest.mark.parametrize("seed", SEEDS[:20])
def test_the_order_of_families_in_the_page_form_changes_nothing(seed: int) -> None:
    """The page form keeps families in page order, which differs from target to target and
    from scrape to scrape on real pages (families a node did not have yet, a client that
    writes them unsorted), and may hold families no rule reads (another consumer's): the
    metrics must not change by a bit."""
    expected = exactly(run(seed))
    rng = random.Random(seed)

    def shuffled(scrape: TargetScrape) -> TargetScrape:
        families = list(scrape.families.items())
        rng.shuffle(families)
        if rng.random() < 0.5:
            families.insert(rng.randrange(len(families) + 1),
                            ("go_goroutines", [("go_goroutines", rng.random())]))
        return dataclasses.replace(scrape, families=PageForm.of(dict(families)))

    assert exactly(run(seed, shuffled)) == expected


@pytest.mark.parametrize("seed", SEEDS[:10])
def test_tiny_caches_change_nothing(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = exactly(run(seed))
    monkeypatch.setattr(_layout, "_LAYOUT_LIMIT", 1)
    monkeypatch.setattr(_layout, "_SERIES_LIMIT", 2)
    assert exactly(run(seed)) == expected


def test_the_fast_path_is_the_common_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard for the tests above: on clean pages the fast path runs (else they prove nothing)."""
    taken = []
    build = Layouts._build

    def watched(self: Layouts, lens: tuple[int, ...], keys: tuple[str, ...]) -> TargetLayout:
        layout = build(self, lens, keys)
        taken.append(layout.fast)
        return layout

    monkeypatch.setattr(Layouts, "_build", watched)
    rules, _ = resolve_rules(CniAggregateConfig())
    aggregator = Aggregator(rules, [], 60.0)
    node = target("n0")
    pages = [{ADD: [(ADD, 10.0 + index)], EC2: [(series(EC2, fn="a"), 3.0 * index)]}
             for index in range(3)]
    for index, families in enumerate(pages):
        metrics, _ = aggregator.aggregate(batch(index, [up(node, index, families)]))
    assert taken == [True]                       # one layout, built once, fast
    assert {m.name: m.value for m in metrics}["ec2ApiReqCount"] == 3.0


@pytest.mark.parametrize(("positions", "expected"), [
    ([3], 3),                                    # one line: the value itself
    ([1, 2, 3], (1, 2, 3)),                      # contiguous: a slice
    ([0, 5, 10], (0, 5, 10)),                    # evenly spaced: a slice with a step
    ([0, 1, 5], (0, 1, 5)),                      # anything else: positions
])
def test_pickers_pick_in_order(positions: list[int], expected: object) -> None:
    assert _layout._picker(positions)(tuple(range(12))) == expected


def test_tracked_picker_keeps_the_trackers_order() -> None:
    # The tracker's order of families need not be the page's: positions may go back and forth,
    # and a range of positions that is contiguous as a set is not a slice.
    values = tuple(range(10))
    assert _layout._tracked_picker([0, 6, 7, 1, 2, 3, 4, 5, 8, 9])(values) == (
        0, 6, 7, 1, 2, 3, 4, 5, 8, 9)
    assert _layout._tracked_picker([4])(values) == (4,)
    assert _layout._tracked_picker([])(values) == ()
    assert isinstance(_layout._tracked_picker([2, 3]), operator.itemgetter)
