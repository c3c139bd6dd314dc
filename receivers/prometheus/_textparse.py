"""The Prometheus text-format parser of the scrape hot path.

:func:`parse_page` turns one metrics page into the samples of the *wanted* families, keeping each
series as the raw text the target wrote (``name{labels}``): labels are parsed only when a consumer
needs them (:func:`pipeline.parse_series`, cached by series text downstream), and the series text
is the key of per-series state. This is the Python shape of Prometheus'
``model/textparse/promparse.go``: offsets into one buffer instead of label objects, and a page that
fails to parse fails that target only (:class:`pipeline.ParseError` carries the 1-based line
number and the line; the caller attaches the target).

Why not ``prometheus_client.parser.text_string_to_metric_families``: it walks every line, and
every character of every label block, in Python, and builds label dicts nobody asked for. On a
40 KB aws-node page it costs well over an order of magnitude more than the filtered parse below,
and than our unfiltered parse (``bench/bench_parse.py`` prints the figures).

How the filtered parse stays fast. CPython's ``re`` is fast only on literals and on runs of one
excluded character (``[^x]*``); every captured group, every other character class and every
Python step per line costs. So, each choice measured against its alternatives:

* No Python code runs per unwanted line. The wanted names share prefixes (``awscni_``):
  ``str.find``/``str.rfind`` of each prefix bound the part of the page that can hold wanted lines,
  and one regex scans only that part, anchored on the newline, for lines that start with a
  prefix. The bounds hold whatever order the families come in; a page that interleaves families
  only widens the scan.
* That regex validates nothing: it cuts each such line at its first space into series text and
  rest. A series text is checked against the grammar (and its family found, or the line found
  to belong to an unwanted family) the first time it is seen, then remembered, as Prometheus'
  scrape cache remembers series: pages repeat their series every scrape, so the steady state is
  a dict lookup per line, and another for the value text. Validating every line in the regex
  instead costs twice as much; checking in it that the name is wanted, a third more.
* Anything the fast path cannot vouch for (an indented or otherwise non-canonical line, a label
  value with a blank or an escape, an invalid line) sends the page to a second regex that reads
  the full grammar, and says what is wrong with a malformed line.
* Counting every sample line of the page is optional (``count_all``), and off in the receiver
  by default: it is the one step that must read the whole page, not only the wanted part, and
  it cost about a fifth of a whole scrape's CPU (HTTP, inflate, parse and aggregation together;
  ``bench/bench_cycle.py`` measures a cycle).
  When on, it is exact (blank lines, indented comments, ``#`` inside label values or HELP
  texts): one ``str.count`` of newlines and one ``findall`` of comment and blank line starts,
  both C loops. Lines minus ``#`` characters would cost less and miscount those pages; every
  other exact method tried (two-character ``str.count``, other regexes) cost more.

Grammar (the text format 0.0.4 as Prometheus' lexer reads it, plus OpenMetrics' ``# EOF`` and
exemplars): blank lines and blanks around tokens are ignored; ``#`` lines are comments (HELP and
TYPE are hints: the aggregation rules, not the page, decide counter or gauge); a sample line is
``name[{label="value",...}] value [timestamp] [# exemplar]``. Label values hold any character but
a raw newline, with ``\\\\``, ``\\"`` and ``\\n`` escapes. Values are Go floats as Prometheus reads
them (``NaN``, ``+Inf``, ``-Inf`` included; no hex, no ``_``). CRLF line endings are accepted.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter

from pipeline import FamilySet, ParseError, Sample, SeriesFilter, SeriesFilters

__all__ = ["ParsedPage", "page_parser", "parse_page"]

#: Always extracted, whatever the consumers want: the counter-reset rule needs it.
PROCESS_START_TIME = "process_start_time_seconds"

#: Line-name suffixes filed under their family: summaries and histograms (``_sum``, ``_count``,
#: ``_bucket``) and OpenMetrics counters (``_total``, ``_created``). None is a suffix of another.
SUFFIXES = ("_sum", "_count", "_bucket", "_total", "_created")

#: For an unfiltered parse, the suffixes a ``# TYPE`` line makes part of its family.
_TYPE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "histogram": ("_sum", "_count", "_bucket", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


@dataclass(slots=True)
class ParsedPage:
    """What one page held.

    ``families`` maps each wanted family that had samples to its samples, ``(series_text, value)``
    in page order; ``samples`` counts the sample lines read: every sample line of the page when
    counted (``count_all``, or every family wanted), else the wanted lines read (kept or
    duplicates; lines a series filter refuses are not read);
    ``duplicates`` counts wanted series lines that repeated an earlier line's series text (the
    first one is kept); ``process_start_time`` is the value of ``process_start_time_seconds``.
    """

    families: dict[str, list[Sample]]
    process_start_time: float | None
    samples: int
    duplicates: int


# --- the grammar --------------------------------------------------------------------------------
# Line regexes start at the newline before their line and stop before the newline after it (left
# for the next match to start at).

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_NAME_END = r"(?![a-zA-Z0-9_:])"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_FLOAT = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
# Go's strconv.ParseFloat as Prometheus' parseFloat uses it (no hex, no "_"), plus a signed NaN,
# which Python's float() also reads: every string this matches, float() reads.
_VALUE = rf"{_FLOAT}|[+-]?(?i:inf(?:inity)?|nan)"
# Label values in "unrolled loop" form (a run of plain characters, then (escape, run)*): far
# faster in sre than an alternation per character.
_LABEL_VALUE = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_LABEL = rf"{_LABEL_NAME}[ \t]*=[ \t]*{_LABEL_VALUE}"
_LABELS = rf"\{{[ \t]*(?:{_LABEL}(?:[ \t]*,[ \t]*{_LABEL})*[ \t]*,?[ \t]*)?\}}"
#: A series as client libraries write it: no blanks, no escapes in label values.
_CANONICAL_LABELS = (
    rf'\{{(?:{_LABEL_NAME}="[^"\\\n]*"(?:,{_LABEL_NAME}="[^"\\\n]*")*,?)?\}}'
)
#: What may follow a sample's value.
_VALUE_TAIL = rf"(?:[ \t]+{_FLOAT})?(?:[ \t]+#[^\n]*)?[ \t]*"
_TAIL = re.compile(rf"[ \t]*({_VALUE}){_VALUE_TAIL}")
_SAMPLE_LINE_TEMPLATE = (
    r"({name}(?:[ \t]*{labels})?)(?:(?<=\}})[ \t]*|[ \t]+)({value}){tail}(?=\n)"
)


def _full_sample(name: str) -> str:
    """A sample line's series (with ``name``, whose group captures the key), value (a group),
    optional timestamp (integer milliseconds, or OpenMetrics float seconds) and exemplar."""
    return _SAMPLE_LINE_TEMPLATE.format(name=name, labels=_LABELS, value=_VALUE, tail=_VALUE_TAIL)


_SAMPLE_LINE = re.compile(rf"[ \t]*{_full_sample(f'({_NAME})')}")
_TYPE_LINE = re.compile(rf"\n[ \t]*#[ \t]+TYPE[ \t]+({_NAME})[ \t]+([a-z]+)")
#: Starts of the lines that are not sample lines: blank lines and comments.
_NOT_SAMPLE = re.compile(r"\n[ \t]*+(?=[\n#])")
#: Bound on each of a grammar's caches of known series texts (per generation, see
#: :meth:`_Grammar._learn`) and values, about 150 bytes an entry: above the distinct wanted series
#: of a 20,000-node cluster (each node's own CIDR lines, and the lines all nodes share).
_KNOWN_LIMIT = 1 << 17
#: Value texts up to this long are cached (see :class:`_Grammar`): a few thousand at most.
_CACHED_VALUE_LENGTH = 3
_first = itemgetter(0)


class _NotCanonical(Exception):
    """The fast path cannot vouch for what it read: read the page with the full grammar."""


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

    __slots__ = ("filters", "full", "known", "known_before", "prefixes", "scan", "series",
                 "values", "wanted_start")

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

    def read(
        self, text: str, family_of: dict[str, str] | None = None
    ) -> tuple[dict[str, list[Sample]], int, int]:
        """(samples by family in page order, duplicates, lines read) of a framed page.

        ``family_of`` maps keys (metric names) to families when the keys are not families.
        "Lines read" is the count of sample lines when every family is wanted.
        """
        spans = [(0, len(text))] if self.prefixes is None else _spans(text, self.prefixes)
        found = _find(self.scan, text, spans)
        try:
            families, duplicates = self._collect(found, family_of)
        except _NotCanonical:
            found = _find(self.full, text, spans)
            if any(line[3] for line in found):
                _raise_first_bad(text, self.full)
            families, duplicates = _collect_full(found, family_of, self.filters)
        return families, duplicates, len(found)

    def _collect(
        self, found: list[tuple[str, ...]], family_of: dict[str, str] | None
    ) -> tuple[dict[str, list[Sample]], int]:
        """Samples by family, in page order, the first of duplicate series kept.

        One tight loop: two dict lookups a line, and the result dict looked up only when the
        family changes (between runs of lines). Raises :class:`_NotCanonical` for anything it
        cannot vouch for.
        """
        duplicates = 0
        seen: set[str] | None = None
        if len(set(map(_first, found))) != len(found):
            seen = set()
        known = self.known
        value_of = self.values.get
        grouped: dict[str, list[Sample]] = {}
        current: str | None = None
        samples: list[Sample] = []
        for series, rest, bad in found:
            if bad:
                raise _NotCanonical
            try:  # a subscript, cheaper than a get() call; a miss is a series' first sight
                series, key = known[series]
            except KeyError:
                series, key = self._learn(series)
            if key is None:
                continue
            if seen is not None:
                if series in seen:
                    duplicates += 1
                    continue
                seen.add(series)
            if key is not current:  # keys are interned
                current = key
                samples = grouped.setdefault(
                    key if family_of is None else family_of.get(key, key), [])
            value = value_of(rest)
            if value is None:
                value = self._learn_value(rest)
            samples.append((series, value))
        return grouped, duplicates

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
) -> tuple[dict[str, list[Sample]], int]:
    """Samples by family of lines the full grammar read (and validated); lines a family's
    filter refuses are left out (and not counted as duplicates)."""
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
    return grouped, len(found) - refused - len(seen)


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


def parse_page(
    data: bytes | str,
    wanted: FamilySet,
    *,
    count_all: bool = True,
    series: SeriesFilters | None = None,
) -> ParsedPage:
    """Parse one text-format page, keeping the samples of the ``wanted`` families (all if None).

    Every wanted line is fully validated; lines of other families are skipped unread (only
    counted, with ``count_all``), which is what makes the filter worth having, unless the page
    has no wanted line at all: then it is validated whole, so that what is not a metrics page
    (an HTML error page) fails. ``series`` filters the lines of some wanted families: each
    distinct series text is judged once, and a line refused is skipped as other families' lines
    are (its value unread); ignored when every family is wanted. Raises :class:`ParseError` at
    the first malformed wanted line (with ``wanted=None``, the first malformed line), or if the
    page is not UTF-8.
    """
    return page_parser(wanted, count_all=count_all, series=series)(data)


def page_parser(
    wanted: FamilySet, *, count_all: bool = True, series: SeriesFilters | None = None
) -> Callable[[bytes | str], ParsedPage]:
    """:func:`parse_page` with its arguments but the page resolved once, for a caller that
    parses page after page with the same ones (a scrape pool): looking the grammar up by its
    families and filters costs on every page otherwise."""
    if wanted is None:
        return _parse_every_family
    # (One argument without filters: the cache then keys the grammar by ``wanted`` alone.)
    grammar = (_grammar_for(wanted, frozenset(series.items())) if series
               else _grammar_for(wanted)) if wanted else None
    return functools.partial(_parse_wanted, grammar, count_all)


def _parse_every_family(data: bytes | str) -> ParsedPage:
    text = _frame(_decode(data))
    families, duplicates, samples = _EVERY_FAMILY.read(text, _families_by_type(text))
    return ParsedPage(families, _process_start_time(text), samples, duplicates)


def _parse_wanted(grammar: _Grammar | None, count_all: bool, data: bytes | str) -> ParsedPage:
    text = _frame(_decode(data))
    if grammar is not None:
        families, duplicates, _ = grammar.read(text)
        if not families:
            # Not one wanted line: is this a metrics page at all? An HTML error page served
            # with 200 would otherwise pass as a target that is up and has no samples. A page
            # without wanted lines is rare, so reading it whole here costs little overall.
            _EVERY_FAMILY.read(text)
    else:
        families, duplicates = {}, 0
    if count_all:
        samples = _count_sample_lines(text)
    else:
        samples = sum(map(len, families.values())) + duplicates
    return ParsedPage(families, _process_start_time(text), samples, duplicates)


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_number = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        end = data.find(b"\n", exc.start)
        line = data[start : end if end >= 0 else len(data)].decode("utf-8", "replace")
        raise ParseError("invalid UTF-8", line_number, line) from None


def _frame(text: str) -> str:
    """The page with a newline before its first line and after its last, CRLF turned into LF.

    Then every line starts after a newline, so one regex anchored on ``\\n`` finds them all (a
    literal sre scans for in a C loop, unlike ``^`` in MULTILINE mode), every line ends at one,
    and a line's number is the count of newlines up to and including the one before it.
    """
    if "\r" in text:  # memchr; pages almost never have one
        text = text.replace("\r\n", "\n")
    return f"\n{text}" if text.endswith("\n") else f"\n{text}\n"


def _count_sample_lines(text: str) -> int:
    """Lines of a framed page that are neither blank nor comments, exactly, in two C loops.

    (Lines minus ``#`` characters would take half the time, but miscount a page with blank
    lines, or a ``#`` in a label value, an exemplar or a HELP text.)
    """
    return text.count("\n") - 1 - len(_NOT_SAMPLE.findall(text))


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


def _families_by_type(text: str) -> dict[str, str]:
    """For an unfiltered parse: metric name -> family, from the page's ``# TYPE`` lines.

    A suffixed line (``foo_sum``) goes to its base family when a ``# TYPE`` line anywhere on the
    page declares the base a type with that suffix, as prometheus_client groups them; a name
    declared itself, or not suffixed, is its own family.
    """
    declared = _TYPE_LINE.findall(text)
    family_of: dict[str, str] = {}
    for name, kind in declared:
        for suffix in _TYPE_SUFFIXES.get(kind, ()):
            family_of.setdefault(name + suffix, name)
    for name, _ in declared:
        family_of[name] = name
    return family_of


# --- process start time, errors -----------------------------------------------------------------


def _process_start_time(text: str) -> float | None:
    """The value of the ``process_start_time_seconds`` sample line (the last, should a page have
    several), always read and validated: the counter-reset rule depends on it.

    Found with ``str.rfind`` of the long, rare name, which skips fast, from the end, where client
    libraries write ``process_*`` families.
    """
    end = len(text)
    while (at := text.rfind(PROCESS_START_TIME, 0, end)) >= 0:
        line_start = text.rfind("\n", 0, at) + 1
        if not text[line_start:at].strip(" \t") and not _is_name_char(
            text[at + len(PROCESS_START_TIME)]
        ):
            match = _SAMPLE_LINE.match(text, line_start)
            if match is None:
                line = text[line_start : text.find("\n", at)]
                raise ParseError(_diagnose(line.strip(" \t")), _line_number(text, line_start),
                                 line)
            return float(match[3])
        end = at
    return None


def _is_name_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "_:")


def _line_number(text: str, line_start: int) -> int:
    """1-based number of the line starting at ``line_start`` of a framed page."""
    return text.count("\n", 0, line_start)


def _raise_first_bad(text: str, pattern: re.Pattern[str]) -> None:
    """Find the first line ``pattern`` captures as bad, this time with its position, and raise a
    ParseError that says what is wrong with it."""
    for match in pattern.finditer(text):
        bad = match[4]
        if bad:
            line_start = match.start() + 1
            line = text[line_start : text.find("\n", line_start)]
            raise ParseError(_diagnose(bad), _line_number(text, line_start), line)
    raise AssertionError("no bad line on the second pass")  # pragma: no cover


# --- diagnosis of a malformed line (slow path, only on error) -----------------------------------

_NAME_RE = re.compile(_NAME)
_LABEL_NAME_RE = re.compile(rf"{_LABEL_NAME}\Z")
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE)
_VALUE_RE = re.compile(rf"(?:{_VALUE})\Z")
_FLOAT_RE = re.compile(rf"{_FLOAT}\Z")
_LABEL_NAME_TOKEN = re.compile(r"[^=,}\s]*")


def _diagnose(line: str) -> str:
    """Say what is wrong with a sample line the grammar refused (leading blanks removed)."""
    name = _NAME_RE.match(line)
    if name is None:
        return "invalid metric name"
    at = _skip_blanks(line, name.end())
    if line.startswith("{", at):
        problem, at = _diagnose_labels(line, at + 1)
        if problem:
            return problem
    elif at == name.end() and at < len(line):
        return f"invalid character {line[at]!r} in metric name"
    tokens = line[at:].split()
    if not tokens or tokens[0].startswith("#"):
        return "missing value"
    if not _VALUE_RE.match(tokens[0]):
        return f"invalid value {tokens[0]!r}"
    if len(tokens) > 1 and not tokens[1].startswith("#"):
        if not _FLOAT_RE.match(tokens[1]):
            return f"invalid timestamp {tokens[1]!r}"
        if len(tokens) > 2 and not tokens[2].startswith("#"):
            return f"unexpected text after timestamp: {tokens[2]!r}"
    return "invalid sample line"


def _diagnose_labels(line: str, at: int) -> tuple[str, int]:
    """Walk a label block from just after its ``{``; return (problem or "", index after ``}``)."""
    while True:
        at = _skip_blanks(line, at)
        if at >= len(line):
            return "unterminated label block", at
        if line[at] == "}":
            return "", at + 1
        token = _LABEL_NAME_TOKEN.match(line, at)
        label = token.group() if token else ""
        if not _LABEL_NAME_RE.match(label):
            return f"invalid label name {label!r}", at
        at = _skip_blanks(line, at + len(label))
        if not line.startswith("=", at):
            return f"expected '=' after label name {label!r}", at
        at = _skip_blanks(line, at + 1)
        if not line.startswith('"', at):
            return f"value of label {label!r} is not quoted", at
        value = _LABEL_VALUE_RE.match(line, at)
        if value is None:
            return f"unterminated value of label {label!r}", at
        at = _skip_blanks(line, value.end())
        if line.startswith(",", at):
            at += 1
        elif not line.startswith("}", at):
            if at >= len(line):
                return "unterminated label block", at
            return f"expected ',' or '}}' after label {label!r}", at


def _skip_blanks(line: str, at: int) -> int:
    while at < len(line) and line[at] in " \t":
        at += 1
    return at
