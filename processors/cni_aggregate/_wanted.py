"""What the processor asks the receiver for: its rules' families, and which of their lines.

Most lines of aws-node's wanted families are lines no rule reads: of the 90 an aws-node page has
in them, 55 are ``awscni_aws_api_latency_ms``'s, and the default rule reads only its 11
``quantile="0.99"`` lines, not the 0.5 and 0.9 quantiles nor ``_sum`` and ``_count``. Saying so
lets the receiver skip them unread (their values never parsed, never handed on, never looked at
here): 44 fewer samples a page (``bench/bench_cycle.py``).

A line is read when some rule that may read its family selects it (:func:`selects`, the very
test the aggregation applies), so filtering never changes a result. Families some rule reads
with a fallback family (``X_count`` or else ``X``) or as a histogram keep every line: there, a
family's presence, not only its selected lines, decides what a rule reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import SeriesFilter, parse_series

from ._layout import line_name, reads_by_name, selects
from ._rules import Rule, RuleType


def wanted_families(rules: Sequence[Rule]) -> frozenset[str]:
    """Only the rules' own families: lines with suffixes are filed under them by the receiver."""
    return frozenset(rule.family for rule in rules)


def series_filters(rules: Sequence[Rule]) -> dict[str, SeriesFilter]:
    """A filter per wanted family whose unread lines may be skipped (see the module docstring)."""
    whole: set[str] = set()
    for rule in rules:
        lookup = rule.lookup_families
        if rule.type is RuleType.HISTOGRAM or len(lookup) > 1:
            whole.update(lookup)
    return {
        family: LineSelector(tuple(rule for rule in rules if family in rule.lookup_families))
        for family in sorted(wanted_families(rules) - whole)
    }


class LineSelector:
    """Is a series text a line one of ``rules`` reads? (Called once per distinct text.)"""

    __slots__ = ("rules", "names", "by_name")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.names = frozenset(name for rule in rules for name in rule.line_names)
        #: No rule looks at labels: the line's name decides, with no need to parse its labels
        #: (each node's own CIDR lines are new texts, met on every new node).
        self.by_name = all(map(reads_by_name, rules))

    def __call__(self, series: str) -> bool:
        if self.by_name:
            return line_name(series) in self.names
        try:
            name, labels = parse_series(series)
        except (ValueError, IndexError):
            return True  # not ours to judge: the aggregation sees it as before
        return any(selects(rule, name, labels) for rule in self.rules)

    def __repr__(self) -> str:
        return f"LineSelector({', '.join(rule.name for rule in self.rules)})"
