"""``cni-pipeline dashboard --format grafana``: a Grafana dashboard (JSON model) for what a
config's ``prometheus`` exporter serves, over a Prometheus data source.

The views are the CloudWatch dashboard's (:mod:`.dashboard`), drawn with PromQL over the family
names the exporter really serves (``exporters.prometheus.served_families`` names them as the
exporter does). Gauges are drawn as they are; counters as increases per minute. The cluster-wide
series is the one whose group-by labels are empty (``{zone=""}``); the per-value views sum the
labelled series by their label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from exporters.prometheus import ServedFamily, served_families
from pipeline import ConfigError, MetricKind
from pipeline.service import Config, Registry

from .dashboard import CLUSTER_VIEWS, PER_VALUE_VIEWS
from .plan import pipeline_shape, planned_metrics

WIDTH, HEIGHT, COLUMNS = 12, 8, 2
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Grafana units by the served name's suffix (the exporter puts the unit into the name).
UNITS = (("_seconds", "s"), ("_ratio", "percentunit"), ("_bytes", "bytes"), ("_hours", "h"))


def grafana_dashboards(config: Config, registry: Registry) -> list[dict[str, Any]]:
    """One dashboard per ``prometheus`` exporter of the config, for what its pipelines serve."""
    served: dict[str, dict[str, ServedFamily]] = {}
    for spec in config.pipelines:
        shape = pipeline_shape(config, registry, spec, 3, 2, 2)
        metrics = planned_metrics(config, registry, spec, shape)
        for cid in spec.exporters:
            if cid.type == "prometheus":
                families = served.setdefault(str(cid), {})
                for family in served_families(metrics):
                    families.setdefault(family.metric, family)
    if not served:
        raise ConfigError(config.source, [(
            "exporters", "no prometheus exporter in a pipeline: a Grafana dashboard reads what "
            "one serves (see configs/prometheus.yaml)")])
    return [dashboard(exporter, families) for exporter, families in served.items()]


def dashboard(exporter: str, families: dict[str, ServedFamily]) -> dict[str, Any]:
    panels = [*_cluster_panels(families), *_per_value_panels(families)]
    for i, panel in enumerate(panels):
        panel["id"] = i + 1
        panel["gridPos"] = {"x": (i % COLUMNS) * WIDTH, "y": (i // COLUMNS) * HEIGHT,
                            "w": WIDTH, "h": HEIGHT}
    suffix = "" if exporter == "prometheus" else f" ({exporter})"
    return {
        "title": f"cni-pipeline: VPC CNI IP capacity{suffix}",
        "uid": "cni-pipeline" + ("" if not suffix else "-" + exporter.replace("/", "-")),
        "tags": ["aws", "eks", "vpc-cni", "cni-pipeline"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Data source",
                                 "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


def cluster_selector(family: ServedFamily) -> str:
    """The cluster-wide series: every group-by label empty."""
    if not family.group_labels:
        return ""
    return "{" + ",".join(f'{label}=""' for label in family.group_labels) + "}"


def expression(family: ServedFamily, selector: str) -> str:
    """A gauge as it is; a counter (or histogram count) as its increase per minute."""
    if family.kind is MetricKind.GAUGE:
        return f"{family.name}{selector}"
    name = family.name + ("_count" if family.kind is MetricKind.DISTRIBUTION else "")
    return f"rate({name}{selector}[$__rate_interval]) * 60"


def _cluster_panels(families: dict[str, ServedFamily]) -> Iterator[dict[str, Any]]:
    for view in CLUSTER_VIEWS:
        chosen = [families[name] for name, _ in view.metrics if name in families]
        if chosen:
            yield _panel(view.title, [(expression(f, cluster_selector(f)), f.metric)
                                      for f in chosen], _unit(chosen[0]))


def _per_value_panels(families: dict[str, ServedFamily]) -> Iterator[dict[str, Any]]:
    for title, name, _ in PER_VALUE_VIEWS:
        family = families.get(name)
        if family is None:
            continue
        for label in family.group_labels:
            selector = "{" + f'{label}!=""' + "}"
            expr = f"sum by ({label}) ({expression(family, selector)})"
            yield _panel(f"{title} by {label} ({name})", [(expr, "{{" + label + "}}")],
                         _unit(family))


def _unit(family: ServedFamily) -> str:
    return next((unit for suffix, unit in UNITS if family.name.endswith(suffix)), "short")


def _panel(title: str, targets: list[tuple[str, str]], unit: str) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend} for i, (expr, legend) in enumerate(targets)],
    }


__all__ = ["cluster_selector", "expression", "grafana_dashboards"]
