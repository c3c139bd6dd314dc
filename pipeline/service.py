"""What an application needs to run the engine: load a config, build the service, run it.

The component API is the package itself (``pipeline``); this module is the other face, used by
commands such as ``cni_pipeline`` (the Collector keeps the same split between ``component`` and
``service`` / ``otelcol``). It imports no component: the registry finds them by entry point.
"""

from ._config import (
    Config,
    PipelineSpec,
    build_config,
    config_warnings,
    load_config,
    load_config_text,
)
from ._leader import KEPT_CYCLES, Delivering, LeaderElectionConfig, Leadership
from ._logging import LEVELS, resolve_level, setup_logging
from ._registry import Registration, Registry
from ._reload import Reloader
from ._runtime import EARLY_STOP, Service, run_until_signal

__all__ = [
    "EARLY_STOP",
    "KEPT_CYCLES",
    "LEVELS",
    "Config",
    "Delivering",
    "LeaderElectionConfig",
    "Leadership",
    "PipelineSpec",
    "Registration",
    "Registry",
    "Reloader",
    "Service",
    "build_config",
    "config_warnings",
    "load_config",
    "load_config_text",
    "resolve_level",
    "run_until_signal",
    "setup_logging",
]
