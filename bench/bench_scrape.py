"""CPU cost of one scrape of a 40 KB aws-node-like page through the receiver's HTTP client.

The server runs in another process (so its CPU is not counted); the client side's CPU time
(``time.process_time``) is divided by the number of scrapes. Variants: plain and gzip'd bodies
with a Content-Length, a gzip'd body sent chunked as Go's promhttp (and the simulated fleet)
send it (``chunked``: gzip level 1, 4 KB chunks), with and without parsing the page (wanted =
the aws-node families of the rule table in docs/aggregation.md), one request in flight and
many, and a baseline client on plain asyncio streams for comparison (Content-Length bodies
only).

    .venv/bin/python bench/bench_scrape.py [--scrapes 3000] [--rounds 5] [--uvloop]

Numbers are noisy on a shared machine; compare variants within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import multiprocessing
import random
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receivers.prometheus._http import ScrapeClient  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/aws-node/metrics-v1.data"


def make_page(size: int = 40 * 1024) -> bytes:
    """The real aws-node page, padded to ``size`` with per-CIDR gauges (wanted) and a histogram
    of a family nobody wants, roughly as a busy node's page looks."""
    rng = random.Random(7)
    lines = [FIXTURE.read_text()]
    lines.append("# TYPE awscni_assigned_ip_per_cidr gauge\n")
    for i in range(60):
        lines.append(f'awscni_assigned_ip_per_cidr{{cidr="10.0.{i // 16}.{(i % 16) * 16}/28"}} '
                     f"{i % 7}\n")
    lines.append("# TYPE http_request_duration_seconds histogram\n")
    text = "".join(lines)
    i = 0
    while len(text) < size:
        text += (f'http_request_duration_seconds_bucket{{handler="/v{i // 8}",code="200",'
                 f'le="{0.005 * 2 ** (i % 8):g}"}} {rng.randrange(10**6)}\n')
        i += 1
    return text.encode()


# -- the server, in another process --------------------------------------------------------------

class _Server(asyncio.Protocol):
    def __init__(self, bodies: dict[bytes, bytes]) -> None:
        self.bodies = bodies
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1]
            self.transport.write(self.bodies.get(path, self.bodies[b"/plain"]))  # type: ignore[attr-defined]


def _serve(port_queue: multiprocessing.Queue[int]) -> None:
    page = make_page()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
    zipped = gzip.compress(page, 6)
    fast = gzip.compress(page, 1)
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(fast[i:i + 4096]), fast[i:i + 4096])
                      for i in range(0, len(fast), 4096)) + b"0\r\n\r\n"
    bodies = {
        b"/plain": head + f"Content-Length: {len(page)}\r\n\r\n".encode() + page,
        b"/gzip": head + b"Content-Encoding: gzip\r\n"
        + f"Content-Length: {len(zipped)}\r\n\r\n".encode() + zipped,
        b"/chunked": head + b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks,
    }

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Server(bodies), "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


# -- a baseline client on asyncio streams ------------------------------------------------------

class StreamsClient:
    """The simplest keep-alive client on asyncio streams (Content-Length only), for comparison."""

    def __init__(self) -> None:
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, url: str, timeout: float) -> bytes:
        host_port, path = url.split("//", 1)[1].split("/", 1)
        host, port = host_port.split(":")
        async with asyncio.timeout(timeout):
            if self.conns:
                reader, writer = self.conns.pop()
            else:
                reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\n"
                         "Accept-Encoding: gzip\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            gzipped = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"content-encoding":
                    gzipped = b"gzip" in value
            body = await reader.readexactly(length)
            self.conns.append((reader, writer))
        if gzipped:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
        return body

    async def aclose(self) -> None:
        for _, writer in self.conns:
            writer.close()


# -- measuring -----------------------------------------------------------------------------------

