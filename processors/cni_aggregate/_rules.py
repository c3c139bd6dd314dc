"""The rule table: which scraped family becomes which published metric, and how nodes combine.

:data:`DEFAULT_RULES` is DESIGN.md's table, row for row and in its order (the order metrics are
emitted in). The rule, not the page's ``# TYPE`` line, decides whether a family is a counter: some
aws-node versions expose ``add_ip_req_count`` as a gauge.

A :class:`Rule` is the resolved, validated form of one row; ``config.resolve_rules`` builds the
active list from the defaults and the user's ``rules:`` overlay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pipeline import MetricKind


class RuleType(StrEnum):
    """How a family's samples are read, whatever the page's ``# TYPE`` says."""

    #: Cumulative: per (target, series) increases over the cycle, with reset and first-sight rules.
    COUNTER = "counter"
    #: A current value: read as is, carried while a failed target is stale.
    GAUGE = "gauge"
    #: Only the lines of one quantile (``quantile="0.99"``) are read, as gauges.
    SUMMARY = "summary"
    #: ``_bucket``/``_sum``/``_count`` lines: per-bucket increases, published as a distribution.
    HISTOGRAM = "histogram"


class Operation(StrEnum):
    """How the values of every selected series on every target combine into one number."""

    SUM = "sum"
    MAX = "max"
    MIN = "min"
    #: Mean over every selected sample (series x target), not over targets.
    AVG = "avg"
    #: Targets that reported at least one selected, finite sample (or are carried as stale).
    COUNT = "count"


#: What each type can be combined with. A counter's increase only sums (max of increases says
#: nothing a user can act on), and the sum of p99s is not a latency.
ALLOWED_OPERATIONS: dict[RuleType, tuple[Operation, ...]] = {
    RuleType.COUNTER: (Operation.SUM, Operation.COUNT),
    RuleType.GAUGE: tuple(Operation),
    RuleType.SUMMARY: (Operation.MAX, Operation.MIN, Operation.AVG, Operation.COUNT),
    RuleType.HISTOGRAM: (Operation.SUM, Operation.COUNT),
}

DEFAULT_OPERATION: dict[RuleType, Operation] = {
    RuleType.COUNTER: Operation.SUM,
    RuleType.GAUGE: Operation.SUM,
    RuleType.SUMMARY: Operation.MAX,
    RuleType.HISTOGRAM: Operation.SUM,
}

DEFAULT_QUANTILE = 0.99
DEFAULT_UNIT = "Count"


#: Target attributes a ``group_by`` entry may name. ``node`` is ``Target.node``; the others are
#: node metadata the receiver's Kubernetes discovery puts in ``Target.attributes``.
GROUP_KEYS = ("zone", "instance_type", "nodegroup", "node")
#: The group of a target that lacks the attribute (CloudWatch refuses empty dimension values).
UNKNOWN_GROUP = "unknown"

FAMILY_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
#: Suffixes of the lines a summary or histogram files under its family name.
_LINE_SUFFIXES = ("_bucket", "_count", "_sum")


@dataclass(frozen=True, slots=True)
class Rule:
    """One resolved row of the table.

    ``family`` names the lines read: for counter, gauge and summary rules, lines whose metric name
    is ``family`` (so ``awscni_aws_api_latency_ms_count`` reads a summary's count, whichever family
    the receiver files it under); for a histogram, ``family``'s ``_bucket``, ``_sum`` and
    ``_count`` lines. ``labels`` must all match exactly; each ``label_regex`` pattern must match
    its label's whole value (an absent label has the value "", as in PromQL).
    """

    name: str
    family: str
    type: RuleType
    operation: Operation
    quantile: float | None = None
    unit: str = DEFAULT_UNIT
    labels: tuple[tuple[str, str], ...] = ()
    label_regex: tuple[tuple[str, re.Pattern[str]], ...] = ()
    description: str = ""

    @property
    def lookup_families(self) -> tuple[str, ...]:
        """Family names the rule's lines may be filed under, in the order to try.

        The receiver files a ``_count``/``_sum``/``_bucket`` line under the family it belongs to,
        unless that line's own name is wanted too. A rule naming ``X_count`` asks for ``X_count``
        (so its lines are filed there) but also looks under ``X``; the first hit wins. A
        histogram reads ``X`` and, if another consumer asked for them, ``X_bucket``, ``X_sum``
        and ``X_count``.
        """
        if self.type is RuleType.HISTOGRAM:
            return (self.family, *(self.family + suffix for suffix in _LINE_SUFFIXES))
        for suffix in _LINE_SUFFIXES:
            if self.family.endswith(suffix) and len(self.family) > len(suffix):
                return (self.family, self.family[: -len(suffix)])
        return (self.family,)

    @property
    def line_names(self) -> tuple[str, ...]:
        """Metric names of the lines a counter, gauge or summary rule reads.

        Counters and gauges also read ``X_total``: OpenMetrics (and prometheus_client) name a
        counter family ``X``'s sample ``X_total``, and the receiver files it under ``X``. Not
        ``X_created``, which is a timestamp.
        """
        if self.type in (RuleType.COUNTER, RuleType.GAUGE) and not self.family.endswith("_total"):
            return (self.family, self.family + "_total")
        return (self.family,)

    @property
    def metric_kind(self) -> MetricKind:
        if self.operation is Operation.COUNT:
            return MetricKind.GAUGE
        if self.type is RuleType.COUNTER:
            return MetricKind.COUNTER
        if self.type is RuleType.HISTOGRAM:
            return MetricKind.DISTRIBUTION
        return MetricKind.GAUGE

    def matches_labels(self, labels: dict[str, str]) -> bool:
        for key, value in self.labels:
            if labels.get(key) != value:
                return False
        for key, pattern in self.label_regex:
            if pattern.fullmatch(labels.get(key, "")) is None:
                return False
        return True


