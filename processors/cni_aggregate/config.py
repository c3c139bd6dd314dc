"""Config of the ``cni_aggregate`` processor.

Defaults are the field defaults. The engine's loader handles YAML, unknown keys, types and
durations; :meth:`CniAggregateConfig.validate` checks what crosses fields (a quantile on a gauge, an
operation a counter cannot have, an unknown ``group_by`` attribute, ...), naming each key.

``rules:`` is an overlay on the default table (docs/aggregation.md): an
entry whose ``name`` is a default rule's
changes only the fields it sets (``enabled: false`` drops the rule); any other entry adds a rule
and must say at least its ``family`` and ``type``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pipeline import METRIC_UNITS, ComponentConfig, Duration

from ._rules import (
    ALLOWED_OPERATIONS,
    DEFAULT_OPERATION,
    DEFAULT_QUANTILE,
    DEFAULT_RULES,
    DEFAULT_UNIT,
    DERIVED_NAMES,
    FAMILY_RE,
    GROUP_KEYS,
    Operation,
    Rule,
    RuleType,
    describe,
)

DEFAULT_STALENESS = Duration(300.0)

RuleTypeName = Literal["counter", "gauge", "summary", "histogram"]
OperationName = Literal["sum", "max", "min", "avg", "count"]

#: CloudWatch's limit on a metric name.
_MAX_NAME = 255


@dataclass(frozen=True, kw_only=True)
class RuleConfig:
    """One ``rules:`` entry. Unset fields (``None``) keep the default rule's value, or take the
    type's default for a new rule (operation sum, max for a summary; quantile 0.99; unit Count)."""

    #: The published (CloudWatch) metric name; a default rule's name overrides that rule.
    name: str = ""
    #: The source family (the metric name of the lines to read).
    family: str | None = None
    type: RuleTypeName | None = None
    operation: OperationName | None = None
    #: Summary rules only: which quantile's lines to read (default 0.99).
    quantile: float | None = None
    unit: str | None = None
    #: Only series whose labels equal these values, e.g. ``{error: "true"}``.
    labels: dict[str, str] = field(default_factory=dict)
    #: Only series whose label values fully match these regular expressions.
    label_regex: dict[str, str] = field(default_factory=dict)
    #: What the value is, shown by the OTLP and Prometheus exporters. Default: made of the
    #: family's meaning and how nodes combine (see ``describe``).
    description: str | None = None
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class CniAggregateConfig(ComponentConfig):
    """How scraped aws-node families become cluster-level metrics.

    ``staleness``: how long a failed (but still discovered) target's last gauges and quantiles stay
    in the sums, counted from the cycle of its last successful scrape. ``group_by``: target
    attributes (``zone``, ``instance_type``, ``nodegroup``, ``node``) to publish every metric per
    value of, besides the cluster-wide metrics, which stay as they are.
    """

    staleness: Duration = DEFAULT_STALENESS
    #: Start from docs/aggregation.md's table (false: only the rules listed under ``rules``).
    default_rules: bool = True
    rules: list[RuleConfig] = field(default_factory=list)
    group_by: list[str] = field(default_factory=list)
    #: ``metrics``: the cluster-level values. ``partials``: this replica is one shard of several
    #: (the receiver's ``sharding``), and publishes what a gateway's ``cni_combine`` needs to
    #: combine the shards into exactly those values (docs/sharding.md).
    output: Literal["metrics", "partials"] = "metrics"

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.staleness < 0:
            yield "staleness", "must not be negative"
        yield from _validate_group_by(self.group_by)
        _, problems = resolve_rules(self)
        yield from problems


def _validate_group_by(group_by: Sequence[str]) -> Iterable[tuple[str, str]]:
    seen: set[str] = set()
    for index, key in enumerate(group_by):
        if key not in GROUP_KEYS:
            yield (f"group_by[{index}]",
                   f"unknown target attribute {key!r} (known: {', '.join(GROUP_KEYS)})")
        elif key in seen:
            yield f"group_by[{index}]", f"{key!r} is listed twice"
        seen.add(key)


def resolve_rules(config: CniAggregateConfig) -> tuple[list[Rule], list[tuple[str, str]]]:
    """The active rules, in emission order, and every problem found (key, message).

    Default rules keep their table position when overridden; added rules follow in config order.
    """
    problems: list[tuple[str, str]] = []
    defaults = {rule.name: rule for rule in DEFAULT_RULES} if config.default_rules else {}
    table: dict[str, Rule | None] = dict(defaults)
    first_key: dict[str, str] = {}
    for index, entry in enumerate(config.rules):
        key = f"rules[{index}]"
        entry_problems: list[tuple[str, str]] = []
        if not entry.name:
            problems.append((f"{key}.name", "is required"))
            continue
        if entry.name in first_key:
            problems.append((f"{key}.name", f"{entry.name!r} is already defined by "
                             f"{first_key[entry.name]}"))
            continue
        first_key[entry.name] = key
        rule = _resolve_one(key, entry, defaults.get(entry.name), entry_problems)
        problems.extend(entry_problems)
        if not entry_problems:
            table[entry.name] = rule if entry.enabled else None
    return [rule for rule in table.values() if rule is not None], problems


