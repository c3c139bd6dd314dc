"""An IMDSv2 endpoint on loopback, run by the tests (region, instance ID, identity document).

It speaks the IMDSv2 session protocol: ``PUT /latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` returns a token; every GET must carry it in
``X-aws-ec2-metadata-token`` or gets 401. Point clients at it with
``AWS_EC2_METADATA_SERVICE_ENDPOINT=<server.endpoint>``.
"""

from __future__ import annotations

import json
import secrets
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.http_server import BackgroundHTTPServer


class ImdsServer(BackgroundHTTPServer):
    """A loopback IMDSv2. ``paths`` maps a metadata path to its body; ``requests`` logs
    ``(method, path)``; ``fail_with`` (an HTTP status) makes every request fail."""

    def __init__(self, region: str = "us-west-2", instance_id: str = "i-0123456789abcdef0",
                 host: str = "127.0.0.1") -> None:
        self.region = region
        self.instance_id = instance_id
        self.paths: dict[str, str] = {
            "/latest/meta-data/placement/region": region,
            "/latest/meta-data/instance-id": instance_id,
            "/latest/dynamic/instance-identity/document": json.dumps(
                {"region": region, "instanceId": instance_id, "accountId": "123456789012"}
            ),
        }
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.fail_with: int | None = None
        super().__init__(self._handler(), host, name="imds")

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _reply(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                server.requests.append(("PUT", self.path))
                if server.fail_with:
                    return self._reply(server.fail_with)
                if self.path != "/latest/api/token":
                    return self._reply(404)
                if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self._reply(400, "missing TTL header")
                token = secrets.token_urlsafe(16)
                server.tokens.add(token)
                self._reply(200, token)

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path))
                if server.fail_with:
                    return self._reply(server.fail_with)
                if self.headers.get("X-aws-ec2-metadata-token") not in server.tokens:
                    return self._reply(401)
                body = server.paths.get(self.path)
                self._reply(200, body) if body is not None else self._reply(404)

        return Handler
