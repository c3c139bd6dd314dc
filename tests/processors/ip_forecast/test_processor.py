"""``ip_forecast`` in a real pipeline: the real ``prometheus`` receiver scraping a loopback page
whose assigned IPs rise one a second, ``cni_aggregate``, then ``ip_forecast``; and its config
errors through the engine's loader."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from pipeline import Batch, ComponentConfig, ComponentSettings, ConfigError, Kind, SimpleExporter
from pipeline.service import Registry, Service, load_config_text
from tests.support.fixtures import AWS_NODE_PAGES
from tests.support.http_server import BackgroundHTTPServer

PAGE = (AWS_NODE_PAGES / "metrics-v1.data").read_text()
CAPACITY = 10_000_000


class _RisingNode(BaseHTTPRequestHandler):
    """An aws-node page whose assigned IPs are the wall-clock second: they rise 3,600 an hour.
    Cycles tick on whole seconds and scrape just after, so each cycle reads its own tick."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        assigned = int(time.time()) % 1_000_000
        page = re.sub(r"^awscni_assigned_ip_addresses \S+$",
                      f"awscni_assigned_ip_addresses {assigned}", PAGE, flags=re.M)
        page = re.sub(r"^awscni_ip_max \S+$", f"awscni_ip_max {CAPACITY}", page, flags=re.M)
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Recorder(SimpleExporter):
    type = "recorder"
    kind = Kind.EXPORTER

    def __init__(self) -> None:
        self.batches: asyncio.Queue[Batch] = asyncio.Queue()

    def default_config(self) -> ComponentConfig:
        return ComponentConfig()

    def create(self, settings: ComponentSettings, config: Any) -> _Recorder:
        return self

    async def consume(self, batch: Batch) -> None:
        await self.batches.put(batch)


@pytest.fixture()
def node() -> Iterator[BackgroundHTTPServer]:
    with BackgroundHTTPServer(_RisingNode, name="rising-aws-node") as server:
        yield server


def _registry() -> tuple[Registry, _Recorder]:
    registry = Registry.load()
    recorder = _Recorder()
    registry.register(Kind.EXPORTER, recorder, distribution="test")
    return registry, recorder


async def test_the_forecast_follows_the_scraped_trend(node: BackgroundHTTPServer) -> None:
    registry, recorder = _registry()
    config = load_config_text(f"""
receivers:
  prometheus:
    scrape_interval: 1s
    scrape_timeout: 500ms
    static_targets: ["{node.host}:{node.port}"]
processors:
  cni_aggregate: {{}}
  ip_forecast:
    window: 3s
    max_horizon: 10000h  # ~2,700 h left at 3,600 IPs an hour
exporters:
  recorder: {{}}
service:
  telemetry: {{endpoint: ""}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate, ip_forecast],
              exporters: [recorder]}}
""", "test", registry)
    service = Service(config, registry)
    await service.start()
    forecasts: list[tuple[dict[str, float], float]] = []
    try:
        for _ in range(12):  # bounded: the window fills after 4 cycles
            batch = await asyncio.wait_for(recorder.batches.get(), timeout=30)
            cluster = {m.name: m.value for m in batch.metrics if not m.attributes}
            if "ipExhaustionHours" in cluster:
                forecasts.append((cluster, batch.cycle.time))
                if len(forecasts) == 3:
                    break
    finally:
        await service.shutdown()
    assert forecasts, "no forecast within 12 cycles"
    for cluster, _ in forecasts:
        remaining = cluster["maxIPAddresses"] - cluster["assignIPAddresses"]
        assert cluster["ipExhaustionHours"] == pytest.approx(remaining / 3600, rel=1e-6)
    # the aggregation it rides on is untouched: the processor only adds its metric
    assert all("totalIPAddresses" in cluster for cluster, _ in forecasts)


@pytest.mark.parametrize(("forecasts", "key", "message"), [
    ("[{metric: x, used: a}]", "forecasts[0].used", "used and capacity"),
    ("[{metric: x, available: a, used: b}]", "forecasts[0].available", "not both"),
    ("[{used: a, capacity: b}]", "forecasts[0].metric", "is required"),
    ("[{metric: x, available: a}, {metric: x, available: b}]", "forecasts[1].metric", "twice"),
])
def test_config_errors_name_the_key(forecasts: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text(f"""
receivers: {{prometheus: {{static_targets: ["127.0.0.1:1"]}}}}
processors: {{cni_aggregate: {{}}, ip_forecast: {{forecasts: {forecasts}}}}}
exporters: {{debug: {{}}}}
service:
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate, ip_forecast],
              exporters: [debug]}}
""", "forecast.yaml", Registry.load())
    assert any(k == f"processors.ip_forecast.{key}" and message in m
               for k, m in err.value.problems), err.value.problems
