"""Layouts: what a target's page looks like to the rules, worked out once and reused every cycle.

A target's wanted lines are the same cycle after cycle, and mostly the same on every target. A
:class:`TargetLayout` is one such page: how many lines each wanted family has and all their series
texts in order (what a target's page is compared with, each cycle). Its :class:`Shape` says what
every rule reads from the page's flat vector of values, as positions ready as C-level pickers
(``operator.itemgetter``). Shapes are shared: pages whose texts differ only in label values no rule
filters on (each node's own CIDR blocks, say) have one shape, so the rules can be evaluated for all
the targets of a shape at once, with ``map`` over targets rather than a Python loop per target.

This replaces a Python loop per wanted sample, which costs several times more;
bench/bench_aggregate.py prints what this costs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

from pipeline import parse_series

from ._rules import Rule, RuleType

VALUES, INCREASES, HISTOGRAM = 0, 1, 2

#: For a histogram's lines: (group, watched); see ``_tracker``.
GroupOf = Callable[[str], tuple[Hashable, bool]]


class Step(NamedTuple):
    """One step of reading a page. VALUES and INCREASES feed rule indexes; HISTOGRAM has the
    lookup families in place of the family and feeds (rule index, reader)."""

    kind: int
    family: Any
    #: The fallback family, or "".
    fallback: str
    feeds: Any

#: Caches are cleared past these sizes, so families with unbounded label values, or node churn
#: (each node's own CIDR label values), cannot grow memory without limit; clearing costs only
#: re-resolving. A target keeps a reference to its own layout, so clearing never costs a target
#: whose page did not change: the layout cache serves new targets and changed pages only.
_LAYOUT_LIMIT = 10_000
_SERIES_LIMIT = 200_000


def steps_of(rules: Sequence[Rule], histogram_readers: dict[int, object]) -> list[Step]:
    """Rules grouped by what they read, so a family shared by several rules is read once.

    Steps run in the order of their first rule, which keeps the counter tracker's order of
    families what a rule-by-rule loop gives (it matters only if one series text is filed under
    two families: the first family to record it counts it).
    """
    groups: dict[tuple[int, str, str], list[int]] = {}
    ordered: list[tuple[int, Any]] = []
    for index, rule in enumerate(rules):
        lookup = rule.lookup_families
        if rule.type is RuleType.HISTOGRAM:
            ordered.append((index, Step(HISTOGRAM, lookup, "", (index, histogram_readers[index]))))
            continue
        kind = INCREASES if rule.type is RuleType.COUNTER else VALUES
        key = (kind, lookup[0], lookup[1] if len(lookup) > 1 else "")
        if key not in groups:
            groups[key] = []
            ordered.append((index, key))
        groups[key].append(index)
    steps: list[Step] = []
    for _, step in sorted(ordered, key=lambda item: item[0]):
        if step[0] == HISTOGRAM:
            steps.append(step)
            continue
        kind, family, fallback = step
        feeds = tuple(groups[step])
        steps.append(Step(kind, family, fallback, feeds))
    return steps


def reads_by_name(rule: Rule) -> bool:
    """Does a line's name alone decide whether ``rule`` reads it (no label filter, no quantile)?
    Then its labels need not be parsed: see :func:`line_name`."""
    return not (rule.labels or rule.label_regex or rule.quantile is not None)


def line_name(series: str) -> str:
    """The metric name of a series text, without parsing its labels."""
    brace = series.find("{")
    return (series if brace < 0 else series[:brace]).strip()


def selects(rule: Rule, name: str, labels: dict[str, str]) -> bool:
    """Does a counter, gauge or summary rule read the line ``name{labels}``?"""
    if name not in rule.line_names or not rule.matches_labels(labels):
        return False
    if rule.quantile is None:
        return True
    try:
        return float(labels.get("quantile", "nan")) == rule.quantile
    except ValueError:
        return False


class Shape:
    """What every rule reads from the pages of one shape. Immutable, shared by layouts.

    ``kept`` picks, out of a page's values, the ones some gauge or summary rule reads (all a
    target keeps of its values: they are carried while it is stale). ``specs`` lists, per rule
    that selects at least one line: (rule index, what it reads: VALUES from the kept values or
    INCREASES from the tracked lines' increases, the picker, how many lines it picks). A picker
    of one line returns the value itself; of more, a tuple.
    """

    __slots__ = ("specs", "kept", "tracked", "tracked_families", "histogram_rules", "zeros")

    def __init__(
        self, specs: tuple[tuple[int, int, Callable[[Sequence[float]], Any], int], ...],
        kept: Callable[[Sequence[Any]], tuple[Any, ...]],
        tracked: Callable[[Sequence[Any]], tuple[Any, ...]],
        tracked_families: tuple[tuple[int, int, GroupOf | None], ...],
        histogram_rules: tuple[tuple[int, Any, tuple[tuple[int, int], ...]], ...],
    ) -> None:
        self.specs = specs
        self.kept = kept
        #: Picks the counter-tracked lines out of a page's values (or texts), in tracker order.
        self.tracked = tracked
        #: (start, end, group_of or None) of each tracked family in the tracked vector, in the
        #: order the tracker processes them.
        self.tracked_families = tracked_families
        #: (rule index, reader, spans of its families in the tracked vector).
        self.histogram_rules = histogram_rules
        #: No increase on any tracked line (what a stale target contributes, usually).
        self.zeros = (0.0,) * (tracked_families[-1][1] if tracked_families else 0)


class TargetLayout:
    """One page: its lines, their shape, and whether the counter tracker may take its fast path.

    Immutable. One is kept per distinct page, so it holds only what is not in its shape.
    """

    __slots__ = ("runs", "keys", "shape", "fast")

    def __init__(self, runs: tuple[tuple[str, int], ...], keys: tuple[str, ...], shape: Shape,
                 fast: bool) -> None:
        #: ``(family, lines)`` of each family on the page, in the page's order (the page form's
        #: :attr:`pipeline.Page.runs`): families the rules do not read may be among them.
        self.runs = runs
        #: Series texts of every line of the page form, family after family.
        self.keys = keys
        self.shape = shape
        #: Every tracked line is its own series and no histogram is tracked: the tracker may
        #: diff the tracked vector as a whole.
        self.fast = fast

    @property
    def tracked_keys(self) -> tuple[str, ...]:
        """Series texts of the tracked lines, in tracker order (made on demand: only the
        tracker's exact path and histograms need them)."""
        return self.shape.tracked(self.keys)


def _evenly_spaced(positions: Sequence[int]) -> slice | None:
    """``positions`` as a slice, if they are an increasing arithmetic progression (contiguous
    lines, or one quantile's lines of a summary). Tracked positions follow the tracker's order of
    families, which need not be the page's: they may go back and forth."""
    first = positions[0]
    step = positions[1] - first if len(positions) > 1 else 1
    if step > 0 and all(b - a == step for a, b in zip(positions, positions[1:], strict=False)):
        return slice(first, positions[-1] + 1, step)
    return None


def _picker(positions: Sequence[int]) -> Callable[[Sequence[float]], Any]:
    """One position: the value itself. More: a tuple, by one slice when they are evenly spaced,
    which is cheaper than an ``itemgetter`` of positions (and a slice of a whole tuple is the
    tuple itself: no copy)."""
    if len(positions) == 1:
        return operator.itemgetter(positions[0])
    spaced = _evenly_spaced(positions)
    return operator.itemgetter(spaced) if spaced else operator.itemgetter(*positions)


def _tracked_picker(positions: Sequence[int]) -> Callable[[Sequence[float]], tuple[float, ...]]:
    """Always a tuple (even of one value, or none), in the order of ``positions``."""
    if not positions:
        return _nothing
    spaced = _evenly_spaced(positions)
    return operator.itemgetter(spaced) if spaced else operator.itemgetter(*positions)


def _nothing(values: Sequence[float]) -> tuple[float, ...]:
    return ()


class ReadPlan:
    """What the rules read, worked out once: the reading steps (a layout finds each step's
    family on a page by name, wherever the page has it)."""

    def __init__(self, rules: Sequence[Rule], histogram_readers: dict[int, object],
                 group_of: dict[str, GroupOf]) -> None:
        self.rules = tuple(rules)
        self.steps = steps_of(self.rules, histogram_readers)
        self.group_of = group_of


class Layouts:
    """Target layouts by page shape, and the per-series facts they are built from."""

    __slots__ = ("_reads", "_layouts", "_shapes", "_texts", "_selected", "_chosen_by_lines")

    def __init__(self, reads: ReadPlan) -> None:
        self._reads = reads
        self._layouts: dict[tuple[tuple[tuple[str, int], ...], tuple[str, ...]], TargetLayout] = {}
        self._shapes: dict[tuple[Any, ...], Shape] = {}
        #: One string object per series text, shared by every layout holding it: the layouts of
        #: many targets then cost one copy of each text, not one per target.
        self._texts: dict[str, str] = {}
        #: Per rule index: series text -> selected?
        self._selected: dict[int, dict[str, bool]] = {}
        #: (rule index, a family's series texts) -> offsets of the lines the rule reads. Most
        #: families read the same on every node: a new node's page then costs one lookup per
        #: rule, not a look at each of its lines (see _chosen).
        self._chosen_by_lines: dict[tuple[int, tuple[str, ...]], tuple[int, ...]] = {}

    def get(self, runs: tuple[tuple[str, int], ...], keys: tuple[str, ...]) -> TargetLayout:
        """The layout of a page form's ``runs`` and series texts (``keys``)."""
        layout = self._layouts.get((runs, keys))
        if layout is None:
            if len(self._layouts) >= _LAYOUT_LIMIT:
                self._layouts.clear()
            if len(self._texts) >= _SERIES_LIMIT:
                self._texts.clear()
            text = self._texts.setdefault
            keys = tuple([text(key, key) for key in keys])
            layout = self._layouts[(runs, keys)] = self._build(runs, keys)
        return layout

    def _build(self, runs: tuple[tuple[str, int], ...], keys: tuple[str, ...]) -> TargetLayout:
        ranges: dict[str, tuple[int, int]] = {}
        start = 0
        for family, count in runs:
            ranges[family] = (start, start + count)
            start += count
        tracked: dict[str, tuple[int, int]] = {}
        tracked_families: list[tuple[int, int, GroupOf | None]] = []
        positions: list[int] = []
        specs: list[tuple[int, int, list[int]]] = []
        counter_feeds: list[tuple[int, str]] = []
        histogram_rules: list[tuple[int, Any, tuple[tuple[int, int], ...]]] = []
        parsed: dict[str, tuple[str, dict[str, str]]] = {}

        def track(family: str) -> tuple[int, int]:
            if family not in tracked:
                begin, end = ranges[family]
                tracked[family] = (len(positions), len(positions) + end - begin)
                positions.extend(range(begin, end))
                tracked_families.append((*tracked[family], self._reads.group_of.get(family)))
            return tracked[family]

        for kind, family, fallback, feeds in self._reads.steps:
            if kind == HISTOGRAM:
                index, reader = feeds
                spans = tuple(track(name) for name in family if name in ranges)
                histogram_rules.append((index, reader, spans))
                continue
            if family not in ranges:
                if fallback not in ranges:
                    continue
                family = fallback
            begin, end = ranges[family]
            if kind == VALUES:
                specs += [(index, VALUES, self._chosen(index, keys, begin, end, parsed))
                          for index in feeds]
            else:
                track(family)
                counter_feeds += [(index, family) for index in feeds]
        tracked_keys = [keys[position] for position in positions]
        for index, family in counter_feeds:
            begin, end = tracked[family]
            specs.append((index, INCREASES,
                          self._chosen(index, tracked_keys, begin, end, parsed)))
        shape = self._shape(specs, positions, tuple(tracked_families), tuple(histogram_rules))
        fast = (len(set(tracked_keys)) == len(tracked_keys)
                and all(group is None for _, _, group in tracked_families))
        return TargetLayout(runs, keys, shape, fast)

    def _shape(
        self, specs: list[tuple[int, int, list[int]]], tracked: list[int],
        tracked_families: tuple[tuple[int, int, GroupOf | None], ...],
        histogram_rules: tuple[tuple[int, Any, tuple[tuple[int, int], ...]], ...],
    ) -> Shape:
        """The shared shape of these picks (rules that pick nothing are left out)."""
        specs.sort()
        chosen_by_rule = tuple((index, kind, tuple(chosen)) for index, kind, chosen in specs
                               if chosen)
        signature = (chosen_by_rule, tuple(tracked), tracked_families, histogram_rules)
        shape = self._shapes.get(signature)
        if shape is None:
            if len(self._shapes) >= _LAYOUT_LIMIT:
                self._shapes.clear()
            kept = sorted({position for _, kind, chosen in chosen_by_rule if kind == VALUES
                           for position in chosen})
            at = {position: number for number, position in enumerate(kept)}
            shape = self._shapes[signature] = Shape(
                tuple((index, kind, _picker([at[p] for p in chosen] if kind == VALUES
                                            else chosen), len(chosen))
                      for index, kind, chosen in chosen_by_rule),
                _tracked_picker(kept), _tracked_picker(tracked), tracked_families,
                histogram_rules)
        return shape

    def _chosen(self, index: int, keys: Sequence[str], begin: int, end: int,
                parsed: dict[str, tuple[str, dict[str, str]]]) -> list[int]:
        """Positions in ``keys[begin:end]`` (as positions in ``keys``) that rule ``index`` reads.

        Looked up by the family's series texts first: families whose lines are the same on
        every node (all but those with per-node label values) are then worked out once, not
        once per node (``bench/bench_aggregate.py``'s first cycle).
        """
        lines = (index, tuple(keys[begin:end]))
        offsets = self._chosen_by_lines.get(lines)
        if offsets is None:
            if len(self._chosen_by_lines) >= _LAYOUT_LIMIT:
                self._chosen_by_lines.clear()
            offsets = self._chosen_by_lines[lines] = self._select(index, lines[1], parsed)
        return [begin + offset for offset in offsets]

    def _select(self, index: int, lines: tuple[str, ...],
                parsed: dict[str, tuple[str, dict[str, str]]]) -> tuple[int, ...]:
        """Offsets of the ``lines`` rule ``index`` reads.

        ``parsed`` lives for one layout build: the facts kept are the per-rule answers, not the
        parsed labels (which, kept for every series text ever met, cost more than the answers).
        """
        selected = self._selected.get(index)
        if selected is None or len(selected) >= _SERIES_LIMIT:
            selected = self._selected[index] = {}
        rule = self._reads.rules[index]
        if reads_by_name(rule):  # most rules: no label parsing for each node's own lines
            names = rule.line_names
            return tuple(offset for offset, series in enumerate(lines)
                         if line_name(series) in names)
        out: list[int] = []
        for offset, series in enumerate(lines):
            ok = selected.get(series)
            if ok is None:
                found = parsed.get(series)
                if found is None:
                    found = parsed[series] = _parse(series)
                ok = selected[series] = selects(rule, *found)
            if ok:
                out.append(offset)
        return tuple(out)


def _parse(series: str) -> tuple[str, dict[str, str]]:
    try:
        return parse_series(series)
    except (ValueError, IndexError):
        return ("", {})
