"""Subnet capacity as metrics: per subnet (``SubnetId``), per Availability Zone (a second view:
``AvailabilityZone``, its subnets summed), and the cluster's fullest subnet."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import Metric, MetricKind

from ._sources import Subnet

AVAILABLE = "subnetAvailableIPs"
TOTAL = "subnetTotalIPs"
UTILIZATION = "subnetIPUtilization"
MINIMUM = "minSubnetAvailableIPs"
DESCRIPTIONS = {
    AVAILABLE: "IP addresses free in the subnet (EC2's AvailableIpAddressCount)",
    TOTAL: "IP addresses the subnet can hand out (its CIDR's size less the 5 AWS reserves)",
    UTILIZATION: "share of the subnet's usable IP addresses in use, in percent",
    MINIMUM: "IP addresses free in the cluster's fullest subnet",
}


def subnet_metrics(subnets: Sequence[Subnet]) -> list[Metric]:
    metrics: list[Metric] = []
    for subnet in subnets:
        metrics += _capacity(subnet.available, subnet.total, (("SubnetId", subnet.subnet_id),))
    zones: dict[str, list[Subnet]] = {}
    for subnet in subnets:
        if subnet.zone:
            zones.setdefault(subnet.zone, []).append(subnet)
    for zone, members in sorted(zones.items()):
        metrics += _capacity(sum(s.available for s in members), sum(s.total for s in members),
                             (("AvailabilityZone", zone),))
    if subnets:
        metrics.append(_gauge(MINIMUM, min(s.available for s in subnets), ()))
    return metrics


def _capacity(available: int, total: int, attributes: tuple[tuple[str, str], ...]
              ) -> list[Metric]:
    used = 100.0 * (total - available) / total if total else 0.0
    return [_gauge(AVAILABLE, available, attributes), _gauge(TOTAL, total, attributes),
            _gauge(UTILIZATION, round(used, 3), attributes, "Percent")]


def _gauge(name: str, value: float, attributes: tuple[tuple[str, str], ...],
           unit: str = "Count") -> Metric:
    return Metric(name, MetricKind.GAUGE, float(value), unit, attributes,
                  description=DESCRIPTIONS[name])
