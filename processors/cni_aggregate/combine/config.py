"""Config of the ``cni_combine`` processor (a gateway combining shards' partials)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import ComponentConfig, Duration

from ..config import DEFAULT_STALENESS


@dataclass(frozen=True, kw_only=True)
class CniCombineConfig(ComponentConfig):
    """``deadline``: how long after a cycle's first partial arrived the gateway waits for the
    other shards before it publishes without them (unset: half the shards' interval, which they
    send). ``staleness``: how long a missing shard's last gauges stay in the sums, as a failed
    target's do in one replica. ``group_by``: only for planning (``validate`` and the dashboards):
    the shards' ``group_by``, which their partials carry anyway."""

    deadline: Duration | None = None
    staleness: Duration = DEFAULT_STALENESS
    group_by: list[str] = field(default_factory=list)

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.deadline is not None and self.deadline <= 0:
            yield "deadline", "must be positive"
        if self.staleness < 0:
            yield "staleness", "must not be negative"
