"""The ``otlp`` receiver's factory, registered under ``cni_pipeline.receivers: otlp``."""

from __future__ import annotations

from typing import ClassVar

from pipeline import ComponentSettings, Kind, MetricsConsumer

from .config import OtlpReceiverConfig
from .receiver import OtlpReceiver


class OtlpReceiverFactory:
    type: ClassVar[str] = "otlp"
    kind: ClassVar[Kind] = Kind.RECEIVER

    def default_config(self) -> OtlpReceiverConfig:
        return OtlpReceiverConfig()

    def create(self, settings: ComponentSettings, config: OtlpReceiverConfig,
               next_consumer: MetricsConsumer) -> OtlpReceiver:
        return OtlpReceiver(settings, config, next_consumer)


factory = OtlpReceiverFactory()