def _counter(name: str, family: str, description: str) -> Rule:
    return Rule(name, family, RuleType.COUNTER, Operation.SUM, description=description)


def _gauge(name: str, family: str, description: str) -> Rule:
    return Rule(name, family, RuleType.GAUGE, Operation.SUM, description=description)


#: DESIGN.md's table, in its order.
DEFAULT_RULES: tuple[Rule, ...] = (
    _counter("addReqCount", "awscni_add_ip_req_count", "Add-IP requests in the cycle"),
    _gauge("assignIPAddresses", "awscni_assigned_ip_addresses", "IP addresses assigned to pods"),
    _counter("awsAPIErr", "awscni_aws_api_error_count", "AWS API errors in the cycle"),
    Rule(
        "awsAPILatency", "awscni_aws_api_latency_ms", RuleType.SUMMARY, Operation.MAX,
        quantile=DEFAULT_QUANTILE, unit="Milliseconds",
        description="Highest p99 AWS API latency of any node and API",
    ),
    _counter("awsUtilErr", "awscni_aws_utils_error_count", "AWS utility errors in the cycle"),
    _counter("delReqCount", "awscni_del_ip_req_count", "Delete-IP requests in the cycle"),
    _gauge("eniAllocated", "awscni_eni_allocated", "ENIs allocated"),
    _gauge("eniMaxAvailable", "awscni_eni_max", "ENIs the nodes can attach"),
    _gauge("ipamdActionInProgress", "awscni_ipamd_action_inprogress", "ipamd actions in progress"),
    _counter("ipamdErr", "awscni_ipamd_error_count", "ipamd errors in the cycle"),
    _gauge("maxIPAddresses", "awscni_ip_max", "IP addresses the nodes can hold"),
    _counter("podENIErr", "awscni_pod_eni_error_count", "Pod ENI errors in the cycle"),
    _counter("reconcileCount", "awscni_reconcile_count", "ipamd reconciles in the cycle"),
    _gauge("totalIPAddresses", "awscni_total_ip_addresses", "IP addresses allocated to nodes"),
    _gauge("totalIPv4Prefixes", "awscni_total_ipv4_prefixes", "IPv4 prefixes allocated"),
    _gauge("totalAssignedIPv4sPerCidr", "awscni_assigned_ip_per_cidr", "IPs assigned per CIDR"),
    _counter("forceRemoveENI", "awscni_force_removed_enis", "ENIs force-removed in the cycle"),
    _counter("forceRemoveIPs", "awscni_force_removed_ips", "IPs force-removed in the cycle"),
    _counter("ec2ApiReqCount", "awscni_ec2api_req_count", "EC2 API requests in the cycle"),
    _counter("ec2ApiErrCount", "awscni_ec2api_error_count", "EC2 API errors in the cycle"),
)

# -- derived metrics: always computed, marked ``derived`` (CloudWatch sends them only if asked) --

#: Inputs of the derived capacity metrics: the default rules' output names.
ASSIGNED_IPS = "assignIPAddresses"
TOTAL_IPS = "totalIPAddresses"
ENIS_ALLOCATED = "eniAllocated"
ENIS_MAX = "eniMaxAvailable"

AVAILABLE_IPS = "availableIPAddresses"
IP_UTILIZATION = "ipUtilization"
ENI_UTILIZATION = "eniUtilization"
TARGETS_DISCOVERED = "targetsDiscovered"
TARGETS_REPORTING = "targetsReporting"
TARGETS_STALE = "targetsStale"
TARGETS_FAILED = "targetsFailed"

DERIVED_NAMES = (
    AVAILABLE_IPS, IP_UTILIZATION, ENI_UTILIZATION,
    TARGETS_DISCOVERED, TARGETS_REPORTING, TARGETS_STALE, TARGETS_FAILED,
)
