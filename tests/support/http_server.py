"""The loopback HTTP servers the tests run (IMDS, the fault proxy, OTLP/HTTP, a metrics endpoint)
share this: a ``ThreadingHTTPServer`` on a free port, served from a daemon thread, started and
stopped by hand or as a context manager."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class BackgroundHTTPServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1",
                 name: str = "test-http-server",
                 server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer) -> None:
        self.httpd = server_class((host, 0), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                        daemon=True, name=name)

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
