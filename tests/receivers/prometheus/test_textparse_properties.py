"""Property test: on random valid pages our parser reads what prometheus_client reads, keeps the
series text as written, counts every sample line, and a filtered parse is exactly the subset the
family rule selects.

Pages vary everything the format allows: family types and HELP/TYPE lines (also after the
samples), label values with escapes, braces, commas, quotes, ``#`` and non-ASCII text, NaN and
infinities, timestamps, exemplars, blanks around tokens, indented lines, comments, blank lines,
CRLF and a missing final newline. Canonical pages take the parser's fast path, the others its
full-grammar path; both are checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receivers.prometheus._textparse import PROCESS_START_TIME, parse_page
from tests.receivers.prometheus.test_textparse import (
    family_of,
    ours,
    reference,
    same_samples,
    value_key,
)

#: Bounded for CI (a few seconds): each example is a small page.
PROFILE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:"
NAME_CHARS = NAME_START + "0123456789"
LABEL_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"

_names = st.text(NAME_CHARS, min_size=0, max_size=8).flatmap(
    lambda tail: st.sampled_from(NAME_START).map(lambda head: head + tail))
# Half of them share a prefix, as aws-node's families do: wanted and unwanted families then
# share the part of the page the parser scans.
metric_names = st.one_of(_names, _names.map(lambda name: f"awscni_{name}"))
# Reserved "__" names are refused by prometheus_client; "quantile"/"le" are ordinary labels here.
label_names = st.text(LABEL_START + "0123456789", max_size=6).flatmap(
    lambda tail: st.sampled_from(LABEL_START[:-1]).map(lambda head: head + tail))
label_values = st.text(
    st.one_of(st.sampled_from('ab }{,="\\\n#é日\t'), st.characters(codec="utf-8")), max_size=8)
values = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "+Inf", "-Inf", "Inf", "nan", "1e3", ".5", "5.", "-0", "+7",
                     "1.5E-7", "0.000001"]),
)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class Line:
    """A sample line of the model: its series text exactly as rendered, and its value."""

    name: str
    series: str
    value: float


@st.composite
def label_blocks(draw: st.DrawFn, canonical: bool) -> str:
    names = draw(st.lists(label_names, max_size=3, unique=True))
    if not names and draw(st.booleans()):
        return ""
    blank = "" if canonical else draw(st.sampled_from(["", " ", "\t", "  "]))
    pairs = [f'{blank}{name}{blank}={blank}"{escape(draw(label_values))}"' for name in names]
    comma = draw(st.booleans())
    trailing = "," if pairs and comma else ""
    before = "" if canonical else draw(st.sampled_from(["", " "]))
    return f"{before}{{{','.join(pairs)}{trailing}{blank}}}"


@st.composite
def sample_lines(draw: st.DrawFn, name: str, canonical: bool) -> tuple[str, Line]:
    labels = draw(label_blocks(canonical))
    series = name + labels
    value = draw(values)
    if canonical:
        separator, indent, trailing = " ", "", ""
    else:
        separator = draw(st.sampled_from([" ", "\t", "  "])) if not labels else draw(
            st.sampled_from(["", " ", "\t "]))
        indent = draw(st.sampled_from(["", " ", "\t"]))
        trailing = draw(st.sampled_from(["", " ", "\t"]))
    tail = ""
    if draw(st.booleans()):  # milliseconds, or OpenMetrics seconds
        timestamp = draw(st.integers(0, 2**41))
        tail += f" {timestamp}" if canonical or draw(st.booleans()) else f" {timestamp / 1000}"
    if draw(st.integers(0, 4)) == 0:
        exemplar_value = draw(st.integers(0, 100))
        tail += f' # {{trace_id="{draw(st.text("abc123", max_size=6))}"}} {exemplar_value}'
    return (f"{indent}{series}{separator}{value}{tail}{trailing}",
            Line(name, series.strip(), float(value)))


@dataclass
class Page:
    text: str
    lines: list[Line]
    families: list[str]


@st.composite
def pages(draw: st.DrawFn) -> Page:
    canonical = draw(st.booleans())
    family_names = draw(st.lists(metric_names, min_size=1, max_size=5, unique=True))
    if draw(st.integers(0, 3)) == 0:
        family_names.append(PROCESS_START_TIME)
    rendered: list[str] = []
    model: list[Line] = []
    seen: set[str] = set()
    for family in family_names:
        kind = draw(st.sampled_from(["counter", "gauge", "summary", "histogram", "untyped", ""]))
        header = []
        if draw(st.booleans()):
            header.append(f"# HELP {family} Help for {family}, with # and \\\\ in it.")
        if kind:
            header.append(f"# TYPE {family} {kind}")
        type_after = bool(header) and draw(st.integers(0, 5)) == 0
        if not type_after:
            rendered += header
        suffixes = {"summary": ["", "_sum", "_count"],
                    "histogram": ["_bucket", "_sum", "_count"]}.get(kind, [""])
        for _ in range(draw(st.integers(0, 4))):
            name = family + draw(st.sampled_from(suffixes))
            text, line = draw(sample_lines(name, canonical))
            if line.series in seen or _label_key(line.series) in seen:
                continue
            seen.update({line.series, _label_key(line.series)})
            rendered.append(text)
            model.append(line)
        if type_after:
            rendered += header
        if not canonical and draw(st.booleans()):
            rendered.append(draw(st.sampled_from(["", "  ", "# a comment", "#", "# EOF"])))
    newline = "\n" if canonical else draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(rendered)
    if canonical or draw(st.booleans()):
        text += newline
    return Page(text, model, family_names)


def _label_key(series: str) -> str:
    """Two lines with the same name and labels, written differently, are one series for
    prometheus_client (and a duplicate for Prometheus); keep the model free of those."""
    from pipeline import parse_series

    name, labels = parse_series(series)
    return repr((name, sorted(labels.items())))


@PROFILE
@given(pages())
def test_random_pages_match_prometheus_client(page: Page) -> None:
    parsed = parse_page(page.text.encode(), None)
    assert ours(parsed) == reference(page.text)
    assert ours(parse_page(page.text.encode(), None)) == ours(parsed)
    assert parsed.samples == len(page.lines)
    assert parsed.duplicates == 0
    everything = [(sample, value_key(value)) for samples in parsed.families.values()
                  for sample, value in samples]
    assert sorted(everything, key=repr) == sorted(
        ((line.series, value_key(line.value)) for line in page.lines), key=repr)
    starts = [line.value for line in page.lines if line.name == PROCESS_START_TIME]
    if starts:
        assert parsed.process_start_time is not None
        assert value_key(parsed.process_start_time) == value_key(starts[-1])  # the last
    else:
        assert parsed.process_start_time is None


@PROFILE
@given(pages(), st.data())
def test_random_filtered_parse_is_the_subset(page: Page, data: st.DataObject) -> None:
    candidates = page.families + [f + s for f in page.families for s in ("_sum", "_bucket")]
    wanted = frozenset(data.draw(st.lists(st.sampled_from(candidates), max_size=4))
                       + data.draw(st.lists(metric_names, max_size=2)))
    expected: dict[str, list[tuple[str, float]]] = {}
    for line in page.lines:
        family = family_of(line.name, wanted)
        if family is not None:
            expected.setdefault(family, []).append((line.series, line.value))
    for _ in range(2):  # the second parse meets its series and values in the caches
        parsed = parse_page(page.text, wanted)
        assert same_samples(parsed.families, expected)
        assert parsed.samples == len(page.lines)
