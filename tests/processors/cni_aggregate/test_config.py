"""Config: the default is valid and is the rule table of docs/aggregation.md; overrides; every
bad combination fails naming its key; the factory's contract and its plan for ``validate``."""

from __future__ import annotations

import re
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from pipeline import ClusterShape, ConfigError, Duration, Kind, MetricKind, validate_config
from processors.cni_aggregate import CniAggregateConfig, RuleConfig, factory
from processors.cni_aggregate._rules import DEFAULT_RULES, Operation, RuleType
from processors.cni_aggregate.config import resolve_rules
from tests.processors.cni_aggregate._fleet import (
    RecordingSink,
    batch,
    series,
    settings,
    target,
    up,
)

#: The rule table as the repository documents it for users and contributors.
RULE_TABLE_DOC = Path(__file__).resolve().parents[3] / "docs" / "aggregation.md"


def problems(**overrides: object) -> list[tuple[str, str]]:
    return list(validate_config(CniAggregateConfig(**overrides)))  # type: ignore[arg-type]


def test_default_config_is_valid_and_is_the_rule_table() -> None:
    config = factory.default_config()
    assert isinstance(config, CniAggregateConfig)
    assert list(validate_config(config)) == []
    assert config.staleness == Duration(300)
    rules, found = resolve_rules(config)
    assert found == []
    assert len(rules) == 20
    assert rules == list(DEFAULT_RULES)


def test_default_rules_match_the_documented_table_row_for_row() -> None:
    rows = re.findall(r"^\| (\w+) \| (awscni_\w+) \| (counter|gauge|summary), (Sum|Max)",
                      RULE_TABLE_DOC.read_text(), flags=re.MULTILINE)
    assert len(rows) == 20
    assert [(r.name, r.family, r.type.value) for r in DEFAULT_RULES] == [
        (name, family, kind) for name, family, kind, _ in rows]
    latency = next(r for r in DEFAULT_RULES if r.type is RuleType.SUMMARY)
    assert (latency.quantile, latency.operation, latency.unit) == (0.99, Operation.MAX,
                                                                   "Milliseconds")
    assert {r.unit for r in DEFAULT_RULES if r is not latency} == {"Count"}


def test_config_fields_use_only_types_the_loader_understands() -> None:
    allowed = {str, int, float, bool, Duration, type(None)}

    def check(tp: object) -> None:
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            return
        if origin in (list, dict, typing.Union, types.UnionType):
            for arg in typing.get_args(tp):
                check(arg)
            return
        if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
            for hint in typing.get_type_hints(tp).values():
                check(hint)
            return
        assert tp in allowed, tp

    check(CniAggregateConfig)
    for config_class in (CniAggregateConfig, RuleConfig):
        for item in fields(config_class):   # every field has a default
            assert item.default is not MISSING or item.default_factory is not MISSING, item.name


def test_override_changes_only_what_it_sets_and_keeps_the_table_position() -> None:
    config = CniAggregateConfig(rules=[RuleConfig(name="awsAPILatency", quantile=0.9)])
    rules, found = resolve_rules(config)
    assert found == []
    names = [r.name for r in rules]
    assert names == [r.name for r in DEFAULT_RULES]
    latency = rules[names.index("awsAPILatency")]
    assert latency.quantile == 0.9
    assert (latency.family, latency.operation, latency.unit) == (
        "awscni_aws_api_latency_ms", Operation.MAX, "Milliseconds")


@pytest.mark.parametrize(("entry", "description"), [
    # A default rule keeps its text until something it speaks of changes.
    (RuleConfig(name="eniAllocated", unit="None"),
     "Sum over the cluster's aws-node pods of: the number of ENIs allocated"),
    (RuleConfig(name="awsAPILatency", quantile=0.9),
     "Highest 0.9 quantile of AWS API call latency across aws-node pods"),
    (RuleConfig(name="awsAPILatency", operation="avg"),
     "Mean 0.99 quantile of AWS API call latency across aws-node pods"),
    (RuleConfig(name="addReqCount", type="gauge", operation="max"),
     "Highest over the cluster's aws-node pods of: the number of add IP address requests"),
    # A new rule: the family's meaning when it is an aws-node family we know, else its name.
    (RuleConfig(name="nodesReportingIPs", family="awscni_assigned_ip_addresses", type="gauge",
                operation="count"),
     "Number of the cluster's aws-node pods reporting: the number of IP addresses assigned to "
     "pods"),
    (RuleConfig(name="meanThing", family="acme_thing", type="gauge", operation="avg"),
     "Mean over every series of the cluster's aws-node pods of: acme_thing"),
    (RuleConfig(name="lowThing", family="acme_thing", type="gauge", operation="min"),
     "Lowest over the cluster's aws-node pods of: acme_thing"),
    (RuleConfig(name="throttled", family="awscni_ec2api_throttled", type="counter"),
     "Over the cluster's aws-node pods, of: awscni_ec2api_throttled"),
    (RuleConfig(name="setup", family="acme_setup_seconds", type="histogram"),
     "Over the cluster's aws-node pods, of: acme_setup_seconds"),
    # The user's own text wins.
    (RuleConfig(name="awsAPILatency", quantile=0.5, description="median latency"),
     "median latency"),
])
def test_descriptions(entry: RuleConfig, description: str) -> None:
    rules, found = resolve_rules(CniAggregateConfig(rules=[entry]))
    assert found == []
    (rule,) = [r for r in rules if r.name == entry.name]
    assert rule.description == description


