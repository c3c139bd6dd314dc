"""The text parser against prometheus_client's, on real aws-node pages and generated ones, plus
every edge case the exposition format allows and every malformed line it must refuse."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import ParseError, Sample, parse_series
from processors.cni_aggregate._rules import DEFAULT_RULES
from processors.cni_aggregate._wanted import wanted_families
from receivers.prometheus import _grammar
from receivers.prometheus._grammar import SUFFIXES
from receivers.prometheus._textparse import ParsedPage, parse_page
from tests.support.fixtures import AWS_NODE_PAGES

FIXTURES = AWS_NODE_PAGES
PAGES = sorted(FIXTURES.glob("*.data"))

#: The source families of the aggregation rules (docs/aggregation.md's default rule table).
AWSCNI = wanted_families(DEFAULT_RULES)

# --- comparison helpers (shared with test_textparse_properties.py) --------------------------------

Point = tuple[str, tuple[tuple[str, str], ...], object]


def value_key(value: float) -> object:
    """A value that compares equal to itself, NaN included."""
    return "NaN" if math.isnan(value) else float(value)


def reference(text: str) -> dict[str, list[Point]]:
    """prometheus_client's samples, by sample name, in page order.

    Names are compared without a ``_total`` suffix: prometheus_client renames the samples of a
    ``# TYPE x counter`` family ``x_total``, whatever the page wrote.
    """
    points: dict[str, list[Point]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            labels = tuple(sorted(sample.labels.items()))
            points.setdefault(name, []).append((name, labels, value_key(sample.value)))
    return points


def ours(page: ParsedPage) -> dict[str, list[Point]]:
    """Our samples, labels parsed with pipeline.parse_series, by sample name, in page order."""
    points: dict[str, list[Point]] = {}
    for samples in page.families.values():
        for series, value in samples:
            name, labels = parse_series(series)
            name = name.removesuffix("_total")
            points.setdefault(name, []).append((name, tuple(sorted(labels.items())),
                                                value_key(value)))
    return points


def family_of(name: str, wanted: Iterable[str]) -> str | None:
    """The rule of the brief: the name itself if wanted, else the name less a suffix if that is
    wanted."""
    if name in wanted:
        return name
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in wanted:
            return name[: -len(suffix)]
    return None


def in_page_order(page: ParsedPage, text: str) -> list[Sample]:
    """All samples of an unfiltered parse, in the order of their lines in ``text``."""
    order: dict[str, int] = {}
    for index, line in enumerate(text.splitlines()):
        line = line.strip()
        if line and not line.startswith("#"):
            order.setdefault(series_text(line), index)
    everything = [sample for samples in page.families.values() for sample in samples]
    return sorted(everything, key=lambda sample: order[sample[0]])


def series_text(line: str) -> str:
    """The series part of a sample line: the name, and the label block if there is one."""
    name = re.match(r"[^\s{]+[ \t]*", line)
    assert name is not None
    if not line.startswith("{", name.end()):
        return line[: name.end()].rstrip()
    in_quotes = escaped = False
    for index in range(name.end(), len(line)):
        char = line[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "}" and not in_quotes:
            return line[: index + 1]
    raise AssertionError(f"no label block end in {line!r}")


def expected_filtered(everything: list[Sample], wanted: frozenset[str]) -> dict[str, list[Sample]]:
    families: dict[str, list[Sample]] = {}
    for series, value in everything:
        family = family_of(parse_series(series)[0], wanted)
        if family is not None:
            families.setdefault(family, []).append((series, value))
    return families


def same_samples(a: Mapping[str, list[Sample]], b: Mapping[str, list[Sample]]) -> bool:
    def keyed(families: Mapping[str, list[Sample]]) -> dict[str, list[tuple[str, object]]]:
        return {name: [(series, value_key(value)) for series, value in samples]
                for name, samples in families.items()}
    return keyed(a) == keyed(b)


def check_against_reference(text: str) -> ParsedPage:
    """Unfiltered parse equals prometheus_client's; the page's sample count is its count."""
    page = parse_page(text.encode(), None)
    assert ours(page) == reference(text)
    assert page.samples == sum(map(len, reference(text).values()))
    return page


def check_filter_is_subset(text: str, wanted: frozenset[str]) -> None:
    everything = in_page_order(parse_page(text, None), text)
    filtered = parse_page(text, wanted)
    assert same_samples(filtered.families, expected_filtered(everything, wanted))
    assert filtered.samples == parse_page(text, None).samples


# --- real aws-node pages ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_fixture_pages_match_prometheus_client(path: Path) -> None:
    text = path.read_text()
    page = check_against_reference(text)
    assert page.process_start_time == pytest.approx(1.5550271644e09)
    assert page.duplicates == 0
    assert len(PAGES) == 2


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_fixture_pages_filtered_on_the_aggregator_families(path: Path) -> None:
    text = path.read_text()
    check_filter_is_subset(text, AWSCNI)
    page = parse_page(path.read_bytes(), AWSCNI)
    assert set(page.families) <= AWSCNI
    assert page.process_start_time == pytest.approx(1.5550271644e09)
    latency = page.families["awscni_aws_api_latency_ms"]
    assert ('awscni_aws_api_latency_ms_sum{api="AssignPrivateIpAddresses",error="false"}',
            2938.0) in latency
    assert ('awscni_aws_api_latency_ms_count{api="GetMetadata",error="false"}',
            82716.0) in latency
    p99 = 'awscni_aws_api_latency_ms{api="GetMetadata",error="false",quantile="0.99"}'
    assert [value for series, value in latency if series == p99] == [1.0]
    assert math.isnan(latency[0][1])
    assert page.families["awscni_add_ip_req_count"] == [("awscni_add_ip_req_count", 100.0)]


def test_fixture_page_series_text_is_stable_across_scrapes() -> None:
    data = PAGES[0].read_bytes()
    first = parse_page(data, AWSCNI)
    again = parse_page(data.replace(b"awscni_add_ip_req_count 100", b"awscni_add_ip_req_count 7"),
                       AWSCNI)
    assert [s for f in first.families.values() for s, _ in f] == \
           [s for f in again.families.values() for s, _ in f]
    assert again.families["awscni_add_ip_req_count"] == [("awscni_add_ip_req_count", 7.0)]


# --- pages written by prometheus_client ---------------------------------------------------------


def client_page() -> str:
    registry = CollectorRegistry()
    requests = Counter("awscni_ec2api_req_count", "EC2 calls", ["fn"], registry=registry)
    requests.labels("DescribeInstances").inc(3)
    requests.labels('quote " back \\ slash\nnewline').inc()
    requests.labels("braces } and, commas = # and spaces").inc(2)
    requests.labels("unicode é 日本").inc()
    gauge = Gauge("awscni_assigned_ip_addresses", "IPs", registry=registry)
    gauge.set(12.5)
    nan = Gauge("awscni_eni_max", "ENIs", ["node"], registry=registry)
    nan.labels("a").set(float("nan"))
    nan.labels("b").set(float("inf"))
    nan.labels("c").set(float("-inf"))
    summary = Summary("awscni_aws_api_latency_ms", "latency", ["api", "error"], registry=registry)
    summary.labels("CreateTags", "false").observe(12)
    summary.labels("CreateTags", "true").observe(3.25)
    histogram = Histogram("request_seconds", "latency", ["code"], registry=registry,
                          buckets=(0.005, 0.1, 1.0))
    histogram.labels("200").observe(0.05)
    histogram.labels("500").observe(7)
    Info("build", "build info", registry=registry).info({"version": "1.2.3", "commit": "abc"})
    Gauge("process_start_time_seconds", "start", registry=registry).set(1700000000.25)
    return generate_latest(registry).decode()


def test_prometheus_client_page_matches_prometheus_client() -> None:
    text = client_page()
    page = check_against_reference(text)
    assert page.process_start_time == 1700000000.25
    families = page.families
    # An unfiltered parse files lines under the family a # TYPE line names: the exact name if
    # declared (prometheus_client declares counter_total, and _created as gauges of their own),
    # else the declared base of a summary or histogram line.
    assert {parse_series(s)[0] for s, _ in families["awscni_ec2api_req_count_total"]} == {
        "awscni_ec2api_req_count_total"}
    assert {parse_series(s)[0] for s, _ in families["awscni_aws_api_latency_ms"]} == {
        "awscni_aws_api_latency_ms_sum", "awscni_aws_api_latency_ms_count"}
    assert {parse_series(s)[0] for s, _ in families["request_seconds"]} == {
        "request_seconds_bucket", "request_seconds_sum", "request_seconds_count"}
    assert "request_seconds_created" in families
    # A filtered parse files them under the wanted family, whatever the TYPE lines say.
    filtered = parse_page(text, frozenset({"awscni_ec2api_req_count"})).families
    assert {parse_series(s)[0] for s, _ in filtered["awscni_ec2api_req_count"]} == {
        "awscni_ec2api_req_count_total", "awscni_ec2api_req_count_created"}
    values = dict(families["awscni_eni_max"])
    assert math.isnan(values['awscni_eni_max{node="a"}'])
    assert values['awscni_eni_max{node="b"}'] == math.inf
    assert values['awscni_eni_max{node="c"}'] == -math.inf


def test_prometheus_client_page_escapes_survive_in_the_series_text() -> None:
    page = parse_page(client_page(), frozenset({"awscni_ec2api_req_count"}))
    labels = [parse_series(s)[1] for s, _ in page.families["awscni_ec2api_req_count"]]
    assert {"fn": 'quote " back \\ slash\nnewline'} in labels
    assert {"fn": "braces } and, commas = # and spaces"} in labels
    assert {"fn": "unicode é 日本"} in labels


@pytest.mark.parametrize("wanted", [
    AWSCNI,
    frozenset({"request_seconds"}),
    frozenset({"awscni_aws_api_latency_ms", "request_seconds_bucket", "build_info"}),
    frozenset({"awscni_ec2api_req_count_total", "awscni_ec2api_req_count"}),
    frozenset({"process_start_time_seconds", "nothing_here"}),
    frozenset(),
])
def test_prometheus_client_page_filtered_is_the_subset(wanted: frozenset[str]) -> None:
    check_filter_is_subset(client_page(), wanted)


# --- edge cases ---------------------------------------------------------------------------------

EDGE_PAGE = """\
# A free comment, then HELP and TYPE
# HELP awscni_eni_max The maximum number of ENIs \\ that can be attached
# TYPE awscni_eni_max gauge
awscni_eni_max 3

