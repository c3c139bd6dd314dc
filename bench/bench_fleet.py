"""Can the simulated fleet outrun the scraper? Requests/s and CPU of simfleet under full cycles.

Starts a fleet (default 1,000 nodes, 40 KB pages), then runs scrape-like rounds: one keep-alive
connection per node, every node fetched once per round, all concurrently, gzip'd by default.
Reports per round the wall time and the fleet's CPU seconds (from its own stats, so the load
generator's CPU is not counted), and the cost of ``advance`` (which re-renders every page that
clients fetch) and of ``truth``. The load generator is plain asyncio streams; on a 2-core
machine it competes with the fleet, so the fleet's requests per CPU-second is the figure to
read: it is the rate one fleet core sustains.

    .venv/bin/python bench/bench_fleet.py [--nodes 1000] [--page-bytes 40000] [--rounds 5]
        [--identity] [--processes N] [--base 127.40.0.1]

Numbers are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simfleet import FleetClient, FleetProcess  # noqa: E402


class Connection:
    """One keep-alive connection to one node, reading exactly one response per request."""

    def __init__(self, address: str, gzip_ok: bool) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        encoding = "gzip" if gzip_ok else "identity"
        self.request = (f"GET /metrics HTTP/1.1\r\nHost: {address}\r\n"
                        f"Accept-Encoding: {encoding}\r\n\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def fetch(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if b"Transfer-Encoding: chunked" in head:
            size = 0
            while True:
                chunk = int(await self.reader.readline(), 16)
                await self.reader.readexactly(chunk + 2)
                size += chunk
                if chunk == 0:
                    return size
        length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
        await self.reader.readexactly(length)
        return length

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def one_round(connections: list[Connection]) -> tuple[float, int]:
    started = time.perf_counter()
    sizes = await asyncio.gather(*(c.fetch() for c in connections))
    return time.perf_counter() - started, sum(sizes)


def fleet_cpu(client: FleetClient) -> tuple[float, int]:
    stats = client.stats()
    return stats["cpu_seconds"], stats["requests"]


async def run_rounds(client: FleetClient, connections: list[Connection], rounds: int,
                     advance: bool) -> list[dict[str, float]]:
    results = []
    for _ in range(rounds):
        advance_seconds = 0.0
        if advance:
            started = time.perf_counter()
            await asyncio.to_thread(client.advance_quietly, 1)
            advance_seconds = time.perf_counter() - started
        cpu_before, requests_before = await asyncio.to_thread(fleet_cpu, client)
        wall, size = await one_round(connections)
        cpu_after, requests_after = await asyncio.to_thread(fleet_cpu, client)
        cpu = cpu_after - cpu_before
        requests = requests_after - requests_before
        results.append({"wall": wall, "fleet_cpu": cpu, "requests": requests,
                        "bytes": size, "advance": advance_seconds,
                        "per_cpu_second": requests / cpu if cpu > 0 else float("inf")})
    return results


def report(name: str, results: list[dict[str, float]]) -> None:
    for i, r in enumerate(results):
        print(f"  {name} round {i}: wall {r['wall']:.3f}s  fleet CPU {r['fleet_cpu']:.3f}s  "
              f"{r['requests'] / r['wall']:,.0f} req/s wall  "
              f"{r['per_cpu_second']:,.0f} req per fleet CPU-s  "
              f"body {r['bytes'] / max(1, r['requests']):,.0f} B"
              + (f"  advance {r['advance']:.3f}s" if r["advance"] else ""))


async def bench(args: argparse.Namespace) -> dict[str, object]:
    fleet = FleetProcess(args.nodes, base_address=args.base, page_bytes=args.page_bytes,
                         processes=args.processes)
    started = time.perf_counter()
    fleet.start(timeout=120)
    startup = time.perf_counter() - started
    try:
        client = fleet.client
        print(f"fleet: {args.nodes} nodes in {len(fleet.pids)} process(es), "
              f"started in {startup:.2f}s")
        connections = [Connection(a, not args.identity) for a in fleet.addresses]
        first_wall, _ = await one_round(connections)  # connect + first render of every page
        print(f"  first round (connect + render every page): {first_wall:.3f}s")
        cached = await run_rounds(client, connections, args.rounds, advance=False)
        report("cached", cached)
        changed = await run_rounds(client, connections, args.rounds, advance=True)
        report("after advance", changed)
        started = time.perf_counter()
        truth = await asyncio.to_thread(client.truth)
        truth_seconds = time.perf_counter() - started
        print(f"  truth() for {len(truth.nodes)} nodes: {truth_seconds:.3f}s")
        for connection in connections:
            connection.close()
        best = max(cached, key=lambda r: r["per_cpu_second"])
        return {"nodes": args.nodes, "page_bytes": args.page_bytes, "gzip": not args.identity,
                "processes": len(fleet.pids), "startup_s": round(startup, 3),
                "first_round_s": round(first_wall, 3),
                "cached_round_wall_s": round(min(r["wall"] for r in cached), 3),
                "cached_req_per_fleet_cpu_s": round(best["per_cpu_second"]),
                "advance_s": round(min(r["advance"] for r in changed), 3),
                "round_after_advance_wall_s": round(min(r["wall"] for r in changed), 3),
                "truth_s": round(truth_seconds, 3)}
    finally:
        fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--page-bytes", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--identity", action="store_true", help="plain pages instead of gzip")
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--base", default="127.40.0.1")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per node here too
    summary = asyncio.run(bench(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
