"""A target's page memo (``PageMemo``): a page with the lines of the target's last one is read
without a Python step per line. It must read exactly what the whole parse reads, and fail exactly
where it fails, whatever changes from one page to the next."""

from __future__ import annotations

import operator
import random

import pytest

from pipeline import ParseError
from processors.cni_aggregate._rules import DEFAULT_RULES
from processors.cni_aggregate._wanted import series_filters, wanted_families
from receivers.prometheus import _grammar
from receivers.prometheus._textparse import PageMemo, ParsedPage, page_parser

WANTED = wanted_families(DEFAULT_RULES)
FILTERS = series_filters(DEFAULT_RULES)

#: Value texts: plain, short (the value cache's), special, and ones only the full grammar reads
#: (a timestamp, an exemplar) or that no grammar reads (``_``, hex, a word).
VALUES = ["0", "1", "7", "12345.5", "1e3", "-0", "NaN", "+Inf", "-Inf", "nan", "3.25e-2",
          "1 1700000000000", '2 # {trace_id="a"} 1', "1_000", "0x1F", "one", "5\t17"]
INVALID = {"1_000", "0x1F", "one"}


def lines(rng: random.Random) -> list[tuple[str, str]]:
    """A page's lines as (series text, family) with some CIDR lines per node."""
    out = [("awscni_assigned_ip_addresses", "a"), ("awscni_total_ip_addresses", "a"),
           ("awscni_eni_max", "a"), ("awscni_add_ip_req_count", "a"),
           ("awscni_ipamd_action_inprogress{fn=\"x\"}", "a"),   # read by no rule: skipped
           ("awscni_aws_api_latency_ms{api=\"A\",quantile=\"0.5\"}", "a"),
           ("awscni_aws_api_latency_ms{api=\"A\",quantile=\"0.99\"}", "a"),
           ("awscni_aws_api_latency_ms_count{api=\"A\"}", "a")]
    out += [(f'awscni_assigned_ip_per_cidr{{cidr="10.0.{n}.0/28"}}', "a")
            for n in range(rng.randrange(1, 4))]
    return out


def render(series: list[str], values: list[str], crlf: bool) -> str:
    body = "".join(f"{s} {v}\n" for s, v in zip(series, values, strict=True))
    page = "# HELP go_goroutines x\ngo_goroutines 12\n" + body + \
        "process_start_time_seconds 1.7e9\n"
    return page.replace("\n", "\r\n") if crlf else page


def outcome(parse: object, page: str, memo: PageMemo | None) -> object:
    try:
        got: ParsedPage = parse(page, memo)  # type: ignore[operator]
    except ParseError as exc:
        return ("error", str(exc), exc.line_number)
    return (dict(got.families.items()).__repr__(), got.duplicates, got.samples,
            got.process_start_time)


def page_of(rng: random.Random, series: list[str]) -> tuple[list[str], list[str], bool]:
    """Mostly the same lines with new values; now and then a structural change."""
    series = list(series)
    roll = rng.random()
    if roll < 0.05 and series:
        del series[rng.randrange(len(series))]
    elif roll < 0.10:
        series.insert(rng.randrange(len(series) + 1), f'awscni_eni_allocated{{n="{rng.random()}"}}')
    elif roll < 0.13 and series:
        series.append(series[rng.randrange(len(series))])          # a duplicate line
    elif roll < 0.15:
        series.append("awscni_assigned_ip_addresses")               # its family again, later
    weights = [30, 30, 30, 20, 10, 5, 5, 5, 5, 5, 5, 2, 2, 1, 1, 1, 1]
    values = rng.choices(VALUES, weights, k=len(series))
    return series, values, rng.random() < 0.05


@pytest.mark.parametrize("seed", range(30))
def test_a_memo_reads_exactly_what_the_whole_parse_reads(seed: int) -> None:
    rng = random.Random(seed)
    parse = page_parser(WANTED, count_all=False, series=FILTERS)
    memos = [PageMemo() for _ in range(3)]
    shapes = [[text for text, _ in lines(rng)] for _ in memos]
    for _ in range(40):
        for target, memo in enumerate(memos):
            series, values, crlf = page_of(rng, shapes[target])
            if rng.random() < 0.5:  # the change stays for the target's next pages, or not
                shapes[target] = [s for s in series if s != "awscni_assigned_ip_addresses"
                                  or series.count(s) == 1]  # (a repeat would pile up)
            page = render(series, values, crlf)
            assert outcome(parse, page, memo) == outcome(parse, page, None), page


def test_the_steady_state_takes_the_memo_and_shares_texts_and_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse = page_parser(WANTED, count_all=False, series=FILTERS)
    series = [text for text, _ in lines(random.Random(1))]
    memo = PageMemo()
    first = parse(render(series, ["1"] * len(series), False), memo)
    collected = 0
    collect = _grammar._Grammar._collect

    def counting(self: _grammar._Grammar, *args: object, **kwargs: object) -> object:
        nonlocal collected
        collected += 1
        return collect(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_grammar._Grammar, "_collect", counting)
    second = parse(render(series, ["2"] * len(series), False), memo)
    assert collected == 0
    assert second.families.series == first.families.series
    assert all(map(operator.is_, second.families.series, first.families.series))
    assert second.families.runs is first.families.runs
    assert set(second.families.numbers) == {2.0}
    parse(render([*series, "awscni_eni_max{x=\"1\"}"], ["3"] * (len(series) + 1), False), memo)
    assert collected == 1                                # a new line: read whole, memo refilled
    another = page_parser(frozenset({"awscni_eni_max"}), count_all=False)
    assert set(another(render(series, ["4"] * len(series), False), memo).families) == {
        "awscni_eni_max"}                                # another grammar's memo is not used
    assert collected == 2


def test_a_value_no_grammar_reads_fails_the_page_with_or_without_a_memo() -> None:
    parse = page_parser(WANTED, count_all=False, series=FILTERS)
    series = [text for text, _ in lines(random.Random(2))]
    memo = PageMemo()
    parse(render(series, ["1"] * len(series), False), memo)
    for bad in sorted(INVALID):
        values = ["1"] * len(series)
        values[0] = bad
        with pytest.raises(ParseError):
            parse(render(series, values, False), memo)
        parse(render(series, ["1"] * len(series), False), memo)   # and the next page reads