async def measure(
    get: Callable[[str, float], Awaitable[bytes]],
    url: str,
    scrapes: int,
    in_flight: int,
    parse: Callable[[bytes], object] | None,
) -> tuple[float, float]:
    """(CPU µs per scrape, wall µs per scrape) for ``scrapes`` scrapes, ``in_flight`` at once."""
    async def worker(count: int) -> None:
        for _ in range(count):
            body = await get(url, 10.0)
            if parse is not None:
                parse(body)

    await worker(in_flight)  # warm-up: open the connections
    cpu0, wall0 = time.process_time(), time.perf_counter()
    per_worker = scrapes // in_flight
    await asyncio.gather(*(worker(per_worker) for _ in range(in_flight)))
    done = per_worker * in_flight
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / done * 1e6, wall / done * 1e6


def parser() -> Callable[[bytes], object] | None:
    """The parse the receiver does behind ``cni_aggregate``'s default rules: their families, the
    lines they read, no whole-page count."""
    try:
        from processors.cni_aggregate._rules import DEFAULT_RULES
        from processors.cni_aggregate._wanted import series_filters, wanted_families
        from receivers.prometheus._textparse import page_parser
    except ImportError:
        return None
    return page_parser(wanted_families(DEFAULT_RULES), count_all=False,
                       series=series_filters(DEFAULT_RULES))


Case = tuple[str, str, bool, int]  # client, body, parse, in flight


async def run_case(port: int, case: Case, scrapes: int,
                   parse: Callable[[bytes], object] | None) -> tuple[float, float]:
    name, encoding, with_parse, in_flight = case
    url = f"http://127.0.0.1:{port}/{encoding}"
    client: ScrapeClient | StreamsClient = (
        ScrapeClient(body_size_limit=10 * 1024 * 1024) if name == "ours" else StreamsClient())
    try:
        return await measure(client.get, url, scrapes, in_flight,
                             parse if with_parse else None)
    finally:
        await client.aclose()


async def run(port: int, scrapes: int, rounds: int) -> None:
    parse = parser()
    page = make_page()
    print(f"page: {len(page)} bytes plain, {len(gzip.compress(page, 6))} bytes gzip'd; "
          f"{scrapes} scrapes per row in {rounds} interleaved rounds, best round shown; "
          f"CPU is the client process only")
    if parse is None:
        print("(receivers.prometheus._textparse not importable: rows with parse skipped)")
    cases: list[Case] = []
    for in_flight in (1, 32):
        for encoding in ("plain", "gzip", "chunked"):
            cases += [("ours", encoding, False, in_flight)]
            if parse is not None:
                cases += [("ours", encoding, True, in_flight)]
            if encoding != "chunked":  # the baseline reads Content-Length bodies only
                cases += [("streams", encoding, False, in_flight)]
    # Rounds interleave the cases, so a burst of load elsewhere on the machine skews no case
    # more than another; the best round is the least disturbed one.
    best = {case: (float("inf"), float("inf")) for case in cases}
    for _ in range(rounds):
        for case in cases:
            cpu, wall = await run_case(port, case, max(case[3], scrapes // rounds), parse)
            best[case] = min(best[case], (cpu, wall))
    print(f"{'client':<8} {'body':<8} {'parse':<6} {'in flight':>9} {'CPU µs/scrape':>14} "
          f"{'wall µs/scrape':>15}")
    for (name, encoding, with_parse, in_flight), (cpu, wall) in best.items():
        print(f"{name:<8} {encoding:<8} {'yes' if with_parse else 'no':<6} "
              f"{in_flight:>9} {cpu:>14.1f} {wall:>15.1f}")


def main() -> None:
    parser_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser_.add_argument("--scrapes", type=int, default=3000)
    parser_.add_argument("--rounds", type=int, default=5)
    parser_.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    args = parser_.parse_args()
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(queue,), daemon=True)
    server.start()
    try:
        port = queue.get(timeout=10)
        if args.uvloop:
            import uvloop

            uvloop.run(run(port, args.scrapes, args.rounds))
        else:
            asyncio.run(run(port, args.scrapes, args.rounds))
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
