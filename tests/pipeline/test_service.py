"""The graph and the service: build from IDs, start downstream first, stop upstream first,
a failing component logged and isolated, fan-out to every exporter."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import urllib.request

import pytest

from pipeline import ComponentError
from pipeline._config import load_config_text
from pipeline._runtime import Service
from tests.support import components
from tests.support.components import Sink, test_registry

TWO_PIPELINES = """
receivers:
  source: {batches: 3, values: [1, 2]}
processors:
  scale: {factor: 10, wants: [fam_a]}
  scale/bad: {fail: true}
exporters:
  sink/a: {}
  sink/b: {}
  sink/broken: {fail: true}
service:
  telemetry: {endpoint: "127.0.0.1:0"}
  pipelines:
    metrics:
      receivers: [source]
      processors: [scale]
      exporters: [sink/a, sink/broken]
    metrics/raw:
      receivers: [source]
      exporters: [sink/a, sink/b]
    metrics/bad:
      receivers: [source]
      processors: [scale/bad]
      exporters: [sink/b]
"""


def make_service(text: str) -> Service:
    config = load_config_text(textwrap.dedent(text), "t.yaml", test_registry(), {})
    return Service(config, test_registry())


async def run_briefly(service: Service) -> None:
    await service.start()
    for _ in range(50):
        await asyncio.sleep(0.01)
    await service.shutdown()


async def test_start_order_downstream_first_and_stop_upstream_first():
    components.EVENTS.clear()
    await run_briefly(make_service(TWO_PIPELINES))
    events = components.EVENTS
    starts = [e for e in events if e.startswith("start")]
    stops = [e for e in events if e.startswith("stop")]
    assert starts[-1] == "start source"
    assert all(s.startswith("start sink") for s in starts[:3])
    assert stops[0] == "stop source"
    assert all(s.startswith("stop sink") for s in stops[-3:])


async def test_fan_out_shares_exporters_and_isolates_failures(caplog):
    caplog.set_level(logging.ERROR)
    await run_briefly(make_service(TWO_PIPELINES))
    a, b = Sink.instances["sink/a"], Sink.instances["sink/b"]
    # sink/a gets the scaled pipeline (x10) and the raw one: one instance serving two pipelines.
    values_a = sorted(m.value for batch in a.batches for m in batch.metrics)
    assert values_a == sorted([1.0, 2.0, 10.0, 20.0] * 3)
    # sink/b only gets the raw pipeline: scale/bad raised on every batch, which was logged.
    assert sorted(m.value for batch in b.batches for m in batch.metrics) == [1.0, 1, 1, 2, 2, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert any("component scale/bad failed on cycle" in m for m in messages)
    assert any("component sink/broken failed on cycle" in m for m in messages)
    assert a.flushed and b.flushed


async def test_receiver_sees_the_union_of_wanted_families():
    service = make_service(TWO_PIPELINES)
    await service.start()
    (node,) = service.graph.receivers
    assert node.component.wanted == frozenset({"fam_a"})
    await service.shutdown()


async def test_self_telemetry_endpoint_counts_component_errors():
    service = make_service(TWO_PIPELINES)
    await service.start()
    await asyncio.sleep(0.2)
    port = service.server.port
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    )
    await service.shutdown()
    text = body.decode()
    assert 'cni_pipeline_component_errors_total{component="scale/bad"} 3.0' in text
    assert 'cni_pipeline_component_errors_total{component="sink/broken"} 3.0' in text


async def test_start_failure_names_the_component_and_stops_the_rest(monkeypatch):
    async def boom(self, host):
        raise OSError("address already in use")

    monkeypatch.setattr(Sink, "start", boom)
    components.EVENTS.clear()
    service = make_service(TWO_PIPELINES)
    with pytest.raises(ComponentError, match=r"exporter sink/a: failed to start: address already"):
        await service.start()
    await service.shutdown()
    assert "start source" not in components.EVENTS


async def test_shutdown_without_start_and_twice():
    service = make_service(TWO_PIPELINES)
    await service.shutdown()
    await service.start()
    await service.shutdown()
    await service.shutdown()
