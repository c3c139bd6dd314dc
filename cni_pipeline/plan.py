"""What a config would publish, worked out from the config alone (no network): the metrics each
pipeline's receivers and processors plan for a cluster of a given shape.

``validate`` prices them, ``dashboard`` and ``alarms`` draw and watch them. A component takes
part through an optional factory hook, ``planned_metrics(config, shape, upstream)``: given the
metrics that reach it, it returns the metrics that leave it (values 0).
"""

from __future__ import annotations

from pipeline import ClusterShape, Kind, Metric
from pipeline.service import Config, PipelineSpec, Registry

DEFAULT_INTERVAL = 30.0


def pipeline_interval(config: Config, registry: Registry, spec: PipelineSpec) -> float:
    """The shortest cycle among a pipeline's receivers, from the optional receiver factory hook
    ``cycle_interval(config) -> seconds`` (a receiver without it counts as 30 s)."""
    intervals = []
    for cid in spec.receivers:
        hook = getattr(registry.get(Kind.RECEIVER, cid.type), "cycle_interval", None)
        intervals.append(DEFAULT_INTERVAL if hook is None else float(hook(config.receivers[cid])))
    return min(intervals, default=DEFAULT_INTERVAL)


def planned_metrics(
    config: Config, registry: Registry, spec: PipelineSpec, shape: ClusterShape
) -> list[Metric]:
    """The metrics that reach the pipeline's exporters in one cycle."""
    metrics: list[Metric] = []
    for kind, ids, section in (
        (Kind.RECEIVER, spec.receivers, config.receivers),
        (Kind.PROCESSOR, spec.processors, config.processors),
    ):
        for cid in ids:
            hook = getattr(registry.get(kind, cid.type), "planned_metrics", None)
            if hook is not None:
                metrics = list(hook(section[cid], shape, metrics))
    return metrics


def pipeline_shape(config: Config, registry: Registry, spec: PipelineSpec, nodes: int,
                   zones: int, nodegroups: int) -> ClusterShape:
    return ClusterShape(nodes=nodes, zones=zones, nodegroups=nodegroups,
                        interval=pipeline_interval(config, registry, spec))