async def test_metrics_carry_their_rules_source_quantile_and_description() -> None:
    """What exporters name and describe a metric by comes with it, shared with the rule."""
    config = CniAggregateConfig(rules=[RuleConfig(name="awsAPILatency", quantile=0.9)])
    sink = RecordingSink()
    proc = factory.create(settings(), config, sink)
    await proc.start(host=None)  # type: ignore[arg-type]
    node = target("node-a")
    latency = "awscni_aws_api_latency_ms"
    await proc.consume(batch(0, [up(node, 0, {
        latency: [(series(latency, api="x", quantile="0.9"), 5.0)],
        "awscni_eni_max": [(series("awscni_eni_max"), 4.0)],
    })]))
    await proc.shutdown()
    metrics = {m.name: m for m in sink.batches[0].metrics if not m.attributes}
    rules = {r.name: r for r in resolve_rules(config)[0]}
    for name in ("awsAPILatency", "eniMaxAvailable"):
        metric, rule = metrics[name], rules[name]
        assert (metric.source, metric.quantile, metric.description) == (
            rule.family, rule.quantile, rule.description)
    assert metrics["awsAPILatency"].quantile == 0.9 and metrics["awsAPILatency"].value == 5.0
    # Derived and coverage metrics aggregate no one family, and say what they are.
    for name in ("targetsReporting", "targetsDiscovered"):
        assert metrics[name].source == "" and metrics[name].description


def test_disable_a_default_and_add_rules() -> None:
    config = CniAggregateConfig(rules=[
        RuleConfig(name="awsUtilErr", enabled=False),
        RuleConfig(name="awsAPILatencyErrors", family="awscni_aws_api_latency_ms",
                   type="summary", labels={"error": "true"}, unit="Milliseconds"),
        RuleConfig(name="addReqCount", type="gauge", operation="max"),
    ])
    rules, found = resolve_rules(config)
    assert found == []
    names = [r.name for r in rules]
    assert "awsUtilErr" not in names
    assert names[-1] == "awsAPILatencyErrors"
    added = rules[-1]
    assert (added.quantile, added.operation, added.labels) == (
        0.99, Operation.MAX, (("error", "true"),))
    turned = rules[names.index("addReqCount")]
    assert (turned.type, turned.operation, turned.metric_kind) == (
        RuleType.GAUGE, Operation.MAX, MetricKind.GAUGE)


def test_without_default_rules_only_the_listed_rules_run() -> None:
    config = CniAggregateConfig(default_rules=False, rules=[
        RuleConfig(name="assigned", family="awscni_assigned_ip_addresses", type="gauge")])
    rules, found = resolve_rules(config)
    assert found == [] and [r.name for r in rules] == ["assigned"]


