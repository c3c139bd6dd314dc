"""The scrape pool against loopback targets serving real aws-node pages, and broken ones."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time

import pytest

from pipeline import ErrorClass, Target, TargetScrape
from receivers.prometheus._http import ScrapeClient
from receivers.prometheus._scrape_pool import ScrapePool
from receivers.prometheus._textparse import PageMemo, ParsedPage, parse_page
from tests.support.fixtures import AWS_NODE_PAGES

FIXTURES = AWS_NODE_PAGES
PAGES = {name: (FIXTURES / f"metrics-{name}.data").read_bytes() for name in ("v1", "v2")}
#: A page whose wanted line is broken (the parser reads only wanted lines closely).
GARBAGE = b"awscni_assigned_ip_addresses{oops 1\n<html><body>502 Bad Gateway</body></html>\n"
WANTED = frozenset({"awscni_assigned_ip_addresses", "awscni_ec2api_req_count",
                    "awscni_aws_api_latency_ms"})
TIMEOUT = 0.5


class PageServer:
    """One fake aws-node on its own loopback address. ``mode``: ``v1``/``v2`` (add ``-gzip`` to
    compress), ``hang``, ``garbage`` or ``500``; it can be changed between scrapes."""

    def __init__(self, host: str, mode: str) -> None:
        self.host = host
        self.mode = mode
        self.connections = 0
        self.open_connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> PageServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def target(self) -> Target:
        assert self._server is not None
        return Target(address=f"{self.host}:{self._server.sockets[0].getsockname()[1]}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open_connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(await self._response())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the test is over
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            writer.close()

    async def _response(self) -> bytes:
        status, extra, body = "200 OK", "", b""
        if self.mode == "hang":
            await asyncio.sleep(3600)
        elif self.mode == "garbage":
            body = GARBAGE
        elif self.mode == "binary":
            body = gzip.compress(PAGES["v1"])  # compressed, but not labelled so
        elif self.mode == "500":
            status, body = "500 Internal Server Error", b"boom\n"
        else:
            body = PAGES[self.mode.removesuffix("-gzip")]
            if self.mode.endswith("-gzip"):
                body, extra = gzip.compress(body), "Content-Encoding: gzip\r\n"
        return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def dead_target() -> Target:
    with socket.socket() as sock:
        sock.bind(("127.0.0.9", 0))
        return Target(address=f"127.0.0.9:{sock.getsockname()[1]}")


@pytest.fixture
async def fleet() -> dict[str, PageServer]:
    servers = {
        "v1": PageServer("127.0.0.2", "v1"),
        "v2-gzip": PageServer("127.0.0.3", "v2-gzip"),
        "hang": PageServer("127.0.0.4", "hang"),
        "garbage": PageServer("127.0.0.5", "garbage"),
    }
    for server in servers.values():
        await server.start()
    yield servers
    for server in servers.values():
        await server.stop()


@pytest.fixture
async def pool() -> ScrapePool:
    p = ScrapePool(ScrapeClient(body_size_limit=1 << 20), timeout=TIMEOUT, wanted=WANTED)
    yield p
    await p.close()


async def test_count_all_samples_counts_every_line(fleet: dict[str, PageServer]) -> None:
    pool = ScrapePool(ScrapeClient(body_size_limit=1 << 20), timeout=TIMEOUT, wanted=WANTED,
                      count_all_samples=True)
    await pool.sync([fleet["v1"].target, fleet["v2-gzip"].target])
    scrapes = await pool.scrape_all()
    await pool.close()
    for scrape, page in zip(scrapes, ("v1", "v2"), strict=True):
        assert scrape.health.samples == parse_page(PAGES[page], None).samples > 100


def by_address(scrapes: tuple[TargetScrape, ...]) -> dict[str, TargetScrape]:
    return {scrape.target.address: scrape for scrape in scrapes}


async def test_mixed_fleet(fleet: dict[str, PageServer], pool: ScrapePool) -> None:
    dead = dead_target()
    targets = [server.target for server in fleet.values()] + [dead]
    await pool.sync(targets)
    t0 = time.monotonic()
    scrapes = await pool.scrape_all()
    elapsed = time.monotonic() - t0
    assert elapsed < TIMEOUT + 1.5  # the hung target does not hold the cycle up
    assert [s.target for s in scrapes] == targets  # every target, failed ones too, in order

    got = by_address(scrapes)
    for name in ("v1", "v2-gzip"):
        scrape = got[fleet[name].target.address]
        assert scrape.health.up and scrape.health.error_class is None
        assert scrape.health.last_success == scrape.health.scraped_at
        # Only the wanted families' lines are read (and counted) unless count_all_samples.
        assert scrape.health.samples == sum(map(len, scrape.families.values())) > 0
        assert WANTED - {"awscni_ec2api_req_count"} <= set(scrape.families) <= WANTED
        assert list(scrape.families["awscni_assigned_ip_addresses"]) == [
            ("awscni_assigned_ip_addresses", 1.0)]
        assert scrape.process_start_time is not None
    expected = {fleet["hang"].target.address: ErrorClass.TIMEOUT,
                fleet["garbage"].target.address: ErrorClass.PARSE,
                dead.address: ErrorClass.CONNECT}
    for address, error_class in expected.items():
        health = got[address].health
        assert not health.up
        assert health.error_class == error_class
        assert health.error
        assert health.last_success is None
        assert got[address].families == {}
    hung = got[fleet["hang"].target.address].health
    assert TIMEOUT * 0.8 <= hung.duration < TIMEOUT + 1.5
    assert "line 1" in got[fleet["garbage"].target.address].health.error


async def test_state_survives_cycles_and_failures(
    fleet: dict[str, PageServer], pool: ScrapePool
) -> None:
    server = fleet["v1"]
    await pool.sync([server.target])
    (first,) = await pool.scrape_all()
    assert first.health.up
    server.mode = "500"
    (second,) = await pool.scrape_all()
    assert not second.health.up
    assert second.health.error_class == ErrorClass.HTTP_STATUS
    assert "HTTP 500" in second.health.error
    assert second.health.last_success == first.health.scraped_at  # last success kept
    state = pool.states[server.target.key]
    assert state.consecutive_failures == 1
    server.mode = "v2"
    (third,) = await pool.scrape_all()
    assert third.health.up and state.consecutive_failures == 0
    assert server.connections == 1  # one kept-alive connection across all three cycles


async def test_sync_drops_targets_that_left_with_their_connections(
    fleet: dict[str, PageServer], pool: ScrapePool
) -> None:
    a, b = fleet["v1"], fleet["v2-gzip"]
    await pool.sync([a.target, b.target, a.target])  # a duplicate key counts once
    assert list(pool.states) == [a.target.key, b.target.key]
    await pool.scrape_all()
    assert pool.client.idle_connections() == 2
    gone = await pool.sync([b.target])
    assert gone == [a.target]
    assert list(pool.states) == [b.target.key]
    assert pool.client.idle_connections() == 1
    await asyncio.sleep(0.05)
    assert a.open_connections == 0 and b.open_connections == 1
    # Back again: a new target, with fresh state.
    await pool.sync([a.target, b.target])
    assert pool.states[a.target.key].last_success is None


async def test_changed_target_attributes_keep_state(
    fleet: dict[str, PageServer], pool: ScrapePool
) -> None:
    target = fleet["v1"].target
    await pool.sync([target])
    (first,) = await pool.scrape_all()
    moved = Target(address=target.address, attributes=(("zone", "us-east-1a"),))
    await pool.sync([moved])
    (second,) = await pool.scrape_all()
    assert second.target == moved
    assert pool.states[target.key].last_success == second.health.scraped_at
    assert first.health.up and second.health.up


async def test_sample_limit(fleet: dict[str, PageServer]) -> None:
    pool = ScrapePool(ScrapeClient(body_size_limit=1 << 20), timeout=TIMEOUT, wanted=WANTED,
                      sample_limit=3)
    await pool.sync([fleet["v1"].target])
    (scrape,) = await pool.scrape_all()
    await pool.close()
    assert scrape.health.error_class == ErrorClass.SAMPLE_LIMIT
    assert "sample_limit 3" in scrape.health.error


async def test_body_size_limit(fleet: dict[str, PageServer]) -> None:
    pool = ScrapePool(ScrapeClient(body_size_limit=4096), timeout=TIMEOUT, wanted=WANTED)
    await pool.sync([fleet["v1"].target, fleet["v2-gzip"].target])
    scrapes = await pool.scrape_all()
    await pool.close()
    assert [s.health.error_class for s in scrapes] == [ErrorClass.BODY_TOO_LARGE] * 2


async def test_an_unexpected_exception_stays_with_its_target(
    fleet: dict[str, PageServer]
) -> None:
    def flaky_parse(data: bytes | str, memo: PageMemo | None = None) -> ParsedPage:
        if b"awscni_total_ipv4_prefixes" in data:  # only the v2 page has it
            raise RuntimeError("parser bug")
        return parse_page(data, WANTED)

    pool = ScrapePool(ScrapeClient(body_size_limit=1 << 20), timeout=TIMEOUT, wanted=WANTED,
                      parse=flaky_parse)
    await pool.sync([fleet["v1"].target, fleet["v2-gzip"].target])
    v1, v2 = await pool.scrape_all()
    await pool.close()
    assert v1.health.up
    assert v2.health.error_class == ErrorClass.PARSE
    assert "RuntimeError: parser bug" in v2.health.error


async def test_concurrency_bound_still_scrapes_everyone(fleet: dict[str, PageServer]) -> None:
    pool = ScrapePool(ScrapeClient(body_size_limit=1 << 20), timeout=TIMEOUT, wanted=None,
                      max_concurrency=1)
    targets = [fleet["v1"].target, fleet["garbage"].target, fleet["v2-gzip"].target]
    await pool.sync(targets)
    scrapes = await pool.scrape_all()
    await pool.close()
    assert [s.health.up for s in scrapes] == [True, False, True]
    assert "go_goroutines" in scrapes[0].families  # wanted=None keeps every family


async def test_a_binary_page_is_a_parse_error(
    fleet: dict[str, PageServer], pool: ScrapePool
) -> None:
    fleet["v1"].mode = "binary"
    await pool.sync([fleet["v1"].target])
    (scrape,) = await pool.scrape_all()
    assert scrape.health.error_class == ErrorClass.PARSE
    assert "UTF-8" in scrape.health.error


async def test_empty_pool(pool: ScrapePool) -> None:
    await pool.sync([])
    assert await pool.scrape_all() == ()


async def test_connect_all_opens_connections_the_first_scrape_then_uses(
    fleet: dict[str, PageServer], pool: ScrapePool
) -> None:
    dead, hung = dead_target(), fleet["hang"].target
    await pool.sync([fleet["v1"].target, fleet["v2-gzip"].target, dead, hung])
    ready, failed = await pool.connect_all(timeout=5.0)
    assert (ready, failed) == (3, 1)  # the hung server accepts; nobody listens at the dead one
    assert pool.client.idle_connections() == 3
    assert (fleet["v1"].connections, fleet["v2-gzip"].connections) == (1, 1)
    await pool.sync([fleet["v1"].target, fleet["v2-gzip"].target])
    scrapes = await pool.scrape_all()
    assert all(scrape.health.up for scrape in scrapes)
    assert (fleet["v1"].connections, fleet["v2-gzip"].connections) == (1, 1)  # reused
    assert await pool.connect_all(timeout=5.0) == (2, 0)  # idle ones count as ready
    assert (fleet["v1"].connections, fleet["v2-gzip"].connections) == (1, 1)


async def test_a_connection_closed_before_its_first_use_is_replaced(
    fleet: dict[str, PageServer], pool: ScrapePool
) -> None:
    server = fleet["v1"]
    await pool.sync([server.target])
    assert await pool.connect_all(timeout=5.0) == (1, 0)
    for task in list(server._tasks):  # the server drops the idle connection
        task.cancel()
    await asyncio.sleep(0.1)
    (scrape,) = await pool.scrape_all()
    assert scrape.health.up and server.connections == 2


async def test_connect_all_stops_at_its_timeout(pool: ScrapePool) -> None:
    # A listening socket that never accepts, with its backlog full: further connects hang.
    with socket.socket() as listener:
        listener.bind(("127.0.0.10", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        targets = [Target(address=f"127.0.0.10:{port}", pod=f"p{n}") for n in range(20)]
        await pool.sync(targets)
        began = time.monotonic()
        ready, failed = await pool.connect_all(timeout=0.3)
        assert time.monotonic() - began < 0.3 + 1.0
        assert ready + failed == 20 and failed > 0 and ready > 0


async def test_connect_all_cancelled_leaves_no_task_behind(pool: ScrapePool) -> None:
    with socket.socket() as listener:  # a full backlog: connects hang
        listener.bind(("127.0.0.11", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        await pool.sync([Target(address=f"127.0.0.11:{port}", pod=f"p{n}") for n in range(20)])
        before = len(asyncio.all_tasks())
        connecting = asyncio.ensure_future(pool.connect_all(timeout=30.0))
        await asyncio.sleep(0.1)
        assert len(asyncio.all_tasks()) > before + 1  # one task per target, in flight
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        assert len(asyncio.all_tasks()) == before
