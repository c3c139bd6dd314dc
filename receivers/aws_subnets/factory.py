"""The ``aws_subnets`` receiver's factory, registered under the entry point
``cni_pipeline.receivers: aws_subnets``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pipeline import ClusterShape, ComponentSettings, Kind, Metric, MetricsConsumer

from ._metrics import subnet_metrics
from ._sources import Subnet
from .config import AwsSubnetsConfig
from .receiver import AwsSubnetsReceiver

#: What validate plans with: two subnets per zone (a public and a private one is common).
_SUBNETS_PER_ZONE = 2


class AwsSubnetsReceiverFactory:
    type: ClassVar[str] = "aws_subnets"
    kind: ClassVar[Kind] = Kind.RECEIVER

    def default_config(self) -> AwsSubnetsConfig:
        return AwsSubnetsConfig()

    def create(self, settings: ComponentSettings, config: AwsSubnetsConfig,
               next_consumer: MetricsConsumer) -> AwsSubnetsReceiver:
        return AwsSubnetsReceiver(settings, config, next_consumer)

    def cycle_interval(self, config: AwsSubnetsConfig) -> float:
        return float(config.collection_interval)

    def planned_metrics(self, config: AwsSubnetsConfig, shape: ClusterShape,
                        upstream: Sequence[Metric] = ()) -> list[Metric]:
        """The metrics of one collection on a cluster of ``shape`` (values 0), for validate's
        cost and the dashboards."""
        subnets = [Subnet(f"subnet-{zone:04x}{n:04x}", f"zone-{zone}", 0, 0)
                   for zone in range(1, shape.zones + 1) for n in range(_SUBNETS_PER_ZONE)]
        return [*upstream, *subnet_metrics(subnets)]


factory = AwsSubnetsReceiverFactory()
