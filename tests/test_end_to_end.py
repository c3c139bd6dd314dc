"""The first complete run: 20 simulated aws-node pods scraped through static targets, aggregated by
cni_aggregate and logged by the debug exporter, compared with the fleet's truth every cycle.

Expected values are computed here from the fleet's truth and the rule table in
docs/aggregation.md (independently of the processor's rule table); a node restarts mid-run.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

import pytest

from pipeline._config import build_config
from pipeline._registry import Registry
from pipeline._runtime import Service
from simfleet import FleetProcess

GAUGES = {
    "assignIPAddresses": "awscni_assigned_ip_addresses",
    "eniAllocated": "awscni_eni_allocated",
    "eniMaxAvailable": "awscni_eni_max",
    "ipamdActionInProgress": "awscni_ipamd_action_inprogress",
    "maxIPAddresses": "awscni_ip_max",
    "totalIPAddresses": "awscni_total_ip_addresses",
    "totalIPv4Prefixes": "awscni_total_ipv4_prefixes",
    "totalAssignedIPv4sPerCidr": "awscni_assigned_ip_per_cidr",
}
COUNTERS = {
    "addReqCount": "awscni_add_ip_req_count",
    "awsAPIErr": "awscni_aws_api_error_count",
    "awsUtilErr": "awscni_aws_utils_error_count",
    "delReqCount": "awscni_del_ip_req_count",
    "ipamdErr": "awscni_ipamd_error_count",
    "podENIErr": "awscni_pod_eni_error_count",
    "reconcileCount": "awscni_reconcile_count",
    "forceRemoveENI": "awscni_force_removed_enis",
    "forceRemoveIPs": "awscni_force_removed_ips",
    "ec2ApiReqCount": "awscni_ec2api_req_count",
    "ec2ApiErrCount": "awscni_ec2api_error_count",
}
PRODUCE = re.compile(r"^Produce (GAUGE|COUNTER) metrics: (\w+), value: (\S+)$")
HEADER = re.compile(r"^cycle (\d+) @\S+: (\d+) metrics$")
NODES = 20
CYCLES = 6
RESTART_NODE = 7


class DebugOutput(logging.Handler):
    """Collects the debug exporter's lines into cycles."""

    def __init__(self) -> None:
        super().__init__()
        self.cycles: list[dict[str, tuple[str, float]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if HEADER.match(text):
            self.cycles.append({})
            return
        if produce := PRODUCE.match(text):
            kind, name, value = produce.groups()
            self.cycles[-1][name] = (kind, float(value))

    def complete(self) -> int:
        """Cycles whose every metric line has been logged."""
        full = [c for c in self.cycles if len(c) >= len(GAUGES) + len(COUNTERS) + 1]
        return len(full)


def expected_cycle(truth, previous) -> dict[str, tuple[str, float]]:
    expected = {name: ("GAUGE", truth.gauge_sum(family)) for name, family in GAUGES.items()}
    for name, family in COUNTERS.items():
        value = 0.0 if previous is None else truth.counter_increase(family, previous)
        expected[name] = ("COUNTER", value)
    expected["awsAPILatency"] = ("GAUGE", truth.p99_max())
    return expected


@pytest.fixture()
def fleet():
    # The nodes' processes started an hour ago: their first scrape is a baseline.
    with FleetProcess(
        NODES, base_address="127.30.0.1", seed=7, start_time=time.time() - 3600
    ) as running:
        yield running


async def test_twenty_nodes_six_cycles_exact_sums_and_deltas(fleet):
    config = build_config(
        {
            "receivers": {
                "prometheus": {
                    "scrape_interval": "2s",
                    "scrape_timeout": "1s",
                    "static_targets": fleet.addresses,
                }
            },
            "processors": {"cni_aggregate": {}},
            "exporters": {"debug": {"derived": False}},
            "service": {
                "telemetry": {"endpoint": ""},
                "pipelines": {
                    "metrics": {
                        "receivers": ["prometheus"],
                        "processors": ["cni_aggregate"],
                        "exporters": ["debug"],
                    }
                },
            },
        },
        "e2e",
        Registry.load(),
        {},
    )
    output = DebugOutput()
    debug_logger = logging.getLogger("cni_pipeline.exporters.debug")
    debug_logger.addHandler(output)
    debug_logger.setLevel(logging.INFO)
    service = Service(config, Registry.load())

    truths = [await asyncio.to_thread(fleet.client.truth)]
    await service.start()
    try:
        for cycle in range(CYCLES):
            deadline = time.monotonic() + 30
            while output.complete() <= cycle:
                assert time.monotonic() < deadline, f"cycle {cycle} never logged"
                await asyncio.sleep(0.02)
            if cycle == CYCLES - 1:
                break
            # Between ticks: move the fleet on; one node restarts at cycle 3.
            if cycle == 2:
                await asyncio.to_thread(fleet.client.restart, RESTART_NODE)
            truths.append(await asyncio.to_thread(fleet.client.advance))
    finally:
        await service.shutdown()
        debug_logger.removeHandler(output)

    for cycle in range(CYCLES):
        previous = truths[cycle - 1] if cycle else None
        expected = expected_cycle(truths[cycle], previous)
        got = output.cycles[cycle]
        for name, (kind, value) in expected.items():
            assert name in got, f"cycle {cycle}: {name} not published"
            got_kind, got_value = got[name]
            assert got_kind == kind, f"cycle {cycle}: {name} logged as {got_kind}"
            if math.isnan(value):
                assert math.isnan(got_value), f"cycle {cycle}: {name}"
            else:
                assert got_value == pytest.approx(value, abs=1e-6), f"cycle {cycle}: {name}"
    # The counters really moved (so the comparison above is not 0 == 0), and a cumulative total
    # or the Go helper's one-node delta would not have matched.
    last, before = truths[-1], truths[-2]
    increase = last.counter_increase("awscni_add_ip_req_count", before)
    assert increase > 0
    assert increase != last.counter_total("awscni_add_ip_req_count")
    # The restarted node's counters were reset and its new values counted whole.
    restarted = truths[3].node(RESTART_NODE)
    assert restarted.process_start_time != truths[2].node(RESTART_NODE).process_start_time
