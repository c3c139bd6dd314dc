"""The scrape HTTP client against real servers on loopback whose bytes the tests write."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pipeline import ErrorClass, ScrapeError
from receivers.prometheus._http import ScrapeClient
from tests.support.fixtures import AWS_NODE_PAGES

PAGE = (AWS_NODE_PAGES / "metrics-v1.data").read_bytes()
LIMIT = 1024 * 1024

Handler = Callable[["Request", asyncio.StreamWriter], Awaitable[bool]]


class Request:
    def __init__(self, head: bytes, number: int) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.path, _ = lines[0].split(" ", 2)
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        #: 1 for the first request on its connection, 2 for the second, ...
        self.number = number


def response(body: bytes, *, status: str = "200 OK", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n").encode() + body


def chunked(body: bytes, size: int = 1000) -> bytes:
    parts = [f"{len(body[i:i + size]):x};ext=1\r\n".encode() + body[i:i + size] + b"\r\n"
             for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\nX-Trailer: yes\r\n\r\n"


class RawServer:
    """An HTTP/1.1 server on loopback; each request goes to ``handler``, which writes raw bytes
    and returns whether to keep the connection. Counts connections, so reuse is observable."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.connections = 0
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):  # handlers still hanging
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        number = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.CancelledError:  # the test is over
                    return
                number += 1
                request = Request(head[:-4], number)
                self.requests.append(request)
                if not await self.handler(request, writer):
                    return
                await writer.drain()
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()


async def standard(request: Request, writer: asyncio.StreamWriter) -> bool:
    """The routes most tests use."""
    path = request.path
    if path == "/plain":
        writer.write(response(PAGE))
    elif path == "/gzip":
        assert request.headers["accept-encoding"] == "gzip"
        writer.write(response(gzip.compress(PAGE), headers="Content-Encoding: gzip\r\n"))
    elif path == "/chunked":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body := chunked(PAGE)), 777):  # arrives in awkward pieces
            writer.write(body[i:i + 777])
            await writer.drain()
            await asyncio.sleep(0)
    elif path == "/chunked-gzip":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Encoding: gzip\r\n\r\n" + chunked(gzip.compress(PAGE), 300))
    elif path in ("/dribble", "/dribble-gzip"):
        # The head and the body in small pieces, the head cut mid-line.
        whole = response(PAGE) if path == "/dribble" else response(
            gzip.compress(PAGE), headers="Content-Encoding: gzip\r\n")
        cuts = [0, 7, *range(40, len(whole), 1500), len(whole)]
        for begin, end in zip(cuts, cuts[1:], strict=False):
            writer.write(whole[begin:end])
            await writer.drain()
            await asyncio.sleep(0.001)
    elif path == "/interim":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + response(PAGE))
    elif path == "/no-content":
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    elif path == "/close-delimited":
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + PAGE)
        return False
    elif path == "/connection-close":
        writer.write(response(PAGE, headers="Connection: close\r\n"))
        return False
    elif path.startswith("/echo"):
        writer.write(response(repr(request.headers).encode()))
    elif path.startswith("/status/"):
        code = path.rsplit("/", 1)[1]
        writer.write(response(b"no\n", status=f"{code} Oops"))
    elif path == "/drop-on-reuse":
        if request.number > 1:  # the server had closed this kept-alive connection
            return False
        writer.write(response(PAGE))
    elif path == "/drop-always":
        return False
    elif path == "/hang":
        await asyncio.wait_for(asyncio.Event().wait(), 30)
    elif path == "/big":
        writer.write(response(b"x" * (LIMIT + 1)))
    elif path == "/big-chunked":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunked(b"x" * (LIMIT + 10), 64 * 1024))
    elif path == "/big-close-delimited":
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * (LIMIT + 10))
        return False
    elif path == "/bomb":
        writer.write(response(BOMB, headers="Content-Encoding: gzip\r\n"))
    elif path == "/bad-gzip":
        writer.write(response(b"\x1f\x8bnot gzip at all", headers="Content-Encoding: gzip\r\n"))
    elif path == "/malformed":
        writer.write(b"HTTP/1.1 OK\r\nContent-Length: 2\r\n\r\nhi")
    elif path == "/not-http":
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    elif path == "/truncated":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this")
        return False
    else:
        writer.write(response(b"not found\n", status="404 Not Found"))
    return True