awscni_ip_max{node="a b"}\t15  1700000000000
   awscni_ip_max { node = "c}d" , zone="x\\"y" , }  16
awscni_total_ip_addresses{reason="multi\\nline",path="C:\\\\"} +Inf
awscni_assigned_ip_addresses -Inf 12
awscni_eni_allocated nan
awscni_del_ip_req_count_total{reason="PodDeleted"} 106 # {trace_id="abc"} 1.0 1700000000.5
awscni_reconcile_count{} 1.5e+3 # {span_id="x y"} 7
# TYPE awscni_eni_max gauge
awscni_ipamd_error_count 0x10z
go_threads{a=b} broken
# EOF
"""


def test_edge_page_values_timestamps_whitespace_and_exemplars() -> None:
    wanted = AWSCNI - {"awscni_ipamd_error_count"}
    page = parse_page(EDGE_PAGE, wanted)
    assert same_samples(page.families, {
        "awscni_eni_max": [("awscni_eni_max", 3.0)],
        "awscni_ip_max": [('awscni_ip_max{node="a b"}', 15.0),
                          ('awscni_ip_max { node = "c}d" , zone="x\\"y" , }', 16.0)],
        "awscni_total_ip_addresses": [
            ('awscni_total_ip_addresses{reason="multi\\nline",path="C:\\\\"}', math.inf)],
        "awscni_assigned_ip_addresses": [("awscni_assigned_ip_addresses", -math.inf)],
        "awscni_eni_allocated": [("awscni_eni_allocated", math.nan)],
        "awscni_del_ip_req_count": [('awscni_del_ip_req_count_total{reason="PodDeleted"}', 106.0)],
        "awscni_reconcile_count": [("awscni_reconcile_count{}", 1500.0)],
    })
    assert page.samples == 10
    assert parse_series('awscni_ip_max { node = "c}d" , zone="x\\"y" , }')[1] == {
        "node": "c}d", "zone": 'x"y'}
    assert parse_series('awscni_total_ip_addresses{reason="multi\\nline",path="C:\\\\"}')[1] == {
        "reason": "multi\nline", "path": "C:\\"}


def test_values_as_go_and_python_read_them() -> None:
    values = ["0", "-0", "+7", "1e3", "1E-3", ".5", "5.", "007", "Inf", "+inf", "-Infinity",
              "NaN", "nan", "-NaN", "1.5550271644e+09"]
    text = "".join(f'awscni_eni_max{{i="{i}"}} {value}\n' for i, value in enumerate(values))
    for page in (parse_page(text, AWSCNI), parse_page(text.replace("{", " {"), AWSCNI)):
        got = [value for _, value in page.families["awscni_eni_max"]]
        assert [value_key(v) for v in got] == [value_key(float(v)) for v in values]


def test_crlf_line_endings_and_no_final_newline() -> None:
    text = "# TYPE awscni_eni_max gauge\r\nawscni_eni_max{a=\"1\"} 3\r\n\r\nawscni_ip_max 4"
    page = parse_page(text.encode(), AWSCNI)
    assert page.families == {"awscni_eni_max": [('awscni_eni_max{a="1"}', 3.0)],
                             "awscni_ip_max": [("awscni_ip_max", 4.0)]}
    assert page.samples == 2
    assert parse_page(text.replace("\r\n", "\n"), None).families == parse_page(text, None).families


def test_exact_name_wins_over_suffix_stripping() -> None:
    text = "foo 1\nfoo_count 2\nfoo_sum 3\nfoo_count_sum 4\nfoo_summary 5\nfoo_bucket{le=\"1\"} 6\n"
    page = parse_page(text, frozenset({"foo", "foo_count"}))
    assert page.families == {
        "foo": [("foo", 1.0), ("foo_sum", 3.0), ('foo_bucket{le="1"}', 6.0)],
        "foo_count": [("foo_count", 2.0), ("foo_count_sum", 4.0)],
    }
    assert parse_page(text, frozenset({"foo"})).families["foo"] == [
        ("foo", 1.0), ("foo_count", 2.0), ("foo_sum", 3.0), ('foo_bucket{le="1"}', 6.0)]


def test_names_sharing_a_prefix_with_a_wanted_family_are_not_taken() -> None:
    text = "awscni_eni_maxed 1\nawscni_eni_max_total 2\nawscni_eni_max:ratio 3\nawscni_eni_max 4\n"
    page = parse_page(text, frozenset({"awscni_eni_max"}))
    assert page.families == {"awscni_eni_max": [("awscni_eni_max_total", 2.0),
                                                ("awscni_eni_max", 4.0)]}


def test_other_families_sharing_the_prefix_are_skipped_unread() -> None:
    text = ("awscni_build_info{version=broken 1\n"       # malformed, but not wanted
            "awscni_warm_target\n"                        # no value, runs into the next line
            "awscni_eni_max 3\n"
            "awscni_warm_target{a=\"x y\"} 4\n")
    for _ in range(2):  # the second time, from the series cache
        page = parse_page(text, AWSCNI)
        assert page.families == {"awscni_eni_max": [("awscni_eni_max", 3.0)]}
        assert page.samples == 4
    with pytest.raises(ParseError) as raised:
        parse_page(text, None)
    assert raised.value.line_number == 1


def test_families_out_of_order_are_still_found_in_page_order() -> None:
    text = ("awscni_eni_max{n=\"1\"} 1\n" + "go_x 1\n" * 200 + "awscni_ip_max 2\n"
            + "go_y 1\n" * 200 + "awscni_eni_max{n=\"2\"} 3\n    awscni_eni_max{n=\"3\"} 4\n")
    page = parse_page(text, AWSCNI)
    assert page.families == {
        "awscni_eni_max": [('awscni_eni_max{n="1"}', 1.0), ('awscni_eni_max{n="2"}', 3.0),
                           ('awscni_eni_max{n="3"}', 4.0)],
        "awscni_ip_max": [("awscni_ip_max", 2.0)],
    }
    assert page.samples == 404


def test_wanted_names_without_a_common_prefix() -> None:
    text = "b_metric 1\nzz 2\na_metric 3\nup 4\nb_metric_sum 5\n"
    page = parse_page(text, frozenset({"a_metric", "b_metric", "up"}))
    assert page.families == {"b_metric": [("b_metric", 1.0), ("b_metric_sum", 5.0)],
                             "a_metric": [("a_metric", 3.0)], "up": [("up", 4.0)]}


def test_duplicate_series_first_kept_and_counted() -> None:
    text = ('awscni_eni_max{a="1"} 1\nawscni_eni_max{a="2"} 2\nawscni_eni_max{a="1"} 9\n'
            "awscni_ip_max 3\nawscni_ip_max 4\ngo_x 1\ngo_x 1\n")
    page = parse_page(text, AWSCNI)
    assert page.families == {"awscni_eni_max": [('awscni_eni_max{a="1"}', 1.0),
                                                ('awscni_eni_max{a="2"}', 2.0)],
                             "awscni_ip_max": [("awscni_ip_max", 3.0)]}
    assert page.duplicates == 2
    assert page.samples == 7
    assert parse_page(text, None).duplicates == 3


def test_duplicates_also_counted_on_the_slow_path() -> None:
    text = 'awscni_eni_max{a="\\\\"} 1\nawscni_eni_max{a="\\\\"} 2\n'
    page = parse_page(text, AWSCNI)
    assert page.families == {"awscni_eni_max": [('awscni_eni_max{a="\\\\"}', 1.0)]}
    assert page.duplicates == 1


def test_process_start_time_is_always_extracted() -> None:
    text = ("# HELP process_start_time_seconds Start time process_start_time_seconds 5\n"
            "# TYPE process_start_time_seconds gauge\n"
            'other{label="process_start_time_seconds 9"} 1\n'
            "process_start_time_seconds_total 2\n"
            "  process_start_time_seconds 1.7e9\n")
    page = parse_page(text, frozenset({"awscni_eni_max"}))
    assert page.process_start_time == 1.7e9
    assert page.families == {}
    assert parse_page(text, frozenset({"process_start_time_seconds"})).families == {
        "process_start_time_seconds": [("process_start_time_seconds_total", 2.0),
                                       ("process_start_time_seconds", 1.7e9)]}
    assert parse_page("awscni_eni_max 1\n", AWSCNI).process_start_time is None


@pytest.mark.parametrize("text", ["", "\n", "# only a comment", "\n\n  \n# HELP x y\n"])
def test_pages_without_samples(text: str) -> None:
    for wanted in (None, AWSCNI, frozenset()):
        page = parse_page(text, wanted)
        assert page == ParsedPage({}, None, 0, 0)


def test_wanted_families_must_be_metric_names() -> None:
    with pytest.raises(ValueError, match="metric names"):
        parse_page("a 1\n", frozenset({"a", "", "not-a-name"}))


def test_empty_wanted_set_still_counts_samples() -> None:
    page = parse_page(PAGES[0].read_bytes(), frozenset())
    assert page.families == {}
    assert page.samples == check_against_reference(PAGES[0].read_text()).samples
    assert page.process_start_time == pytest.approx(1.5550271644e09)


def test_sample_count_ignores_blank_lines_and_comments_anywhere() -> None:
    text = ("\n\n  # indented comment\n\t\nm1 1\n# HELP m2 a # in help\n"
            'm2{a="#"} 2 # {t="1"} 1\n   \nm3 3\n#\n')
    assert parse_page(text, frozenset()).samples == 3
    assert parse_page(text, None).samples == 3


def test_without_count_all_only_wanted_lines_are_counted() -> None:
    text = ("# TYPE awscni_eni_max gauge\nawscni_eni_max 1\nawscni_eni_max 2\n"
            "awscni_ip_max 7\ngo_threads 9\ngo_goroutines 3\n")
    page = parse_page(text, frozenset({"awscni_eni_max"}), count_all=False)
    assert page.families == {"awscni_eni_max": [("awscni_eni_max", 1.0)]}
    assert (page.samples, page.duplicates) == (2, 1)  # the kept line and its duplicate
    assert parse_page(text, frozenset({"awscni_eni_max"})).samples == 5
    assert parse_page(text, frozenset(), count_all=False).samples == 0
    assert parse_page(text, None, count_all=False).samples == 5  # every family is read


def test_series_filters_skip_refused_lines_on_both_paths() -> None:
    judged: list[str] = []

    def p99(series: str) -> bool:
        judged.append(series)
        return 'quantile="0.99"' in series

    wanted, filters = frozenset({"lat"}), {"lat": p99}
    text = ('lat{q="a",quantile="0.5"} 1\nlat{q="a",quantile="0.99"} 2\nlat_sum{q="a"} 3\n'
            'lat{q="a",quantile="0.5"} 4\nother 5\n')
    page = parse_page(text, wanted, series=filters, count_all=False)
    assert page.families == {"lat": [('lat{q="a",quantile="0.99"}', 2.0)]}
    assert (page.samples, page.duplicates) == (1, 0)  # a refused line is no duplicate either
    parse_page(text, wanted, series=filters)
    assert sorted(judged) == sorted(set(judged)) and len(judged) == 3  # once per series text
    assert len(parse_page(text, wanted).families["lat"]) == 3  # unfiltered: 0.5, 0.99, _sum
    # An escape sends the page to the full grammar, which filters the same way.
    slow = text + 'lat{q="b\\\\",quantile="0.99"} 6\nlat{q="b\\\\",quantile="0.5"} 7\n'
    page = parse_page(slow, wanted, series=filters)
    assert page.families == {"lat": [('lat{q="a",quantile="0.99"}', 2.0),
                                      ('lat{q="b\\\\",quantile="0.99"}', 6.0)]}
    assert page.duplicates == 0


def test_a_page_without_wanted_lines_is_validated_whole() -> None:
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>\n"
    with pytest.raises(ParseError) as raised:
        parse_page(html, AWSCNI, count_all=False)
    assert raised.value.line_number == 1
    other = parse_page("# TYPE go_threads gauge\ngo_threads 7\n", AWSCNI, count_all=False)
    assert other.families == {} and other.samples == 0  # a metrics page, just not ours
    assert parse_page("", AWSCNI).families == {}  # an empty page is a valid, empty page


def test_unwanted_lines_are_not_validated_but_wanted_ones_are() -> None:
    text = "go_threads{broken 1\nnot a metric line at all\nawscni_eni_max 1\n"
    assert parse_page(text, AWSCNI).families == {"awscni_eni_max": [("awscni_eni_max", 1.0)]}
    with pytest.raises(ParseError) as raised:
        parse_page(text, None)
    assert raised.value.line_number == 1


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_full_grammar_reads_what_the_fast_path_reads(path: Path) -> None:
    """A backslash in one series sends the whole page to the full grammar: same samples."""
    text = path.read_text()
    fast = parse_page(text, AWSCNI)
    full = parse_page(text + 'awscni_eni_max{path="C:\\\\"} 9\n', AWSCNI)
    read = dict(full.families.items())
    assert read["awscni_eni_max"].pop() == ('awscni_eni_max{path="C:\\\\"}', 9.0)
    assert same_samples(read, dict(fast.families.items()))
    assert (full.samples, full.process_start_time) == (fast.samples + 1, fast.process_start_time)


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_aws_node_pages_stay_on_the_fast_path(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a client library writes never needs the (twice slower) full grammar."""

    def refuse(*args: object) -> None:
        raise AssertionError("the full grammar read a canonical page")

    monkeypatch.setattr(_grammar, "_collect_full", refuse)
    for wanted in (AWSCNI, None, frozenset({"go_memstats_alloc_bytes", "go_gc_duration_seconds"})):
        assert parse_page(path.read_bytes(), wanted).families


def test_known_series_are_remembered_but_values_always_checked() -> None:
    grammar = _grammar._grammar_for(frozenset({"awscni_eni_max"}))
    parse_page('awscni_eni_max{a="1"} 1\n', frozenset({"awscni_eni_max"}))
    assert 'awscni_eni_max{a="1"}' in grammar.known
    with pytest.raises(ParseError, match="invalid value 'x'"):
        parse_page('awscni_eni_max{a="1"} x\n', frozenset({"awscni_eni_max"}))
    with pytest.raises(ParseError, match="invalid label name"):
        parse_page('awscni_eni_max{a-b="1"} 1\n', frozenset({"awscni_eni_max"}))
    assert 'awscni_eni_max{a-b="1"}' not in grammar.known
    # The same text object is handed out for a known series on every page.
    first = parse_page('awscni_eni_max{a="1"} 1\n', frozenset({"awscni_eni_max"}))
    again = parse_page('awscni_eni_max{a="1"} 2\n', frozenset({"awscni_eni_max"}))
    assert first.families["awscni_eni_max"][0][0] is again.families["awscni_eni_max"][0][0]


def test_known_series_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_grammar, "_KNOWN_LIMIT", 10)
    wanted = frozenset({"bounded_metric"})
    for page in range(5):
        text = "".join(f'bounded_metric{{i="{page}-{i}"}} {i}\n' for i in range(7))
        parsed = parse_page(text, wanted)
        assert [value for _, value in parsed.families["bounded_metric"]] == list(range(7))
        assert len(_grammar._grammar_for(wanted).known) <= 10


