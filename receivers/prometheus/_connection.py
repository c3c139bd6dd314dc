"""One HTTP/1.1 connection of the scrape client (:mod:`._http`), parsing responses as the bytes
arrive: the response parser is the bulk of the client and has no other user, so it lives apart
from the pool of connections and the requests (``ScrapeClient``).
"""

from __future__ import annotations

import asyncio
from typing import cast

from pipeline import ErrorClass, ScrapeError

#: Largest response head (status line + headers) accepted.
_MAX_HEAD = 64 * 1024
#: Largest chunk-size or trailer line accepted in a chunked body.
_MAX_CHUNK_LINE = 4 * 1024

# Response parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class StaleConnection(Exception):
    """The connection ended before any byte of the response: a kept-alive connection the server
    had already closed. Retried once on a fresh connection when the connection was reused."""


class ReadBuffer:
    """One receive buffer shared by every connection of a client.

    Why: asyncio's plain ``Protocol`` path reads with ``sock.recv(256 KiB)``, which mallocs 256 KiB
    per read; that is above glibc's mmap threshold, so every read pays mmap, page faults and
    munmap, a cost ``bench/bench_scrape.py`` shows on every scrape. A ``BufferedProtocol`` reads
    into this buffer instead. One buffer serves all connections because the event loop runs
    ``get_buffer``, the read and ``buffer_updated`` back to back for one connection at a time, and
    ``buffer_updated`` copies out what it keeps before returning.
    """

    __slots__ = ("data", "view")

    def __init__(self, size: int = 256 * 1024) -> None:
        self.data = bytearray(size)
        self.view = memoryview(self.data)


class Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection, parsing responses as bytes arrive.

    At most one request is in flight. ``exchange`` writes a request and returns a future that
    resolves to ``(status, reason, body, content_encoding)``; the parser sets it from
    ``buffer_updated`` or ``connection_lost``. Errors found while parsing fail the future and
    abort the transport.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, url: str, limit: int, buffer: ReadBuffer
    ) -> None:
        self._loop = loop
        self._read_buffer = buffer
        self._url = url
        self._limit = limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Whether the connection may carry another request after the current response.
        self.reusable = False
        self._waiter: asyncio.Future[tuple[int, bytes, bytes, bytes]] | None = None
        #: Fails the waiter at the request's deadline (see :meth:`exchange`).
        self._timer: asyncio.TimerHandle | None = None
        self._state = _DONE
        self._buf = bytearray()
        self._body = bytearray()
        self._got_bytes = False
        self._remaining = 0
        self._status = 0
        self._reason = b""
        self._encoding = b""

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not subclasses of asyncio.Transport, hence the cast).
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._read_buffer.view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.reusable = False
            self.abort()
            return
        self._got_bytes = True
        try:
            self._feed(data)
        except ScrapeError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._disarm()
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._state == _UNTIL_CLOSE and exc is None:
            self._state = _DONE
            waiter.set_result((self._status, self._reason, bytes(self._body), self._encoding))
        elif not self._got_bytes:
            waiter.set_exception(StaleConnection(str(exc) if exc else "closed"))
        else:
            why = f": {exc}" if exc else ""
            waiter.set_exception(self._error(
                ErrorClass.CONNECT, f"connection closed before the response ended{why}"))

    # -- requests -----------------------------------------------------------------------------

    def exchange(
        self, request: bytes, deadline: float
    ) -> asyncio.Future[tuple[int, bytes, bytes, bytes]]:
        """Send ``request``; the future fails with ``TimeoutError`` at ``deadline`` (loop time),
        and the connection is then aborted.

        Why a timer here rather than ``asyncio.timeout()`` around the await: that costs a
        context manager, a timer and the task's cancel/uncancel bookkeeping, more than twice
        what one ``call_at`` costs, on every scrape.
        """
        assert self.transport is not None
        self._waiter = self._loop.create_future()
        self._timer = self._loop.call_at(deadline, self._expire)
        self._state = _HEAD
        self._got_bytes = False
        self._buf.clear()
        self._body = bytearray()
        self.reusable = False
        self.transport.write(request)
        return self._waiter

    def idle(self) -> None:
        """Forget the finished exchange: its future holds the response, and 5,000 idle
        connections each holding their last gzip'd page were 30 MB kept for nothing."""
        self._waiter = None

    def abort(self) -> None:
        self.reusable = False
        self._disarm()
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def usable(self) -> bool:
        return (not self.closed and self.transport is not None
                and not self.transport.is_closing())

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())
        self.abort()

    # -- parsing ------------------------------------------------------------------------------

    def _error(self, error_class: ErrorClass, message: str) -> ScrapeError:
        return ScrapeError(self._url, error_class, message)

    def _fail(self, exc: ScrapeError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def _finish(self, body: bytes | None = None) -> None:
        self._state = _DONE
        self._disarm()
        if self._buf:
            # Bytes beyond the response (we never pipeline): don't trust this connection again.
            self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if body is None:
                body = bytes(self._body)
            waiter.set_result((self._status, self._reason, body, self._encoding))

    def _feed(self, data: bytes) -> None:
        state = self._state
        if state == _LENGTH:
            # The rest of a Content-Length body that did not come with its head.
            self._body += data
            if len(self._body) >= self._remaining:
                if len(self._body) > self._remaining:
                    self._buf += self._body[self._remaining:]
                    del self._body[self._remaining:]
                self._finish()
            return
        if state == _UNTIL_CLOSE:
            self._body += data
            if len(self._body) > self._limit:
                raise self._too_large(len(self._body))
            return
        if state == _HEAD:
            if self._buf:  # the head came in pieces
                self._buf += data
                data = bytes(self._buf)
                self._buf.clear()
            self._parse_head(data)
        else:
            self._buf += data
        if self._state in (_CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS):
            self._parse_chunked()

    def _too_large(self, size: int) -> ScrapeError:
        return self._error(ErrorClass.BODY_TOO_LARGE,
                           f"body of {size}+ bytes on the wire exceeds the limit of {self._limit}")

    def _parse_head(self, data: bytes, start: int = 0) -> None:
        """Parse the head at ``data[start:]`` and dispatch what follows it.

        ``data`` is usually one read holding the whole response: then the body is sliced out of
        it once and handed over, never copied into a buffer first.
        """
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            if len(data) - start > _MAX_HEAD:
                raise self._error(ErrorClass.HTTP_STATUS, "response head too large")
            self._buf += data[start:]
            return
        lines = data[start:end].split(b"\r\n")
        start = end + 4
        status, reason, http10 = self._status_line(lines[0])
        length, chunked, encoding, connection = self._headers(lines[1:])
        if 100 <= status < 200:
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
            self._parse_head(data, start)
            return
        self._status, self._reason, self._encoding = status, reason, encoding
        keep_alive = b"keep-alive" in connection if http10 else b"close" not in connection
        self.reusable = keep_alive
        if status in (204, 304):
            self._buf += data[start:]
            self._finish(b"")
        elif chunked:
            whole = self._whole_chunked_body(data, start)
            if whole is not None:  # the common case: all of it in one read
                body, end = whole
                self._buf += data[end:]
                self._finish(body)
            else:
                self._state = _CHUNK_SIZE
                self._buf += data[start:]
        elif length is not None:
            if length > self._limit:
                raise self._error(ErrorClass.BODY_TOO_LARGE,
                                  f"Content-Length {length} exceeds the limit of {self._limit}")
            self._remaining = length
            if len(data) - start >= length:  # the common case: all of it in one read
                self._buf += data[start + length:]
                self._finish(data[start: start + length])
            else:
                self._state = _LENGTH
                self._body += data[start:]
        else:
            # Neither length nor chunked: the body runs until the server closes.
            self.reusable = False
            self._state = _UNTIL_CLOSE
            self._body += data[start:]
            if len(self._body) > self._limit:
                raise self._too_large(len(self._body))

    def _status_line(self, line: bytes) -> tuple[int, bytes, bool]:
        parts = line.split(b" ", 2)
        if (len(parts) < 2 or not parts[0].startswith(b"HTTP/1.")
                or len(parts[1]) != 3 or not parts[1].isdigit()):
            shown = line[:80].decode("latin-1")
            raise self._error(ErrorClass.HTTP_STATUS, f"malformed status line {shown!r}")
        reason = parts[2] if len(parts) > 2 else b""
        return int(parts[1]), reason, parts[0] == b"HTTP/1.0"

    def _headers(self, lines: list[bytes]) -> tuple[int | None, bool, bytes, bytes]:
        length: int | None = None
        chunked = False
        encoding = b""
        connection = b""
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep:
                shown = line[:80].decode("latin-1")
                raise self._error(ErrorClass.HTTP_STATUS, f"malformed header line {shown!r}")
            name = name.strip().lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise self._error(ErrorClass.HTTP_STATUS, "invalid Content-Length")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-encoding":
                encoding = value.strip().lower()
            elif name == b"connection":
                connection = value.lower()
        return length, chunked, encoding, connection

    def _whole_chunked_body(self, data: bytes, pos: int) -> tuple[bytes, int] | None:
        """The chunked body at ``data[pos:]`` and the offset after its trailers, or None if it
        has not all arrived (the state machine of :meth:`_parse_chunked` then takes over).

        Why besides the state machine: servers that stream (Go's promhttp, with gzip) send
        chunked bodies, and a scrape's body usually arrives in one read. Slicing the chunks out
        of that read and joining them once costs a third of copying them through the state
        machine's buffers.
        Errors are those the state machine raises.
        """
        view = memoryview(data)
        parts: list[memoryview] = []
        total = 0
        end_of_data = len(data)
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = self._chunk_size(data[pos:eol])
            pos = eol + 2
            if size == 0:
                break
            end = pos + size
            if end + 2 > end_of_data:
                return None
            total += size
            if total > self._limit:
                raise self._too_large(total)
            if data[end:end + 2] != b"\r\n":
                raise self._error(ErrorClass.HTTP_STATUS, "chunk not followed by CRLF")
            parts.append(view[pos:end])
            pos = end + 2
        while True:  # trailers, up to a blank line
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return None
            blank = eol == pos
            pos = eol + 2
            if blank:
                return b"".join(parts), pos

    def _parse_chunked(self) -> None:
        buf = self._buf
        pos = 0
        end_of_buf = len(buf)
        try:
            while True:
                state = self._state
                if state == _CHUNK_DATA:
                    take = min(self._remaining, end_of_buf - pos)
                    if take == 0:
                        break
                    self._body += buf[pos: pos + take]
                    pos += take
                    self._remaining -= take
                    if self._remaining:
                        break
                    self._state = _CHUNK_CRLF
                elif state == _CHUNK_CRLF:
                    if end_of_buf - pos < 2:
                        break
                    if buf[pos: pos + 2] != b"\r\n":
                        raise self._error(ErrorClass.HTTP_STATUS, "chunk not followed by CRLF")
                    pos += 2
                    self._state = _CHUNK_SIZE
                elif state == _CHUNK_SIZE:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if end_of_buf - pos > _MAX_CHUNK_LINE:
                            raise self._error(ErrorClass.HTTP_STATUS, "chunk size line too long")
                        break
                    size = self._chunk_size(bytes(buf[pos:eol]))
                    pos = eol + 2
                    if size == 0:
                        self._state = _TRAILERS
                        continue
                    if len(self._body) + size > self._limit:
                        raise self._too_large(len(self._body) + size)
                    self._remaining = size
                    self._state = _CHUNK_DATA
                elif state == _TRAILERS:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if end_of_buf - pos > _MAX_CHUNK_LINE:
                            raise self._error(ErrorClass.HTTP_STATUS, "trailer line too long")
                        break
                    blank = eol == pos
                    pos = eol + 2
                    if blank:
                        del buf[:pos]
                        pos = 0
                        self._finish()
                        return
                else:
                    break
        finally:
            if pos:
                del buf[:pos]

    def _chunk_size(self, line: bytes) -> int:
        text = line.split(b";", 1)[0].strip()
        try:
            if not text:
                raise ValueError
            return int(text, 16)
        except ValueError:
            shown = line[:40].decode("latin-1")
            raise self._error(ErrorClass.HTTP_STATUS, f"bad chunk size {shown!r}") from None
