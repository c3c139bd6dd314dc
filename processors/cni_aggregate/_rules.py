"""The rule table: which scraped family becomes which published metric, and how nodes combine.

:data:`DEFAULT_RULES` is docs/aggregation.md's table, row for row and in its order (the order
metrics are emitted in). The rule, not the page's ``# TYPE`` line, decides whether a family is a
counter: some aws-node versions expose ``add_ip_req_count`` as a gauge.

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


#: The aws-node families' own HELP texts (amazon-vpc-cni-k8s ``prometheusmetrics.go``), what a
#: rule's default description says the cluster value is made of; other families are named as is.
FAMILY_HELP: dict[str, str] = {
    "awscni_add_ip_req_count": "the number of add IP address requests",
    "awscni_assigned_ip_addresses": "the number of IP addresses assigned to pods",
    "awscni_aws_api_error_count": "the number of times AWS API returns an error",
    "awscni_aws_api_latency_ms": "AWS API call latency",
    "awscni_aws_utils_error_count": "the number of errors not handled in awsutils library",
    "awscni_del_ip_req_count": "the number of delete IP address requests",
    "awscni_eni_allocated": "the number of ENIs allocated",
    "awscni_eni_max": "the maximum number of ENIs that can be attached to the instance",
    "awscni_ipamd_action_inprogress": "the number of ipamd actions in progress",
    "awscni_ipamd_error_count": "the number of errors encountered in ipamd",
    "awscni_ip_max": "the maximum number of IP addresses that can be allocated",
    "awscni_pod_eni_error_count": "the number of errors encountered for pod ENIs",
    "awscni_reconcile_count": "the number of times ipamd reconciles on ENIs and IPs",
    "awscni_total_ip_addresses": "the total number of IP addresses",
    "awscni_total_ipv4_prefixes": "the total number of IPv4 prefixes",
    "awscni_assigned_ip_per_cidr": "the number of IP addresses assigned per cidr",
    "awscni_force_removed_enis": "the number of ENIs force removed while they had assigned pods",
    "awscni_force_removed_ips": "the number of IPs force removed while they had assigned pods",
    "awscni_ec2api_req_count": "the number of requests made to EC2 APIs by CNI",
    "awscni_ec2api_error_count": "the number of failed EC2 APIs requests",
}

_PODS = "the cluster's aws-node pods"
_LEADS = {Operation.SUM: "Sum", Operation.MAX: "Highest", Operation.MIN: "Lowest",
          Operation.AVG: "Mean"}


def describe(family: str, rule_type: RuleType, operation: Operation,
             quantile: float | None = None) -> str:
    """A rule's default description: what one cycle's value is, from the family's meaning and how
    nodes combine. A counter's (or histogram's) says what is counted, without a time span: the
    value is the cycle's increase, and an exporter serving running totals prefixes its own
    ("Total since this exporter started, ")."""
    what = FAMILY_HELP.get(family, family)
    if operation is Operation.COUNT:
        return f"Number of {_PODS} reporting: {what}"
    if rule_type is RuleType.SUMMARY:
        return f"{_LEADS[operation]} {quantile:g} quantile of {what} across aws-node pods"
    if rule_type in (RuleType.COUNTER, RuleType.HISTOGRAM):
        return f"Over {_PODS}, of: {what}"
    if operation is Operation.AVG:
        return f"Mean over every series of {_PODS} of: {what}"
    return f"{_LEADS[operation]} over {_PODS} of: {what}"


def _rule(name: str, family: str, rule_type: RuleType, operation: Operation,
          quantile: float | None = None, unit: str = DEFAULT_UNIT) -> Rule:
    return Rule(name, family, rule_type, operation, quantile, unit,
                description=describe(family, rule_type, operation, quantile))


def _counter(name: str, family: str) -> Rule:
    return _rule(name, family, RuleType.COUNTER, Operation.SUM)


def _gauge(name: str, family: str) -> Rule:
    return _rule(name, family, RuleType.GAUGE, Operation.SUM)


#: docs/aggregation.md's table, in its order.
DEFAULT_RULES: tuple[Rule, ...] = (
    _counter("addReqCount", "awscni_add_ip_req_count"),
    _gauge("assignIPAddresses", "awscni_assigned_ip_addresses"),
    _counter("awsAPIErr", "awscni_aws_api_error_count"),
    _rule("awsAPILatency", "awscni_aws_api_latency_ms", RuleType.SUMMARY, Operation.MAX,
          quantile=DEFAULT_QUANTILE, unit="Milliseconds"),
    _counter("awsUtilErr", "awscni_aws_utils_error_count"),
    _counter("delReqCount", "awscni_del_ip_req_count"),
    _gauge("eniAllocated", "awscni_eni_allocated"),
    _gauge("eniMaxAvailable", "awscni_eni_max"),
    _gauge("ipamdActionInProgress", "awscni_ipamd_action_inprogress"),
    _counter("ipamdErr", "awscni_ipamd_error_count"),
    _gauge("maxIPAddresses", "awscni_ip_max"),
    _counter("podENIErr", "awscni_pod_eni_error_count"),
    _counter("reconcileCount", "awscni_reconcile_count"),
    _gauge("totalIPAddresses", "awscni_total_ip_addresses"),
    _gauge("totalIPv4Prefixes", "awscni_total_ipv4_prefixes"),
    _gauge("totalAssignedIPv4sPerCidr", "awscni_assigned_ip_per_cidr"),
    _counter("forceRemoveENI", "awscni_force_removed_enis"),
    _counter("forceRemoveIPs", "awscni_force_removed_ips"),
    _counter("ec2ApiReqCount", "awscni_ec2api_req_count"),
    _counter("ec2ApiErrCount", "awscni_ec2api_error_count"),
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
#: A gateway's (``cni_combine``): shards whose partials a cycle was published without.
SHARDS_MISSING = "shardsMissing"

DERIVED_NAMES = (
    AVAILABLE_IPS, IP_UTILIZATION, ENI_UTILIZATION,
    TARGETS_DISCOVERED, TARGETS_REPORTING, TARGETS_STALE, TARGETS_FAILED, SHARDS_MISSING,
)
