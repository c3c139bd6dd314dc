"""The ``prometheus`` receiver: discovers aws-node targets, scrapes them every cycle and hands
each cycle's :class:`pipeline.Batch` (every discovered target, with its health) downstream."""

from .config import KubernetesSDConfig, PrometheusReceiverConfig
from .factory import PrometheusReceiverFactory, factory
from .receiver import PrometheusReceiver

__all__ = [
    "KubernetesSDConfig",
    "PrometheusReceiver",
    "PrometheusReceiverConfig",
    "PrometheusReceiverFactory",
    "factory",
]
