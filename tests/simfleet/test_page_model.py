"""The fleet's pure parts: value formatting, node state and page bodies (no sockets)."""

from __future__ import annotations

import gzip
import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simfleet._families import FAMILIES
from simfleet._format import format_value, series_text
from simfleet._node import NodeState
from simfleet._page import CHUNK_THRESHOLD, gzip_body, make_padding, plain_body

NOW = 1_700_000_000.0
RULE_TABLE_FAMILIES = {
    "awscni_add_ip_req_count": "counter", "awscni_assigned_ip_addresses": "gauge",
    "awscni_aws_api_error_count": "counter", "awscni_aws_api_latency_ms": "summary",
    "awscni_aws_utils_error_count": "counter", "awscni_del_ip_req_count": "counter",
    "awscni_eni_allocated": "gauge", "awscni_eni_max": "gauge",
    "awscni_ipamd_action_inprogress": "gauge", "awscni_ipamd_error_count": "counter",
    "awscni_ip_max": "gauge", "awscni_pod_eni_error_count": "counter",
    "awscni_reconcile_count": "counter", "awscni_total_ip_addresses": "gauge",
    "awscni_total_ipv4_prefixes": "gauge", "awscni_assigned_ip_per_cidr": "gauge",
    "awscni_force_removed_enis": "counter", "awscni_force_removed_ips": "counter",
    "awscni_ec2api_req_count": "counter", "awscni_ec2api_error_count": "counter",
}


