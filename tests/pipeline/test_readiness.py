"""service.telemetry.unhealthy_after drives /readyz: 503 once every target has failed that long,
200 again when one comes back (real receiver, real telemetry server, loopback targets)."""

from __future__ import annotations

import asyncio
import socket
import textwrap
import urllib.error
import urllib.request

from pipeline import ComponentID, Kind, Telemetry
from pipeline._config import load_config_text
from pipeline._registry import Registry
from pipeline._runtime import Service, _Host
from tests.receivers.prometheus.test_receiver import serve_page

HOST = "127.0.0.33"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def _until(port: int, status: int, text: str, deadline: float = 30.0) -> None:
    async with asyncio.timeout(deadline):
        while True:
            got, body = await asyncio.to_thread(_readyz, port)
            if got == status and text in body:
                return
            await asyncio.sleep(0.1)


async def test_readyz_follows_unhealthy_after() -> None:
    target_port = _closed_port()
    text = f"""
    receivers:
      prometheus:
        scrape_interval: 200ms
        scrape_timeout: 100ms
        static_targets: ["{HOST}:{target_port}"]
    processors:
      cni_aggregate: {{}}
    exporters:
      debug: {{}}
    service:
      telemetry: {{endpoint: "127.0.0.1:0", unhealthy_after: 1s}}
      pipelines:
        metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [debug]}}
    """
    config = load_config_text(textwrap.dedent(text), "t.yaml", Registry.load(), {})
    service = Service(config, Registry.load())
    stop = asyncio.Event()
    run = asyncio.create_task(service.run(stop))
    server = None
    try:
        async with asyncio.timeout(30):
            while service.server is None:
                await asyncio.sleep(0.05)
        port = service.server.port
        # failing for over 1s (the default would wait 300s)
        await _until(port, 503, "receiver/prometheus failing for")
        server = await serve_page(HOST, "page", target_port)
        await _until(port, 200, "ok")
    finally:
        stop.set()
        await run
        if server is not None:
            server.close()


def test_a_receiver_and_an_exporter_of_one_name_keep_their_own_health() -> None:
    telemetry = Telemetry()
    cid = ComponentID("prometheus")
    _Host(telemetry, Kind.RECEIVER, cid).report_status(False, "all 3 targets failed")
    _Host(telemetry, Kind.EXPORTER, cid).report_status(True, "serving")  # must not mask it
    problem = telemetry.readiness(failing_for=-1.0)  # any failure at all counts here
    assert problem is not None and problem.startswith("receiver/prometheus failing for")
