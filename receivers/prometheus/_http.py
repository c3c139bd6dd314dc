"""A minimal HTTP/1.1 GET client for scraping, written on ``asyncio.BufferedProtocol``.

Why hand-written: the scrape path has a small CPU budget per gzip'd 40 KB target-scrape, parse and
aggregation included, and a library client (requests with threads, aiohttp) alone would spend all
of it; even plain asyncio streams cost more than this client. ``bench/bench_scrape.py`` prints the
figures, this client's beside a minimal streams client's (inflating a gzip'd page costs about as
much as the request); what is left is the event loop's two iterations, the send/recv/epoll syscalls
and inflating. A protocol is kept over streams for what streams make awkward: the response is
parsed as it arrives and the caller wakes once per response, not once per read; a response that
arrives in one read (the usual case) is sliced out of it, chunked or not, without going through a
buffer; "closed before any byte" (a stale kept-alive connection) is observable; and a bad response
aborts the transport at once. Each choice that makes this path cheaper says why where it is made,
most of them in :mod:`._connection` (the connection and its response parser): reads into one
reused buffer (``ReadBuffer``), one timer per request rather than ``asyncio.timeout``
(``Connection.exchange``), chunked bodies sliced out of the read
(``Connection._whole_chunked_body``); and gzip inflated without a second pass for its CRC
(:func:`._gzip.gunzip`).

What it does, and no more: ``GET`` on keep-alive connections (idle ones kept per host and reused
across cycles; a reused connection that fails before any byte of the response is retried once on
a fresh one), ``Accept-Encoding: gzip``, Content-Length, chunked and close-delimited bodies, a size
bound applied to the wire size *and* the decompressed size (so a gzip bomb costs at most the
bound), a per-request timeout that covers connect and response, https with a caller's
``ssl.SSLContext``, extra headers (a bearer token for the API-server proxy). No redirects, no
proxies, no request bodies, no pipelining.

Every failure is a :class:`pipeline.ScrapeError` carrying the URL and an :class:`ErrorClass`:
``timeout``, ``connect`` (refused, reset, TLS, closed before the response ended), ``http_status``
(a non-2xx status or a response that is not HTTP), ``body_too_large``, ``parse`` (a body that
does not decode). A connection that timed out or saw a broken, over-limit or undecodable response
is discarded; a complete non-2xx response leaves it reusable.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import zlib
from collections.abc import Mapping

from pipeline import ErrorClass, ScrapeError

from ._connection import Connection, ReadBuffer, StaleConnection
from ._gzip import gunzip
from ._url import URL, netloc_key, split_url

ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
#: The User-Agent header sent by default (the ``user_agent`` setting's default).
USER_AGENT = "cni-pipeline/0.1"


class ScrapeClient:
    """GETs metrics pages over kept-alive HTTP/1.1 connections.

    Idle connections are kept per ``scheme://host:port`` (up to ``max_idle_per_host``): one per
    target in direct mode, several to the API server in proxy mode. Concurrent ``get`` calls to
    one host each take their own connection. Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        *,
        body_size_limit: int,
        user_agent: str = USER_AGENT,
        max_idle_per_host: int = 256,
        compression: bool = True,
    ) -> None:
        if body_size_limit <= 0:
            raise ValueError("body_size_limit must be positive")
        self.body_size_limit = body_size_limit
        self.user_agent = user_agent
        self.max_idle_per_host = max_idle_per_host
        #: Ask for gzip. It trades our CPU (inflating costs about as much as the rest of the
        #: request) for bytes on the wire; Prometheus' ``enable_compression`` does the same.
        self.compression = compression
        self._idle: dict[str, list[Connection]] = {}
        self._requests: dict[str, bytes] = {}
        self._default_tls: _ssl.SSLContext | None = None
        self._read_buffer = ReadBuffer()
        self._closed = False
        #: Connections opened so far (for self-metrics and tests).
        self.connections_opened = 0

    async def get(
        self,
        url: str,
        timeout: float,
        *,
        ssl: _ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """The decoded body of a 2xx response to ``GET url``, within ``timeout`` seconds.

        Raises :class:`pipeline.ScrapeError`; nothing else but ``CancelledError`` escapes.
        """
        try:
            parts = split_url(url)
        except ValueError as exc:
            raise ScrapeError(url, ErrorClass.CONNECT, str(exc)) from None
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            return await self._fetch(parts, url, ssl, headers, deadline)
        except TimeoutError:
            raise ScrapeError(
                url, ErrorClass.TIMEOUT, f"no complete response within {timeout:g}s") from None

    async def open(
        self, url: str, timeout: float, *, ssl: _ssl.SSLContext | None = None
    ) -> bool:
        """Open a connection to ``url``'s host ahead of its first request and keep it idle.

        True if an idle connection is ready (opened now, or one was already). Failures are not
        raised: the request that follows meets them again and reports them.
        """
        try:
            parts = split_url(url)
        except ValueError:
            return False
        if self._idle.get(parts.key):
            return True
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            conn = await self._connect(parts, url, ssl, deadline)
        except (ScrapeError, TimeoutError):
            return False
        conn.reusable = True  # unused yet: if the server closes it first, get() opens another
        self._put_idle(parts.key, conn)
        return conn.usable()

    async def close_host(self, netloc: str) -> None:
        """Close the idle connections to a host: ``scheme://host:port``, a URL, or ``host:port``
        (then both schemes)."""
        if "://" in netloc:
            keys = [split_url(netloc).key]
        else:
            keys = [f"http://{netloc}", f"https://{netloc}"]
        for key in keys:
            for conn in self._idle.pop(key, ()):
                conn.abort()
        await asyncio.sleep(0)  # let the transports run connection_lost

    async def aclose(self) -> None:
        """Close every idle connection; connections in use are closed when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.abort()
        await asyncio.sleep(0)

    def idle_connections(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    # -- internals ----------------------------------------------------------------------------

    async def _fetch(
        self,
        parts: URL,
        url: str,
        tls: _ssl.SSLContext | None,
        headers: Mapping[str, str] | None,
        deadline: float,
    ) -> bytes:
        """GET within ``deadline`` (loop time); raises ``TimeoutError`` past it."""
        request = self._request(parts, url, headers)
        conn = self._take_idle(parts.key)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(parts, url, tls, deadline)
        try:
            try:
                status, reason, body, encoding = await conn.exchange(request, deadline)
            except StaleConnection as exc:
                conn.abort()
                if not reused:
                    raise ScrapeError(url, ErrorClass.CONNECT,
                                      f"connection closed before any response ({exc})") from None
                # The server had closed the kept-alive connection: one retry on a fresh one.
                conn = await self._connect(parts, url, tls, deadline)
                try:
                    status, reason, body, encoding = await conn.exchange(request, deadline)
                except StaleConnection as exc2:
                    raise ScrapeError(url, ErrorClass.CONNECT,
                                      f"connection closed before any response ({exc2})") from None
            if 200 <= status < 300 and encoding and encoding != b"identity":
                # Decoded before the connection goes back: a bomb or a bad body closes it.
                body = self._decode(url, body, encoding)
        except BaseException:
            conn.abort()
            raise
        self._put_idle(parts.key, conn)
        if not 200 <= status < 300:
            shown = reason.decode("latin-1", "replace")[:80]
            raise ScrapeError(url, ErrorClass.HTTP_STATUS, f"HTTP {status} {shown}".rstrip())
        return body

    def _request(self, parts: URL, url: str, headers: Mapping[str, str] | None) -> bytes:
        if headers is None:
            cached = self._requests.get(url)
            if cached is not None:
                return cached
        lines = [
            f"GET {parts.target} HTTP/1.1",
            f"Host: {parts.authority}",
            f"User-Agent: {self.user_agent}",
            f"Accept: {ACCEPT}",
            "Accept-Encoding: gzip" if self.compression else "Accept-Encoding: identity",
        ]
        if headers:
            lines.extend(f"{name}: {value}" for name, value in headers.items())
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if headers is None and len(self._requests) < 65536:
            self._requests[url] = request
        return request

    def _take_idle(self, key: str) -> Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.usable():
                return conn
            conn.abort()
        return None

    def _put_idle(self, key: str, conn: Connection) -> None:
        if not conn.reusable or not conn.usable() or self._closed:
            conn.abort()
            return
        conns = self._idle.setdefault(key, [])
        if len(conns) >= self.max_idle_per_host:
            conn.abort()
        else:
            conn.idle()
            conns.append(conn)

    async def _connect(
        self, parts: URL, url: str, tls: _ssl.SSLContext | None, deadline: float
    ) -> Connection:
        """A new connection, within ``deadline``; raises ``TimeoutError`` past it."""
        loop = asyncio.get_running_loop()
        if parts.scheme == "https" and tls is None:
            tls = self._default_context()
        elif parts.scheme == "http":
            tls = None
        try:
            async with asyncio.timeout_at(deadline):  # connecting is rare: no need to save here
                _, protocol = await loop.create_connection(
                    lambda: Connection(loop, url, self.body_size_limit, self._read_buffer),
                    parts.host,
                    parts.port,
                    ssl=tls,
                    server_hostname=parts.host if tls is not None else None,
                )
        except TimeoutError:  # an OSError too, but ours to report as a timeout
            raise
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS handshake
            raise ScrapeError(url, ErrorClass.CONNECT, describe_exception(exc)) from None
        self.connections_opened += 1
        return protocol

    def _default_context(self) -> _ssl.SSLContext:
        if self._default_tls is None:
            self._default_tls = _ssl.create_default_context()
        return self._default_tls

    def _decode(self, url: str, body: bytes, encoding: bytes) -> bytes:
        if encoding not in (b"gzip", b"x-gzip"):
            raise ScrapeError(url, ErrorClass.PARSE,
                              f"unsupported Content-Encoding {encoding.decode('latin-1')!r}")
        limit = self.body_size_limit
        try:
            data = gunzip(body, limit)
        except zlib.error as exc:
            raise ScrapeError(url, ErrorClass.PARSE, f"body is not valid gzip: {exc}") from None
        if data is None:
            raise ScrapeError(url, ErrorClass.BODY_TOO_LARGE,
                              f"gzip'd body decompresses past the limit of {limit} bytes")
        return data


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` for an unexpected failure (``Type`` alone when it has no message; the
    message alone when it already names the type), as a target's error reads it."""
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


__all__ = ["ACCEPT", "USER_AGENT", "ScrapeClient", "describe_exception", "netloc_key"]
