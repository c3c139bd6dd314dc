"""The nodes' HTTP servers and the shard that owns a slice of the fleet in one process.

Why a hand-written HTTP/1.1 server on ``asyncio.Protocol`` and not ``http.server`` (or aiohttp):
one process must hold thousands of listening sockets and answer thousands of scrapes a second;
``http.server`` needs a thread per connection and re-parses headers through ``email``, which costs
far more CPU per request than the page itself. Here a request costs a ``find`` for the blank line,
a few ``split`` calls and one ``writelines`` of a prebuilt body (see ``_page``). Only what a
Prometheus scraper sends is handled: GET, keep-alive, pipelined requests in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from email.utils import formatdate
from ipaddress import IPv4Address
from typing import Any

from ._node import NodeState
from ._page import PADDING_VARIANTS, Body, Padding, gzip_body, make_padding, plain_body

FAILURE_MODES = ("ok", "http_500", "hang", "garbage", "close", "slow:<seconds>", "down")
_MAX_HEAD = 16384
_BACKLOG = 1024
_YIELD_EVERY = 200  # nodes rendered between two turns of the event loop
_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_GARBAGE_LINE = b"awscni_garbage{this line is not valid exposition format\n"
_ERROR_500 = (
    b"An error has occurred while serving metrics:\n\n"
    b"collected metric awscni_eni_max was collected before with the same name and label values\n"
)


def parse_failure(mode: str) -> tuple[str, float]:
    """``"slow:2.5"`` -> ``("slow", 2.5)``; other modes carry no number. Raises ValueError."""
    if mode.startswith("slow:"):
        seconds = float(mode[5:])
        if not 0.0 <= seconds < math.inf:
            raise ValueError(f"slow needs a finite non-negative number of seconds: {mode!r}")
        return "slow", seconds
    if mode not in FAILURE_MODES or mode == "slow:<seconds>":
        raise ValueError(f"unknown failure mode {mode!r}; modes: {', '.join(FAILURE_MODES)}")
    return mode, 0.0


def node_ip(base: str, index: int) -> str:
    """The index-th address counting up from ``base`` through the last octets."""
    ip = IPv4Address(int(IPv4Address(base)) + index)
    if not ip.is_loopback:
        raise ValueError(f"node {index} would be at {ip}, outside 127.0.0.0/8")
    return str(ip)


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode())
    return _date_cache[1]


class ServedNode:
    """A node's state plus what its server needs: address, failure mode, cached bodies."""

    __slots__ = ("state", "ip", "port", "padding", "mode", "slow_seconds", "server", "conns",
                 "_dynamic", "_plain", "_gzip", "served_plain", "served_gzip")

    def __init__(self, state: NodeState, ip: str, port: int, padding: Padding) -> None:
        self.state = state
        self.ip = ip
        self.port = port
        self.padding = padding
        self.mode = "ok"
        self.slow_seconds = 0.0
        self.server: asyncio.AbstractServer | None = None
        self.conns: set[_NodeProtocol] = set()
        self._dynamic: tuple[int, bytes] = (-1, b"")
        self._plain: tuple[int, Body] | None = None
        self._gzip: tuple[int, Body] | None = None
        # Bodies kept warm by refresh(): gzip from the start (scrapers ask for it), identity
        # once a client has asked for it.
        self.served_plain = False
        self.served_gzip = True

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def failure(self) -> str:
        return f"slow:{self.slow_seconds:g}" if self.mode == "slow" else self.mode

    def body(self, gzipped: bool, stats: ShardStats) -> Body:
        version = self.state.version
        cached = self._gzip if gzipped else self._plain
        if cached is not None and cached[0] == version:
            return cached[1]
        if self._dynamic[0] == version:
            dynamic = self._dynamic[1]
        else:
            dynamic = self.state.render().encode()
            self._dynamic = (version, dynamic)
            stats.renders += 1
        if gzipped:
            body = gzip_body(dynamic, self.padding)
            self._gzip = (version, body)
        else:
            body = plain_body(dynamic, self.padding)
            self._plain = (version, body)
        return body

    def refresh(self, stats: ShardStats) -> None:
        """Rebuild the bodies clients have asked for, so the next scrape finds them ready."""
        if self.served_gzip:
            self.body(True, stats)
        if self.served_plain:
            self.body(False, stats)

    def garbage(self) -> bytes:
        text = self.state.render().encode() + self.padding.text
        cut = text.index(b"# HELP", 1)
        return text[:cut] + _GARBAGE_LINE + text[cut:]


