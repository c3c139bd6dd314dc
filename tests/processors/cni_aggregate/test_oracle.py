"""Oracle test: random fleets, checked cycle by cycle against a reference written from
docs/aggregation.md.

Hypothesis generates fleets of aws-node processes over several cycles: processes that count,
restart (with or without ``process_start_time_seconds``), start inside the window, create new
labelled series, report NaN, miss families, fail scrapes, leave discovery and come back, listed in
any order. :class:`Reference` computes what must be published the plain way: it keeps every
successful scrape of a target and, for each counter series, walks back through them to find the
base, instead of keeping per-series state as the processor does. The processor must match it to
1e-9 on every metric of every cycle, cluster-wide and per zone.

Profiles (``CNI_HYPOTHESIS_PROFILE``): ``ci`` (the default: 120 fleets, seconds, no shrinking),
``shrink`` (the same fleets, failures shrunk to a minimal example) and ``thorough`` (3,000).
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline import Duration, Target, TargetScrape
from processors.cni_aggregate._aggregate import Aggregator
from processors.cni_aggregate.config import CniAggregateConfig, RuleConfig, resolve_rules
from tests.processors.cni_aggregate._fleet import (
    OLD_START,
    STARTED,
    batch,
    by_key,
    down,
    series,
    target,
    tick,
    up,
)

# CI: a bounded run that fails fast. Without the shrink phase a failure is reported as generated
# (shrinking these nested plans can take Hypothesis its full five minutes); rerun with
# CNI_HYPOTHESIS_PROFILE=shrink to get a minimal example. "thorough" looks much harder.
_COMMON = settings(
    deadline=None, database=None, report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci", _COMMON, max_examples=120, derandomize=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.register_profile("shrink", _COMMON, max_examples=120, derandomize=True)
settings.register_profile("thorough", _COMMON, max_examples=3000)
PROFILE = settings.get_profile(os.environ.get("CNI_HYPOTHESIS_PROFILE", "ci"))

ADD = "awscni_add_ip_req_count"
API_ERR = "awscni_aws_api_error_count"
#: Read after the latency family in rule order but filed after it on a page: with apiCalls (read
#: through the latency family) the tracker's order of families is not the page's.
EC2_REQ = "awscni_ec2api_req_count"
ASSIGNED = "awscni_assigned_ip_addresses"
TOTAL = "awscni_total_ip_addresses"
ENI_ALLOC = "awscni_eni_allocated"
ENI_MAX = "awscni_eni_max"
ACTION = "awscni_ipamd_action_inprogress"
LATENCY = "awscni_aws_api_latency_ms"
PREFIXES = "awscni_total_ipv4_prefixes"

EXTRA_RULES = [
    RuleConfig(name="apiLatencyErrP99", family=LATENCY, type="summary", labels={"error": "true"},
               unit="Milliseconds"),
    RuleConfig(name="apiLatencyP50Min", family=LATENCY, type="summary", quantile=0.5,
               operation="min"),
    RuleConfig(name="assignedMin", family=ASSIGNED, type="gauge", operation="min"),
    RuleConfig(name="assignedAvg", family=ASSIGNED, type="gauge", operation="avg"),
    RuleConfig(name="actionMax", family=ACTION, type="gauge", operation="max"),
    RuleConfig(name="actionAvg", family=ACTION, type="gauge", operation="avg"),
    RuleConfig(name="assignedNodes", family=ASSIGNED, type="gauge", operation="count"),
    RuleConfig(name="apiErrNodes", family=API_ERR, type="counter", operation="count"),
    RuleConfig(name="apiErrAB", family=API_ERR, type="counter", label_regex={"api": "A|B"}),
    RuleConfig(name="apiCalls", family=f"{LATENCY}_count", type="counter"),
]

Labels = tuple[tuple[str, str], ...]
Line = tuple[str, Labels, float]        # (metric name, labels, value)
Page = dict[str, list[Line]]            # family -> lines


# -- the simulated fleet ---------------------------------------------------------------------


@dataclass
class Process:
    """An aws-node process: its start time (None if its page has none) and its counters."""

    start: float | None
    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def bump(self, name: str, labels: Labels, by: float) -> None:
        self.counters[(name, labels)] = self.counters.get((name, labels), 0.0) + by


@dataclass
class Node:
    target: Target
    has_start: bool
    #: Its page names counter samples as OpenMetrics / prometheus_client do (``X_total``, and an
    #: ``X_created`` timestamp), both filed under the family by the receiver.
    openmetrics: bool = False
    process: Process | None = None


def finite(value: float) -> bool:
    return math.isfinite(value)


def maybe_nan(rng: random.Random, value: float, one_in: int) -> float:
    """NaN (or now and then +-Inf) one time in ``one_in``."""
    if rng.randrange(one_in):
        return value
    return rng.choice([math.nan, math.nan, math.inf, -math.inf])


def advance(rng: random.Random, step: Step, node: Node, index: int, number: int) -> None:
    """The process lives on (counting) whether or not we scrape it."""
    if node.process is None:
        if step.fresh:      # started just now: inside the window (or before the pipeline start)
            node.process = Process(tick(index) - step.age if node.has_start else None)
        else:
            node.process = Process(OLD_START - number if node.has_start else None)
            node.process.bump(ADD, (), float(rng.randrange(101)))
    elif step.restart:
        node.process = Process(tick(index) - step.age if node.has_start else None)
    process = node.process
    process.bump(ADD, (), float(rng.randrange(6)))
    for api in rng.sample("ABC", rng.randrange(3)):
        process.bump(API_ERR, (("api", api), ("error", "Throttling")), float(rng.randint(1, 3)))
    for api, error in (("A", "false"), ("B", "true")):
        process.bump(f"{LATENCY}_count", (("api", api), ("error", error)),
                     float(rng.randrange(4)))
    for api in rng.sample("AB", rng.randrange(3)):
        process.bump(EC2_REQ, (("fn", api),), float(rng.randint(1, 2)))


def page(rng: random.Random, node: Node, number: int) -> Page:
    """What a scrape of the node returns: its counters, fresh gauges, NaNs, missing families."""
    process = node.process
    assert process is not None
    out: Page = {LATENCY: []}
    for name, labels in sorted(process.counters):
        family = LATENCY if name.startswith(LATENCY) else name
        value = process.counters[(name, labels)]
        if family != LATENCY:
            value = maybe_nan(rng, value, 12)
        if node.openmetrics and family == ADD:
            out.setdefault(family, []).append((f"{name}_created", labels, 1.7e9 + number))
            name = f"{name}_total"
        out.setdefault(family, []).append((name, labels, value))
    out[ASSIGNED] = [(ASSIGNED, (), maybe_nan(rng, float(rng.randrange(41)), 8))]
    out[TOTAL] = [(TOTAL, (), float(rng.randrange(41)))]
    out[ENI_ALLOC] = [(ENI_ALLOC, (), float(rng.randrange(5)))]
    out[ENI_MAX] = [(ENI_MAX, (), float(rng.randrange(5)))]
    out[ACTION] = [(ACTION, (("fn", fn),), maybe_nan(rng, float(rng.randrange(3)), 6))
                   for fn in ("increase", "decrease")[: rng.randint(1, 2)]]
    for api, error in (("A", "false"), ("B", "true")):
        labels = (("api", api), ("error", error))
        for quantile in ("0.5", "0.99"):
            # Not only integers, so sums round: the processor sums exactly (fsum), the reference
            # naively; they must agree to 1e-9 anyway.
            value = rng.randrange(4001) / 8 + rng.random() / 3
            out[LATENCY].append((LATENCY, labels + (("quantile", quantile),),
                                 maybe_nan(rng, value, 3)))
        out[LATENCY].append((f"{LATENCY}_sum", labels, 7.0))
    if number % 2:                      # only some nodes (aws-node versions) have prefixes
        out[PREFIXES] = [(PREFIXES, (), float(rng.randrange(41)))]
    for family in sorted(out):          # now and then a family is missing from a page
        if rng.randrange(12) == 0:
            del out[family]
    return out


def to_scrape(node: Node, index: int, lines: Page) -> TargetScrape:
    assert node.process is not None
    families = {
        family: [(series(name, **dict(labels)), value) for name, labels, value in family_lines]
        for family, family_lines in lines.items()
    }
    return up(node.target, index, families, start=node.process.start)


# -- the reference -----------------------------------------------------------------------------


@dataclass
class Success:
    time: float
    start: float | None
    page: Page


@dataclass
class RefRule:
    name: str
    family: str
    type: str
    operation: str
    quantile: float | None
    labels: dict[str, str]
    regex: dict[str, str]

    def lines(self, page: Page) -> list[Line]:
        found = page.get(self.family)
        if not found and self.family.endswith("_count"):
            found = page.get(self.family[: -len("_count")])
        return found or []

    def wants(self, name: str, labels: Labels) -> bool:
        values = dict(labels)
        if name != self.family and not (self.quantile is None and name == f"{self.family}_total"):
            return False
        if any(values.get(k) != v for k, v in self.labels.items()):
            return False
        if any(not re.fullmatch(p, values.get(k, "")) for k, p in self.regex.items()):
            return False
        return self.quantile is None or float(values.get("quantile", "nan")) == self.quantile


class Reference:
    """docs/aggregation.md's rules, computed directly from each target's history of successful
    scrapes."""

    def __init__(self, rules: list[RefRule], staleness: float) -> None:
        self.rules = rules
        self.staleness = staleness
        self.history: dict[str, list[Success]] = {}

    def base(self, line: tuple[str, Labels], successes: list[Success]) -> float | None:
        """The value a series is diffed against: its value at the last success, walking back
        over NaNs (a NaN keeps the previous value) but never across a restart or first sight."""
        for position in range(len(successes) - 1, -1, -1):
            success = successes[position]
            found = [v for page_lines in success.page.values()
                     for n, lb, v in page_lines if (n, lb) == line]
            if not found:
                return None
            if finite(found[0]):
                return found[0]
            if position == 0:
                return None
            before = successes[position - 1]
            if success.start is not None and before.start is not None \
                    and success.start != before.start:
                return None
        return None

    def increase(self, line: tuple[str, Labels], value: float, start: float | None,
                 successes: list[Success], window_start: float) -> float:
        if not successes:
            return value if start is not None and start > window_start else 0.0
        last = successes[-1]
        if start is not None and last.start is not None and start != last.start:
            return value
        base = self.base(line, successes)
        if base is None or value < base:
            return value
        return value - base

    def cycle(self, index: int, entries: list[tuple[Node, Page | None, bool]]
              ) -> dict[tuple[str, Labels], float]:
        now = tick(index)
        window_start = tick(index - 1) if index > 0 else STARTED
        keys = {node.target.key for node, _, _ in entries}
        for key in list(self.history):
            if key not in keys:
                del self.history[key]
        # (zone, status, page or None, increases by (rule name) -> list of increases)
        rows: list[tuple[str, str, Page | None, dict[str, list[float]]]] = []
        for node, lines, is_up in entries:
            key = node.target.key
            successes = self.history.setdefault(key, [])
            zone = node.target.attribute("zone") or "unknown"
            if is_up:
                assert lines is not None and node.process is not None
                start = node.process.start
                increases: dict[str, list[float]] = {}
                for rule in self.rules:
                    if rule.type != "counter":
                        continue
                    increases[rule.name] = [
                        self.increase((n, lb), v, start, successes, window_start)
                        for n, lb, v in rule.lines(lines) if rule.wants(n, lb) and finite(v)
                    ]
                successes.append(Success(now, start, lines))
                rows.append((zone, "reporting", lines, increases))
            elif successes and now - successes[-1].time < self.staleness:
                last = successes[-1].page
                zeros = {rule.name: [0.0 for n, lb, v in rule.lines(last)
                                     if rule.wants(n, lb) and finite(v)]
                         for rule in self.rules if rule.type == "counter"}
                rows.append((zone, "stale", last, zeros))
            else:
                rows.append((zone, "failed", None, {}))
        out = self.block(rows, ())
        for zone in sorted({row[0] for row in rows}):
            out.update(self.block([row for row in rows if row[0] == zone], (("zone", zone),)))
        return out

    def block(self, rows: list[tuple[str, str, Page | None, dict[str, list[float]]]],
              attributes: Labels) -> dict[tuple[str, Labels], float]:
        out: dict[str, float] = {}
        for rule in self.rules:
            per_target: list[list[float]] = []
            for _, _, lines, increases in rows:
                if lines is None:
                    continue
                if rule.type == "counter":
                    taken = increases[rule.name]
                else:
                    taken = [v for n, lb, v in rule.lines(lines) if rule.wants(n, lb)
                             and finite(v)]
                if taken:
                    per_target.append(taken)
            if not per_target:
                continue
            flat = [v for taken in per_target for v in taken]
            out[rule.name] = {
                "sum": sum(flat), "max": max(flat), "min": min(flat),
                "avg": sum(flat) / len(flat) if flat else 0.0, "count": float(len(per_target)),
            }[rule.operation]
        if "assignIPAddresses" in out and "totalIPAddresses" in out:
            out["availableIPAddresses"] = out["totalIPAddresses"] - out["assignIPAddresses"]
            if out["totalIPAddresses"] > 0:
                out["ipUtilization"] = 100 * out["assignIPAddresses"] / out["totalIPAddresses"]
        if "eniAllocated" in out and "eniMaxAvailable" in out and out["eniMaxAvailable"] > 0:
            out["eniUtilization"] = 100 * out["eniAllocated"] / out["eniMaxAvailable"]
        statuses = [row[1] for row in rows]
        out["targetsDiscovered"] = float(len(rows))
        out["targetsReporting"] = float(statuses.count("reporting"))
        out["targetsStale"] = float(statuses.count("stale"))
        out["targetsFailed"] = float(statuses.count("failed"))
        return {(name, attributes): value for name, value in out.items()}


def reference_rules(config: CniAggregateConfig) -> list[RefRule]:
    """The docs/aggregation.md table typed out again (independently of _rules.py), plus
    EXTRA_RULES."""
    counters = ["addReqCount:awscni_add_ip_req_count", "awsAPIErr:awscni_aws_api_error_count",
                "awsUtilErr:awscni_aws_utils_error_count", "delReqCount:awscni_del_ip_req_count",
                "ipamdErr:awscni_ipamd_error_count", "podENIErr:awscni_pod_eni_error_count",
                "reconcileCount:awscni_reconcile_count",
                "forceRemoveENI:awscni_force_removed_enis",
                "forceRemoveIPs:awscni_force_removed_ips",
                "ec2ApiReqCount:awscni_ec2api_req_count",
                "ec2ApiErrCount:awscni_ec2api_error_count"]
    gauges = ["assignIPAddresses:awscni_assigned_ip_addresses", "eniAllocated:awscni_eni_allocated",
              "eniMaxAvailable:awscni_eni_max",
              "ipamdActionInProgress:awscni_ipamd_action_inprogress",
              "maxIPAddresses:awscni_ip_max", "totalIPAddresses:awscni_total_ip_addresses",
              "totalIPv4Prefixes:awscni_total_ipv4_prefixes",
              "totalAssignedIPv4sPerCidr:awscni_assigned_ip_per_cidr"]
    rules = [RefRule(text.split(":")[0], text.split(":")[1], "counter", "sum", None, {}, {})
             for text in counters]
    rules += [RefRule(text.split(":")[0], text.split(":")[1], "gauge", "sum", None, {}, {})
              for text in gauges]
    rules.append(RefRule("awsAPILatency", LATENCY, "summary", "max", 0.99, {}, {}))
    for extra in config.rules:
        quantile = extra.quantile if extra.quantile is not None else (
            0.99 if extra.type == "summary" else None)
        default_operation = "max" if extra.type == "summary" else "sum"
        rules.append(RefRule(extra.name, extra.family or "", extra.type or "",
                             extra.operation or default_operation, quantile,
                             dict(extra.labels), dict(extra.label_regex)))
    for rule in rules:   # summaries are read as gauges of one quantile
        if rule.type == "summary":
            rule.type = "gauge"
    return rules


# -- the property ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What happens to one node in one cycle. The structural choices are drawn by Hypothesis
    (so failures shrink to few nodes, cycles and events); the values come from ``seed``
    (drawing each value through Hypothesis made one example cost ~0.1 s). Seeds are small so
    shrinking them is quick: with 32-bit seeds a failure took minutes to shrink."""

    event: str          # up, failed or absent (left discovery)
    restart: bool
    fresh: bool         # a new process started just now rather than long ago
    age: float          # seconds its (re)start is before the tick: 1-29, window start T0-12
    seed: int