BOMB = gzip.compress(b"\0" * (32 * LIMIT), compresslevel=9)  # 32 MiB of zeros in ~32 KiB


@pytest.fixture
async def server() -> RawServer:
    async with RawServer(standard) as srv:
        yield srv


@pytest.fixture
async def client() -> ScrapeClient:
    c = ScrapeClient(body_size_limit=LIMIT)
    yield c
    await c.aclose()


async def expect_error(coro: Awaitable[bytes], error_class: ErrorClass) -> ScrapeError:
    with pytest.raises(ScrapeError) as info:
        await coro
    assert info.value.error_class == error_class, info.value
    return info.value


@pytest.mark.parametrize(
    "path",
    ["/plain", "/gzip", "/chunked", "/chunked-gzip", "/dribble", "/dribble-gzip", "/interim"],
)
async def test_bodies_decode_and_connection_is_reused(
    server: RawServer, client: ScrapeClient, path: str
) -> None:
    for _ in range(4):
        assert await client.get(server.url(path), 5.0) == PAGE
    assert server.connections == 1
    assert client.idle_connections() == 1


async def test_no_content(server: RawServer, client: ScrapeClient) -> None:
    assert await client.get(server.url("/no-content"), 5.0) == b""
    assert await client.get(server.url("/plain"), 5.0) == PAGE
    assert server.connections == 1


async def test_close_delimited_body_then_a_fresh_connection(
    server: RawServer, client: ScrapeClient
) -> None:
    for _ in range(3):
        assert await client.get(server.url("/close-delimited"), 5.0) == PAGE
    assert server.connections == 3
    assert client.idle_connections() == 0


async def test_connection_close_header_is_honoured(
    server: RawServer, client: ScrapeClient
) -> None:
    for _ in range(2):
        assert await client.get(server.url("/connection-close"), 5.0) == PAGE
    assert server.connections == 2


async def test_request_headers(server: RawServer, client: ScrapeClient) -> None:
    body = await client.get(server.url("/echo?x=1"), 5.0, headers={"Authorization": "Bearer t0k"})
    headers = eval(body)  # the server echoes repr(dict)
    assert headers["authorization"] == "Bearer t0k"
    assert headers["user-agent"] == "cni-pipeline/0.1"
    assert headers["accept"].startswith("text/plain;version=0.0.4")
    assert headers["accept-encoding"] == "gzip"
    assert headers["host"] == server.url("").split("//")[1]
    assert server.requests[-1].path == "/echo?x=1"


async def test_compression_can_be_turned_off(server: RawServer) -> None:
    client = ScrapeClient(body_size_limit=LIMIT, compression=False)
    headers = eval(await client.get(server.url("/echo"), 5.0))
    await client.aclose()
    assert headers["accept-encoding"] == "identity"


async def test_server_closing_an_idle_connection(server: RawServer, client: ScrapeClient) -> None:
    assert await client.get(server.url("/plain"), 5.0) == PAGE
    for writer in list(server._writers):  # the server times out the idle connection
        writer.close()
    await asyncio.sleep(0.05)
    assert await client.get(server.url("/plain"), 5.0) == PAGE
    assert server.connections == 2


async def test_stale_kept_alive_connection_is_retried_once(
    server: RawServer, client: ScrapeClient
) -> None:
    # The server drops the connection on its second request without answering: as if it had
    # closed the idle connection just as we sent. The client retries on a fresh connection.
    for _ in range(3):
        assert await client.get(server.url("/drop-on-reuse"), 5.0) == PAGE
    assert server.connections == 3
    assert len(server.requests) == 5


async def test_fresh_connection_closed_without_answer_is_not_retried(
    server: RawServer, client: ScrapeClient
) -> None:
    error = await expect_error(client.get(server.url("/drop-always"), 5.0), ErrorClass.CONNECT)
    assert "before any response" in str(error)
    assert server.connections == 1


@pytest.mark.parametrize("code", [404, 500])
async def test_non_2xx_is_http_status(server: RawServer, client: ScrapeClient, code: int) -> None:
    error = await expect_error(client.get(server.url(f"/status/{code}"), 5.0),
                               ErrorClass.HTTP_STATUS)
    assert f"HTTP {code}" in str(error)
    assert await client.get(server.url("/plain"), 5.0) == PAGE
    assert server.connections == 1  # an error status with a whole body keeps the connection


