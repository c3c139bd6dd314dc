"""Aggregates as the cni_aggregate processor makes them, each from its real default rule (name,
source family, quantile, unit, kind, description): exporter tests name and describe what the
processor emits, not hand-made copies of it."""

from __future__ import annotations

from pipeline import Metric
from processors.cni_aggregate._combine import rule_metric
from processors.cni_aggregate._rules import DEFAULT_RULES

RULES = {rule.name: rule for rule in DEFAULT_RULES}


def aggregate(name: str, value: float, attributes: tuple[tuple[str, str], ...] = ()) -> Metric:
    """The metric of the default rule ``name`` with this value."""
    rule = RULES[name]
    return rule_metric(rule, rule.metric_kind, value, attributes)
