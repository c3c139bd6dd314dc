"""Fixtures shared by the exporter tests: component settings, a recording host, a clean env.

The default component ID is the test's directory (``otlp``, ``prometheus``); a directory's own
conftest may override any of these (awscloudwatch does).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import pytest

from pipeline import ComponentID, ComponentSettings, Kind, Telemetry


class RecordingHost:
    """A Host that records what components report."""

    def __init__(self) -> None:
        self.statuses: list[tuple[bool, str]] = []

    def report_status(self, healthy: bool, message: str = "") -> None:
        self.statuses.append((healthy, message))


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No IMDS, a known cluster and region; no OTEL_* variable leaking into the SDK exporter."""
    monkeypatch.setenv("AWS_CLUSTER_ID", "test-cluster")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture
def make_settings(request: pytest.FixtureRequest) -> Callable[..., ComponentSettings]:
    default_id = request.node.path.parent.name

    def make(component_id: str = "", started_at: float | None = None) -> ComponentSettings:
        cid = ComponentID.parse(component_id or default_id)
        return ComponentSettings(
            id=cid, kind=Kind.EXPORTER,
            logger=logging.LoggerAdapter(logging.getLogger(f"test.{cid}"), {"component": str(cid)}),
            telemetry=Telemetry(),
            started_at=time.time() if started_at is None else started_at,
        )

    return make
