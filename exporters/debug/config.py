"""Config of the ``debug`` exporter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline import ComponentConfig


@dataclass(frozen=True, kw_only=True)
class DebugExporterConfig(ComponentConfig):
    #: basic: the aggregates; detailed: also each target's health.
    verbosity: Literal["basic", "detailed"] = "basic"
    #: Also log derived metrics (available IPs, utilisation, coverage).
    derived: bool = True
