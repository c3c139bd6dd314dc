"""Where and what a config publishes to CloudWatch, for the ``dashboard`` and ``alarms``
commands: each ``awscloudwatch`` exporter with its namespace, region, endpoint, cluster ID and
the metric names and dimension sets it sends (worked out from the config: no network)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporters.awscloudwatch import CloudWatchExporterConfig, PublishedSeries, published_series
from pipeline import ConfigError
from pipeline.service import Config, Registry

from .plan import pipeline_shape, planned_metrics

CLUSTER_DIMENSION = "CLUSTER_ID"
#: A cluster shape for planning: only the dimension names matter here, not how many values.
_SHAPE = {"nodes": 3, "zones": 2, "nodegroups": 2}


@dataclass(frozen=True)
class CloudWatchTarget:
    exporter: str
    namespace: str
    region: str
    endpoint_url: str
    cluster_id: str
    series: tuple[PublishedSeries, ...]

    def has(self, name: str, dimensions: tuple[str, ...] = (CLUSTER_DIMENSION,)) -> bool:
        return any(s.name == name and s.dimensions == dimensions for s in self.series)

    def views(self, name: str) -> list[tuple[str, ...]]:
        """The dimension sets ``name`` is published with, besides the cluster's alone."""
        return [s.dimensions for s in self.series
                if s.name == name and s.dimensions != (CLUSTER_DIMENSION,)]

    def client(self) -> Any:
        import boto3  # only the commands that call AWS pay for importing it

        return boto3.client("cloudwatch", region_name=self.region,
                            endpoint_url=self.endpoint_url or None)


def cloudwatch_targets(config: Config, registry: Registry, environ: Mapping[str, str],
                       cluster_id: str = "", region: str = "") -> list[CloudWatchTarget]:
    """Every ``awscloudwatch`` exporter of the config, with what its pipelines send it.

    The cluster ID and region come from the flag, else the exporter's config, else
    ``AWS_CLUSTER_ID`` / ``AWS_REGION``: the exporter itself may find them at run time from the
    instance, which a command run from a laptop cannot, so a missing one is an error naming both
    ways to give it.
    """
    found: dict[str, tuple[CloudWatchExporterConfig, list[PublishedSeries]]] = {}
    for spec in config.pipelines:
        shape = pipeline_shape(config, registry, spec, **_SHAPE)
        metrics = planned_metrics(config, registry, spec, shape)
        for cid in spec.exporters:
            exporter = config.exporters[cid]
            if not isinstance(exporter, CloudWatchExporterConfig):
                continue
            _, series = found.setdefault(str(cid), (exporter, []))
            series.extend(s for s in published_series(exporter, metrics) if s not in series)
    if not found:
        raise ConfigError(config.source, [("exporters", "no awscloudwatch exporter: nothing is "
                                           "published to CloudWatch")])
    return [_target(cid, cfg, series, environ, cluster_id, region)
            for cid, (cfg, series) in found.items()]


def _target(cid: str, cfg: CloudWatchExporterConfig, series: list[PublishedSeries],
            environ: Mapping[str, str], cluster_id: str, region: str) -> CloudWatchTarget:
    problems = []
    cluster = cluster_id or cfg.cluster_id or environ.get("AWS_CLUSTER_ID", "")
    where = region or cfg.region or environ.get("AWS_REGION") or environ.get(
        "AWS_DEFAULT_REGION", "")
    if not cluster:
        problems.append((f"exporters.{cid}.cluster_id",
                         "not set: give --cluster-id or set AWS_CLUSTER_ID"))
    if not where:
        problems.append((f"exporters.{cid}.region", "not set: give --region or set AWS_REGION"))
    if problems:
        raise ConfigError("the command line", problems)
    return CloudWatchTarget(cid, cfg.namespace, where, cfg.endpoint_url, cluster, tuple(series))
