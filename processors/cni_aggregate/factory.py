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
from .config import CniAggregateConfig, resolve_rules
from .processor import CniAggregateProcessor


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
        return [*upstream, *cycle_metrics(rules, cfg.group_by, shape)]


def _checked(config: ComponentConfig) -> CniAggregateConfig:
    """The engine validates before creating; this guards direct callers (tests, embedders)."""
    if not isinstance(config, CniAggregateConfig):
        raise TypeError(f"expected CniAggregateConfig, got {type(config).__name__}")
    problems = validate_config(config)
    if problems:
        raise ConfigError("processors.cni_aggregate", problems)
    return config


factory = CniAggregateFactory()
