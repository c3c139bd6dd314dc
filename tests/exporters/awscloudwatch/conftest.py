"""Fixtures for the awscloudwatch exporter tests: moto on loopback, AWS env kept local."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from exporters.awscloudwatch import CloudWatchExporter, CloudWatchExporterConfig
from pipeline import ComponentID, ComponentSettings, Duration, Kind, Telemetry, aligned_tick
from pipeline.exporterhelper import RetrySettings
from tests.support.moto_server import Moto, aws_test_env, running_moto

#: Retries fast enough for tests, patient enough to outlast a scripted run of faults.
FAST_RETRY = RetrySettings(initial_interval=Duration(0.02), max_interval=Duration(0.1),
                           max_elapsed_time=Duration(20), randomization_factor=0.2)


class RecordingHost:
    def __init__(self) -> None:
        self.statuses: list[tuple[bool, str]] = []

    def report_status(self, healthy: bool, message: str = "") -> None:
        self.statuses.append((healthy, message))


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    aws_test_env(monkeypatch, region="us-west-2")


@pytest.fixture(scope="module")
def moto_server() -> Iterator[Moto]:
    with running_moto(region="us-west-2") as server:
        yield server


@pytest.fixture
def moto(moto_server: Moto) -> Moto:
    moto_server.reset()
    return moto_server


@pytest.fixture
def settings() -> ComponentSettings:
    return ComponentSettings(
        id=ComponentID("awscloudwatch"), kind=Kind.EXPORTER,
        logger=logging.LoggerAdapter(logging.getLogger("test.awscloudwatch"), {}),
        telemetry=Telemetry(), started_at=time.time(),
    )


@pytest.fixture
def base_time() -> float:
    """A cycle time an hour back, on a minute boundary, so read-back windows are clean."""
    return aligned_tick(time.time() - 3600, 60)


class Harness:
    """What the tests need around one exporter: its settings, config and self-metrics."""

    def __init__(self, settings: ComponentSettings) -> None:
        self.settings = settings
        self.host = RecordingHost()
        self.exporters: list[CloudWatchExporter] = []

    def config(self, endpoint: str, **overrides: Any) -> CloudWatchExporterConfig:
        base = CloudWatchExporterConfig(
            endpoint_url=endpoint, region="us-west-2", cluster_id="test-cluster",
            retry_on_failure=FAST_RETRY, connect_timeout=Duration(2), read_timeout=Duration(5),
            shutdown_grace=Duration(10),
        )
        return replace(base, **overrides)

    def metric(self, name: str) -> float:
        value = self.settings.telemetry.registry.get_sample_value(
            f"cni_pipeline_{name}", {"exporter": str(self.settings.id)})
        return 0.0 if value is None else value

    async def start(self, cfg: CloudWatchExporterConfig) -> CloudWatchExporter:
        exporter = CloudWatchExporter(self.settings, cfg)
        self.exporters.append(exporter)
        await exporter.start(self.host)
        return exporter


@pytest.fixture
async def harness(settings: ComponentSettings) -> Any:
    h = Harness(settings)
    yield h
    for exporter in h.exporters:  # a failed test must not leave workers behind
        await exporter.shutdown()
