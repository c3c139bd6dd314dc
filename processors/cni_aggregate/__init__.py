"""``cni_aggregate``: aws-node families in, exact cluster-level CNI metrics out
(docs/aggregation.md's "Aggregation semantics"). The entry point names :data:`factory`."""

from .config import CniAggregateConfig, RuleConfig
from .factory import CniAggregateFactory, factory

__all__ = ["CniAggregateConfig", "CniAggregateFactory", "RuleConfig", "factory"]
