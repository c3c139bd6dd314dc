"""``otlp`` receiver: OTLP metrics (gRPC and HTTP) into a pipeline."""

from .config import OtlpReceiverConfig
from .factory import OtlpReceiverFactory, factory
from .receiver import OtlpReceiver

__all__ = ["OtlpReceiver", "OtlpReceiverConfig", "OtlpReceiverFactory", "factory"]
