"""The ``prometheus`` receiver: discovers aws-node targets, scrapes them every cycle and hands
each cycle's :class:`pipeline.Batch` (every discovered target, with its health) downstream."""

from .config import PrometheusReceiverConfig
from .factory import PrometheusReceiverFactory, factory

__all__ = ["PrometheusReceiverConfig", "PrometheusReceiverFactory", "factory"]
