"""The ``otlp`` receiver: OTLP metrics over gRPC (``MetricsService/Export``) and HTTP
(``POST /v1/metrics``, protobuf, gzip accepted) into the pipeline, so any OTLP source (another
cni-pipeline, an SDK, a Collector) can feed it."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline import (
    ComponentError,
    ComponentSettings,
    FamilySet,
    Host,
    MetricsConsumer,
    parse_endpoint,
)
from pipeline.configtls import ServerTLSConfig

from ._convert import Converter
from .config import DEFAULT_GRPC, DEFAULT_HTTP, OtlpReceiverConfig

#: How long an HTTP request waits for the pipeline to take its batches.
_CONSUME_TIMEOUT = 30.0


class OtlpReceiver:
    def __init__(self, settings: ComponentSettings, config: OtlpReceiverConfig,
                 next_consumer: MetricsConsumer) -> None:
        self.settings = settings
        self.config = config
        self._next = next_consumer
        self._log = settings.logger
        self._converter = Converter(settings.started_at)
        self._lock = asyncio.Lock()  # one request converted and handed on at a time
        self._grpc: Any = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    def wanted_families(self) -> FamilySet:
        return frozenset()

    async def start(self, host: Host) -> None:
        protocols = self.config.protocols
        try:
            if protocols.grpc.endpoint:
                await self._start_grpc(protocols.grpc.endpoint, protocols.grpc.tls)
            if protocols.http.endpoint:
                self._start_http(protocols.http.endpoint, protocols.http.tls,
                                 asyncio.get_running_loop())
        except ComponentError as exc:   # a TLS file that cannot be read or loaded, named
            await self.shutdown()
            raise ComponentError(str(exc), str(self.settings.id)) from exc
        except (OSError, RuntimeError) as exc:
            await self.shutdown()
            raise ComponentError(f"cannot listen: {exc}", str(self.settings.id)) from exc
        # Ready once listening: what it receives is pushed, so there is no first cycle to wait
        # for (and a Service routes to a pod only once it is ready).
        host.report_status(True)

    async def shutdown(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
            self._grpc = None
        if self._http is not None:
            server, self._http = self._http, None
            await asyncio.to_thread(server.shutdown)
            server.server_close()

    async def export(self, request: Any) -> None:
        """One ExportMetricsServiceRequest: its batches handed on, in time order."""
        async with self._lock:
            batches = self._converter.batches(request)
            for batch in batches:
                await self._next.consume(batch)

    # -- gRPC ----------------------------------------------------------------------------------

    async def _start_grpc(self, endpoint: str, tls: ServerTLSConfig) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import (
            metrics_service_pb2,
            metrics_service_pb2_grpc,
        )

        receiver = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - proto name
                await receiver.export(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        size = int(self.config.max_recv_msg_size)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", size)])
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            Servicer(), server)
        host, port = parse_endpoint(endpoint, DEFAULT_GRPC)
        address = f"{_bracket(host)}:{port}"
        if tls.enabled:
            tls.ssl_context()   # every file readable and loadable, or an error naming its key
            key, cert = tls.read("key_file"), tls.read("cert_file")
            client_ca = tls.read("client_ca_file")
            credentials = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=client_ca,
                require_client_auth=client_ca is not None)
            self.grpc_port = server.add_secure_port(address, credentials)
        else:
            self.grpc_port = server.add_insecure_port(address)
        if not self.grpc_port:
            raise OSError(f"cannot bind {endpoint}")
        await server.start()
        self._grpc = server
        self._log.info("OTLP/gRPC on %s:%d%s", host, self.grpc_port,
                       " (TLS)" if tls.enabled else "")

    # -- HTTP ----------------------------------------------------------------------------------

    def _start_http(self, endpoint: str, tls: ServerTLSConfig,
                    loop: asyncio.AbstractEventLoop) -> None:
        host, port = parse_endpoint(endpoint, DEFAULT_HTTP)
        context = tls.ssl_context() if tls.enabled else None
        handler = _handler(self, loop, int(self.config.max_recv_msg_size))
        self._http = ThreadingHTTPServer((host, port), handler)
        if context is not None:
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True,
                         name=f"{self.settings.id} http").start()
        self._log.info("OTLP/HTTP%s on %s:%d", "S" if context else "", host, self.http_port)


def _handler(receiver: OtlpReceiver, loop: asyncio.AbstractEventLoop, limit: int
             ) -> Callable[..., BaseHTTPRequestHandler]:
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - stdlib's name
            if self.path.split("?")[0] != "/v1/metrics":
                self._answer(404, b"only /v1/metrics")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > limit:
                self._answer(413, b"request larger than max_recv_msg_size")
                return
            body = self.rfile.read(length)
            try:
                if self.headers.get("Content-Encoding", "") == "gzip":
                    body = gzip.decompress(body)
                request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            except Exception as exc:  # a body that does not decode: the sender's fault
                self._answer(400, f"not an OTLP metrics request: {exc}".encode())
                return
            future = asyncio.run_coroutine_threadsafe(receiver.export(request), loop)
            try:
                future.result(timeout=_CONSUME_TIMEOUT)
            except Exception:
                self._answer(503, b"the pipeline did not take the request")
                return
            response = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            self._answer(200, response, "application/x-protobuf")

        def _answer(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    return Handler


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
