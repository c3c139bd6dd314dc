"""Drop-in mode: the pipeline the Go ``cni-metrics-helper`` would run, from its environment
(and, with ``SUBNET_CAPACITY=true``, the subnets' IP capacity beside it).

An existing Go-helper Deployment keeps working unchanged: same variables, same meaning, and like
the Go tool it reaches aws-node through the API server's pod proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline import ConfigError

SOURCE = "environment (drop-in mode)"
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(SOURCE, [(name, f"expected true or false, got {env[name]!r}")])


def _interval(env: Mapping[str, str]) -> int:
    raw = env.get("METRIC_UPDATE_INTERVAL", "").strip() or "30"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(
            SOURCE, [("METRIC_UPDATE_INTERVAL", f"expected whole seconds (like 30), got {raw!r}")]
        )
    return int(raw)


def dropin_config_data(env: Mapping[str, str]) -> dict[str, Any]:
    """Config data equivalent to the Go helper run with these environment variables."""
    interval = _interval(env)
    exporters: dict[str, Any] = {}
    if _flag(env, "USE_CLOUDWATCH", True):
        exporters["awscloudwatch"] = {
            "cluster_id": env.get("AWS_CLUSTER_ID", ""),
            "region": env.get("AWS_REGION", ""),
        }
    if _flag(env, "USE_PROMETHEUS", False):
        exporters["prometheus"] = {"endpoint": "0.0.0.0:61681"}
    if not exporters or env.get("AWS_VPC_K8S_CNI_LOGLEVEL", "").lower() == "debug":
        exporters["debug"] = {}
    data = _go_helper_pipeline(interval, exporters)
    if _flag(env, "SUBNET_CAPACITY", False):
        # Not the Go helper's: the subnets' IP capacity (aws_subnets) and its forecast.
        data["receivers"]["aws_subnets"] = {"region": env.get("AWS_REGION", "")}
        data["processors"]["ip_forecast/subnets"] = {}
        data["service"]["pipelines"]["metrics/subnets"] = {
            "receivers": ["aws_subnets"], "processors": ["ip_forecast/subnets"],
            "exporters": list(exporters)}
    return data


def _go_helper_pipeline(interval: int, exporters: dict[str, Any]) -> dict[str, Any]:
    return {
        "receivers": {
            "prometheus": {
                "scrape_interval": f"{interval}s",
                "scrape_timeout": f"{min(10, interval)}s",
                "kubernetes_sd": {"mode": "apiserver_proxy"},
            }
        },
        "processors": {"cni_aggregate": {}},
        "exporters": exporters,
        "service": {
            "pipelines": {
                "metrics": {
                    "receivers": ["prometheus"],
                    "processors": ["cni_aggregate"],
                    "exporters": list(exporters),
                }
            },
        },
    }
