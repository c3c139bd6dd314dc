"""A config reload hands the old processor's state to the new one (``take_over``): counters
continue exactly whatever changed, and only a rule that reads a family the old rules did not
starts from a baseline (never counting a counter's whole value as an increase)."""

from __future__ import annotations

import logging

import pytest

from processors.cni_aggregate import CniAggregateConfig, factory
from processors.cni_aggregate.config import RuleConfig
from tests.processors.cni_aggregate._fleet import RecordingSink, batch, settings, target, up

ADD, DEL = "awscni_add_ip_req_count", "awscni_del_ip_req_count"
NODES = [target("a", instance_type="m5.large"), target("b", instance_type="c5.xlarge")]


def scrape(index: int, add: float, delete: float) -> list:  # type: ignore[type-arg]
    return [up(node, index, {ADD: [(ADD, add * (n + 1))], DEL: [(DEL, delete * (n + 1))]})
            for n, node in enumerate(NODES)]


def values(sink: RecordingSink, attributes: tuple[tuple[str, str], ...] = ()) -> dict[str, float]:
    return {m.name: m.value for m in sink.batches[-1].metrics if m.attributes == attributes}


async def test_group_by_changes_and_counters_carry_on() -> None:
    first, second = RecordingSink(), RecordingSink()
    old = factory.create(settings(), CniAggregateConfig(), first)
    await old.consume(batch(0, scrape(0, 100, 50)))
    await old.consume(batch(1, scrape(1, 110, 55)))
    assert values(first)["addReqCount"] == 10 + 20
    new = factory.create(settings(), CniAggregateConfig(group_by=["instance_type"]), second)
    new.take_over(old)
    await new.consume(batch(2, scrape(2, 113, 60)))
    assert values(second)["addReqCount"] == 3 + 6  # the increase since cycle 1, not a baseline
    assert values(second)["delReqCount"] == 5 + 10
    assert values(second, (("instance_type", "c5.xlarge"),))["addReqCount"] == 6


async def test_a_rule_for_a_new_family_starts_from_a_baseline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """delReqCount is not read before the reload: its first cycle after it is a baseline (0),
    not the counters' whole values; addReqCount carries on exactly."""
    only_add = CniAggregateConfig(default_rules=False, rules=[
        RuleConfig(name="addReqCount", family=ADD, type="counter")])
    first, second = RecordingSink(), RecordingSink()
    old = factory.create(settings(), only_add, first)
    await old.consume(batch(0, scrape(0, 100, 50)))
    await old.consume(batch(1, scrape(1, 110, 55)))
    both = CniAggregateConfig(default_rules=False, rules=[
        *only_add.rules, RuleConfig(name="delReqCount", family=DEL, type="counter")])
    new = factory.create(settings(), both, second)
    with caplog.at_level(logging.INFO, logger="test.cni_aggregate"):
        new.take_over(old)
    assert "rule delReqCount reads awscni_del_ip_req_count, not tracked before" in caplog.text
    await new.consume(batch(2, scrape(2, 113, 60)))
    assert values(second)["addReqCount"] == 3 + 6
    assert values(second)["delReqCount"] == 0  # a baseline, not 60 + 120
    await new.consume(batch(3, scrape(3, 114, 61)))
    assert values(second)["delReqCount"] == 1 + 2
    assert values(second)["addReqCount"] == 1 + 2
