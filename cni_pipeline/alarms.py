"""``cni-pipeline alarms``: the recommended CloudWatch alarms for what a config publishes, as
PutMetricAlarm requests, applied, or as a CloudFormation template.

Only alarms whose metrics the config really sends are made; the others are listed as skipped
with what would turn them on. Ratios are metric math over the published metrics, so they need no
extra billed metric.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._cloudwatch import CLUSTER_DIMENSION, CloudWatchTarget

PERIOD = 300


@dataclass(frozen=True)
class Thresholds:
    ip_utilization: float = 85.0  # percent of maxIPAddresses assigned
    subnet_min_available: float = 50.0  # free addresses in the fullest subnet
    forecast_hours: float = 24.0  # hours until exhaustion at the current rate
    ipamd_errors: float = 0.0  # per 5 minutes
    api_errors: float = 0.0  # per 5 minutes
    nodes_missing: float = 0.0  # aws-node pods discovered but not reporting
    evaluation_periods: int = 3


@dataclass(frozen=True)
class Plan:
    alarms: list[dict[str, Any]]  # PutMetricAlarm keyword arguments
    skipped: list[str]  # "name: why"


def recommended_alarms(target: CloudWatchTarget, thresholds: Thresholds, prefix: str = "",
                       actions: tuple[str, ...] = ()) -> Plan:
    prefix = prefix or f"cni-pipeline-{target.cluster_id}"
    alarms, skipped = [], []
    for name, needs, build in _candidates(target, thresholds):
        missing = [m for m in needs if not target.has(m)]
        if missing:
            skipped.append(f"{prefix}-{name}: {', '.join(missing)} not published")
            continue
        alarm = {"AlarmName": f"{prefix}-{name}", "ActionsEnabled": bool(actions),
                 "EvaluationPeriods": thresholds.evaluation_periods, **build}
        if actions:
            alarm["AlarmActions"] = list(actions)
        alarms.append(alarm)
    return Plan(alarms, skipped)


def _candidates(target: CloudWatchTarget, t: Thresholds
                ) -> Iterator[tuple[str, tuple[str, ...], dict[str, Any]]]:
    def stat(id_: str, name: str, statistic: str) -> dict[str, Any]:
        return {"Id": id_, "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": target.namespace, "MetricName": name,
                       "Dimensions": [{"Name": CLUSTER_DIMENSION, "Value": target.cluster_id}]},
            "Period": PERIOD, "Stat": statistic}}

    def single(name: str, statistic: str) -> dict[str, Any]:
        return {"Namespace": target.namespace, "MetricName": name, "Statistic": statistic,
                "Dimensions": [{"Name": CLUSTER_DIMENSION, "Value": target.cluster_id}],
                "Period": PERIOD}

    yield ("ip-utilization-high", ("assignIPAddresses", "maxIPAddresses"), {
        "AlarmDescription": f"More than {t.ip_utilization:g}% of the IP addresses the nodes can "
                            "hold are assigned to pods: add nodes or enable prefix delegation.",
        "Metrics": [stat("assigned", "assignIPAddresses", "Maximum"),
                    stat("capacity", "maxIPAddresses", "Maximum"),
                    {"Id": "utilization", "Expression": "100 * assigned / capacity",
                     "Label": "assigned / max IPs (%)", "ReturnData": True}],
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": t.ip_utilization,
        "TreatMissingData": "missing"})
    yield ("subnet-nearly-full", ("minSubnetAvailableIPs",), {
        "AlarmDescription": f"A subnet of the cluster has fewer than {t.subnet_min_available:g} "
                            "free addresses: pods will fail with "
                            "InsufficientFreeAddressesInSubnet.",
        **single("minSubnetAvailableIPs", "Minimum"),
        "ComparisonOperator": "LessThanThreshold", "Threshold": t.subnet_min_available,
        "TreatMissingData": "missing"})
    yield ("ip-exhaustion-forecast", ("ipExhaustionHours",), {
        "AlarmDescription": f"At the last hour's rate, the nodes' IP capacity runs out within "
                            f"{t.forecast_hours:g} hours.",
        **single("ipExhaustionHours", "Minimum"),
        "ComparisonOperator": "LessThanThreshold", "Threshold": t.forecast_hours,
        # no forecast is published while the trend is flat or falling: that is not a breach
        "TreatMissingData": "notBreaching"})
    yield ("ipamd-errors", ("ipamdErr",), {
        "AlarmDescription": f"ipamd reported more than {t.ipamd_errors:g} errors in 5 minutes.",
        **single("ipamdErr", "Sum"),
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": t.ipamd_errors,
        "TreatMissingData": "notBreaching"})
    yield ("aws-api-errors", ("awsAPIErr",), {
        "AlarmDescription": f"aws-node's AWS API calls failed more than {t.api_errors:g} times "
                            "in 5 minutes (throttling, permissions, EC2 limits).",
        **single("awsAPIErr", "Sum"),
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": t.api_errors,
        "TreatMissingData": "notBreaching"})
    yield ("nodes-not-reporting", ("targetsDiscovered", "targetsReporting"), {
        "AlarmDescription": f"More than {t.nodes_missing:g} aws-node pods are discovered but not "
                            "scraped: their IPs are missing from the sums.",
        "Metrics": [stat("discovered", "targetsDiscovered", "Minimum"),
                    stat("reporting", "targetsReporting", "Minimum"),
                    {"Id": "missing", "Expression": "discovered - reporting",
                     "Label": "aws-node pods not reporting", "ReturnData": True}],
        "ComparisonOperator": "GreaterThanThreshold", "Threshold": t.nodes_missing,
        "TreatMissingData": "breaching"})


def cloudformation(plan: Plan) -> dict[str, Any]:
    """A template with one ``AWS::CloudWatch::Alarm`` per alarm (same properties as the API)."""
    resources = {}
    for alarm in plan.alarms:
        # Logical IDs are alphanumeric: "cni-pipeline-prod.eu-ip-utilization-high" becomes
        # "CniPipelineProdEuIpUtilizationHigh".
        logical = re.sub(r"[^0-9A-Za-z]+", " ", alarm["AlarmName"]).title().replace(" ", "")
        resources[logical] = {"Type": "AWS::CloudWatch::Alarm", "Properties": alarm}
    return {"AWSTemplateFormatVersion": "2010-09-09",
            "Description": "cni-pipeline recommended alarms", "Resources": resources}
