"""Real OTLP metrics receivers on loopback, for exporter tests.

- :class:`GrpcReceiver`: a grpcio server implementing ``MetricsService/Export`` from
  opentelemetry-proto's generated ``metrics_service_pb2_grpc``.
- :class:`HttpReceiver`: a small threaded HTTP server taking ``POST /v1/metrics`` with a protobuf
  body (``Content-Encoding: gzip`` or ``deflate`` too), as the Collector's otlphttp receiver does.

Both record every request as a :class:`Received` (the decoded ``ExportMetricsServiceRequest`` plus
what arrived around it: headers, content encoding, path) and can be told to fail, so tests can
check both what arrives and how the exporter copes with a refusal. :func:`flatten` turns requests
into one row per data point, which is what assertions want to look at.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from tests.support.http_server import BackgroundHTTPServer

ExportRequest = metrics_service_pb2.ExportMetricsServiceRequest


@dataclass
class Received:
    """One request as the receiver saw it. Header names are lower-cased."""

    request: Any  # ExportMetricsServiceRequest
    headers: dict[str, str] = field(default_factory=dict)
    encoding: str = ""
    path: str = ""


class _Recorder:
    """Thread-safe list of received requests with a wait helper."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._cond = threading.Condition()

    def add(self, item: Received) -> None:
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests arrived; raise ``TimeoutError`` if they don't."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"expected {count} OTLP request(s), got {len(self.received)}"
                    )
                self._cond.wait(left)
            return list(self.received)

    @property
    def requests(self) -> list[Any]:
        with self._cond:
            return [r.request for r in self.received]


# -- gRPC ------------------------------------------------------------------------------------


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: GrpcReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC name
        headers = {k.lower(): v for k, v in context.invocation_metadata()}
        self._receiver.add(Received(request=request, headers=headers,
                                    encoding=headers.get("grpc-encoding", ""), path="Export"))
        if self._receiver.fail_with is not None:
            context.abort(self._receiver.fail_with, "refused by the test receiver")
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver(_Recorder):
    """An OTLP/gRPC receiver on ``127.0.0.1:<free port>``; ``endpoint`` is ``host:port``.

    ``fail_with`` (a ``grpc.StatusCode``) makes every Export fail with that code after recording
    the request. ``tls`` (PEM private key, PEM certificate chain) serves TLS instead of plaintext.
    """

    def __init__(
        self, fail_with: grpc.StatusCode | None = None, tls: tuple[bytes, bytes] | None = None
    ) -> None:
        super().__init__()
        self.fail_with = fail_with
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsService(self), self._server
        )
        if tls is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = grpc.ssl_server_credentials([tls])
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self.endpoint = f"127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    def __enter__(self) -> GrpcReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- HTTP ------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "").lower()
        if self.path != receiver.path:
            self._reply(404, b"no such path")
            return
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request = ExportRequest()
        try:
            request.ParseFromString(body)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError
            self._reply(400, b"bad protobuf")
            return
        receiver.add(Received(
            request=request, headers={k.lower(): v for k, v in self.headers.items()},
            encoding=encoding, path=self.path,
        ))
        if receiver.status != 200:
            self._reply(receiver.status, b"refused by the test receiver")
            return
        self._reply(200, metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
                    "application/x-protobuf")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _HttpServer(ThreadingHTTPServer):
    receiver: HttpReceiver


class HttpReceiver(_Recorder, BackgroundHTTPServer):
    """An OTLP/HTTP receiver on ``http://127.0.0.1:<free port>``; ``endpoint`` is the base URL.

    Accepts POSTs on ``path`` only (404 elsewhere, so a wrong URL shows); ``status`` other than
    200 makes it record the request and then refuse it with that status.
    """

    def __init__(self, path: str = "/v1/metrics", status: int = 200) -> None:
        _Recorder.__init__(self)
        BackgroundHTTPServer.__init__(self, _Handler, name="otlp-http-receiver",
                                      server_class=_HttpServer)
        cast(_HttpServer, self.httpd).receiver = self
        self.path = path
        self.status = status
        self.endpoint = f"http://127.0.0.1:{self.port}"


# -- wire-level helpers ----------------------------------------------------------------------


class TcpRelay:
    """Forwards loopback TCP connections to ``127.0.0.1:target_port`` and counts the bytes
    sent towards the target, so a test can see what compression does on the wire (gRPC
    decompresses before the servicer sees anything, and hides ``grpc-encoding``)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.bytes_up = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.endpoint = f"127.0.0.1:{self.port}"
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="tcp-relay", daemon=True)

    def start(self) -> TcpRelay:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for src, dst, count in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, count), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if count:
                    with self._lock:
                        self.bytes_up += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._closed = True
        # shutdown() wakes the thread blocked in accept() (close() alone does not, on Linux).
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv()
            sock.close()

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def self_signed_certificate(host: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """A fresh (PEM private key, PEM certificate) for ``host`` (an IP address SAN plus
    ``localhost``), self-signed, so it is its own CA. Needs ``cryptography`` (moto's dependency)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
        ), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


# -- decoding helpers ------------------------------------------------------------------------


def any_value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attrs(key_values: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


@dataclass(frozen=True)
class Point:
    """One data point with everything around it, flattened for assertions.

    ``kind`` is ``gauge``, ``sum`` or ``histogram``; ``value`` the number (``as_double`` or
    ``as_int``) or, for a histogram, its count. ``temporality`` is 1 (delta) or 2 (cumulative),
    0 for gauges. ``point`` is the protobuf data point itself.
    """

    resource: dict[str, Any]
    scope: str
    name: str
    unit: str
    description: str
    kind: str
    attributes: dict[str, Any]
    value: float
    start: int
    time: int
    temporality: int
    monotonic: bool
    point: Any


def flatten(requests: Iterable[Any]) -> list[Point]:
    """Every data point of ``requests`` (ExportMetricsServiceRequest), in order."""
    return list(_iter_points(requests))


def _iter_points(requests: Iterable[Any]) -> Iterator[Point]:
    for request in requests:
        for rm in request.resource_metrics:
            resource = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    yield from _metric_points(resource, sm.scope.name, metric)


def _metric_points(resource: dict[str, Any], scope: str, metric: Any) -> Iterator[Point]:
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    temporality = getattr(data, "aggregation_temporality", 0)
    monotonic = getattr(data, "is_monotonic", False)
    for dp in data.data_points:
        if kind == "histogram":
            value: float = dp.count
        else:
            value = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
        yield Point(
            resource=resource, scope=scope, name=metric.name, unit=metric.unit,
            description=metric.description, kind=kind, attributes=attrs(dp.attributes),
            value=value, start=dp.start_time_unix_nano, time=dp.time_unix_nano,
            temporality=temporality, monotonic=monotonic, point=dp,
        )