def test_texts_in_use_survive_the_cache_turning_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_grammar, "_KNOWN_LIMIT", 10)
    checked: list[str] = []

    def every_line(series: str) -> bool:
        checked.append(series)  # called only when a text is checked, not when it is known
        return True

    wanted, filters = frozenset({"churn_metric"}), {"churn_metric": every_line}

    def page(node: str) -> str:
        return "".join(f'churn_metric{{node="{node}",i="{i}"}} {i}\n' for i in range(7))

    for node in ("a", "b"):  # 14 texts: the cache (10) turns over once
        parse_page(page(node), wanted, series=filters)
    assert len(checked) == 14
    again = parse_page(page("a"), wanted, series=filters)
    assert len(checked) == 14  # a's texts came back from the previous generation unchecked
    assert [value for _, value in again.families["churn_metric"]] == list(range(7))
    grammar = _grammar._grammar_for(wanted, frozenset(filters.items()))
    assert len(grammar.known) <= 10 and len(grammar.known_before) <= 10


def test_str_and_bytes_input_agree() -> None:
    text = client_page()
    assert same_samples(parse_page(text, None).families,
                        parse_page(text.encode(), None).families)


# --- malformed lines ----------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "message"), [
    ("awscni_eni_max abc", "invalid value 'abc'"),
    ("awscni_eni_max 1_000", "invalid value '1_000'"),
    ("awscni_eni_max 0x10", "invalid value '0x10'"),
    ("awscni_eni_max NaNa", "invalid value 'NaNa'"),
    ("awscni_eni_max ١", "invalid value '١'"),
    ("awscni_eni_max 1e", "invalid value '1e'"),
    ("awscni_eni_max", "missing value"),
    ("awscni_eni_max{a=\"1\"}", "missing value"),
    ("awscni_eni_max{} # {a=\"1\"} 1", "missing value"),
    ("awscni_eni_max{a=\"1\"", "unterminated label block"),
    ("awscni_eni_max{a=\"1\" 5", "expected ',' or '}' after label 'a'"),
    ("awscni_eni_max{a=\"1\",", "unterminated label block"),
    ("awscni_eni_max{a=\"1}", "unterminated value of label 'a'"),
    ("awscni_eni_max{a=\"1\\\"} 2", "unterminated value of label 'a'"),
    ("awscni_eni_max{1a=\"1\"} 2", "invalid label name '1a'"),
    ("awscni_eni_max{a-b=\"1\"} 2", "invalid label name 'a-b'"),
    ("awscni_eni_max{a=1} 2", "value of label 'a' is not quoted"),
    ("awscni_eni_max{a} 2", "expected '=' after label name 'a'"),
    ("awscni_eni_max{a=\"1\" b=\"2\"} 2", "expected ',' or '}' after label 'a'"),
    ("awscni_eni_max 1 12ab", "invalid timestamp '12ab'"),
    ("awscni_eni_max 1 12 13", "unexpected text after timestamp: '13'"),
    ("awscni_eni_max-2 1", "invalid character '-' in metric name"),
])
def test_malformed_wanted_line(line: str, message: str) -> None:
    text = f"# HELP awscni_eni_max x\nawscni_ip_max 1\n{line}\nawscni_ip_max 2\n"
    for wanted in (AWSCNI, None):
        with pytest.raises(ParseError) as raised:
            parse_page(text.encode(), wanted)
        error = raised.value
        assert (error.message, error.line_number, error.line) == (message, 3, line)
        assert "line 3: " in str(error)
        assert str(error).endswith(repr(line))
        assert str(error.for_target("10.0.0.1:61678")).startswith("target 10.0.0.1:61678: parse:")


