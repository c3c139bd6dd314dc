"""Factory of the ``cni_combine`` processor (registered by entry point, like any plugin)."""

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
    MetricKind,
    MetricsConsumer,
    validate_config,
)

from .._cycle_metrics import cycle_metrics
from .._rules import DEFAULT_RULES, SHARDS_MISSING
from ._combiner import SHARDS_MISSING_TEXT
from .config import CniCombineConfig
from .processor import CniCombineProcessor


class CniCombineFactory:
    type: ClassVar[str] = "cni_combine"
    kind: ClassVar[Kind] = Kind.PROCESSOR

    def default_config(self) -> CniCombineConfig:
        return CniCombineConfig()

    def create(
        self, settings: ComponentSettings, config: ComponentConfig, next_consumer: MetricsConsumer
    ) -> CniCombineProcessor:
        return CniCombineProcessor(settings, _checked(config), next_consumer)

    def planned_metrics(
        self, config: ComponentConfig, shape: ClusterShape, upstream: Sequence[Metric] = ()
    ) -> list[Metric]:
        """What the gateway publishes when the shards run the default rule table (the rules
        live in the shards' config; their partials say the rest)."""
        cfg = _checked(config)
        return [*upstream, *cycle_metrics(DEFAULT_RULES, cfg.group_by, shape),
                Metric(SHARDS_MISSING, MetricKind.GAUGE, 0.0, "Count", (), True,
                       SHARDS_MISSING_TEXT)]


def _checked(config: ComponentConfig) -> CniCombineConfig:
    if not isinstance(config, CniCombineConfig):
        raise TypeError(f"expected CniCombineConfig, got {type(config).__name__}")
    problems = validate_config(config)
    if problems:  # the engine validates first; this guards direct callers
        raise ConfigError("processors.cni_combine", problems)
    return config


factory = CniCombineFactory()
