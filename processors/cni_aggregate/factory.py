"""Factory of the ``cni_aggregate`` processor (registered by entry point, like any plugin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pipeline import (
    ClusterShape,
    ComponentConfig,
    ComponentSettings,
    ConfigError,
    Kind,
    Metric,
    MetricsConsumer,
    validate_config,
)

from ._cycle_metrics import cycle_metrics
from ._rules import AVAILABLE_IPS, ENI_UTILIZATION, IP_UTILIZATION, TARGETS_DISCOVERED
from .config import CniAggregateConfig, resolve_rules
from .processor import CniAggregateProcessor

#: Derived metrics a shard's partials leave to the gateway (docs/sharding.md).
GATEWAY_DERIVED = frozenset({AVAILABLE_IPS, IP_UTILIZATION, ENI_UTILIZATION, TARGETS_DISCOVERED})


class CniAggregateFactory:
    type: ClassVar[str] = "cni_aggregate"
    kind: ClassVar[Kind] = Kind.PROCESSOR

    def default_config(self) -> CniAggregateConfig:
        return CniAggregateConfig()

    def create(
        self, settings: ComponentSettings, config: ComponentConfig, next_consumer: MetricsConsumer
    ) -> CniAggregateProcessor:
        cfg = _checked(config)
        rules, _ = resolve_rules(cfg)
        return CniAggregateProcessor(
            settings, rules, list(cfg.group_by), float(cfg.staleness), next_consumer,
            partials=cfg.output == "partials")

    def planned_metrics(
        self, config: ComponentConfig, shape: ClusterShape, upstream: Sequence[Metric] = ()
    ) -> list[Metric]:
        """The metrics leaving this processor in one cycle on a cluster of ``shape`` (values 0):
        what reached it, then its own; for ``validate``'s cost and the dashboards."""
        cfg = _checked(config)
        rules, _ = resolve_rules(cfg)
        metrics = cycle_metrics(rules, cfg.group_by, shape)
        if cfg.output == "partials":  # the gateway works these out: a shard does not send them
            metrics = [m for m in metrics if m.name not in GATEWAY_DERIVED]
        return [*upstream, *metrics]


def _checked(config: ComponentConfig) -> CniAggregateConfig:
    """The engine validates before creating; this guards direct callers (tests, embedders)."""
    if not isinstance(config, CniAggregateConfig):
        raise TypeError(f"expected CniAggregateConfig, got {type(config).__name__}")
    problems = validate_config(config)
    if problems:
        raise ConfigError("processors.cni_aggregate", problems)
    return config


factory = CniAggregateFactory()
