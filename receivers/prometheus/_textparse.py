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
* A scrape pool goes further, as Prometheus' per-target scrape cache does: each target keeps a
  memo of its last page's lines (:class:`PageMemo`), and a page whose series texts are the
  memo's (about 97 % of pages on the simulated fleet, whose nodes add a series now and then)
  skips the Python loop: the texts are compared with the memo's as one tuple, the kept lines'
  values picked by the memo's mask and read with ``float`` over them, all C-level passes. On
  the fleet's pages that took the parse from about 104 to 86 us a page, for about a kilobyte a
  target (``tests/receivers/prometheus/test_page_memo.py`` checks it reads and fails exactly
  as the whole parse does).
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
from dataclasses import dataclass
from typing import Protocol

from pipeline import EMPTY_PAGE, FamilySet, Page, ParseError, SeriesFilters

from ._grammar import _EVERY_FAMILY, PageMemo, _Grammar, _grammar_for
from ._textparse_errors import _diagnose, _line_number
from ._tokens import _NOT_SAMPLE, _SAMPLE_LINE, _TYPE_LINE

__all__ = ["PageMemo", "PageParser", "ParsedPage", "page_parser", "parse_page"]

#: Always extracted, whatever the consumers want: the counter-reset rule needs it.
PROCESS_START_TIME = "process_start_time_seconds"


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

    ``families`` is the page form (:class:`pipeline.Page`) of the wanted families' samples
    (as a mapping: each wanted family that had samples to its ``(series_text, value)`` pairs, in
    page order); ``samples`` counts the sample lines read: every sample line of the page when
    counted (``count_all``, or every family wanted), else the wanted lines read (kept or
    duplicates; lines a series filter refuses are not read);
    ``duplicates`` counts wanted series lines that repeated an earlier line's series text (the
    first one is kept); ``process_start_time`` is the value of ``process_start_time_seconds``.
    """

    families: Page
    process_start_time: float | None
    samples: int
    duplicates: int


class PageParser(Protocol):
    """Parses one page (what :func:`page_parser` returns). ``memo`` is the target's
    :class:`PageMemo`: a page whose lines are those of the target's last one is then read
    without a Python step per line (the steady state: a page repeats its series every scrape)."""

    def __call__(self, data: bytes | str, memo: PageMemo | None = None) -> ParsedPage: ...


# --- the grammar --------------------------------------------------------------------------------


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
) -> PageParser:
    """:func:`parse_page` with its arguments but the page resolved once, for a caller that
    parses page after page with the same ones (a scrape pool): looking the grammar up by its
    families and filters costs on every page otherwise."""
    if wanted is None:
        return _parse_every_family
    # (One argument without filters: the cache then keys the grammar by ``wanted`` alone.)
    grammar = (_grammar_for(wanted, frozenset(series.items())) if series
               else _grammar_for(wanted)) if wanted else None
    return functools.partial(_parse_wanted, grammar, count_all)


def _parse_every_family(data: bytes | str, memo: PageMemo | None = None) -> ParsedPage:
    """Every family (``wanted=None``): no memo, as the families come from the page's own
    ``# TYPE`` lines."""
    text = _frame(_decode(data))
    families, duplicates, samples = _EVERY_FAMILY.read(text, _families_by_type(text))
    return ParsedPage(families, _process_start_time(text), samples, duplicates)


def _parse_wanted(grammar: _Grammar | None, count_all: bool, data: bytes | str,
                  memo: PageMemo | None = None) -> ParsedPage:
    text = _frame(_decode(data))
    if grammar is not None:
        families, duplicates, _ = grammar.read(text, None, memo)
        if not families:
            # Not one wanted line: is this a metrics page at all? An HTML error page served
            # with 200 would otherwise pass as a target that is up and has no samples. A page
            # without wanted lines is rare, so reading it whole here costs little overall.
            _EVERY_FAMILY.read(text)
    else:
        families, duplicates = EMPTY_PAGE, 0
    if count_all:
        samples = _count_sample_lines(text)
    else:
        samples = len(families.series) + duplicates
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
