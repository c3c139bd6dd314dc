"""The fleet's main process: serves the first slice, runs workers for the rest, and answers the
HTTP JSON control API.

Control API (JSON bodies and answers; node indexes count from 0 in address order):

==========================  =========================================================
``GET  /truth``             ``{"nodes": [NODE, ...]}`` (see ``FleetTruth``)
``POST /advance``           ``{"steps": 1, "truth": true}`` -> same as /truth (or null)
``POST /set_gauge``         ``{"node", "family", "value", "labels"?}``
``POST /add_counter``       ``{"node", "family", "amount", "labels"?}``
``POST /set_p99``           ``{"node", "value", "labels": {"api", "error"}}``
``POST /restart``           ``{"node", "counters_to"?}`` -> the new process_start_time
``POST /set_failure``       ``{"node", "mode"}`` (ok, http_500, hang, garbage, close,
                            slow:<seconds>, down)
``GET  /stats``             requests, bytes and CPU seconds, per process and in total
``GET  /addresses``         ``["127.20.0.1:61678", ...]``
==========================  =========================================================

NaN travels as null and infinities as "+Inf"/"-Inf", since JSON has neither. A bad request
answers 400 with ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._server import raise_fd_limit
from ._worker import RemoteShard, ShardError, ShardOptions, split_fleet

NODES_PER_PROCESS = 4000
_NODE_OPS = frozenset({"set_gauge", "add_counter", "set_p99", "restart", "set_failure"})
_ROUTES = {
    ("GET", "/truth"): "truth",
    ("GET", "/stats"): "stats",
    ("GET", "/addresses"): "addresses",
    ("POST", "/advance"): "advance",
    ("POST", "/set_gauge"): "set_gauge",
    ("POST", "/add_counter"): "add_counter",
    ("POST", "/set_p99"): "set_p99",
    ("POST", "/restart"): "restart",
    ("POST", "/set_failure"): "set_failure",
}


class _AnyShard(Protocol):
    first: int
    count: int

    async def dispatch(self, op: str, args: Mapping[str, Any]) -> bytes: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServeOptions:
    nodes: int
    shard: ShardOptions
    processes: int | None
    control_host: str
    control_port: int
    advance_every: float | None
    parent_pipe: bool


def log(message: str) -> None:
    print(f"simfleet[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class Coordinator:
    """Routes node operations to the shard owning the node; fans fleet-wide ones out to all."""

    def __init__(self, shards: list[_AnyShard]) -> None:
        self.shards = shards

    def _owner(self, args: Mapping[str, Any]) -> _AnyShard:
        index = int(args["node"])
        for shard in self.shards:
            if shard.first <= index < shard.first + shard.count:
                return shard
        raise ValueError(f"no node {index}: the fleet has nodes 0..{self._size() - 1}")

    def _size(self) -> int:
        return sum(shard.count for shard in self.shards)

    async def handle(self, op: str, args: Mapping[str, Any]) -> bytes:
        if op in _NODE_OPS:
            return await self._owner(args).dispatch(op, args)
        parts = await asyncio.gather(*(shard.dispatch(op, args) for shard in self.shards))
        if op == "stats":
            return json.dumps(_merge_stats([json.loads(part) for part in parts])).encode()
        if op == "addresses":
            return _join_arrays(parts)
        if op == "advance" and not args.get("truth", True):
            return b"null"
        return b'{"nodes":' + _join_arrays(parts) + b"}"  # truth: spliced, never decoded here


def _join_arrays(parts: list[bytes]) -> bytes:
    """Concatenate JSON arrays without decoding them (a 5,000-node truth is tens of MB)."""
    inner = [part.strip()[1:-1] for part in parts]
    return b"[" + b",".join(item for item in inner if item.strip()) + b"]"


def _merge_stats(per_process: list[dict[str, Any]]) -> dict[str, Any]:
    total = {key: sum(p[key] for p in per_process)
             for key in ("requests", "bytes_sent", "renders", "connections", "open_connections")}
    total["cpu_seconds"] = round(sum(p["cpu_seconds"] for p in per_process), 3)
    return {**total, "processes": per_process}


class _ControlServer:
    """HTTP/1.1, one request per connection: control traffic is a few calls per cycle."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._respond(reader)
            writer.write(
                b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % (status, len(body))
            )
            writer.write(body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        op = _ROUTES.get((method, path.partition("?")[0]))
        if op is None:
            return b"404 Not Found", _error(f"no route {method} {path}; routes: "
                                            + ", ".join(f"{m} {p}" for m, p in _ROUTES))
        try:
            args = json.loads(body) if body.strip() else {}
            if not isinstance(args, dict):
                raise ValueError("the request body must be a JSON object")
            return b"200 OK", await self._coordinator.handle(op, args)
        except ShardError as exc:
            return (b"400 Bad Request" if exc.client else b"500 Internal Server Error"), _error(exc)
        except (ValueError, KeyError, TypeError) as exc:
            return b"400 Bad Request", _error(exc if not isinstance(exc, KeyError)
                                              else f"missing argument {exc}")
        except Exception as exc:
            log(f"control {op} failed: {type(exc).__name__}: {exc}")
            return b"500 Internal Server Error", _error(f"{type(exc).__name__}: {exc}")


def _error(message: object) -> bytes:
    return json.dumps({"error": str(message)}).encode()


def default_processes(nodes: int) -> int:
    return max(1, math.ceil(nodes / NODES_PER_PROCESS))


async def serve(options: ServeOptions) -> int:
    """Start every node and the control API, announce them on stdout, serve until stopped."""
    raise_fd_limit()
    plan = split_fleet(options.nodes, options.processes or default_processes(options.nodes))
    local = options.shard.make_shard(*plan[0])
    shards: list[_AnyShard] = [local]
    spawns = [RemoteShard.spawn(first, count, options.shard) for first, count in plan[1:]]
    started = await asyncio.gather(local.start(), *spawns, return_exceptions=True)
    shards += [result for result in started[1:] if isinstance(result, RemoteShard)]
    errors = [result for result in started if isinstance(result, BaseException)]
    if errors:
        log(f"cannot start the fleet: {errors[0]}")
        await _close_all(shards)
        return 1
    coordinator = Coordinator(shards)
    control = _ControlServer(coordinator)
    try:
        server = await asyncio.start_server(control.handle, options.control_host,
                                            options.control_port)
    except OSError as exc:
        log(f"cannot listen for control on {options.control_host}:{options.control_port}: {exc}")
        await _close_all(shards)
        return 1
    try:
        return await _run(options, coordinator, server, shards)
    finally:
        server.close()
        await _close_all(shards)


async def _run(options: ServeOptions, coordinator: Coordinator, server: asyncio.Server,
               shards: list[_AnyShard]) -> int:
    port = server.sockets[0].getsockname()[1]
    control_url = f"http://{options.control_host}:{port}"
    addresses = json.loads(await coordinator.handle("addresses", {}))
    pids = [os.getpid()] + [s.pid for s in shards if isinstance(s, RemoteShard)]
    announce = {"control": control_url, "addresses": addresses, "pids": pids}
    sys.stdout.write(json.dumps(announce) + "\n")
    sys.stdout.flush()
    log(f"{len(addresses)} nodes {addresses[0]} .. {addresses[-1]} in {len(pids)} process(es); "
        f"control {control_url}" + ("" if options.parent_pipe else " (Ctrl-C to stop)"))
    stop = asyncio.Event()
    exit_code = [0]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(_watch_worker(s, stop, exit_code))
             for s in shards if isinstance(s, RemoteShard)]
    if options.parent_pipe:
        tasks.append(asyncio.create_task(_watch_parent(stop)))
    if options.advance_every:
        tasks.append(asyncio.create_task(_advance_loop(coordinator, options.advance_every)))
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return exit_code[0]


async def _close_all(shards: list[_AnyShard]) -> None:
    await asyncio.gather(*(shard.close() for shard in shards), return_exceptions=True)


async def _watch_worker(shard: RemoteShard, stop: asyncio.Event, exit_code: list[int]) -> None:
    """A worker that dies takes a slice of the fleet with it: stop the whole fleet, loudly."""
    code = await shard.process.wait()
    if not stop.is_set():
        log(f"worker {shard.pid} (nodes {shard.first}..{shard.first + shard.count - 1}) "
            f"exited with {code}; stopping")
        exit_code[0] = 1
        stop.set()


async def _watch_parent(stop: asyncio.Event) -> None:
    """Under FleetProcess, stdin is a pipe from the parent: EOF means the parent is gone."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stop.set()


async def _advance_loop(coordinator: Coordinator, every: float) -> None:
    next_time = time.monotonic() + every
    while True:
        await asyncio.sleep(max(0.0, next_time - time.monotonic()))
        next_time += every
        with contextlib.suppress(ShardError):
            await coordinator.handle("advance", {"steps": 1, "truth": False})


__all__ = ["Coordinator", "ServeOptions", "default_processes", "serve"]