@pytest.mark.parametrize("line", ["{a=\"1\"} 2", "3 awscni_eni_max", "\"quoted\" 1", "é 1"])
def test_malformed_names_fail_an_unfiltered_parse_only(line: str) -> None:
    text = f"awscni_ip_max 1\n\n{line}\n"
    assert parse_page(text, AWSCNI).families == {"awscni_ip_max": [("awscni_ip_max", 1.0)]}
    with pytest.raises(ParseError) as raised:
        parse_page(text, None)
    assert (raised.value.message, raised.value.line_number) == ("invalid metric name", 3)


def test_first_malformed_line_is_reported_even_off_the_canonical_path() -> None:
    text = ('awscni_ip_max{path="C:\\\\"} 1\n'  # a backslash: the full grammar reads the page
            "awscni_ip_max  {a=\"1\"}  2\n"
            "   awscni_eni_max{a=\"1\"} two\n"
            "awscni_eni_max{a=\"1\"} three\n")
    with pytest.raises(ParseError) as raised:
        parse_page(text, AWSCNI)
    assert (raised.value.line_number, raised.value.message) == (3, "invalid value 'two'")
    assert raised.value.line == "   awscni_eni_max{a=\"1\"} two"


def test_label_value_running_past_its_line_is_refused() -> None:
    text = 'awscni_eni_max{a="x\n",b="y"} 1\nawscni_ip_max 2\n'
    with pytest.raises(ParseError) as raised:
        parse_page(text, AWSCNI)
    assert (raised.value.line_number, raised.value.message) == (
        1, "unterminated value of label 'a'")


def test_malformed_process_start_time_fails_even_when_not_wanted() -> None:
    text = "awscni_eni_max 1\nprocess_start_time_seconds soon\n"
    with pytest.raises(ParseError) as raised:
        parse_page(text, AWSCNI)
    assert (raised.value.line_number, raised.value.message) == (2, "invalid value 'soon'")


def test_invalid_utf8_names_its_line() -> None:
    data = b"awscni_eni_max 1\nawscni_ip_max{a=\"\xff\"} 2\n"
    with pytest.raises(ParseError) as raised:
        parse_page(data, AWSCNI)
    assert (raised.value.line_number, raised.value.message) == (2, "invalid UTF-8")
    assert raised.value.line == 'awscni_ip_max{a="\ufffd"} 2'