def _resolve_one(
    key: str, entry: RuleConfig, base: Rule | None, problems: list[tuple[str, str]]
) -> Rule | None:
    """Lay ``entry`` over ``base`` (a default rule, or nothing) and check the result."""
    name = entry.name
    if len(name) > _MAX_NAME:
        problems.append((f"{key}.name", f"is longer than {_MAX_NAME} characters"))
    if name in DERIVED_NAMES:
        problems.append((f"{key}.name", f"{name!r} is a derived metric's name"))
    family = entry.family if entry.family is not None else (base.family if base else None)
    type_name = entry.type if entry.type is not None else (base.type.value if base else None)
    if base is None and entry.enabled:
        if family is None:
            problems.append((f"{key}.family", f"is required: {name!r} is not a default rule"))
        if type_name is None:
            problems.append((f"{key}.type", f"is required: {name!r} is not a default rule "
                             "(counter, gauge, summary or histogram)"))
    if not entry.enabled and base is None:
        problems.append((f"{key}.enabled", f"{name!r} is not a default rule: there is nothing "
                         "to disable"))
        return None
    if family is None or type_name is None:
        return None
    if not FAMILY_RE.match(family):
        problems.append((f"{key}.family", f"{family!r} is not a metric family name"))
    rule_type = RuleType(type_name)
    operation = _operation(key, entry, base, rule_type, problems)
    quantile = _quantile(key, entry, base, rule_type, problems)
    unit = entry.unit if entry.unit is not None else (base.unit if base else DEFAULT_UNIT)
    if unit not in METRIC_UNITS:
        problems.append((f"{key}.unit", f"{unit!r} is not a CloudWatch unit (e.g. Count, "
                         "Milliseconds, Percent, Bytes)"))
    label_regex = _label_regex(key, entry, problems)
    if entry.labels or entry.label_regex:
        labels = tuple(sorted(entry.labels.items()))
    else:
        labels = base.labels if base else ()
        label_regex = base.label_regex if base else ()
    # Unset, it is worked out again (not kept from the default rule): an entry that changes a
    # default rule's operation or quantile must not keep a text describing the old ones.
    description = entry.description if entry.description is not None else (
        describe(family, rule_type, operation, quantile))
    return Rule(name, family, rule_type, operation, quantile, unit, labels, label_regex,
                description)


def _operation(
    key: str, entry: RuleConfig, base: Rule | None, rule_type: RuleType,
    problems: list[tuple[str, str]],
) -> Operation:
    if entry.operation is not None:
        operation = Operation(entry.operation)
    elif base is not None and base.type is rule_type:
        operation = base.operation
    else:
        operation = DEFAULT_OPERATION[rule_type]
    allowed = ALLOWED_OPERATIONS[rule_type]
    if operation not in allowed:
        problems.append((f"{key}.operation", f"{operation.value!r} does not apply to a "
                         f"{rule_type.value} (use {', '.join(op.value for op in allowed)})"))
    return operation


def _quantile(
    key: str, entry: RuleConfig, base: Rule | None, rule_type: RuleType,
    problems: list[tuple[str, str]],
) -> float | None:
    if rule_type is not RuleType.SUMMARY:
        if entry.quantile is not None:
            problems.append((f"{key}.quantile", f"applies only to a summary (this rule's type is "
                             f"{rule_type.value})"))
        return None
    if entry.quantile is not None:
        if not 0.0 <= entry.quantile <= 1.0:
            problems.append((f"{key}.quantile", f"must be between 0 and 1, not {entry.quantile}"))
        return float(entry.quantile)
    if base is not None and base.quantile is not None:
        return base.quantile
    return DEFAULT_QUANTILE


def _label_regex(
    key: str, entry: RuleConfig, problems: list[tuple[str, str]]
) -> tuple[tuple[str, re.Pattern[str]], ...]:
    compiled: list[tuple[str, re.Pattern[str]]] = []
    for label, pattern in sorted(entry.label_regex.items()):
        try:
            compiled.append((label, re.compile(pattern)))
        except re.error as exc:
            problems.append((f"{key}.label_regex.{label}", f"invalid regular expression: {exc}"))
    return tuple(compiled)
