"""What a ``prometheus`` exporter would serve for a set of planned metrics (no network): each
family's name, its type and the label names of its group-by series, for tools that draw or watch
them (``cni-pipeline dashboard --format grafana``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline import Metric, MetricKind

from ._convert import Exposition, label_name


@dataclass(frozen=True)
class ServedFamily:
    #: The served name (``awscni_assigned_ip_addresses``) and the metric it is made from.
    name: str
    metric: str
    kind: MetricKind
    #: Label names of its group-by series (``zone``), beside the cluster-wide series.
    group_labels: tuple[str, ...]


def served_families(metrics: Sequence[Metric]) -> list[ServedFamily]:
    """The families serving ``metrics``, named exactly as the exporter names them."""
    exposition = Exposition()
    found: dict[str, tuple[Metric, set[str]]] = {}
    for metric in metrics:
        name = exposition.name_of(metric)
        _, labels = found.setdefault(name, (metric, set()))
        labels.update(label_name(key) for key, _ in metric.attributes)
    return [ServedFamily(name, metric.name, metric.kind, tuple(sorted(labels)))
            for name, (metric, labels) in found.items()]
