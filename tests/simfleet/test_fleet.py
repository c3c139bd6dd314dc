"""The fleet over real HTTP: pages, gzip, chunking, keep-alive, restarts, failure modes, control
API and process lifetime. Each test uses its own node of the shared fleet and puts it back."""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from simfleet import FleetError, FleetProcess, process_alive

BASE = "127.231.0.1"  # away from the default 127.20.0.1, which other suites may use
NODES = 8
START_TIME = 1_700_000_000.25


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetProcess]:
    with FleetProcess(NODES, base_address=BASE, page_bytes=40_000, seed=7) as running:
        yield running


@pytest.fixture(scope="module")
def split_fleet() -> Iterator[FleetProcess]:
    """Small pages, port 0, two processes (the worker path), fixed start, add_ip typed gauge."""
    with FleetProcess(4, base_address="127.232.0.1", port=0, seed=7, processes=2,
                      start_time=START_TIME, counter_type_gauge=True) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never a proxy from the environment: loopback only
        yield session


def page_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def read_response(sock: socket.socket, pending: bytes = b"") -> tuple[bytes, dict[str, str],
                                                                      bytes, bytes]:
    """One HTTP response off a raw socket: (status line, headers, decoded body, leftover)."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, data = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}

    def need(n: int) -> None:
        nonlocal data
        while len(data) < n:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            data += chunk

    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in data:
                need(len(data) + 1)
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line, 16)
            need(size + 2)
            body, data = body + data[:size], data[size + 2:]
            if size == 0:
                break
    else:
        length = int(headers["content-length"])
        need(length)
        body, data = data[:length], data[length:]
    return status.encode(), headers, body, data


def get_request(host: str, *, gzip_ok: bool = False, version: str = "1.1",
                path: str = "/metrics") -> bytes:
    encoding = "gzip" if gzip_ok else "identity"
    return (f"GET {path} HTTP/{version}\r\nHost: {host}\r\nAccept-Encoding: {encoding}\r\n"
            f"\r\n").encode()


def connect(address: str, timeout: float = 5.0) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


# -- pages ---------------------------------------------------------------------------------------


def test_nodes_listen_on_consecutive_addresses_at_61678(fleet: FleetProcess) -> None:
    assert fleet.addresses == [f"127.231.0.{i}:61678" for i in range(1, NODES + 1)]


def test_pages_parse_and_match_truth(fleet: FleetProcess, http: requests.Session) -> None:
    fleet.client.advance(2)
    truth = fleet.client.truth()
    for node in truth.nodes:
        response = http.get(f"http://{node.address}/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        types = {f.name: f.type for f in text_string_to_metric_families(response.text)}
        assert types["awscni_aws_api_latency_ms"] == "summary"
        assert types["awscni_reconcile_count"] == "counter"
        values = page_values(response.text)
        for kind in (node.gauges, node.counters):
            for series in kind.values():
                for text, value in series.items():
                    assert values[text] == value, (node.address, text)
        assert node.p99 and all(same(values[t], v) for t, v in node.p99.items())
        assert values["process_start_time_seconds"] == node.process_start_time
        assert 38_000 < len(response.content) < 44_000  # page_bytes=40000


def test_truth_helpers_sum_what_the_pages_show(fleet: FleetProcess,
                                               http: requests.Session) -> None:
    truth = fleet.client.truth()
    pages = [page_values(http.get(f"http://{a}/metrics", timeout=10).text)
             for a in fleet.addresses]
    total_ips = sum(v for page in pages for k, v in page.items()
                    if k.startswith("awscni_total_ip_addresses"))
    assert truth.gauge_sum("awscni_total_ip_addresses") == total_ips
    reconciles = sum(v for page in pages for k, v in page.items()
                     if k.startswith("awscni_reconcile_count{"))
    assert truth.counter_total("awscni_reconcile_count") == reconciles
    p99s = [v for page in pages for k, v in page.items()
            if 'quantile="0.99"' in k and k.startswith("awscni_aws_api_latency_ms")
            and not math.isnan(v)]
    assert truth.p99_max() == max(p99s)


def test_gzip_when_asked(fleet: FleetProcess, http: requests.Session) -> None:
    address = fleet.addresses[1]
    zipped = http.get(f"http://{address}/metrics", headers={"Accept-Encoding": "gzip"},
                      stream=True, timeout=10)
    raw = zipped.raw.read(decode_content=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    plain = http.get(f"http://{address}/metrics", headers={"Accept-Encoding": "identity"},
                     timeout=10)
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content) / 3


def test_large_pages_go_chunked_small_ones_with_length(
    fleet: FleetProcess, split_fleet: FleetProcess
) -> None:
    with connect(fleet.addresses[2]) as sock:
        sock.sendall(get_request("node"))
        _, headers, body, _ = read_response(sock)
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
        assert len(body) > 4096
        sock.sendall(get_request("node", gzip_ok=True))
        _, headers, zipped, _ = read_response(sock)
        assert headers["content-encoding"] == "gzip"
        assert headers["transfer-encoding"] == "chunked"  # 40 KB gzips to more than 4 KB
        assert gzip.decompress(zipped) == body
    with connect(split_fleet.addresses[0]) as sock:  # no padding: ~11 KB, ~2 KB gzip'd
        sock.sendall(get_request("node", gzip_ok=True))
        _, headers, zipped, _ = read_response(sock)
        assert int(headers["content-length"]) == len(zipped) <= 4096
        assert "transfer-encoding" not in headers
        gzip.decompress(zipped)


def test_keep_alive_and_pipelining_reuse_one_connection(fleet: FleetProcess) -> None:
    before = fleet.client.stats()["connections"]
    with connect(fleet.addresses[3]) as sock:
        for _ in range(3):
            sock.sendall(get_request("node", gzip_ok=True))
            status, _, _, leftover = read_response(sock)
            assert status == b"HTTP/1.1 200 OK" and leftover == b""
        sock.sendall(get_request("node") * 2)  # pipelined: answered in order
        first = read_response(sock)
        second = read_response(sock, first[3])
        assert first[2] == second[2] and second[3] == b""
    assert fleet.client.stats()["connections"] == before + 1


def test_http10_gets_content_length_and_close(fleet: FleetProcess) -> None:
    with connect(fleet.addresses[3]) as sock:
        sock.sendall(get_request("node", version="1.0"))
        _, headers, body, _ = read_response(sock)
        assert int(headers["content-length"]) == len(body) > 4096
        assert sock.recv(1) == b""  # server closed


def test_other_paths_and_methods(fleet: FleetProcess, http: requests.Session) -> None:
    address = fleet.addresses[0]
    missing = http.get(f"http://{address}/", timeout=10)
    assert missing.status_code == 404 and missing.text == "404 page not found\n"
    assert http.get(f"http://{address}/metricsx", timeout=10).status_code == 404
    assert http.post(f"http://{address}/metrics", timeout=10).status_code == 405
    assert http.get(f"http://{address}/metrics?x=1", timeout=10).status_code == 200


# -- control -------------------------------------------------------------------------------------


def test_advance_moves_counters_up_and_pages_follow(fleet: FleetProcess,
                                                   http: requests.Session) -> None:
    before = fleet.client.truth()
    after = fleet.client.advance(3)
    assert after.counter_increase("awscni_add_ip_req_count", since=before) > 0
    for old, new in zip(before.nodes, after.nodes, strict=True):
        for family, series in old.counters.items():
            for text, value in series.items():
                assert new.counters[family][text] >= value
    page = page_values(http.get(f"http://{fleet.addresses[4]}/metrics", timeout=10).text)
    node = after.node(4)
    assert page["awscni_add_ip_req_count"] == node.counters["awscni_add_ip_req_count"][
        "awscni_add_ip_req_count"]


def test_set_gauge_and_add_counter(fleet: FleetProcess, http: requests.Session) -> None:
    client = fleet.client
    client.set_gauge(5, "awscni_eni_max", 42)
    client.set_gauge(5, "awscni_assigned_ip_per_cidr", 7, {"cidr": "192.168.9.0/28"})
    before = client.truth()
    client.add_counter(5, "awscni_aws_api_error_count", 4,
                       {"api": "CreateTags", "error": "SimfleetError"})
    client.add_counter(5, "awscni_add_ip_req_count", 10)
    after = client.truth()
    new_series = 'awscni_aws_api_error_count{api="CreateTags",error="SimfleetError"}'
    assert after.node(5).counters["awscni_aws_api_error_count"][new_series] == 4
    assert after.counter_increase("awscni_aws_api_error_count", since=before) == 4
    assert after.counter_increase("awscni_add_ip_req_count", since=before) == 10
    page = page_values(http.get(f"http://{fleet.addresses[5]}/metrics", timeout=10).text)
    assert page["awscni_eni_max"] == 42
    assert page['awscni_assigned_ip_per_cidr{cidr="192.168.9.0/28"}'] == 7
    assert page[new_series] == 4
    with pytest.raises(FleetError, match="is a counter"):
        client.set_gauge(5, "awscni_add_ip_req_count", 1)
    with pytest.raises(FleetError, match="no node"):
        client.set_gauge(NODES, "awscni_eni_max", 1)


def test_restart_resets_counters_and_moves_start_time(fleet: FleetProcess,
                                                      http: requests.Session) -> None:
    before = fleet.client.truth().node(6)
    fleet.client.restart(6)
    after = fleet.client.truth().node(6)
    assert after.process_start_time > before.process_start_time
    assert abs(after.process_start_time - time.time()) < 60
    assert all(v == 0 for series in after.counters.values() for v in series.values())
    assert after.gauges == before.gauges
    page = page_values(http.get(f"http://{fleet.addresses[6]}/metrics", timeout=10).text)
    assert page["process_start_time_seconds"] == after.process_start_time
    assert page["awscni_add_ip_req_count"] == 0
    fleet.client.restart(6, counters_to=2)
    assert fleet.client.truth().node(6).counters["awscni_add_ip_req_count"] == {
        "awscni_add_ip_req_count": 2}


def test_stats_count_requests_bytes_and_cpu(fleet: FleetProcess, http: requests.Session) -> None:
    before = fleet.client.stats()
    http.get(f"http://{fleet.addresses[0]}/metrics", timeout=10)
    after = fleet.client.stats()
    assert after["requests"] == before["requests"] + 1
    assert after["bytes_sent"] > before["bytes_sent"]
    assert after["processes"][0]["pid"] == fleet.pids[0]
    assert after["cpu_seconds"] > 0


# -- failure modes -------------------------------------------------------------------------------

FAILING_NODE = 7


@pytest.fixture
def failing(fleet: FleetProcess) -> Iterator[str]:
    yield f"http://{fleet.addresses[FAILING_NODE]}/metrics"
    fleet.client.set_failure(FAILING_NODE, "ok")


def test_http_500(fleet: FleetProcess, failing: str, http: requests.Session) -> None:
    fleet.client.set_failure(FAILING_NODE, "http_500")
    assert http.get(failing, timeout=10).status_code == 500
    assert fleet.client.truth().node(FAILING_NODE).failure == "http_500"


def test_hang_accepts_and_never_answers(fleet: FleetProcess, failing: str,
                                        http: requests.Session) -> None:
    fleet.client.set_failure(FAILING_NODE, "hang")
    with pytest.raises(requests.ReadTimeout):
        http.get(failing, timeout=(5, 0.3))


def test_garbage_is_200_but_unparsable(fleet: FleetProcess, failing: str,
                                       http: requests.Session) -> None:
    fleet.client.set_failure(FAILING_NODE, "garbage")
    for encoding in ("gzip", "identity"):
        response = http.get(failing, headers={"Accept-Encoding": encoding}, timeout=10)
        assert response.status_code == 200
        with pytest.raises(ValueError):
            list(text_string_to_metric_families(response.text))


def test_close_drops_the_connection_unanswered(fleet: FleetProcess, failing: str) -> None:
    fleet.client.set_failure(FAILING_NODE, "close")
    with connect(fleet.addresses[FAILING_NODE]) as sock:
        sock.sendall(get_request("node"))
        assert sock.recv(1024) == b""


def test_slow_answers_late(fleet: FleetProcess, failing: str, http: requests.Session) -> None:
    fleet.client.set_failure(FAILING_NODE, "slow:0.4")
    started = time.monotonic()
    response = http.get(failing, timeout=10)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.35
    text_string_to_metric_families(response.text)


def test_down_refuses_then_ok_listens_again(fleet: FleetProcess, failing: str,
                                            http: requests.Session) -> None:
    with connect(fleet.addresses[FAILING_NODE]) as idle:
        fleet.client.set_failure(FAILING_NODE, "down")
        with pytest.raises(ConnectionRefusedError):
            connect(fleet.addresses[FAILING_NODE])
        try:  # the open connection went down with the node: closed or reset, never answered
            idle.sendall(get_request("node"))
            answer = idle.recv(1024)
        except OSError:
            answer = b""
        assert answer == b""
    fleet.client.set_failure(FAILING_NODE, "ok")
    assert http.get(failing, timeout=10).status_code == 200


def test_unknown_failure_mode_is_refused(fleet: FleetProcess) -> None:
    with pytest.raises(FleetError, match="unknown failure mode"):
        fleet.client.set_failure(0, "explode")


# -- processes -----------------------------------------------------------------------------------


def test_split_fleet_serves_the_same_nodes(split_fleet: FleetProcess,
                                           fleet: FleetProcess) -> None:
    assert len(split_fleet.pids) == 2
    assert all(a.startswith("127.232.0.") and not a.endswith(":0") for a in split_fleet.addresses)
    truth = split_fleet.client.truth()
    assert [n.index for n in truth.nodes] == [0, 1, 2, 3]
    stats = split_fleet.client.stats()
    assert [p["nodes"] for p in stats["processes"]] == [[0, 2], [2, 2]]
    assert {n.process_start_time for n in truth.nodes} == {START_TIME}
    with requests.Session() as http:
        http.trust_env = False
        text = http.get(f"http://{split_fleet.addresses[2]}/metrics", timeout=10).text
    assert "# TYPE awscni_add_ip_req_count gauge\n" in text
    assert page_values(text)["process_start_time_seconds"] == START_TIME
    split_fleet.client.set_gauge(3, "awscni_eni_max", 99)  # routed to the worker
    assert split_fleet.client.truth().node(3).gauges["awscni_eni_max"] == {"awscni_eni_max": 99}
    # Same seed, same node whatever the split (the shared fleet has advanced and been poked,
    # so compare a fresh state: a fleet of the same seed started now).
    with FleetProcess(4, base_address="127.233.0.1", port=0, seed=7) as single:
        one = single.client.truth()
    assert [n.gauges for n in one.nodes[:3]] == [n.gauges for n in truth.nodes[:3]]
    assert [n.counters for n in one.nodes] == [n.counters for n in truth.nodes]


def test_stop_ends_the_whole_process_tree() -> None:
    fleet = FleetProcess(4, base_address="127.234.0.1", port=0, processes=2)
    fleet.start()
    pids = list(fleet.pids)
    assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
    fleet.stop()
    assert not any(process_alive(pid) for pid in pids)
    fleet.stop()  # twice is fine


def test_workers_exit_when_the_coordinator_is_killed() -> None:
    fleet = FleetProcess(2, base_address="127.235.0.1", port=0, processes=2)
    fleet.start()
    try:
        os.kill(fleet.pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(fleet.pids[1]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(fleet.pids[1])  # its stdin pipe closed: it stopped itself
    finally:
        fleet.stop()


def test_start_failure_is_reported() -> None:
    with FleetProcess(1, base_address="127.236.0.1") as first:  # noqa: F841 - holds the port
        second = FleetProcess(1, base_address="127.236.0.1")
        with pytest.raises(FleetError, match="Address already in use"):
            second.start()
        assert second.pids == []


def test_cli_announces_serves_and_stops_on_sigint() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simfleet", "--nodes", "2", "--base", "127.237.0.1", "--port", "0",
         "--advance-every", "100ms"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        announce = json.loads(process.stdout.readline())
        assert len(announce["addresses"]) == 2 and announce["control"].startswith("http://")
        with requests.Session() as http:
            http.trust_env = False
            url = f"http://{announce['addresses'][0]}/metrics"
            first = page_values(http.get(url, timeout=10).text)["process_cpu_seconds_total"]
            time.sleep(0.5)  # a few periodic advances
            later = page_values(http.get(url, timeout=10).text)["process_cpu_seconds_total"]
            assert later > first
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
        assert "control http://" in (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "0"], "at least 1"),
    (["--nodes", "3", "--base", "10.0.0.1"], "outside 127.0.0.0/8"),
    (["--nodes", "3", "--base", "127.255.255.254"], "outside 127.0.0.0/8"),
    (["--nodes", "3", "--advance-every", "soon"], "invalid duration"),
])
def test_cli_rejects_bad_arguments(args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "simfleet", *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and message in result.stderr


def test_fleet_process_passes_its_options_to_the_cli() -> None:
    fleet = FleetProcess(3, page_bytes=40_000, counter_type_gauge=True, start_time=1.5,
                         processes=2, seed=4)
    command = " ".join(fleet.command)
    for part in ("--nodes 3", "--page-bytes 40000", "--counter-type-gauge", "--start-time 1.5",
                 "--processes 2", "--seed 4", "--base 127.20.0.1", "--port 61678"):
        assert part in command
    with pytest.raises(FleetError, match="not started"):
        fleet.client.truth()