def page_values(text: str) -> dict[str, float]:
    """Series text -> value, read off the page line by line (independent of our renderer)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize(("value", "text"), [
    (100.0, "100"), (0.0, "0"), (82716.0, "82716"), (65536.0, "65536"),
    (7710456.0, "7.710456e+06"), (1555027164.4, "1.5550271644e+09"), (1.7901e-05, "1.7901e-05"),
    (0.00013115, "0.00013115"), (0.797514698, "0.797514698"), (1391.13, "1391.13"),
    (1234567.5, "1.2345675e+06"), (123456.5, "123456.5"), (-0.5, "-0.5"), (1e21, "1e+21"),
    (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
])
def test_values_format_as_go_client_does(value: float, text: str) -> None:
    assert format_value(value) == text


def test_series_text_sorts_and_escapes_labels() -> None:
    text = series_text("f", {"fn": 'a"b', "error": "x\\y\nz"})
    assert text == 'f{error="x\\\\y\\nz",fn="a\\"b"}'


def test_page_has_every_design_family_with_its_type() -> None:
    text = NodeState(0, seed=1, now=NOW).render()
    parsed = families(text)
    for name, kind in RULE_TABLE_FAMILIES.items():
        assert parsed.get(name) == kind, name
        assert f"# HELP {name} " in text
    assert parsed["go_goroutines"] == parsed["process_start_time_seconds"] == "gauge"
    assert parsed["process_cpu_seconds"] == "counter"  # prometheus_client drops "_total"
    assert {spec.name for spec in FAMILIES} == set(RULE_TABLE_FAMILIES)


def test_counter_type_gauge_changes_only_the_type_line() -> None:
    plain = NodeState(0, seed=1, now=NOW).render()
    typed = NodeState(0, seed=1, now=NOW, counter_type_gauge=True)
    assert families(typed.render())["awscni_add_ip_req_count"] == "gauge"
    as_counter = typed.render().replace("add_ip_req_count gauge", "add_ip_req_count counter")
    assert as_counter == plain
    assert "awscni_add_ip_req_count" in typed.truth()["counters"]  # kind by the rule table


def test_truth_series_text_and_values_match_the_page() -> None:
    node = NodeState(4, seed=3, now=NOW)
    for _ in range(5):
        node.advance()
    truth, values = node.truth(), page_values(node.render())
    for kind in ("gauges", "counters"):
        for series in truth[kind].values():
            for text, value in series.items():
                assert values[text] == value, text
    for text, value in truth["p99"].items():
        assert 'quantile="0.99"' in text
        assert (value is None and math.isnan(values[text])) or values[text] == value
    assert values["process_start_time_seconds"] == truth["process_start_time"]


def test_same_seed_same_node_whatever_the_process() -> None:
    a, b = NodeState(9, seed=5, now=NOW), NodeState(9, seed=5, now=NOW)
    for _ in range(3):
        a.advance()
        b.advance()
    assert a.render() == b.render()
    assert NodeState(9, seed=6, now=NOW).render() != a.render()


def test_advance_only_grows_counters_and_creates_new_series() -> None:
    nodes = [NodeState(i, seed=0, now=NOW) for i in range(10)]
    before = [node.truth()["counters"] for node in nodes]
    for _ in range(40):
        for node in nodes:
            node.advance()
    after = [node.truth()["counters"] for node in nodes]
    grew = new = 0
    for old, cur in zip(before, after, strict=True):
        for family, series in cur.items():
            for text, value in series.items():
                previous = old[family].get(text)
                if previous is None:
                    new += 1
                else:
                    assert value >= previous
                    grew += value > previous
    assert grew > 50
    assert new > 0  # e.g. a new api/error pair of awscni_aws_api_error_count


def test_p99_is_sometimes_nan_and_sometimes_a_number() -> None:
    seen: list[float | None] = []
    node = NodeState(1, seed=0, now=NOW)
    for _ in range(10):
        node.advance()
        seen += node.truth()["p99"].values()
    assert None in seen
    assert any(v is not None and v > 1 for v in seen)


def test_restart_zeroes_counters_and_moves_start_time() -> None:
    node = NodeState(2, seed=0, now=NOW)
    old_start = node.start_time
    node.restart(NOW + 100.5)
    truth = node.truth()
    assert all(v == 0 for series in truth["counters"].values() for v in series.values())
    assert truth["process_start_time"] == NOW + 100.5 > old_start
    assert all(v is None for v in truth["p99"].values())
    node.restart(NOW + 100.5, counters_to=3)  # same clock: still strictly later
    assert node.start_time > NOW + 100.5
    assert all(v == 3 for s in node.truth()["counters"].values() for v in s.values())


def test_operations_validate_family_kind_and_labels() -> None:
    node = NodeState(0, seed=0, now=NOW)
    with pytest.raises(ValueError, match="is a counter"):
        node.set_gauge("awscni_add_ip_req_count", 1)
    with pytest.raises(ValueError, match="takes labels"):
        node.add_counter("awscni_ec2api_req_count", 1)
    with pytest.raises(ValueError, match="invalid metric name"):
        node.set_gauge("bad name", 1)
    text = node.add_counter("awscni_ec2api_error_count", 2, {"fn": "NewApi"})
    assert text == 'awscni_ec2api_error_count{fn="NewApi"}'
    assert node.truth()["counters"]["awscni_ec2api_error_count"][text] == 2
    extra = node.set_gauge("test_extra_gauge", 1.5, {"zone": "a"})
    assert page_values(node.render())[extra] == 1.5
    assert families(node.render())["test_extra_gauge"] == "gauge"
    p99 = node.set_p99(123.0, {"api": "CreateTags", "error": "true"})
    assert page_values(node.render())[p99] == 123.0


def test_gzip_body_is_dynamic_part_plus_shared_padding() -> None:
    dynamic = NodeState(0, seed=0, now=NOW).render().encode()
    padding = make_padding(40_000 - len(dynamic), 0)
    assert 39_000 < len(dynamic) + len(padding.text) < 42_000
    body = gzip_body(dynamic, padding)
    assert gzip.decompress(body.raw[0]) == dynamic + padding.text
    assert body.chunked == (body.length > CHUNK_THRESHOLD)
    small = gzip_body(dynamic, make_padding(0, 0))
    assert gzip.decompress(small.raw[0]) == dynamic
    assert not small.chunked
    families(padding.text.decode())  # the padding parses too


def test_plain_body_is_framed_in_chunks() -> None:
    dynamic = NodeState(0, seed=0, now=NOW).render().encode()
    body = plain_body(dynamic, make_padding(20_000, 1))
    assert body.chunked
    framed, decoded = b"".join(body.parts), b""
    while True:
        size_line, _, framed = framed.partition(b"\r\n")
        size = int(size_line, 16)
        assert size <= 4096
        decoded, framed = decoded + framed[:size], framed[size + 2:]
        if size == 0:
            break
    assert decoded == b"".join(body.raw)
