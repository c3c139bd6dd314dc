"""A fault-injecting HTTP proxy for AWS APIs, run by the tests in front of moto.

Requests for the chosen operation (``PutMetricData`` by default) take the next fault from a
script; everything else, and every request once the script is spent, passes through. Faults:

- ``THROTTLE``: 400 ``Throttling``, in the protocol the client spoke (awsJson with
  ``x-amzn-query-error``, awsQuery XML, or Smithy RPCv2 CBOR), not forwarded.
- ``SERVER_ERROR``: 500 ``InternalFailure``, not forwarded.
- ``ACCESS_DENIED``: 400 ``AccessDenied`` naming an IAM principal, as AWS words it, not forwarded.
- ``DROP_BEFORE``: the connection is closed without forwarding (the server never saw it).
- ``DROP_AFTER``: forwarded, the server answered, and the connection is closed without passing
  the answer on: the ambiguous case, where the data is stored but the client cannot know.
- ``SLOW``: forwarded, and the answer held back for ``slow_delay`` seconds.

``log`` records ``(operation, fault)`` for every request seen; ``forwarded`` counts the
requests of the chosen operation that reached upstream.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterable
from enum import StrEnum
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.http_server import BackgroundHTTPServer

PRINCIPAL = "arn:aws:sts::123456789012:assumed-role/eks-node-role/i-0123456789abcdef0"

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length"}


class Fault(StrEnum):
    PASS = "pass"
    THROTTLE = "throttle"
    SERVER_ERROR = "server_error"
    ACCESS_DENIED = "access_denied"
    DROP_BEFORE = "drop_before"
    DROP_AFTER = "drop_after"
    SLOW = "slow"


_ERRORS: dict[Fault, tuple[int, str, str, str]] = {
    Fault.THROTTLE: (400, "Throttling", "Sender", "Rate exceeded"),
    Fault.SERVER_ERROR: (500, "InternalFailure", "Receiver",
                         "The request processing has failed because of an unknown error"),
    Fault.ACCESS_DENIED: (
        400, "AccessDenied", "Sender",
        f"User: {PRINCIPAL} is not authorized to perform: cloudwatch:PutMetricData because no "
        "identity-based policy allows the cloudwatch:PutMetricData action",
    ),
}


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    return _cbor_head(3, len(data)) + data


def _cbor_head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes([major << 5 | length])
    if length < 256:
        return bytes([major << 5 | 24, length])
    return bytes([major << 5 | 25]) + struct.pack(">H", length)


def _cbor_map(items: dict[str, str]) -> bytes:
    """A CBOR map of text to text: all an RPCv2 error body needs (no CBOR library required)."""
    out = _cbor_head(5, len(items))
    for key, value in items.items():
        out += _cbor_text(key) + _cbor_text(value)
    return out


def error_response(headers: Any, fault: Fault) -> tuple[int, dict[str, str], bytes]:
    """An AWS error in the protocol the request used."""
    status, code, kind, message = _ERRORS[fault]
    if headers.get("smithy-protocol", "") == "rpc-v2-cbor":
        body = _cbor_map({"__type": f"com.amazonaws.cloudwatch#{code}", "message": message})
        return status, {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor",
                        "x-amzn-query-error": f"{code};{kind}"}, body
    if headers.get("X-Amz-Target"):
        body = json.dumps({"__type": f"com.amazonaws.cloudwatch#{code}",
                           "message": message}).encode()
        return status, {"Content-Type": "application/x-amz-json-1.0",
                        "x-amzn-query-error": f"{code};{kind}"}, body
    body = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>fault-proxy</RequestId>"
        "</ErrorResponse>"
    ).encode()
    return status, {"Content-Type": "text/xml"}, body


def operation_of(path: str, headers: Any, body: bytes) -> str:
    """The AWS operation a request calls, whatever the protocol."""
    target = headers.get("X-Amz-Target", "")
    if target:
        return str(target).rsplit(".", 1)[-1]
    if "/operation/" in path:
        return path.rsplit("/operation/", 1)[-1]
    if headers.get("Content-Encoding", "") == "gzip":
        body = gzip.decompress(body)
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return form.get("Action", [""])[0]


class FaultProxy(BackgroundHTTPServer):
    def __init__(self, upstream: str, operation: str = "PutMetricData",
                 slow_delay: float = 2.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.operation = operation
        self.slow_delay = slow_delay
        self.script: deque[Fault] = deque()
        self.log: list[tuple[str, Fault]] = []
        self.forwarded = 0
        self.compressed = 0
        self._lock = threading.Lock()
        super().__init__(self._handler(), name="fault-proxy")

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(self, *faults: Fault | Iterable[Fault]) -> None:
        with self._lock:
            for fault in faults:
                if isinstance(fault, Fault):
                    self.script.append(fault)
                else:
                    self.script.extend(fault)

    def faults_applied(self, fault: Fault) -> int:
        with self._lock:
            return sum(1 for op, f in self.log if op == self.operation and f is fault)

    def _next_fault(self, operation: str) -> Fault:
        with self._lock:
            fault = self.script.popleft() if operation == self.operation and self.script \
                else Fault.PASS
            self.log.append((operation, fault))
            return fault

    def _forward(self, method: str, path: str, headers: Any,
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(method, path, body=body, headers=out)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, kept, data
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _send(self, status: int, headers: Iterable[tuple[str, str]],
                      body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length) if length else b""
                operation = operation_of(self.path, self.headers, body)
                fault = proxy._next_fault(operation)
                if operation == proxy.operation and \
                        self.headers.get("Content-Encoding", "") == "gzip":
                    with proxy._lock:
                        proxy.compressed += 1
                if fault in _ERRORS:
                    status, headers, data = error_response(self.headers, fault)
                    return self._send(status, headers.items(), data)
                if fault is Fault.DROP_BEFORE:
                    return self._drop()
                status, kept, data = proxy._forward(self.command, self.path, self.headers, body)
                if operation == proxy.operation:
                    with proxy._lock:
                        proxy.forwarded += 1
                if fault is Fault.DROP_AFTER:
                    return self._drop()
                if fault is Fault.SLOW:
                    time.sleep(proxy.slow_delay)
                self._send(status, kept, data)

            do_POST = do_GET = do_PUT = _handle

        return Handler