class ShardStats:
    __slots__ = ("requests", "bytes_sent", "renders", "connections", "open_connections")

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_sent = 0
        self.renders = 0
        self.connections = 0
        self.open_connections = 0


def _response_head(
    status: bytes, content_type: bytes, length: int, *, chunked: bool = False,
    gzipped: bool = False, close: bool = False, extra: bytes = b"",
) -> bytes:
    head = [b"HTTP/1.1 ", status, b"\r\nContent-Type: ", content_type, b"\r\nDate: ",
            _http_date(), b"\r\n", extra]
    if gzipped:
        head.append(b"Content-Encoding: gzip\r\n")
    if chunked:
        head.append(b"Transfer-Encoding: chunked\r\n")
    else:
        head.append(b"Content-Length: %d\r\n" % length)
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head)


def _accepts_gzip(value: bytes) -> bool:
    for item in value.split(b","):
        token, _, params = item.strip().partition(b";")
        if token.strip().lower() in (b"gzip", b"*"):
            q = params.strip().lower()
            return not (q.startswith(b"q=") and float(q[2:] or b"0") == 0.0)
    return False


class _NodeProtocol(asyncio.Protocol):
    """One connection to one node. Requests are answered in order; while one is held (``slow``,
    ``hang``) later pipelined requests wait in the buffer, as they would on a real server."""

    def __init__(self, node: ServedNode, stats: ShardStats) -> None:
        self._node = node
        self._stats = stats
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._busy = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._node.conns.add(self)
        self._stats.connections += 1
        self._stats.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._node.conns.discard(self)
        self._stats.open_connections -= 1
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        self._drain()

    def _drain(self) -> None:
        while not (self._busy or self._closing) and self._transport is not None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    self._simple(b"431 Request Header Fields Too Large", b"", close=True)
                return
            head = self._buffer[:end]
            self._buffer = self._buffer[end + 4:]
            self._handle(head)

    def _handle(self, head: bytes) -> None:
        self._stats.requests += 1
        lines = head.split(b"\r\n")
        request_line = lines[0].split(b" ")
        if len(request_line) != 3 or not request_line[2].startswith(b"HTTP/1."):
            self._simple(b"400 Bad Request", b"", close=True)
            return
        method, target, version = request_line
        gzipped, close, has_body = False, version == b"HTTP/1.0", False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"accept-encoding":
                gzipped = _accepts_gzip(value)
            elif name == b"connection":
                token = value.strip().lower()
                close = token == b"close" or (close and token != b"keep-alive")
            elif name in (b"content-length", b"transfer-encoding"):
                has_body = value.strip() != b"0"
        if method != b"GET" or has_body:  # bodies are never read: close rather than mis-frame
            self._simple(b"405 Method Not Allowed", b"", close=True, extra=b"Allow: GET\r\n")
            return
        if target.partition(b"?")[0] != b"/metrics":
            self._simple(b"404 Not Found", b"404 page not found\n", close=close,
                         extra=b"X-Content-Type-Options: nosniff\r\n")
            return
        self._metrics(gzipped, close, version == b"HTTP/1.0")

    def _metrics(self, gzipped: bool, close: bool, http10: bool) -> None:
        node = self._node
        mode = node.mode
        if mode == "ok":
            self._page(gzipped, close, http10)
        elif mode == "slow":
            self._busy = True
            self._timer = asyncio.get_running_loop().call_later(
                node.slow_seconds, self._slow_done, gzipped, close, http10)
        elif mode == "http_500":
            self._simple(b"500 Internal Server Error", _ERROR_500, close=close)
        elif mode == "garbage":
            data = node.garbage()
            if gzipped:
                data = gzip.compress(data, compresslevel=1, mtime=0)
            head = _response_head(b"200 OK", _CONTENT_TYPE, len(data), gzipped=gzipped, close=close)
            self._write((head, data), close)
        elif mode == "hang":
            self._busy = True  # read, never answer: the scraper's timeout must cut it
        else:  # "close", or "down" racing a connection accepted just before
            assert self._transport is not None
            self._closing = True
            self._transport.close()

    def _slow_done(self, gzipped: bool, close: bool, http10: bool) -> None:
        self._timer = None
        self._busy = False
        if self._transport is not None and not self._closing:
            self._page(gzipped, close, http10)
            self._drain()

    def _page(self, gzipped: bool, close: bool, http10: bool) -> None:
        node = self._node
        if gzipped:
            node.served_gzip = True
        else:
            node.served_plain = True
        body = node.body(gzipped, self._stats)
        if http10 or not body.chunked:
            head = _response_head(b"200 OK", _CONTENT_TYPE, body.length, gzipped=gzipped,
                                  close=close)
            self._write((head, *body.raw), close)
        else:
            head = _response_head(b"200 OK", _CONTENT_TYPE, body.length, chunked=True,
                                  gzipped=gzipped, close=close)
            self._write((head, *body.parts), close)

    def _simple(self, status: bytes, body: bytes, *, close: bool, extra: bytes = b"") -> None:
        head = _response_head(status, b"text/plain; charset=utf-8", len(body), close=close,
                              extra=extra)
        self._write((head, body), close)

    def _write(self, parts: tuple[bytes, ...], close: bool) -> None:
        transport = self._transport
        assert transport is not None
        transport.writelines(parts)
        self._stats.bytes_sent += sum(len(part) for part in parts)
        if close:
            self._closing = True
            transport.close()


