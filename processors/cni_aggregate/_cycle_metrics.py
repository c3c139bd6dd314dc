"""The metrics one cycle emits, worked out from the rules alone: what ``validate`` prices."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import ClusterShape, Distribution, Metric, MetricKind

from ._combine import rule_metric
from ._derived import Attributes, capacity_names, coverage_metrics
from ._rules import Rule


def cycle_metrics(rules: Sequence[Rule], group_by: Sequence[str], shape: ClusterShape
                  ) -> list[Metric]:
    """The metrics one cycle emits on a cluster of ``shape`` when every family is reported, with
    synthesized group-by values (``zone-1``, ...) and values 0: what ``validate`` prices."""
    sizes = {"zone": shape.zones, "nodegroup": shape.nodegroups,
             "instance_type": shape.instance_types, "node": shape.nodes}
    metrics = _block_metrics(rules, ())
    for attribute in group_by:
        for number in range(1, max(sizes.get(attribute, 1), 1) + 1):
            metrics.extend(_block_metrics(rules, ((attribute, f"{attribute}-{number}"),)))
    return metrics


def _block_metrics(rules: Sequence[Rule], attributes: Attributes) -> list[Metric]:
    metrics = [
        rule_metric(rule, rule.metric_kind, 0.0, attributes,
                    Distribution((), (0.0,)) if rule.metric_kind is MetricKind.DISTRIBUTION
                    else None)
        for rule in rules
    ]
    gauges = {rule.name for rule in rules if rule.metric_kind is MetricKind.GAUGE}
    metrics += [Metric(name, MetricKind.GAUGE, 0.0, unit, attributes, True, text)
                for name, unit, text in capacity_names(gauges)]
    metrics += coverage_metrics(0, 0, 0, attributes)
    return metrics