@pytest.mark.parametrize(("config", "key", "fragment"), [
    (CniAggregateConfig(rules=[RuleConfig(name="eniAllocated", quantile=0.5)]),
     "rules[0].quantile", "only to a summary"),
    (CniAggregateConfig(rules=[RuleConfig(name="awsAPILatency", quantile=1.5)]),
     "rules[0].quantile", "between 0 and 1"),
    (CniAggregateConfig(rules=[RuleConfig(name="awsAPILatency", operation="sum")]),
     "rules[0].operation", "does not apply to a summary"),
    (CniAggregateConfig(rules=[RuleConfig(name="addReqCount", operation="max")]),
     "rules[0].operation", "does not apply to a counter"),
    (CniAggregateConfig(rules=[RuleConfig(name="h", family="x", type="histogram",
                                          operation="avg")]),
     "rules[0].operation", "does not apply to a histogram"),
    (CniAggregateConfig(rules=[RuleConfig(name="newOne", type="gauge")]),
     "rules[0].family", "is required"),
    (CniAggregateConfig(rules=[RuleConfig(name="newOne", family="awscni_x")]),
     "rules[0].type", "is required"),
    (CniAggregateConfig(rules=[RuleConfig(family="awscni_x", type="gauge")]),
     "rules[0].name", "is required"),
    (CniAggregateConfig(rules=[RuleConfig(name="a", family="awscni_x", type="gauge"),
                               RuleConfig(name="a", family="awscni_y", type="gauge")]),
     "rules[1].name", "already defined by rules[0]"),
    (CniAggregateConfig(rules=[RuleConfig(name="ipUtilization", family="x", type="gauge")]),
     "rules[0].name", "derived metric"),
    (CniAggregateConfig(rules=[RuleConfig(name="x", family="not a family", type="gauge")]),
     "rules[0].family", "not a metric family name"),
    (CniAggregateConfig(rules=[RuleConfig(name="eniAllocated", unit="Furlongs")]),
     "rules[0].unit", "not a CloudWatch unit"),
    (CniAggregateConfig(rules=[RuleConfig(name="awsAPIErr", label_regex={"api": "(unclosed"})]),
     "rules[0].label_regex.api", "invalid regular expression"),
    (CniAggregateConfig(rules=[RuleConfig(name="noSuchRule", enabled=False)]),
     "rules[0].enabled", "nothing to disable"),
    (CniAggregateConfig(group_by=["zone", "rack"]), "group_by[1]", "unknown target attribute"),
    (CniAggregateConfig(group_by=["zone", "zone"]), "group_by[1]", "listed twice"),
    (CniAggregateConfig(staleness=Duration(-1)), "staleness", "negative"),
])
def test_bad_combination_fails_naming_the_key(
    config: CniAggregateConfig, key: str, fragment: str
) -> None:
    found = list(validate_config(config))
    assert [k for k, _ in found] == [key], found
    assert fragment in found[0][1]


def test_every_problem_is_reported_at_once() -> None:
    found = problems(group_by=["rack"], rules=[
        RuleConfig(name="eniAllocated", quantile=0.5),
        RuleConfig(name="new", type="gauge"),
    ])
    assert [k for k, _ in found] == ["group_by[0]", "rules[0].quantile", "rules[1].family"]


def test_factory_contract() -> None:
    assert factory.type == "cni_aggregate"
    assert factory.kind is Kind.PROCESSOR
    assert factory.default_config() == factory.default_config()   # no shared mutable state
    assert factory.default_config() is not factory.default_config()


def test_create_refuses_an_invalid_config() -> None:
    bad = CniAggregateConfig(group_by=["rack"])
    with pytest.raises(ConfigError) as raised:
        factory.create(settings(), bad, RecordingSink())
    assert "group_by[0]" in str(raised.value)


def test_wanted_families_are_the_rules_families() -> None:
    """Only its own: the engine adds what follows it (tests/pipeline/test_wanted_series.py)."""
    config = CniAggregateConfig(rules=[
        RuleConfig(name="awsAPICalls", family="awscni_aws_api_latency_ms_count", type="counter")])
    processor = factory.create(settings(), config, RecordingSink(frozenset({"up"})))
    wanted = processor.wanted_families()
    assert wanted == frozenset({r.family for r in DEFAULT_RULES}
                               | {"awscni_aws_api_latency_ms_count"})
    # Asking for the _count line itself makes the receiver file it apart from the summary.
    alone = CniAggregateConfig(default_rules=False, rules=config.rules)
    assert factory.create(settings(), alone, RecordingSink()).wanted_families() == frozenset({
        "awscni_aws_api_latency_ms_count"})


def test_planned_metrics_for_validate() -> None:
    shape = ClusterShape(nodes=10, zones=3, nodegroups=2, instance_types=2)
    plain = factory.planned_metrics(factory.default_config(), shape)
    # 20 rules + 3 capacity + 4 coverage per block; derived ones are marked.
    assert len(plain) == 27
    assert sum(m.derived for m in plain) == 7
    assert all(m.value == 0 and m.attributes == () for m in plain)
    grouped = factory.planned_metrics(CniAggregateConfig(group_by=["zone", "nodegroup"]), shape)
    assert len(grouped) == 27 * (1 + 3 + 2)
    assert {m.attributes for m in grouped} == {
        (), (("zone", "zone-1"),), (("zone", "zone-2"),), (("zone", "zone-3"),),
        (("nodegroup", "nodegroup-1"),), (("nodegroup", "nodegroup-2"),)}
    latency = next(m for m in plain if m.name == "awsAPILatency")
    assert latency.unit == "Milliseconds" and latency.kind is MetricKind.GAUGE
    assert next(m for m in plain if m.name == "addReqCount").kind is MetricKind.COUNTER


def test_planned_metrics_leave_out_capacity_without_its_inputs() -> None:
    config = CniAggregateConfig(rules=[RuleConfig(name="totalIPAddresses", enabled=False)])
    names = {m.name for m in factory.planned_metrics(config, ClusterShape())}
    assert "availableIPAddresses" not in names and "ipUtilization" not in names
    assert "eniUtilization" in names
