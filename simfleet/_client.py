"""Python side of the control API: ``FleetClient`` and the ``FleetTruth`` it returns.

Synchronous (urllib, a fresh connection per call) so tests can call it from any thread or through
``asyncio.to_thread`` without sharing a session.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class FleetError(Exception):
    """The fleet refused an operation or could not be started or reached."""


@dataclass(frozen=True, slots=True)
class NodeTruth:
    """What one node serves right now.

    ``gauges``/``counters``: family -> series text exactly as on the page -> value; the kind
    follows the default rule table of docs/aggregation.md (awscni_add_ip_req_count is a counter
    even when typed gauge).
    ``p99``: the 0.99-quantile series of awscni_aws_api_latency_ms -> value (NaN when the
    summary's window is empty). ``failure``: the node's current failure mode.
    """

    index: int
    address: str
    gauges: dict[str, dict[str, float]]
    counters: dict[str, dict[str, float]]
    p99: dict[str, float]
    process_start_time: float
    failure: str = "ok"


@dataclass(frozen=True, slots=True)
class FleetTruth:
    """Every node's truth, with the aggregates tests compare the pipeline against.

    Each helper takes ``nodes``, the indexes to include (default all), so a test can leave out
    nodes it made fail. NaN values are skipped, as the pipeline skips them.
    """

    nodes: list[NodeTruth]

    def node(self, index: int) -> NodeTruth:
        return self.nodes[index]

    def by_address(self, address: str) -> NodeTruth:
        for node in self.nodes:
            if node.address == address:
                return node
        raise KeyError(address)

    def _selected(self, nodes: Iterable[int] | None) -> list[NodeTruth]:
        if nodes is None:
            return self.nodes
        return [self.nodes[i] for i in nodes]

    def gauge_sum(self, family: str, nodes: Iterable[int] | None = None) -> float:
        """Sum of every series of a gauge family over the nodes (the rule table: gauge, Sum)."""
        return _finite_sum(v for node in self._selected(nodes)
                           for v in node.gauges.get(family, {}).values())

    def counter_total(self, family: str, nodes: Iterable[int] | None = None) -> float:
        """Sum of the cumulative values of a counter family over the nodes."""
        return _finite_sum(v for node in self._selected(nodes)
                           for v in node.counters.get(family, {}).values())

    def counter_increase(
        self, family: str, since: FleetTruth, nodes: Iterable[int] | None = None
    ) -> float:
        """Sum over nodes and series of the increase since ``since`` (docs/aggregation.md's rule).

        Per (node, series): a series new since then counts whole; after a restart (a changed
        process_start_time) or a drop, the new value is the increase. Nodes absent from
        ``since`` are a baseline and add 0.
        """
        before = {node.address: node for node in since.nodes}
        total = 0.0
        for node in self._selected(nodes):
            old = before.get(node.address)
            if old is None:
                continue
            restarted = node.process_start_time != old.process_start_time
            old_series = old.counters.get(family, {})
            for text, value in node.counters.get(family, {}).items():
                previous = old_series.get(text)
                if previous is None or restarted or value < previous:
                    increase = value
                else:
                    increase = value - previous
                if math.isfinite(increase):
                    total += increase
        return total

    def p99_max(self, nodes: Iterable[int] | None = None) -> float:
        """Max of every node's 0.99 latency quantiles (rule table: summary, Max); NaN if none."""
        values = [v for node in self._selected(nodes) for v in node.p99.values()
                  if math.isfinite(v)]
        return max(values) if values else math.nan

    def series_count(self, family: str, nodes: Iterable[int] | None = None) -> int:
        return sum(len(node.gauges.get(family, node.counters.get(family, {})))
                   for node in self._selected(nodes))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FleetTruth:
        return cls([_node_from_json(node) for node in data["nodes"]])


def _finite_sum(values: Iterable[float]) -> float:
    return math.fsum(v for v in values if math.isfinite(v))


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _series(data: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    return {family: {text: _float(v) for text, v in series.items()}
            for family, series in data.items()}


def _node_from_json(data: Mapping[str, Any]) -> NodeTruth:
    return NodeTruth(
        index=int(data["index"]),
        address=str(data["address"]),
        gauges=_series(data["gauges"]),
        counters=_series(data["counters"]),
        p99={text: _float(v) for text, v in data["p99"].items()},
        process_start_time=float(data["process_start_time"]),
        failure=str(data.get("failure", "ok")),
    )


def _json_number(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


# Control traffic never goes through an HTTP proxy from the environment: it is loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FleetClient:
    """Drives a running fleet through its control API (see ``simfleet._coordinator``).

    Node indexes count from 0 in the order of ``FleetProcess.addresses``.
    """

    def __init__(self, control_url: str, *, timeout: float = 120.0) -> None:
        self.control_url = control_url.rstrip("/")
        self.timeout = timeout

    def truth(self) -> FleetTruth:
        return FleetTruth.from_json(self._call("GET", "/truth"))

    def advance(self, steps: int = 1) -> FleetTruth:
        """Every node moves ``steps`` steps; returns the truth after them."""
        return FleetTruth.from_json(self._call("POST", "/advance", {"steps": steps}))

    def advance_quietly(self, steps: int = 1) -> None:
        """``advance`` without fetching the truth (cheaper on thousands of nodes)."""
        self._call("POST", "/advance", {"steps": steps, "truth": False})

    def set_gauge(self, node: int, family: str, value: float,
                  labels: dict[str, str] | None = None) -> None:
        self._call("POST", "/set_gauge", {"node": node, "family": family,
                                          "value": _json_number(value), "labels": labels})

    def add_counter(self, node: int, family: str, amount: float,
                    labels: dict[str, str] | None = None) -> None:
        """Add to a counter series (created if new); a negative amount is a drop without
        a restart."""
        self._call("POST", "/add_counter", {"node": node, "family": family,
                                            "amount": _json_number(amount), "labels": labels})

    def set_p99(self, node: int, value: float, labels: dict[str, str]) -> None:
        """Set the 0.99 quantile of awscni_aws_api_latency_ms{api, error} (NaN: no data)."""
        self._call("POST", "/set_p99", {"node": node, "value": _json_number(value),
                                        "labels": labels})

    def restart(self, node: int, counters_to: float = 0.0) -> None:
        """The node's process restarts: every counter series to ``counters_to``, summaries
        empty, process_start_time_seconds = now."""
        self._call("POST", "/restart", {"node": node, "counters_to": counters_to})

    def set_failure(self, node: int, mode: str) -> None:
        """ok, http_500, hang, garbage, close, slow:<seconds> or down (refuse connections)."""
        self._call("POST", "/set_failure", {"node": node, "mode": mode})

    def stats(self) -> dict[str, Any]:
        """Requests served, bytes sent, pages rendered and CPU seconds, total and per process."""
        result = self._call("GET", "/stats")
        assert isinstance(result, dict)
        return result

    def addresses(self) -> list[str]:
        return list(self._call("GET", "/addresses"))

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.control_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise FleetError(f"{method} {path}: {_error_message(exc)}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise FleetError(f"{method} {path}: fleet unreachable at {self.control_url}: "
                             f"{exc}") from exc


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"HTTP {exc.code}"
