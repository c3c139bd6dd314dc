"""The scrape client's fast paths: gzip read without zlib's gzip wrapper, and chunked bodies
sliced out of the read they arrived in. Real servers on loopback write the bytes."""

from __future__ import annotations

import asyncio
import gzip
import struct
import zlib
from collections.abc import AsyncIterator, Callable

import pytest

from pipeline import ErrorClass, ScrapeError
from receivers.prometheus._gzip import MAX_INFLATE_RATIO, gunzip
from receivers.prometheus._http import ScrapeClient
from tests.support.fixtures import AWS_NODE_PAGES

PAGE = (AWS_NODE_PAGES / "metrics-v1.data").read_bytes()


class OneShotServer:
    """Answers every request on a connection with ``respond(request_number)``, in one write."""

    def __init__(self, respond: Callable[[int], bytes]) -> None:
        self.respond = respond
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> OneShotServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/metrics"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = 0
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                number += 1
                writer.write(self.respond(number))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def gzip_response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def chunked_response(body: bytes, size: int = 4096, *, gzipped: bool = False) -> bytes:
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(body[i:i + size]), body[i:i + size])
                      for i in range(0, len(body), size))
    encoding = b"Content-Encoding: gzip\r\n" if gzipped else b""
    return (b"HTTP/1.1 200 OK\r\n" + encoding + b"Transfer-Encoding: chunked\r\n\r\n"
            + chunks + b"0\r\n\r\n")


def gzip_member(data: bytes, *, flags: int = 0, extra: bytes = b"", size: int | None = None,
                ) -> bytes:
    """A gzip member written field by field (RFC 1952), with optional header fields."""
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    if flags & 4:
        header += struct.pack("<H", len(extra)) + extra
    if flags & 8:
        header += b"metrics.txt\0"
    if flags & 16:
        header += b"a comment\0"
    if flags & 2:
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(data) + compressor.flush()
    length = len(data) if size is None else size
    return header + deflated + struct.pack("<II", zlib.crc32(data), length & 0xFFFFFFFF)


@pytest.fixture
async def client() -> AsyncIterator[ScrapeClient]:
    c = ScrapeClient(body_size_limit=1024 * 1024)
    yield c
    await c.aclose()


async def get(client: ScrapeClient, response: bytes) -> bytes:
    async with OneShotServer(lambda _: response) as server:
        return await client.get(server.url, 5.0)


async def expect(client: ScrapeClient, response: bytes, error_class: ErrorClass) -> ScrapeError:
    with pytest.raises(ScrapeError) as info:
        await get(client, response)
    assert info.value.error_class == error_class, info.value
    assert client.idle_connections() == 0
    return info.value


@pytest.mark.parametrize("flags", [0, 2, 4, 8, 16, 2 | 4 | 8 | 16])
async def test_gzip_header_fields_are_skipped(client: ScrapeClient, flags: int) -> None:
    member = gzip_member(PAGE, flags=flags, extra=b"AB\x02\0xy")
    assert gzip.decompress(member) == PAGE  # what the standard library reads
    assert await get(client, gzip_response(member)) == PAGE


async def test_gzip_trailer_length_must_match(client: ScrapeClient) -> None:
    error = await expect(client, gzip_response(gzip_member(PAGE, size=len(PAGE) - 1)),
                         ErrorClass.PARSE)
    assert "length" in str(error)


@pytest.mark.parametrize("cut", [1, 8, 20])
async def test_truncated_gzip(client: ScrapeClient, cut: int) -> None:
    await expect(client, gzip_response(gzip.compress(PAGE)[:-cut]), ErrorClass.PARSE)


@pytest.mark.parametrize("head", [b"\x1f\x8b\x07\x00", b"\x1f\x8b\x08\xe0", b"\x1f\x8b\x08\x08"])
async def test_bad_gzip_headers(client: ScrapeClient, head: bytes) -> None:
    # An unknown method, reserved flags, and a file name that never ends.
    await expect(client, gzip_response(head + b"\0\0\0\0\0\xffnever ends"), ErrorClass.PARSE)


async def test_chunked_gzip_in_one_read_and_reused(client: ScrapeClient) -> None:
    response = chunked_response(gzip.compress(PAGE, 1), gzipped=True)
    async with OneShotServer(lambda _: response) as server:
        for _ in range(3):
            assert await client.get(server.url, 5.0) == PAGE
        assert server.connections == 1


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ],
    ids=["bad chunk size", "chunk without CRLF"],
)
async def test_broken_chunked_bodies_in_one_read(client: ScrapeClient, response: bytes) -> None:
    await expect(client, response, ErrorClass.HTTP_STATUS)


async def test_chunked_body_over_the_limit_in_one_read() -> None:
    small = ScrapeClient(body_size_limit=1000)
    try:
        await expect(small, chunked_response(b"x" * 3000, 600), ErrorClass.BODY_TOO_LARGE)
    finally:
        await small.aclose()


async def test_bytes_after_a_chunked_body_make_the_connection_unusable(
    client: ScrapeClient,
) -> None:
    response = chunked_response(PAGE) + b"HTTP/1.1 200 OK\r\n"  # nobody asked for more
    async with OneShotServer(lambda _: response) as server:
        assert await client.get(server.url, 5.0) == PAGE
        assert client.idle_connections() == 0
        assert await client.get(server.url, 5.0) == PAGE
        assert server.connections == 2


async def test_trailers_after_the_last_chunk(client: ScrapeClient) -> None:
    response = chunked_response(PAGE)[:-2] + b"X-Checksum: 1\r\nX-Other: 2\r\n\r\n"
    assert await get(client, response) == PAGE


# -- the one-call inflate of small bodies ---------------------------------------------------------

def test_small_and_bounded_inflate_agree() -> None:
    member = gzip.compress(PAGE)
    small_enough = len(member) * MAX_INFLATE_RATIO  # the fast path's largest limit
    assert gunzip(member, small_enough) == gunzip(member, small_enough - 1) == PAGE
    for broken in (member[:-1], member[:-9], gzip_member(PAGE, size=len(PAGE) + 1)):
        for limit in (small_enough, small_enough - 1):
            with pytest.raises(zlib.error):
                gunzip(broken, limit)


def test_a_bomb_is_stopped_at_the_limit_on_either_path() -> None:
    bomb = gzip.compress(b"\0" * 4_000_000, 9)  # about 4 KB on the wire
    assert len(bomb) * MAX_INFLATE_RATIO > 1 << 20
    assert gunzip(bomb, 1 << 20) is None  # bounded decoder: stops past 1 MiB
    data = gunzip(bomb, len(bomb) * MAX_INFLATE_RATIO)  # one call: cannot pass the limit
    assert data is not None and len(data) == 4_000_000