steps = st.builds(
    Step,
    event=st.sampled_from(["up", "up", "up", "failed", "absent"]),
    restart=st.integers(0, 7).map(lambda n: n == 0),
    fresh=st.booleans(),
    age=st.integers(1, 29).map(float),
    seed=st.integers(0, 255),
)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Node], list[list[Step]], float, int]:
    size = draw(st.integers(1, 5))
    nodes = [
        Node(target(f"n{number}", zone=draw(st.sampled_from(["a", "b", ""])), number=number + 1),
             has_start=draw(st.booleans()), openmetrics=draw(st.booleans()))
        for number in range(size)
    ]
    plan = draw(st.lists(st.lists(steps, min_size=size, max_size=size), min_size=1,
                         max_size=7))
    staleness = float(draw(st.sampled_from([0, 30, 60, 90, 300])))
    return nodes, plan, staleness, draw(st.integers(0, 255))


@PROFILE
@given(fleet=fleets())
def test_processor_matches_the_reference_every_cycle(
    fleet: tuple[list[Node], list[list[Step]], float, int],
) -> None:
    nodes, plan, staleness, order_seed = fleet
    config = CniAggregateConfig(staleness=Duration(staleness), rules=EXTRA_RULES,
                                group_by=["zone"])
    rules, problems = resolve_rules(config)
    assert problems == []
    aggregator = Aggregator(rules, config.group_by, config.staleness)
    reference = Reference(reference_rules(config), staleness)
    shuffler = random.Random(order_seed)
    for index, cycle_steps in enumerate(plan):
        entries: list[tuple[Node, Page | None, bool]] = []
        scrapes: list[TargetScrape] = []
        for number, (node, step) in enumerate(zip(nodes, cycle_steps, strict=True)):
            if step.event == "absent" and node.process is None:
                continue
            rng = random.Random(step.seed)
            advance(rng, step, node, index, number)
            if step.event == "absent":
                continue
            if step.event == "up":
                lines = page(rng, node, number)
                entries.append((node, lines, True))
                scrapes.append(to_scrape(node, index, lines))
            else:
                entries.append((node, None, False))
                scrapes.append(down(node.target, index))
        shuffler.shuffle(scrapes)   # the order targets are listed in must not matter
        metrics, _ = aggregator.aggregate(batch(index, scrapes))
        got = {key: metric.value for key, metric in by_key(metrics).items()}
        expected = reference.cycle(index, entries)
        assert set(got) == set(expected), (
            f"cycle {index}: missing {sorted(set(expected) - set(got))}, "
            f"unexpected {sorted(set(got) - set(expected))}")
        for key, value in expected.items():
            assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9), (
                f"cycle {index}: {key}: got {got[key]}, expected {value}")
