"""The parser's grammars: what one wanted-family set compiles to (:class:`_Grammar`), with its
caches of known series texts and values, and the scan of the parts of a page that can hold wanted
lines. The hot path of :func:`._textparse.parse_page`; the reasons for its shape are in
:mod:`._textparse`'s docstring and beside each choice.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import compress
from operator import itemgetter
from typing import cast

from pipeline import Page, Sample, SeriesFilter, SeriesFilters

from ._textparse_errors import _NAME_RE, _raise_first_bad
from ._tokens import _CANONICAL_LABELS, _NAME, _NAME_END, _TAIL, _full_sample

#: Line-name suffixes filed under their family: summaries and histograms (``_sum``, ``_count``,
#: ``_bucket``) and OpenMetrics counters (``_total``, ``_created``). None is a suffix of another.
SUFFIXES = ("_sum", "_count", "_bucket", "_total", "_created")

#: Bound on each of a grammar's caches of known series texts (per generation, see
#: :meth:`_Grammar._learn`) and values, about 150 bytes an entry: above the distinct wanted series
#: of a 20,000-node cluster (each node's own CIDR lines, and the lines all nodes share).
_KNOWN_LIMIT = 1 << 17
#: Value texts up to this long are cached (see :class:`_Grammar`): a few thousand at most.
_CACHED_VALUE_LENGTH = 3
_first, _second = itemgetter(0), itemgetter(1)


class _NotCanonical(Exception):
    """The fast path cannot vouch for what it read: read the page with the full grammar."""


class PageMemo:
    """What one target's last page looked like, so that its next page, which almost always has
    the same lines with new values, is read without looking at each line in Python.

    Prometheus keeps a scrape cache per target for the same reason. ``lines`` holds the series
    text of every line the scan found (wanted or not), ``kept`` which of them the page form
    kept (1) or skipped (0: another family's, refused by a filter, or a duplicate), and ``runs``
    and ``duplicates`` what that page gave. Only the grammar that filled it may use it (a config
    reload makes a new grammar, and the next page fills the memo again). The texts are the
    grammar's shared ones and ``runs`` are shared between targets, so a memo costs a target
    about a kilobyte (the kept texts are picked again on each page rather than kept twice).
    """

    __slots__ = ("grammar", "lines", "kept", "runs", "duplicates")

    def __init__(self) -> None:
        self.grammar: _Grammar | None = None
        self.lines: tuple[str, ...] = ()
        self.kept = b""
        self.runs: tuple[tuple[str, int], ...] = ()
        self.duplicates = 0

    def reread(self, found: list[tuple[str, ...]], cached: dict[str, float]) -> Page | None:
        """The page form of ``found`` if its lines are the memo's, else None (read it whole).

        C-level passes but for values met for the first time: the series texts compared with
        the last page's as one tuple, the kept lines' value texts picked by the mask and checked
        as one joined string, then looked up in the grammar's value cache (``cached``), and read
        with ``float`` where missing (a lookup costs a fifth of a ``float``). Exactly what
        :meth:`_Grammar._collect` reads: it too reads a value text printable ASCII without
        ``_`` with ``float`` (or its cache); anything else (a timestamp, an exemplar) fails the
        check or ``float`` here and goes to it.
        """
        if len(found) != len(self.lines) or tuple(map(_first, found)) != self.lines:
            return None
        rests = list(compress(map(_second, found), self.kept))
        joined = "|".join(rests)
        if "_" in joined or not joined.isascii() or not joined.isprintable():
            return None
        numbers: list[float | None] = list(map(cached.get, rests))
        if None in numbers:
            try:
                for index, number in enumerate(numbers):
                    if number is None:
                        numbers[index] = float(rests[index])
            except ValueError:
                return None
        return Page(tuple(compress(self.lines, self.kept)),
                    cast(tuple[float, ...], tuple(numbers)), self.runs)


class _Grammar:
    """What one wanted-family set compiles to (or the set of every family), and its caches.

    ``scan`` finds, at each line start (the newline before it), the lines that begin with one of
    the ``prefixes`` of the wanted names (any line, for every family) and cuts each into (series:
    the text up to the first space, rest: the rest of the line); a wanted line not of that shape
    (indented, say) is captured whole as bad. It validates nothing, not even that the name is a
    wanted one: it is two runs of ``[^x]``, the only classes sre scans in a tight C loop, and
    checking the name there would cost a third of the scan.

    ``known`` maps every series text met to (that text, its key); the key is the family (for
    every family, the metric name), or None for a line that only shares a wanted prefix. Scraped
    pages repeat their series, so a series is checked against ``series`` (the canonical
    grammar) once, then found by one dict lookup (whose hash the aggregator's lookups reuse), as
    Prometheus' scrape cache skips label parsing for series it has seen. Sharing the first text
    object also lets downstream dict lookups match by identity. ``values`` likewise maps short
    value texts to floats: those repeat from scrape to scrape and node to node (0, 1, NaN, ENI
    counts), and a lookup in a small, cache-warm dict costs a quarter of ``float()``. Longer
    texts (counters, sums) rarely repeat across a fleet: caching them too filled the dict with
    values met once (past its bound on a 5,000-node fleet, so it was cleared over and over), and
    a lookup in a large, cold dict saved little over the ``float()`` (``bench_parse.py``'s fleet
    figure is a little better with only short texts cached).

    ``full`` reads the full grammar, groups (series, key, value, bad): the slow path for pages
    the fast one refuses, and the source of error messages.
    """

    __slots__ = ("filters", "full", "known", "known_before", "prefixes", "runs_seen", "scan",
                 "series", "values", "wanted_start")

    def __init__(self, key_name: str, line_start: str, prefixes: tuple[str, ...] | None,
                 filters: SeriesFilters | None = None) -> None:
        scanned = line_start if prefixes is None else "|".join(map(re.escape, prefixes))
        self.scan = re.compile(
            rf"\n(?:((?:{scanned})[^ ]*) ([^\n]*)|[ \t]*+(?={line_start})([^\n]*))"
        )
        self.wanted_start = re.compile(line_start)
        self.series = re.compile(rf"{key_name}(?:{_CANONICAL_LABELS})?")
        self.full = re.compile(
            rf"\n[ \t]*+(?:{_full_sample(key_name)}|(?={line_start})([^\n]*))"
        )
        self.prefixes = prefixes
        #: Line filters by family (key): a line a filter refuses is learnt as not wanted.
        self.filters = dict(filters or {})
        self.known: dict[str, tuple[str, str | None]] = {}
        #: The generation of ``known`` before the current one (see :meth:`_learn`).
        self.known_before: dict[str, tuple[str, str | None]] = {}
        self.values: dict[str, float] = {}
        #: Runs of pages read (see :meth:`_shared_runs`).
        self.runs_seen: dict[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]] = {}

    def read(
        self, text: str, family_of: dict[str, str] | None = None, memo: PageMemo | None = None
    ) -> tuple[Page, int, int]:
        """(the wanted samples in the page form, duplicates, lines read) of a framed page.

        ``family_of`` maps keys (metric names) to families when the keys are not families.
        "Lines read" is the count of sample lines when every family is wanted. ``memo``, the
        target's :class:`PageMemo`, is used when its lines are this page's, and filled again
        when they are not.
        """
        spans = [(0, len(text))] if self.prefixes is None else _spans(text, self.prefixes)
        found = _find(self.scan, text, spans)
        if memo is not None and memo.grammar is self:
            page = memo.reread(found, self.values)
            if page is not None:
                return page, memo.duplicates, len(found)
        try:
            families, duplicates = self._collect(found, family_of, memo)
        except _NotCanonical:
            if memo is not None:
                memo.grammar = None  # a page the fast path cannot read: no memo of it
            found = _find(self.full, text, spans)
            if any(line[3] for line in found):
                _raise_first_bad(text, self.full)
            families, duplicates = _collect_full(found, family_of, self.filters)
        return families, duplicates, len(found)

    def _collect(
        self, found: list[tuple[str, ...]], family_of: dict[str, str] | None,
        memo: PageMemo | None = None,
    ) -> tuple[Page, int]:
        """The wanted samples in the page form, the first of duplicate series kept; ``memo``, if
        given, is filled with what the next page of the same lines needs (:meth:`PageMemo.reread`).

        One tight loop: two dict lookups a line and two appends (the line's text and value go
        straight into the page form's two vectors: no tuple per sample, no list per family); a
        family is noted only where it changes (between runs of lines). Raises
        :class:`_NotCanonical` for anything it cannot vouch for.
        """
        duplicates = 0
        seen: set[str] | None = None
        if len(set(map(_first, found))) != len(found):
            seen = set()
        known = self.known
        value_of = self.values.get
        series_out: list[str] = []
        values_out: list[float] = []
        starts: list[tuple[str, int]] = []
        current: str | None = None
        add_series = series_out.append
        add_value = values_out.append
        lines: list[str] = []
        kept = bytearray()
        add_line, add_kept = lines.append, kept.append
        for series, rest, bad in found:
            if bad:
                raise _NotCanonical
            try:  # a subscript, cheaper than a get() call; a miss is a series' first sight
                series, key = known[series]
            except KeyError:
                series, key = self._learn(series)
            add_line(series)
            if key is None:
                add_kept(0)
                continue
            if seen is not None:
                if series in seen:
                    duplicates += 1
                    add_kept(0)
                    continue
                seen.add(series)
            add_kept(1)
            if key is not current:  # keys are interned
                current = key
                starts.append((key if family_of is None else family_of.get(key, key),
                               len(series_out)))
            value = value_of(rest)
            if value is None:
                value = self._learn_value(rest)
            add_series(series)
            add_value(value)
        page = Page.from_lines(series_out, values_out, starts)
        runs = self._shared_runs(page.runs)
        if runs is not page.runs:
            page = Page(page.series, page.numbers, runs)
        if memo is not None:
            if len(runs) == len(starts):  # not regrouped: the mask follows page order
                memo.grammar, memo.lines, memo.kept = self, tuple(lines), bytes(kept)
                memo.runs, memo.duplicates = runs, duplicates
            else:
                memo.grammar = None
        return page, duplicates

    def _shared_runs(self, runs: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
        """One object for equal runs: most targets' pages have the same families with the same
        line counts, and whoever keeps a page's runs (a target's memo, the aggregator's layouts)
        then keeps a reference, not a kilobyte of tuples per target."""
        shared = self.runs_seen.get(runs)
        if shared is None:
            if len(self.runs_seen) >= _KNOWN_LIMIT:
                self.runs_seen.clear()
            shared = self.runs_seen[runs] = runs
        return shared

    def _learn(self, series: str) -> tuple[str, str | None]:
        """Check a series text met for the first time; remember it if it is canonical.

        ``known`` is bounded by generations: when it is full it becomes ``known_before`` and a new
        one starts, and a text found in ``known_before`` moves back without being checked again.
        So texts in use stay known, texts of nodes long gone are dropped, and a fleet whose
        nodes come and go never pays for re-checking every text at once (as clearing the cache
        did: ``bench/bench_parse.py``'s first-sight row shows what a page costs then).
        """
        entry = self.known_before.get(series)
        if entry is not None:
            self._remember(series, entry)
            return entry
        match = self.series.fullmatch(series)
        if match is not None:
            family = sys.intern(match[1])
            wanted = self.filters.get(family)
            # A line of a wanted family that no consumer reads is learnt as not wanted.
            key: str | None = None if wanted is not None and not wanted(series) else family
        elif "\n" in series or self.wanted_start.match(series):
            # Not canonical, or not valid: the full grammar will say. (A newline: the text ran
            # on past a line with no blank, so this may hide a wanted line.)
            raise _NotCanonical
        else:
            key = None  # another family that shares a prefix with wanted ones: not read
        entry = (series, key)
        self._remember(series, entry)
        return entry

    def _remember(self, series: str, entry: tuple[str, str | None]) -> None:
        if len(self.known) >= _KNOWN_LIMIT:
            self.known_before = self.known
            self.known = {}
        self.known[series] = entry

    def _learn_value(self, rest: str) -> float:
        """Read a value text met for the first time; remember it if it is a bare value."""
        # float() also reads "1_000", non-ASCII digits and exotic blanks, which the grammar
        # refuses; those, and tabs, timestamps and exemplars, go through the grammar's regex.
        if "_" in rest or not rest.isascii() or not rest.isprintable():
            return _tail_value(rest)
        try:
            value = float(rest)
        except ValueError:
            return _tail_value(rest)
        if len(rest) <= _CACHED_VALUE_LENGTH:
            if len(self.values) >= _KNOWN_LIMIT:
                self.values.clear()
            self.values[rest] = value
        return value


def _tail_value(rest: str) -> float:
    match = _TAIL.fullmatch(rest)
    if match is None:
        raise _NotCanonical
    return float(match[1])


def _collect_full(
    found: Sequence[tuple[str, ...]], family_of: dict[str, str] | None,
    filters: Mapping[str, SeriesFilter],
) -> tuple[Page, int]:
    """The page form of lines the full grammar read (and validated); lines a family's filter
    refuses are left out (and not counted as duplicates)."""
    seen: set[str] = set()
    grouped: dict[str, list[Sample]] = {}
    refused = 0
    for series, key, value, _ in found:
        wanted = filters.get(key) if filters else None
        if wanted is not None and not wanted(series):
            refused += 1
        elif series not in seen:
            seen.add(series)
            family = key if family_of is None else family_of.get(key, key)
            grouped.setdefault(family, []).append((series, float(value)))
    return Page.of(grouped), len(found) - refused - len(seen)


@lru_cache(maxsize=64)
def _grammar_for(
    wanted: frozenset[str], filters: frozenset[tuple[str, SeriesFilter]] = frozenset()
) -> _Grammar:
    """The grammar of a wanted set and its line filters (consumers ask once at start, so this
    is built once).

    The alternation lists longer names first, so an exact name wins over suffix stripping: with
    ``foo`` and ``foo_count`` both wanted, a ``foo_count`` line belongs to ``foo_count``.
    """
    invalid = sorted(name for name in wanted if not _NAME_RE.fullmatch(name))
    if invalid:
        raise ValueError(f"wanted families must be metric names: {invalid!r}")
    families = "|".join(map(re.escape, sorted(wanted, key=lambda name: (-len(name), name))))
    suffixes = "|".join(SUFFIXES)
    return _Grammar(rf"({families})(?:{suffixes})?+{_NAME_END}",
                    rf"(?:{families})(?:{suffixes})?+{_NAME_END}", _common_prefixes(wanted),
                    dict(filters))


_EVERY_FAMILY = _Grammar(f"({_NAME})", r"[^#\s]", None)


def _common_prefixes(names: Iterable[str], min_length: int = 4) -> tuple[str, ...]:
    """Cluster sorted names by a shared prefix of at least ``min_length`` characters; return each
    cluster's longest common prefix (a lone name is its own prefix)."""
    prefixes: list[str] = []
    for name in sorted(names):
        if prefixes:
            shared = _shared_prefix(prefixes[-1], name)
            if len(shared) >= min_length:
                prefixes[-1] = shared
                continue
        prefixes.append(name)
    return tuple(prefixes)


def _shared_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


# --- the entry point ----------------------------------------------------------------------------


def _spans(text: str, prefixes: Sequence[str]) -> list[tuple[int, int]]:
    """The parts of ``text`` that can hold lines starting with one of ``prefixes``: from the line
    of a prefix's first occurrence to the end of the line of its last (found anywhere in a line,
    so indented lines are covered), merged, in page order. Each ``(start, end)`` includes the
    newline before its first line and the one after its last, which the line regexes need."""
    spans: list[tuple[int, int]] = []
    for prefix in prefixes:
        first = text.find(prefix)
        if first >= 0:
            last = text.rfind(prefix)
            spans.append((text.rfind("\n", 0, first), text.find("\n", last) + 1))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _find(
    pattern: re.Pattern[str], text: str, spans: Sequence[tuple[int, int]]
) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for start, end in spans:
        found += pattern.findall(text, start, end)
    return found
