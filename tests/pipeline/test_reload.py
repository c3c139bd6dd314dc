"""Service.reload: what is kept (the same object, still running), what is replaced, in which
order, and that an invalid file leaves the running service untouched (pipeline/_reload.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pipeline._config import Config, load_config, load_config_text
from pipeline._reload import Reloader, ReloadLoop
from pipeline._runtime import Service
from tests.support import components
from tests.support.components import test_registry

BASE = """
receivers:
  source/a: {batches: 0}
  source/b: {batches: 0}
processors:
  scale: {factor: 2}
exporters:
  sink/one: {}
  sink/two: {}
service:
  telemetry: {endpoint: ""}
  pipelines:
    metrics/first: {receivers: [source/a], processors: [scale], exporters: [sink/one]}
    metrics/second: {receivers: [source/b], exporters: [sink/two]}
"""


def config(text: str) -> Config:
    return load_config_text(textwrap.dedent(text), "t.yaml", test_registry(), {})


def components_of(service: Service) -> dict[str, object]:
    assert service.graph is not None
    return {f"{n.kind} {n.id} {n.pipeline}": n.component for n in service.graph.nodes()}


async def test_unchanged_components_keep_running_and_changed_ones_are_replaced() -> None:
    service = Service(config(BASE), test_registry())
    await service.start()
    try:
        before = components_of(service)
        components.EVENTS.clear()
        changed = await service.reload(config(BASE.replace("factor: 2", "factor: 3")))
        after = components_of(service)
        assert changed
        # The second pipeline and its receiver and exporter are the very same objects.
        for key in ("receiver source/b ", "exporter sink/two ", "exporter sink/one "):
            assert after[key] is before[key], key
        # The changed processor and the receiver in front of it are new.
        for key in ("processor scale metrics/first", "receiver source/a "):
            assert after[key] is not before[key], key
        # Old receiver first, then the old processor; new ones start downstream first.
        assert components.EVENTS == ["stop source/a", "stop scale", "start scale",
                                     "start source/a"]
        assert await service.reload(config(BASE.replace("factor: 2", "factor: 3"))) is False
    finally:
        await service.shutdown()


async def test_a_removed_exporter_is_stopped_and_an_added_one_started() -> None:
    service = Service(config(BASE), test_registry())
    await service.start()
    try:
        components.EVENTS.clear()
        await service.reload(config(BASE.replace("exporters: [sink/two]",
                                                 "exporters: [sink/one]")))
        assert "stop sink/two" in components.EVENTS
        assert "start sink/one" not in components.EVENTS  # kept: its config is the same
        assert components.Sink.instances["sink/two"].flushed
    finally:
        await service.shutdown()
    assert "stop sink/one" in components.EVENTS  # the shutdown stops what the reload kept


async def test_an_invalid_file_is_logged_counted_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(BASE))
    service = Service(load_config(str(path), test_registry()), test_registry())
    await service.start()
    try:
        before = components_of(service)
        path.write_text(textwrap.dedent(BASE).replace("factor: 2", "factor: 0"))
        loop = ReloadLoop(service, Reloader(lambda: load_config(str(path), test_registry()),
                                            str(path)))
        await loop.reload("test")
        assert components_of(service) == before
        value = service.telemetry.registry.get_sample_value(
            "cni_pipeline_config_reloads_total", {"result": "invalid"})
        assert value == 1
    finally:
        await service.shutdown()
