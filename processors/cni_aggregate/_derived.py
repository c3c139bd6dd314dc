"""Metrics computed from other metrics: spare capacity, utilisation and cycle coverage.

They are always computed and marked ``derived``: the Prometheus and OTLP exporters publish them,
the CloudWatch exporter only when asked (every CloudWatch metric costs money). Coverage says how
many targets a cycle's sums stand on, so a partial sum is never mistaken for a full one.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline import Metric, MetricKind

from ._rules import (
    ASSIGNED_IPS,
    AVAILABLE_IPS,
    ENI_UTILIZATION,
    ENIS_ALLOCATED,
    ENIS_MAX,
    IP_UTILIZATION,
    TARGETS_DISCOVERED,
    TARGETS_FAILED,
    TARGETS_REPORTING,
    TARGETS_STALE,
    TOTAL_IPS,
)

Attributes = tuple[tuple[str, str], ...]

_AVAILABLE_TEXT = f"{TOTAL_IPS} - {ASSIGNED_IPS}"
_IP_UTILIZATION_TEXT = f"{ASSIGNED_IPS} / {TOTAL_IPS}, percent"
_ENI_UTILIZATION_TEXT = f"{ENIS_ALLOCATED} / {ENIS_MAX}, percent"


def _derived(name: str, value: float, unit: str, attributes: Attributes, text: str) -> Metric:
    return Metric(name, MetricKind.GAUGE, value, unit, attributes, True, text)


def _gauge_value(metrics: Mapping[str, Metric], name: str) -> float | None:
    metric = metrics.get(name)
    if metric is None or metric.kind is not MetricKind.GAUGE:
        return None
    return metric.value


def capacity_metrics(metrics: Mapping[str, Metric], attributes: Attributes) -> list[Metric]:
    """Available IPs and IP/ENI utilisation, from one block's gauges (by output name).

    Each is emitted only when its inputs were; a utilisation only when its denominator is
    positive (0 of 0 is not 0% used).
    """
    out: list[Metric] = []
    assigned = _gauge_value(metrics, ASSIGNED_IPS)
    total = _gauge_value(metrics, TOTAL_IPS)
    if assigned is not None and total is not None:
        out.append(_derived(AVAILABLE_IPS, total - assigned, "Count", attributes,
                            _AVAILABLE_TEXT))
        if total > 0:
            out.append(_derived(IP_UTILIZATION, 100.0 * assigned / total, "Percent", attributes,
                                _IP_UTILIZATION_TEXT))
    allocated = _gauge_value(metrics, ENIS_ALLOCATED)
    most = _gauge_value(metrics, ENIS_MAX)
    if allocated is not None and most is not None and most > 0:
        out.append(_derived(ENI_UTILIZATION, 100.0 * allocated / most, "Percent", attributes,
                            _ENI_UTILIZATION_TEXT))
    return out


def capacity_names(gauge_names: set[str]) -> list[tuple[str, str, str]]:
    """(name, unit, description) of the capacity metrics that gauges of these names can feed,
    for planning."""
    out: list[tuple[str, str, str]] = []
    if {ASSIGNED_IPS, TOTAL_IPS} <= gauge_names:
        out += [(AVAILABLE_IPS, "Count", _AVAILABLE_TEXT),
                (IP_UTILIZATION, "Percent", _IP_UTILIZATION_TEXT)]
    if {ENIS_ALLOCATED, ENIS_MAX} <= gauge_names:
        out.append((ENI_UTILIZATION, "Percent", _ENI_UTILIZATION_TEXT))
    return out


def coverage_metrics(
    reporting: int, stale: int, failed: int, attributes: Attributes
) -> list[Metric]:
    """Targets discovered = reporting (scraped this cycle) + stale (failed, last values carried)
    + failed (failed, nothing carried)."""
    return [
        _derived(TARGETS_DISCOVERED, float(reporting + stale + failed), "Count", attributes,
                 "Targets discovered this cycle"),
        _derived(TARGETS_REPORTING, float(reporting), "Count", attributes,
                 "Targets scraped successfully this cycle"),
        _derived(TARGETS_STALE, float(stale), "Count", attributes,
                 "Failed targets whose last values are carried (younger than staleness)"),
        _derived(TARGETS_FAILED, float(failed), "Count", attributes,
                 "Failed targets not in the sums"),
    ]
