"""``sending_queue:`` and ``retry_on_failure:``, the exporter config blocks the helper reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import Duration


@dataclass(frozen=True, kw_only=True)
class QueueSettings:
    """``sending_queue:`` of an exporter config (as in the Collector).

    ``queue_size`` is in the queue's size unit: what the exporter's converter's ``size_of`` counts
    (requests, by default; datums, for CloudWatch).
    """

    enabled: bool = True
    num_consumers: int = 1
    queue_size: int = 100

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.num_consumers < 1:
            yield "num_consumers", "must be at least 1"
        if self.queue_size < 1:
            yield "queue_size", "must be at least 1"


@dataclass(frozen=True, kw_only=True)
class RetrySettings:
    """``retry_on_failure:`` of an exporter config (as in the Collector).

    ``max_elapsed_time`` of 0 means retry until shutdown.
    """

    enabled: bool = True
    initial_interval: Duration = Duration(5)
    max_interval: Duration = Duration(30)
    max_elapsed_time: Duration = Duration(300)
    multiplier: float = 1.5
    randomization_factor: float = 0.5

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.initial_interval <= 0:
            yield "initial_interval", "must be positive"
        if self.max_interval < self.initial_interval:
            yield "max_interval", "must be greater or equal to initial_interval"
        if self.max_elapsed_time < 0:
            yield "max_elapsed_time", "must not be negative (0 = retry until shutdown)"
        if self.multiplier < 1:
            yield "multiplier", "must be at least 1"
        if not 0 <= self.randomization_factor < 1:
            yield "randomization_factor", "must be in [0, 1)"


#: The defaults as shared instances, for parameter defaults (the settings are frozen).
DEFAULT_QUEUE = QueueSettings()
DEFAULT_RETRY = RetrySettings()
