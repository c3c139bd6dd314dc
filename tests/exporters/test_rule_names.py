"""A rule added under ``rules:`` is served by its proper name and help, by the real Prometheus
exporter (scraped over HTTP and parsed) and the real OTLP exporter (read back from an OTLP
receiver): exporters take names and texts from the metric, not from a copy of the rule table."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import urllib.request
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

import exporters
from exporters.otlp import OtlpExporterConfig, TLSConfig
from exporters.otlp import factory as otlp_factory
from exporters.prometheus import PrometheusExporterConfig
from exporters.prometheus import factory as prometheus_factory
from pipeline import Batch, Duration, validate_config
from pipeline._decode import overlay
from processors.cni_aggregate import CniAggregateConfig
from processors.cni_aggregate import factory as aggregate_factory
from processors.cni_aggregate._rules import DEFAULT_RULES
from tests.processors.cni_aggregate._fleet import (
    RecordingSink,
    batch,
    series,
    settings,
    target,
    up,
)
from tests.support.otlp_receiver import GrpcReceiver, flatten

RULES = """
rules:
  - name: nodesReportingIPs          # a second reading of a default rule's family
    family: awscni_assigned_ip_addresses
    type: gauge
    operation: count
  - name: awsAPILatency              # a default rule moved to another quantile
    quantile: 0.9
  - name: ec2ThrottledCalls          # a family no default rule reads, described by the user
    family: awscni_ec2api_throttled
    type: counter
    description: EC2 API calls throttled
"""


def page(assigned: float) -> dict[str, list[tuple[str, float]]]:
    latency = "awscni_aws_api_latency_ms"
    return {
        "awscni_assigned_ip_addresses": [(series("awscni_assigned_ip_addresses"), assigned)],
        latency: [(series(latency, api="CreateTags", quantile="0.9"), 250.0),
                  (series(latency, api="CreateTags", quantile="0.99"), 900.0)],
        "awscni_ec2api_throttled": [(series("awscni_ec2api_throttled"), 4.0)],
        "awscni_force_removed_enis": [(series("awscni_force_removed_enis"), 1.0)],
    }


async def aggregated() -> Batch:
    """One cycle of two nodes through the real processor, configured from YAML."""
    problems: list[tuple[str, str]] = []
    config = overlay(aggregate_factory.default_config(), yaml.safe_load(RULES),
                     "processors.cni_aggregate", problems)
    assert problems == [] and isinstance(config, CniAggregateConfig)
    assert list(validate_config(config)) == []
    sink = RecordingSink()
    processor = aggregate_factory.create(settings(), config, sink)
    await processor.start(host=None)  # type: ignore[arg-type]
    try:
        nodes = [target("node-a", number=1), target("node-b", number=2)]
        await processor.consume(batch(0, [up(nodes[0], 0, page(10.0)),
                                          up(nodes[1], 0, page(20.0))]))
    finally:
        await processor.shutdown()
    (out,) = sink.batches
    return out


def scraped(port: int) -> dict[str, tuple[str, str]]:
    """Family name -> (type, help), as a Prometheus client parses the page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(text)}


async def test_an_added_rule_is_named_and_described_by_both_exporters(
    make_settings: Any, host: Any
) -> None:
    cycle = await aggregated()
    prometheus = prometheus_factory.create(
        make_settings("prometheus"), PrometheusExporterConfig(endpoint="127.0.0.1:0"))
    await prometheus.start(host)
    try:
        await prometheus.consume(cycle)
        served = await asyncio.to_thread(scraped, prometheus.port)
    finally:
        await prometheus.shutdown()

    with GrpcReceiver() as receiver:
        config = OtlpExporterConfig(endpoint=receiver.endpoint, tls=TLSConfig(insecure=True),
                                    timeout=Duration(5), per_target=True)
        otlp = otlp_factory.create(make_settings("otlp"), config)
        await otlp.start(host)
        try:
            await otlp.consume(cycle)
            got = await asyncio.to_thread(receiver.wait_for, 1, 10.0)
        finally:
            await otlp.shutdown()
    points = flatten([item.request for item in got])
    cluster = {p.name: p for p in points if p.resource.get("service.name") == "cni-pipeline"}
    per_node = {p.name: p for p in points if p.resource.get("service.name") == "aws-node"}

    # The count beside the default sum of one family: named after itself, acronym whole.
    assert served["awscni_nodes_reporting_ips"] == (
        "gauge", "Number of the cluster's aws-node pods reporting: "
                 "the number of IP addresses assigned to pods")
    assert served["awscni_assigned_ip_addresses"][1] == (
        "Sum over the cluster's aws-node pods of: the number of IP addresses assigned to pods")
    # The quantile moved: so did the name and the help.
    assert served["awscni_aws_api_latency_p90_seconds"] == (
        "gauge", "Highest 0.9 quantile of AWS API call latency across aws-node pods")
    assert not [name for name in served if "_p99" in name]
    # A family of its own: named after it; the user's description, said of the running total.
    assert served["awscni_ec2api_throttled"] == (
        "counter", "Total since this exporter started, EC2 API calls throttled")

    assert cluster["nodesReportingIPs"].value == 2.0
    assert cluster["nodesReportingIPs"].description == served["awscni_nodes_reporting_ips"][1]
    assert cluster["awsAPILatency"].value == 250.0
    assert cluster["awsAPILatency"].description == (
        "Highest 0.9 quantile of AWS API call latency across aws-node pods")
    assert (cluster["ec2ThrottledCalls"].kind, cluster["ec2ThrottledCalls"].description,
            cluster["ec2ThrottledCalls"].monotonic) == ("sum", "EC2 API calls throttled", True)
    # Per node, families with no counter suffix are sums when a counter rule reads them.
    assert per_node["awscni_ec2api_throttled"].kind == "sum"
    assert per_node["awscni_force_removed_enis"].kind == "sum"
    assert per_node["awscni_assigned_ip_addresses"].kind == "gauge"


def test_no_exporter_holds_a_table_keyed_by_rule_names_or_families() -> None:
    """No module-level mapping, set or sequence in an exporter names a default rule or the
    family it reads: a renamed or added rule cannot be missed by a copy."""
    known = {rule.name for rule in DEFAULT_RULES} | {rule.family for rule in DEFAULT_RULES}
    found: list[str] = []
    for info in pkgutil.walk_packages(exporters.__path__, "exporters."):
        module = importlib.import_module(info.name)
        for attribute, value in vars(module).items():
            if isinstance(value, (dict, set, frozenset, list, tuple)) and not isinstance(
                    value, str):
                try:
                    names = set(value)
                except TypeError:
                    continue
                if names & known:
                    found.append(f"{info.name}.{attribute}")
    assert found == []
