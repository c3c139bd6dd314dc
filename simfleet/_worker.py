"""Worker processes: a slice of the fleet served by a child of the coordinator.

One process should not hold much more than ~4,000 nodes: each node is a listening socket plus a
connection per scraper, the open-file limit is 20,000, and one Python process uses one core. Past
that the coordinator starts workers (``python -m simfleet worker``), each owning a ``Shard``.

The coordinator talks to a worker over the worker's stdin/stdout: one JSON line per request
(``{"op": ..., "args": {...}}``), one framed reply per request (``ok|err|fail LENGTH\\n`` then
LENGTH bytes of JSON or message). A pipe ties the worker's life to the coordinator's: when the
coordinator exits, however it exits, the worker reads EOF and stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._server import Shard, raise_fd_limit

_CLOSE_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class ShardOptions:
    """What every process needs to build its slice identically (same seed, same clock)."""

    base: str
    port: int
    page_bytes: int | None
    seed: int
    counter_type_gauge: bool
    start_time: float | None
    now: float

    def make_shard(self, first: int, count: int) -> Shard:
        return Shard(first, count, base=self.base, port=self.port, page_bytes=self.page_bytes,
                     seed=self.seed, counter_type_gauge=self.counter_type_gauge,
                     start_time=self.start_time, now=self.now)

    def worker_args(self, first: int, count: int) -> list[str]:
        args = ["--first", str(first), "--count", str(count), "--base", self.base,
                "--port", str(self.port), "--seed", str(self.seed), "--now", repr(self.now)]
        if self.page_bytes:
            args += ["--page-bytes", str(self.page_bytes)]
        if self.counter_type_gauge:
            args.append("--counter-type-gauge")
        if self.start_time is not None:
            args += ["--start-time", repr(self.start_time)]
        return args


class ShardError(Exception):
    """A worker refused an operation (``client`` true: bad arguments) or failed doing it."""

    def __init__(self, message: str, *, client: bool) -> None:
        super().__init__(message)
        self.client = client


class RemoteShard:
    """The coordinator's handle on one worker process; same ``dispatch`` as a local Shard."""

    def __init__(self, first: int, count: int, process: asyncio.subprocess.Process) -> None:
        self.first = first
        self.count = count
        self.process = process
        self._lock = asyncio.Lock()

    @classmethod
    async def spawn(cls, first: int, count: int, options: ShardOptions) -> RemoteShard:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simfleet", "worker", *options.worker_args(first, count),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        shard = cls(first, count, process)
        try:
            await shard._read_reply()  # the worker's first frame says it listens on every node
        except BaseException:
            await shard.close()
            raise
        return shard

    @property
    def pid(self) -> int:
        return self.process.pid

    async def dispatch(self, op: str, args: Mapping[str, Any]) -> bytes:
        async with self._lock:  # one request in flight per worker: replies come back in order
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"op": op, "args": dict(args)}).encode() + b"\n")
            await self.process.stdin.drain()
            return await self._read_reply()

    async def _read_reply(self) -> bytes:
        assert self.process.stdout is not None
        header = await self.process.stdout.readline()
        if not header:
            raise ShardError(f"worker {self.process.pid} (nodes {self.first}..) exited",
                             client=False)
        status, _, length = header.decode().partition(" ")
        payload = await self.process.stdout.readexactly(int(length))
        if status != "ok":
            raise ShardError(payload.decode(errors="replace"), client=status == "err")
        return payload

    async def close(self) -> None:
        """EOF on the worker's stdin stops it; kill it if it does not stop in time."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), _CLOSE_GRACE)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def run_worker(first: int, count: int, options: ShardOptions) -> int:
    """Serve nodes ``first..first+count-1`` and answer the coordinator until stdin closes."""
    raise_fd_limit()
    shard = options.make_shard(first, count)
    out = sys.stdout.buffer
    try:
        await shard.start()
    except OSError as exc:
        _write_frame(out, "fail", f"cannot listen: {exc}".encode())
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Ctrl-C reaches the whole process group; the coordinator decides when workers stop.
        loop.add_signal_handler(sig, lambda: None)
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _write_frame(out, "ok", json.dumps({"pid": os.getpid()}).encode())
    try:
        while line := await reader.readline():
            status, payload = await _answer(shard, line)
            # Blocking write: the coordinator is waiting for exactly this reply, so it drains.
            _write_frame(out, status, payload)
    finally:
        await shard.close()
    return 0


async def _answer(shard: Shard, line: bytes) -> tuple[str, bytes]:
    try:
        request = json.loads(line)
        return "ok", await shard.dispatch(str(request["op"]), request.get("args") or {})
    except (ValueError, KeyError, TypeError) as exc:
        return "err", str(exc).encode()
    except Exception as exc:  # report, keep serving: one bad operation must not kill a slice
        return "fail", f"{type(exc).__name__}: {exc}".encode()


def _write_frame(out: Any, status: str, payload: bytes) -> None:
    out.write(b"%s %d\n" % (status.encode(), len(payload)))
    out.write(payload)
    out.flush()


def split_fleet(nodes: int, processes: int) -> Sequence[tuple[int, int]]:
    """(first, count) per process, as even as possible."""
    processes = max(1, min(processes, nodes))
    size, extra = divmod(nodes, processes)
    plan, first = [], 0
    for i in range(processes):
        count = size + (1 if i < extra else 0)
        plan.append((first, count))
        first += count
    return plan