def _listen_socket(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR so a node can listen again right after "down" (TIME_WAIT sockets);
        # it does not let two live listeners share an address on Linux.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Shard:
    """Nodes ``first .. first+count-1`` of the fleet, served from this process.

    ``dispatch`` runs one control operation and returns its JSON result as bytes, so the
    coordinator can splice worker answers without decoding them.
    """

    def __init__(
        self,
        first: int,
        count: int,
        *,
        base: str,
        port: int,
        page_bytes: int | None,
        seed: int,
        counter_type_gauge: bool,
        start_time: float | None,
        now: float,
    ) -> None:
        self.first = first
        self.count = count
        self.stats = ShardStats()
        self._port = port
        states = [
            NodeState(first + i, seed=seed, now=now, start_time=start_time,
                      counter_type_gauge=counter_type_gauge)
            for i in range(count)
        ]
        paddings = self._paddings(states, page_bytes)
        self.nodes = [
            ServedNode(state, node_ip(base, state.index), port,
                       paddings[state.index % len(paddings)])
            for state in states
        ]
        self._ops: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            "truth": lambda args: self._truth(),
            "set_gauge": self._set_gauge,
            "add_counter": self._add_counter,
            "set_p99": self._set_p99,
            "restart": self._restart,
            "stats": lambda args: self._stats(),
            "addresses": lambda args: [node.address for node in self.nodes],
        }

    @staticmethod
    def _paddings(states: list[NodeState], page_bytes: int | None) -> list[Padding]:
        if not page_bytes or not states:
            return [Padding.empty()]
        # The dynamic part is about the same size on every node: size padding from the first.
        target = page_bytes - len(states[0].render().encode())
        return [make_padding(target, variant) for variant in range(PADDING_VARIANTS)]

    async def start(self) -> None:
        """Listen on every node's address and render every page; returns once all accept
        connections, so a scraper's first cycle finds the pages ready like later ones."""
        for node in self.nodes:
            await self._listen(node)
        await self._refresh_all()

    async def _refresh_all(self) -> None:
        for i, node in enumerate(self.nodes):
            node.refresh(self.stats)
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # keep serving scrapes while thousands of pages render

    async def _listen(self, node: ServedNode) -> None:
        sock = _listen_socket(node.ip, node.port)
        node.port = sock.getsockname()[1]  # port 0 picks one; "down" then "ok" keeps it
        stats = self.stats
        loop = asyncio.get_running_loop()
        node.server = await loop.create_server(
            lambda: _NodeProtocol(node, stats), sock=sock, backlog=_BACKLOG
        )

    async def close(self) -> None:
        for node in self.nodes:
            self._unlisten(node)

    @staticmethod
    def _unlisten(node: ServedNode) -> None:
        if node.server is not None:
            node.server.close()
            node.server = None
        for conn in list(node.conns):
            conn.abort()  # like a killed process: peers see a reset

    def node(self, index: int) -> ServedNode:
        if not self.first <= index < self.first + self.count:
            raise ValueError(f"node {index} is not in this fleet")
        return self.nodes[index - self.first]

    async def dispatch(self, op: str, args: Mapping[str, Any]) -> bytes:
        if op == "set_failure":
            await self._set_failure(args)
            return b"null"
        if op == "advance":
            return json.dumps(await self._advance(args)).encode()
        handler = self._ops.get(op)
        if handler is None:
            raise ValueError(f"unknown operation {op!r}")
        return json.dumps(handler(args)).encode()

    # -- operations --------------------------------------------------------------------------

    def _truth(self) -> list[dict[str, Any]]:
        out = []
        for node in self.nodes:
            truth = node.state.truth()
            truth["address"] = node.address
            truth["failure"] = node.failure
            out.append(truth)
        return out

    async def _advance(self, args: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """Every node steps, then its pages are rebuilt here rather than on the next scrape.
        Each node changes atomically; a scrape during a long advance sees some nodes before
        and some after their step, as it would on a real cluster."""
        steps = int(args.get("steps", 1))
        if not 0 <= steps <= 10_000:
            raise ValueError(f"steps must be within 0..10000, got {steps}")
        for i, node in enumerate(self.nodes):
            state = node.state
            for _ in range(steps):
                state.advance()
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
        await self._refresh_all()
        return self._truth() if args.get("truth", True) else None

    def _set_gauge(self, args: Mapping[str, Any]) -> str:
        node = self.node(int(args["node"]))
        return node.state.set_gauge(
            str(args["family"]), _to_float(args["value"]), _labels(args.get("labels"))
        )

    def _add_counter(self, args: Mapping[str, Any]) -> str:
        node = self.node(int(args["node"]))
        return node.state.add_counter(
            str(args["family"]), _to_float(args["amount"]), _labels(args.get("labels"))
        )

    def _set_p99(self, args: Mapping[str, Any]) -> str:
        node = self.node(int(args["node"]))
        return node.state.set_p99(_to_float(args["value"]), _labels(args.get("labels")) or {})

    def _restart(self, args: Mapping[str, Any]) -> float:
        node = self.node(int(args["node"]))
        node.state.restart(time.time(), _to_float(args.get("counters_to", 0.0)))
        return node.state.start_time

    async def _set_failure(self, args: Mapping[str, Any]) -> None:
        node = self.node(int(args["node"]))
        mode, seconds = parse_failure(str(args["mode"]))
        if mode == "down":
            self._unlisten(node)
        elif node.server is None:
            await self._listen(node)
        node.mode, node.slow_seconds = mode, seconds

    def _stats(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "pid": os.getpid(),
            "nodes": [self.first, self.count],
            "cpu_seconds": round(time.process_time(), 4),
            "requests": stats.requests,
            "bytes_sent": stats.bytes_sent,
            "renders": stats.renders,
            "connections": stats.connections,
            "open_connections": stats.open_connections,
        }


def _to_float(value: Any) -> float:
    """Values arrive as JSON numbers, null (NaN) or "+Inf"/"-Inf"/"NaN" strings."""
    if value is None:
        return math.nan
    return float(value)


def _labels(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("labels must be an object of name -> value")
    return {str(k): str(v) for k, v in value.items()}


def raise_fd_limit() -> None:
    """Thousands of listeners plus a connection each: lift the soft fd limit to the hard one."""
    try:
        import resource
    except ImportError:  # not on Linux/macOS
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
