"""The pipeline's own telemetry: self-metrics, ``/healthz``, ``/readyz``.

One :class:`Telemetry` per run (no global registry), handed to every component in its settings.
Metric names are prefixed ``cni_pipeline_``; asking twice for the same name returns the same
metric, so components can declare what they use without coordinating.

The HTTP endpoint starts before anything else, so Kubernetes probes can tell "starting" (``/readyz``
503) from "dead" (no answer).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from ._redact import redact

PREFIX = "cni_pipeline_"

_M = TypeVar("_M", Counter, Gauge, Histogram)


class Telemetry:
    """Self-metrics and health state of one pipeline run."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._status: dict[str, tuple[bool, str, float]] = {}
        self._ready_note: Callable[[], str] | None = None
        self._awaited: set[str] = set()
        self.last_tick = 0.0
        self.tick_interval = 0.0
        #: service.telemetry.unhealthy_after: how long a component may fail before /readyz is 503.
        self.unhealthy_after = 300.0

    def _get(self, cls: type[_M], name: str, doc: str, labels: Sequence[str], **kw: Any) -> _M:
        full = name if name.startswith(PREFIX) else PREFIX + name
        with self._lock:
            metric = self._metrics.get(full)
            if metric is None:
                metric = cls(full, doc, labelnames=tuple(labels), registry=self.registry, **kw)
                self._metrics[full] = metric
            elif not isinstance(metric, cls):
                raise TypeError(f"self-metric {full} already exists as {type(metric).__name__}")
            return metric

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Iterable[float] = ()
    ) -> Histogram:
        kw: dict[str, Any] = {"buckets": tuple(buckets)} if buckets else {}
        return self._get(Histogram, name, doc, labels, **kw)

    # -- health -------------------------------------------------------------------------------

    def report_status(self, component: str, healthy: bool, message: str = "") -> None:
        with self._lock:
            previous = self._status.get(component)
            since = previous[2] if previous and previous[0] == healthy else time.time()
            # /readyz shows the message: a component's error may quote what a server echoed.
            self._status[component] = (healthy, redact(message), since)
            self._awaited.discard(component)

    def expect_reports(self, components: Iterable[str]) -> None:
        """Not ready until each of these components has reported a status once (first cycle)."""
        with self._lock:
            self._awaited = set(components) - set(self._status)

    def set_ready_note(self, note: Callable[[], str]) -> None:
        """What a ready ``/readyz`` says after "ok" (leader election: "leader" or "standby")."""
        self._ready_note = note

    def ready_text(self) -> str:
        """The body of a ready ``/readyz``."""
        return "ok" if self._ready_note is None else f"ok: {self._ready_note()}"

    def tick(self, interval: float) -> None:
        """Called by the loop that drives cycles, so ``/healthz`` knows it is alive."""
        self.last_tick = time.time()
        self.tick_interval = interval

    def liveness(self) -> str | None:
        if self.tick_interval and time.time() - self.last_tick > 3 * self.tick_interval + 30:
            return f"no cycle tick for {time.time() - self.last_tick:.0f}s"
        return None

    def readiness(self, failing_for: float | None = None) -> str | None:
        if failing_for is None:
            failing_for = self.unhealthy_after
        now = time.time()
        with self._lock:
            if self._awaited:
                return f"waiting for the first cycle of {', '.join(sorted(self._awaited))}"
            for component, (healthy, message, since) in self._status.items():
                if not healthy and now - since > failing_for:
                    return f"{component} failing for {now - since:.0f}s: {message}"
        return None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class TelemetryServer:
    """Serves ``/metrics``, ``/healthz``, ``/readyz`` from a thread (wsgiref + prometheus_client).

    A thread, not the event loop, so probes are answered even while a cycle keeps the loop busy.
    """

    def __init__(self, telemetry: Telemetry, host: str, port: int) -> None:
        self.telemetry = telemetry
        metrics_app = make_wsgi_app(telemetry.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in ("/healthz", "/readyz"):
                problem = telemetry.liveness() if path == "/healthz" else telemetry.readiness()
                status = "503 Service Unavailable" if problem else "200 OK"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                body = problem or (telemetry.ready_text() if path == "/readyz" else "ok")
                return [body.encode() + b"\n"]
            if path in ("/metrics", "/"):
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]

        self._server = make_server(
            host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="telemetry-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
