"""One simulated aws-node's state: series values, latency summaries and process facts.

Pure (no I/O, no clock of its own) so the same seed gives the same node in any process: the fleet
can be split across worker processes without changing what any node serves. Every mutation bumps
``version``, which the server uses to know when its cached page is stale.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Mapping
from typing import Any

from . import _families as fam
from ._families import FAMILY_BY_NAME, FamilySpec, Kind
from ._format import escape_help, format_value, label_body, series_text

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_NAN = math.nan
_NEW_SERIES_RATE = 0.03  # chance per node per step that a new labelled counter series appears
_NEW_SERIES_FAMILIES = (fam.API_ERRORS, fam.EC2_ERRORS, fam.UTILS_ERRORS, fam.IPAMD_ERRORS)
_GET_METADATA = "GetMetadata"
_CIDR_SIZE = 16  # addresses in a /28 prefix


@functools.lru_cache(maxsize=1024)
def _header(family: str, help_text: str, kind: str) -> str:
    return f"# HELP {family} {escape_help(help_text)}\n# TYPE {family} {kind}\n"


def _randint(rng: random.Random, low: int, high: int) -> int:
    """``rng.randint`` at a third of its cost (it is the bulk of ``advance``); same determinism."""
    return low + int(rng.random() * (high - low + 1))


def json_value(value: float) -> float | str | None:
    """JSON has no NaN/Inf: NaN becomes null, infinities the strings "+Inf"/"-Inf"."""
    if value != value:
        return None
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return value


class NodeState:
    """A node's series; see the module docstring. Operations raise ``ValueError`` on bad input."""

    def __init__(
        self,
        index: int,
        *,
        seed: int,
        now: float,
        start_time: float | None = None,
        counter_type_gauge: bool = False,
    ) -> None:
        self.index = index
        self.version = 0
        self._rng = random.Random(f"simfleet:{seed}:{index}")
        self._counter_type_gauge = counter_type_gauge
        self._extra_specs: dict[str, FamilySpec] = {}
        self._values: dict[str, dict[str, float]] = {}
        # label body (api="X",error="false") -> [p50, p90, p99, sum, count]
        self._latency: dict[str, list[float]] = {}
        self._latency_base: dict[str, float] = {}
        self._cidrs: list[str] = []
        rng = self._rng
        uptime = rng.uniform(3600.0, 10 * 86400.0)  # drawn always: start_time changes no value
        self.start_time = round(start_time if start_time is not None else now - uptime, 2)
        self._init_ipam()
        self._init_counters()
        self._init_latency()
        self._go_block = self._render_go_block()
        self._cpu_seconds = round(rng.uniform(10.0, 2000.0), 2)
        self._open_fds = _randint(rng, 9, 30)
        self._rss = float(_randint(rng, 30, 60) * 1_000_000 + _randint(rng, 0, 999_999))

    # -- initial state -----------------------------------------------------------------------

    def _init_ipam(self) -> None:
        rng, index = self._rng, self.index
        eni_max = rng.choice((3, 4, 8, 15))
        ips_per_eni = rng.choice((10, 15, 30))
        prefixes = _randint(rng, 1, 4)
        self._cidrs = [
            f"10.{(index >> 8) & 255}.{index & 255}.{k * _CIDR_SIZE}/28" for k in range(prefixes)
        ]
        self._set(fam.ENI_MAX, fam.ENI_MAX, eni_max)
        self._set(fam.ENI_ALLOCATED, fam.ENI_ALLOCATED, _randint(rng, 1, min(3, eni_max)))
        self._set(fam.TOTAL_PREFIXES, fam.TOTAL_PREFIXES, prefixes)
        self._set(fam.TOTAL_IPS, fam.TOTAL_IPS, prefixes * _CIDR_SIZE)
        self._set(fam.IP_MAX, fam.IP_MAX, max(eni_max * (ips_per_eni - 1), prefixes * _CIDR_SIZE))
        per_cidr = {series_text(fam.IPS_PER_CIDR, {"cidr": cidr}): float(_randint(rng, 0, 16))
                    for cidr in self._cidrs}
        self._values[fam.IPS_PER_CIDR] = dict(sorted(per_cidr.items()))
        self._sum_assigned()
        self._values[fam.ACTIONS_IN_PROGRESS] = {
            series_text(fam.ACTIONS_IN_PROGRESS, {"fn": fn}): 0.0 for fn in sorted(fam.ACTION_FNS)
        }

    def _init_counters(self) -> None:
        rng = self._rng
        errors = fam.API_ERROR_CODES
        labels: dict[str, list[dict[str, str]]] = {
            fam.ADD_IP_REQ: [{}],
            fam.API_ERRORS: [{"api": rng.choice(fam.EC2_APIS), "error": rng.choice(errors)}
                             for _ in range(_randint(rng, 1, 2))],
            fam.UTILS_ERRORS: [{"fn": rng.choice(fam.UTILS_FNS), "error": rng.choice(errors)}],
            fam.DEL_IP_REQ: [{"reason": reason} for reason in fam.DEL_REASONS],
            fam.EC2_ERRORS: [{"fn": rng.choice(fam.EC2_APIS)}],
            fam.EC2_REQS: [{"fn": fn} for fn in fam.EC2_APIS],
            "awscni_force_removed_enis": [{}],
            "awscni_force_removed_ips": [{}],
            fam.IPAMD_ERRORS: [{"fn": rng.choice(fam.IPAMD_FNS)}],
            fam.POD_ENI_ERRORS: [{"fn": rng.choice(fam.POD_ENI_FNS)}],
            fam.RECONCILES: [{"fn": fn} for fn in rng.sample(fam.RECONCILE_FNS, 3)],
        }
        for family, label_sets in labels.items():
            top = FAMILY_BY_NAME[family].initial
            series = {series_text(family, label_set): float(_randint(rng, 0, top))
                      for label_set in label_sets}
            self._values[family] = dict(sorted(series.items()))

    def _init_latency(self) -> None:
        rng = self._rng
        pairs = [(api, "false") for api in fam.LATENCY_APIS] + [("DeleteNetworkInterface", "true")]
        for api, error in sorted(pairs):
            body = label_body({"api": api, "error": error})
            if api == _GET_METADATA:
                count = _randint(rng, 10_000, 100_000)
                self._latency_base[body] = 0.05
                self._latency[body] = [0.0, 0.0, 1.0, float(round(count * 0.05)), float(count)]
            else:
                base = rng.uniform(100.0, 450.0)
                count = _randint(rng, 5, 50)
                self._latency_base[body] = base
                self._latency[body] = [_NAN, _NAN, _NAN, float(round(count * base)), float(count)]

    # -- helpers -----------------------------------------------------------------------------

    def spec(self, family: str) -> FamilySpec | None:
        return FAMILY_BY_NAME.get(family) or self._extra_specs.get(family)

    def _set(self, family: str, text: str, value: float) -> None:
        series = self._values.setdefault(family, {})
        if text not in series:
            series[text] = float(value)
            self._values[family] = dict(sorted(series.items()))  # pages list series sorted
        else:
            series[text] = float(value)

    def _sum_assigned(self) -> None:
        per_cidr = self._values[fam.IPS_PER_CIDR]
        self._values[fam.ASSIGNED_IPS] = {fam.ASSIGNED_IPS: float(sum(per_cidr.values()))}

    def _series_for(self, family: str, kind: Kind, labels: Mapping[str, str] | None) -> str:
        """Validate a test's family/labels and return the series text, creating extra families."""
        spec = self.spec(family)
        labels = dict(labels or {})
        if spec is None:
            if not _METRIC_NAME.match(family):
                raise ValueError(f"invalid metric name {family!r}")
            spec = FamilySpec(family, f"Simulated {kind} {family}.", kind, tuple(sorted(labels)))
            self._extra_specs[family] = spec
        if spec.kind != kind:
            raise ValueError(f"{family} is a {spec.kind}, not a {kind}")
        for name in labels:
            if not _LABEL_NAME.match(name) or name == "quantile":
                raise ValueError(f"invalid label name {name!r}")
        if family in FAMILY_BY_NAME and sorted(labels) != sorted(spec.labels):
            raise ValueError(f"{family} takes labels {list(spec.labels)}, got {sorted(labels)}")
        return series_text(family, labels)

    # -- operations --------------------------------------------------------------------------

    def set_gauge(self, family: str, value: float, labels: Mapping[str, str] | None = None) -> str:
        """Set one gauge series (created if new); returns its series text."""
        text = self._series_for(family, "gauge", labels)
        self._set(family, text, value)
        self.version += 1
        return text

    def add_counter(
        self, family: str, amount: float, labels: Mapping[str, str] | None = None
    ) -> str:
        """Add to one counter series (created at 0 if new). A negative amount simulates a drop
        without a restart (a reset the pipeline must detect by the drop alone)."""
        text = self._series_for(family, "counter", labels)
        current = self._values.get(family, {}).get(text, 0.0)
        self._set(family, text, current + amount)
        self.version += 1
        return text

    def set_p99(self, value: float, labels: Mapping[str, str]) -> str:
        """Set the 0.99 quantile of one awscni_aws_api_latency_ms series (created if new)."""
        if sorted(labels) != ["api", "error"]:
            raise ValueError(f"{fam.API_LATENCY} takes labels ['api', 'error']")
        body = label_body(labels)
        quantiles = self._latency.get(body)
        if quantiles is None:
            quantiles = [_NAN, _NAN, _NAN, 0.0, 0.0]
            self._latency = dict(sorted({**self._latency, body: quantiles}.items()))
            self._latency_base[body] = value if value == value else 100.0
        if value != value:
            quantiles[0] = quantiles[1] = quantiles[2] = _NAN
        else:
            quantiles[0] = value if quantiles[0] != quantiles[0] else min(quantiles[0], value)
            quantiles[1] = value if quantiles[1] != quantiles[1] else min(quantiles[1], value)
            quantiles[2] = value
            quantiles[3] += value
            quantiles[4] += 1
        self.version += 1
        return f'{fam.API_LATENCY}{{{body},quantile="0.99"}}'

    def restart(self, now: float, counters_to: float = 0.0) -> None:
        """A new aws-node process: counters start again, summaries empty, a new start time."""
        for family, series in self._values.items():
            spec = self.spec(family)
            if spec is not None and spec.kind == "counter":
                for text in series:
                    series[text] = float(counters_to)
        for quantiles in self._latency.values():
            quantiles[:] = [_NAN, _NAN, _NAN, 0.0, 0.0]
        self.start_time = max(round(now, 2), round(self.start_time + 0.01, 2))
        self._cpu_seconds = 0.05
        self._go_block = self._render_go_block()
        self.version += 1

    def advance(self) -> None:
        """One step of activity: counters grow, some gauges move, quantiles refresh or go NaN."""
        rng = self._rng
        random_ = rng.random
        for family, series in self._values.items():
            spec = FAMILY_BY_NAME.get(family)
            if spec is None or spec.kind != "counter":
                continue
            rate, max_step = spec.rate, spec.max_step
            for text, value in series.items():
                if random_() < rate:
                    series[text] = value + _randint(rng, 1, max_step)
        if random_() < _NEW_SERIES_RATE:
            self._new_counter_series()
        self._advance_ipam()
        self._advance_latency()
        self._cpu_seconds = round(self._cpu_seconds + rng.uniform(0.05, 0.5), 2)
        self._open_fds = max(9, self._open_fds + _randint(rng, -1, 1))
        self.version += 1

    def _new_counter_series(self) -> None:
        """A client library creates a labelled series on its first increment: model that."""
        rng = self._rng
        family = rng.choice(_NEW_SERIES_FAMILIES)
        labels: dict[str, str]
        if family == fam.API_ERRORS:
            api = rng.choice(fam.EC2_APIS + fam.EXTRA_APIS)
            labels = {"api": api, "error": rng.choice(fam.API_ERROR_CODES)}
        elif family == fam.UTILS_ERRORS:
            labels = {"fn": rng.choice(fam.UTILS_FNS), "error": rng.choice(fam.API_ERROR_CODES)}
        elif family == fam.EC2_ERRORS:
            labels = {"fn": rng.choice(fam.EC2_APIS)}
        else:
            labels = {"fn": rng.choice(fam.IPAMD_FNS)}
        text = series_text(family, labels)
        if text not in self._values[family]:
            self._set(family, text, _randint(rng, 1, 3))

    def _advance_ipam(self) -> None:
        rng = self._rng
        per_cidr = self._values[fam.IPS_PER_CIDR]
        if rng.random() < 0.5:
            text = rng.choice(list(per_cidr))
            moved = per_cidr[text] + _randint(rng, -3, 3)
            per_cidr[text] = float(min(_CIDR_SIZE, max(0, moved)))
            self._sum_assigned()
        if rng.random() < 0.02:
            eni_max = self._values[fam.ENI_MAX][fam.ENI_MAX]
            allocated = self._values[fam.ENI_ALLOCATED]
            step = rng.choice((-1, 1))
            value = allocated[fam.ENI_ALLOCATED] + step
            allocated[fam.ENI_ALLOCATED] = min(eni_max, max(1.0, value))
        actions = self._values[fam.ACTIONS_IN_PROGRESS]
        for text in actions:
            actions[text] = 1.0 if rng.random() < 0.05 else 0.0

    def _advance_latency(self) -> None:
        rng = self._rng
        for body, quantiles in self._latency.items():
            base = self._latency_base[body]
            if base < 1.0:  # GetMetadata: frequent and sub-millisecond
                observed = _randint(rng, 20, 200)
                quantiles[:3] = [0.0, 0.0, 1.0]
            elif rng.random() < 0.15:
                observed = _randint(rng, 1, 3)
                p50 = round(base * rng.uniform(0.8, 1.2))
                p90 = round(p50 * rng.uniform(1.2, 1.8))
                quantiles[:3] = [float(p50), float(p90), float(round(p90 * rng.uniform(1.1, 1.6)))]
            else:
                observed = 0
                quantiles[:3] = [_NAN, _NAN, _NAN]  # the summary's window holds no observation
            quantiles[3] += round(observed * base)
            quantiles[4] += observed

    # -- rendering ---------------------------------------------------------------------------

    def render(self) -> str:
        """The page's dynamic part: awscni_* (and test-made) families, then go_*, process_*."""
        out: list[str] = []
        families = sorted([*self._values, fam.API_LATENCY])
        for family in families:
            spec = self.spec(family)
            assert spec is not None
            kind = spec.kind
            if family == fam.ADD_IP_REQ and self._counter_type_gauge:
                kind = "gauge"
            if family == fam.API_LATENCY:
                if self._latency:
                    out.append(f"# HELP {family} {spec.help}\n# TYPE {family} summary\n")
                    self._render_latency(out)
                continue
            series = self._values[family]
            if not series:
                continue
            out.append(_header(family, spec.help, kind))
            out.extend([f"{text} {format_value(value)}\n" for text, value in series.items()])
        out.append(self._go_block)
        out.append(self._render_process_block())
        return "".join(out)

    def _render_latency(self, out: list[str]) -> None:
        name = fam.API_LATENCY
        for body, (p50, p90, p99, total, count) in self._latency.items():
            out.append(
                f'{name}{{{body},quantile="0.5"}} {format_value(p50)}\n'
                f'{name}{{{body},quantile="0.9"}} {format_value(p90)}\n'
                f'{name}{{{body},quantile="0.99"}} {format_value(p99)}\n'
                f"{name}_sum{{{body}}} {format_value(total)}\n"
                f"{name}_count{{{body}}} {format_value(count)}\n"
            )

    def _render_go_block(self) -> str:
        """go_* families as client_golang's Go collector writes them (values settle per process)."""
        rng = self._rng
        gc_count = _randint(rng, 100, 10_000)
        quantiles = sorted(rng.uniform(1e-5, 6e-3) for _ in range(5))
        lines = [
            "# HELP go_gc_duration_seconds A summary of the GC invocation durations.\n"
            "# TYPE go_gc_duration_seconds summary\n"
        ]
        for q, value in zip(("0", "0.25", "0.5", "0.75", "1"), quantiles, strict=True):
            lines.append(f'go_gc_duration_seconds{{quantile="{q}"}} {format_value(value)}\n')
        lines.append(f"go_gc_duration_seconds_sum {format_value(gc_count * 8e-5)}\n")
        lines.append(f"go_gc_duration_seconds_count {gc_count}\n")
        gauges = (
            ("go_goroutines", "Number of goroutines that currently exist.", "gauge",
             float(_randint(rng, 20, 40))),
            ("go_memstats_alloc_bytes", "Number of bytes allocated and still in use.", "gauge",
             float(_randint(rng, 5_000_000, 9_000_000))),
            ("go_memstats_alloc_bytes_total", "Total number of bytes allocated, even if freed.",
             "counter", float(_randint(rng, 10**9, 2 * 10**10))),
            ("go_memstats_heap_objects", "Number of allocated objects.", "gauge",
             float(_randint(rng, 30_000, 60_000))),
            ("go_memstats_sys_bytes",
             "Number of bytes obtained by system. Sum of all system allocations.", "gauge",
             float(_randint(rng, 15_000_000, 25_000_000))),
        )
        for name, help_text, kind, value in gauges:
            lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            lines.append(f"{name} {format_value(value)}\n")
        return "".join(lines)

    def _render_process_block(self) -> str:
        return (
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
            "# TYPE process_cpu_seconds_total counter\n"
            f"process_cpu_seconds_total {format_value(self._cpu_seconds)}\n"
            "# HELP process_max_fds Maximum number of open file descriptors.\n"
            "# TYPE process_max_fds gauge\n"
            "process_max_fds 1.048576e+06\n"
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\n"
            f"process_open_fds {self._open_fds}\n"
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\n"
            f"process_resident_memory_bytes {format_value(self._rss)}\n"
            "# HELP process_start_time_seconds Start time of the process since unix epoch in "
            "seconds.\n"
            "# TYPE process_start_time_seconds gauge\n"
            f"process_start_time_seconds {format_value(self.start_time)}\n"
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
            "# TYPE process_virtual_memory_bytes gauge\n"
            "process_virtual_memory_bytes 7.7447168e+08\n"
        )

    # -- truth -------------------------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        """JSON-ready values: gauges and counters (family -> series text -> value), p99s, start.

        Kinds follow the rule table (docs/aggregation.md), not the page's TYPE line: with
        ``counter_type_gauge``, awscni_add_ip_req_count still lists under counters.
        """
        gauges: dict[str, dict[str, Any]] = {}
        counters: dict[str, dict[str, Any]] = {}
        for family, series in self._values.items():
            spec = self.spec(family)
            target = counters if spec is not None and spec.kind == "counter" else gauges
            target[family] = {text: json_value(value) for text, value in series.items()}
        name = fam.API_LATENCY
        p99 = {
            f'{name}{{{body},quantile="0.99"}}': json_value(quantiles[2])
            for body, quantiles in self._latency.items()
        }
        return {
            "index": self.index,
            "gauges": gauges,
            "counters": counters,
            "p99": p99,
            "process_start_time": self.start_time,
        }