async def test_connect_refused(client: ScrapeClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        port = sock.getsockname()[1]
    error = await expect_error(client.get(f"http://127.0.0.2:{port}/metrics", 5.0),
                               ErrorClass.CONNECT)
    assert f"127.0.0.2:{port}" in str(error)


async def test_hung_server_is_cut_near_its_timeout(
    server: RawServer, client: ScrapeClient
) -> None:
    t0 = time.monotonic()
    await expect_error(client.get(server.url("/hang"), 0.3), ErrorClass.TIMEOUT)
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 2.0
    # The hung connection was discarded: the next request opens another one.
    assert await client.get(server.url("/plain"), 5.0) == PAGE
    assert server.connections == 2


@pytest.mark.parametrize("path", ["/big", "/big-chunked", "/big-close-delimited", "/bomb"])
async def test_body_over_the_limit(server: RawServer, client: ScrapeClient, path: str) -> None:
    await expect_error(client.get(server.url(path), 5.0), ErrorClass.BODY_TOO_LARGE)
    assert client.idle_connections() == 0


async def test_gzip_under_the_limit_but_inflating_past_it_is_caught_early() -> None:
    # The bomb's wire size is tiny; only the decompressed bound catches it, at limit + 1 bytes.
    c = ScrapeClient(body_size_limit=len(PAGE) - 1)
    async with RawServer(standard) as srv:
        await expect_error(c.get(srv.url("/gzip"), 5.0), ErrorClass.BODY_TOO_LARGE)
        await expect_error(c.get(srv.url("/plain"), 5.0), ErrorClass.BODY_TOO_LARGE)
    await c.aclose()


@pytest.mark.parametrize(
    ("path", "error_class"),
    [("/malformed", ErrorClass.HTTP_STATUS), ("/not-http", ErrorClass.HTTP_STATUS),
     ("/bad-gzip", ErrorClass.PARSE), ("/truncated", ErrorClass.CONNECT)],
)
async def test_broken_responses(
    server: RawServer, client: ScrapeClient, path: str, error_class: ErrorClass
) -> None:
    await expect_error(client.get(server.url(path), 5.0), error_class)
    assert client.idle_connections() == 0


async def test_concurrent_requests_to_one_host_use_their_own_connections(
    server: RawServer, client: ScrapeClient
) -> None:
    bodies = await asyncio.gather(*(client.get(server.url("/chunked"), 5.0) for _ in range(3)))
    assert bodies == [PAGE] * 3
    assert server.connections == 3
    assert client.idle_connections() == 3
    await asyncio.gather(*(client.get(server.url("/plain"), 5.0) for _ in range(3)))
    assert server.connections == 3


async def test_close_host_closes_idle_connections(
    server: RawServer, client: ScrapeClient
) -> None:
    url = server.url("/plain")
    await client.get(url, 5.0)
    await client.close_host(url.split("//")[1].split("/")[0])  # host:port
    assert client.idle_connections() == 0
    await client.get(url, 5.0)
    assert server.connections == 2


async def test_many_hosts_on_loopback_addresses(client: ScrapeClient) -> None:
    servers = [RawServer(standard, host=f"127.0.0.{i}") for i in range(10, 14)]
    for srv in servers:
        await srv.__aenter__()
    try:
        for _ in range(2):
            bodies = await asyncio.gather(*(client.get(s.url("/gzip"), 5.0) for s in servers))
            assert bodies == [PAGE] * len(servers)
        assert [s.connections for s in servers] == [1] * len(servers)
    finally:
        for srv in servers:
            await srv.__aexit__()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


async def test_https_with_a_given_context(
    tls_files: tuple[Path, Path], client: ScrapeClient
) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with_auth = b""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                with_auth = b"yes" if b"Bearer s3cret" in head else b"no"
                writer.write(response(PAGE + with_auth))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        for _ in range(2):
            body = await client.get(url, 5.0, ssl=trusted,
                                    headers={"Authorization": "Bearer s3cret"})
            assert body == PAGE + b"yes"
        assert connections == 1
        # Without the CA the default context refuses the self-signed certificate.
        await expect_error(ScrapeClient(body_size_limit=LIMIT).get(url, 5.0), ErrorClass.CONNECT)
    finally:
        srv.close()
        await client.aclose()
        await srv.wait_closed()
