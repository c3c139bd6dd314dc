"""``cni-pipeline dashboard``: a CloudWatch dashboard for exactly what a config publishes.

Each widget is drawn only from metrics the config's ``awscloudwatch`` exporter really sends
(:mod:`._cloudwatch` works them out from the config), so a dashboard never shows an empty graph
for a metric that is not there; a view whose metrics are not sent becomes a note saying how to
send them. Views per ``group_by`` value (zone, node group) and per subnet are ``SEARCH``
expressions, since their values are only known at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._cloudwatch import CLUSTER_DIMENSION, CloudWatchTarget

PERIOD = 60
WIDTH, HEIGHT, COLUMNS = 12, 6, 2


@dataclass(frozen=True)
class View:
    """A graph of cluster-level metrics, each read with its statistic."""

    title: str
    metrics: tuple[tuple[str, str], ...]  # (metric name, statistic)
    note_if_missing: str = ""


CLUSTER_VIEWS = (
    View("IP addresses: capacity and assigned",
         (("maxIPAddresses", "Maximum"), ("totalIPAddresses", "Maximum"),
          ("assignIPAddresses", "Maximum"), ("availableIPAddresses", "Minimum"))),
    View("Hours until IP exhaustion (forecast)", (("ipExhaustionHours", "Minimum"),)),
    View("ENIs: attached and maximum",
         (("eniMaxAvailable", "Maximum"), ("eniAllocated", "Maximum"))),
    View("AWS API and ipamd errors",
         (("awsAPIErr", "Sum"), ("ec2ApiErrCount", "Sum"), ("awsUtilErr", "Sum"),
          ("ipamdErr", "Sum"), ("podENIErr", "Sum"))),
    View("AWS API latency, highest p99 (ms)", (("awsAPILatency", "Maximum"),)),
    View("Coverage: aws-node pods",
         (("targetsDiscovered", "Minimum"), ("targetsReporting", "Minimum"),
          ("targetsStale", "Maximum"), ("targetsFailed", "Maximum")),
         note_if_missing="Coverage (pods discovered, reporting, stale, failed) is not sent: add "
                         "targetsDiscovered, targetsReporting, targetsStale and targetsFailed "
                         "to the awscloudwatch exporter's derived_metrics."),
    View("Subnets: fewest available IPs", (("minSubnetAvailableIPs", "Minimum"),)),
)
#: Metrics drawn once per value of each dimension they are published with (group_by, subnets).
PER_VALUE_VIEWS = (
    ("Assigned IPs", "assignIPAddresses", "Maximum"),
    ("Available IPs", "availableIPAddresses", "Minimum"),
    ("Max IPs", "maxIPAddresses", "Maximum"),
    ("Available IPs", "subnetAvailableIPs", "Minimum"),
    ("Hours until exhaustion", "subnetExhaustionHours", "Minimum"),
    ("Hours until exhaustion", "ipExhaustionHours", "Minimum"),
)


def dashboard_body(target: CloudWatchTarget) -> dict[str, Any]:
    """The ``DashboardBody`` of PutDashboard (as a dict; the API takes it as JSON text)."""
    widgets = [*_cluster_widgets(target), *_per_value_widgets(target)]
    for i, widget in enumerate(widgets):
        widget.update(x=(i % COLUMNS) * WIDTH, y=(i // COLUMNS) * HEIGHT, width=WIDTH,
                      height=HEIGHT)
    return {"widgets": widgets}


def _cluster_widgets(target: CloudWatchTarget) -> Iterator[dict[str, Any]]:
    for view in CLUSTER_VIEWS:
        lines = [[target.namespace, name, CLUSTER_DIMENSION, target.cluster_id,
                  {"stat": stat, "label": name}]
                 for name, stat in view.metrics if target.has(name)]
        if lines:
            yield _metric_widget(target, view.title, lines)
        elif view.note_if_missing:
            yield {"type": "text", "properties": {"markdown": view.note_if_missing}}


def _per_value_widgets(target: CloudWatchTarget) -> Iterator[dict[str, Any]]:
    for title, name, stat in PER_VALUE_VIEWS:
        for dimensions in target.views(name):
            by = ", ".join(d for d in dimensions if d != CLUSTER_DIMENSION)
            yield _metric_widget(target, f"{title} by {by} ({name})",
                                 [[{"expression": search_expression(target, name, dimensions,
                                                                    stat),
                                    "id": "e1", "label": ""}]])


def search_expression(target: CloudWatchTarget, name: str, dimensions: tuple[str, ...],
                      stat: str) -> str:
    """One line per value of the dimensions beside CLUSTER_ID, for this cluster only."""
    schema = ",".join((target.namespace, *dimensions))
    return (f"SEARCH('{{{schema}}} MetricName=\"{name}\" "
            f"{CLUSTER_DIMENSION}=\"{target.cluster_id}\"', '{stat}', {PERIOD})")


def _metric_widget(target: CloudWatchTarget, title: str, lines: list[Any]) -> dict[str, Any]:
    return {
        "type": "metric",
        "properties": {"title": title, "region": target.region, "view": "timeSeries",
                       "period": PERIOD, "stacked": False, "metrics": lines},
    }
