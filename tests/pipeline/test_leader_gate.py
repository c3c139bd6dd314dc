"""The export gate (leader election, engine side): a standby keeps and does not export; a new
leader replays the kept cycles after the one recorded, in order, then carries on; a cycle is
recorded only once its exporters delivered it; possible repeats and lost cycles are counted and
logged; the Service wires gates, self-metrics, /readyz and the release order.

The Leadership here is a plain class implementing the engine's own protocol (the Kubernetes Lease
one is tested in tests/cni_pipeline/test_leader.py and end to end in tests/test_leader_failover.py).
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
import urllib.request
from collections.abc import Callable

import pytest

from pipeline import (
    Batch,
    ComponentID,
    ComponentSettings,
    ConfigError,
    Cycle,
    FamilySet,
    Kind,
    Metric,
    MetricKind,
    PipelineError,
    Telemetry,
)
from pipeline._component import log_tag
from pipeline._config import load_config_text
from pipeline._leader import KEPT_CYCLES, Delivering, ExportGate, LeaderWatch
from pipeline._runtime import Service
from pipeline.exporterhelper import QueuedExporter
from pipeline.service import LeaderElectionConfig
from tests.support.components import Sink, test_registry

LOG = logging.getLogger("test_leader_gate")


class FakeLeadership:
    """Leadership the test flips by hand; records what the gates record."""

    def __init__(self, *, holder: str = "pod-b") -> None:
        self.leader = False
        self.last: float | None = None
        self.clean = True
        self.holder = holder
        self.recorded: list[float] = []
        self.listeners: list[Callable[[bool], None]] = []
        self.running = asyncio.Event()
        self.recorded_at_release: list[float] | None = None

    def is_leader(self) -> bool:
        return self.leader

    def last_delivered(self) -> float | None:
        return self.last

    def released_cleanly(self) -> bool:
        return self.clean

    def record_delivered(self, cycle_time: float) -> None:
        self.recorded.append(cycle_time)

    def holder_identity(self) -> str:
        return "me" if self.leader else self.holder

    async def run(self, stop: asyncio.Event) -> None:
        self.running.set()
        await stop.wait()
        self.recorded_at_release = list(self.recorded)
        if self.leader:
            self.set(False)

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        self.listeners.append(callback)

    def set(self, leading: bool, *, last: float | None = None, clean: bool = True) -> None:
        self.leader, self.last, self.clean = leading, last, clean
        for callback in self.listeners:
            callback(leading)


class Recorder:
    """An exporter's consumer face: the cycle times it was handed."""

    def __init__(self) -> None:
        self.times: list[float] = []

    async def consume(self, batch: Batch) -> None:
        self.times.append(batch.cycle.time)

    def wanted_families(self) -> FamilySet:
        return frozenset({"fam"})


class QueueingExporter(Recorder):
    """Buffers what it consumes until the test sends it, like a sending queue; Delivering."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []
        self._empty = asyncio.Event()
        self._empty.set()

    async def consume(self, batch: Batch) -> None:
        await super().consume(batch)
        self._empty.clear()

    def send_all(self) -> None:
        self.sent = list(self.times)
        self._empty.set()

    async def delivered(self) -> None:
        await self._empty.wait()


def batch(t: float) -> Batch:
    metric = Metric(name="fam", kind=MetricKind.GAUGE, value=t)
    return Batch(cycle=Cycle(time=t, previous=t - 1, index=int(t)), metrics=(metric,))


def make_gate(
    leadership: FakeLeadership, exporter: Recorder | None = None
) -> tuple[ExportGate, Recorder, Telemetry]:
    telemetry = Telemetry()
    exporter = exporter or Recorder()
    watch = LeaderWatch(leadership, telemetry, LOG)
    gate = watch.gate("metrics", exporter, [exporter])
    return gate, exporter, telemetry


def repeats(telemetry: Telemetry) -> float:
    value = telemetry.registry.get_sample_value(
        "cni_pipeline_leader_possible_repeats_total", {"pipeline": "metrics"}
    )
    return value or 0.0


# -- config ----------------------------------------------------------------------------------------

CONFIG = """
receivers:
  source: {{batches: 3}}
exporters:
  sink: {{}}
service:
  telemetry: {{endpoint: "127.0.0.1:0"}}
  leader_election: {election}
  pipelines:
    metrics: {{receivers: [source], exporters: [sink]}}
"""


def load(election: str) -> LeaderElectionConfig:
    text = textwrap.dedent(CONFIG.format(election=election))
    config = load_config_text(text, "t.yaml", test_registry(), {})
    return config.service.leader_election


def test_config_defaults_and_overrides() -> None:
    assert load("{}") == LeaderElectionConfig()
    assert LeaderElectionConfig().enabled is False
    got = load("{enabled: true, lease_duration: 3s, renew_deadline: 2s, retry_period: 500ms}")
    assert (got.enabled, got.lease_duration, got.renew_deadline, got.retry_period) == (
        True, 3.0, 2.0, 0.5,
    )  # fmt: skip


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        load("{lease_duration: 5s, renew_deadline: 5s, retry_period: 6s, lease_name: Bad_Name}")
    text = str(err.value)
    assert "service.leader_election.renew_deadline: must be shorter than lease_duration" in text
    assert "service.leader_election.retry_period: must be shorter than renew_deadline" in text
    assert "service.leader_election.lease_name: 'Bad_Name' is not a valid" in text
    with pytest.raises(ConfigError, match=r"service.leader_election.retry_period: must be more"):
        load("{retry_period: 0s}")
    with pytest.raises(ConfigError, match=r"service.leader_election.enabled"):
        load("{enabled: maybe}")


# -- the gate --------------------------------------------------------------------------------------


async def test_standby_keeps_cycles_and_exports_none() -> None:
    leadership = FakeLeadership()
    gate, exporter, telemetry = make_gate(leadership)
    for t in (1.0, 2.0, 3.0):
        await gate.consume(batch(t))
    await gate.settle()
    assert exporter.times == [] and leadership.recorded == []
    assert gate.wanted_families() == frozenset({"fam"})  # passes its consumer's wants through
    assert telemetry.registry.get_sample_value("cni_pipeline_leader") == 0
    assert telemetry.ready_text() == "ok: standby (leader: pod-b)"


async def test_takeover_replays_kept_cycles_after_the_recorded_one_then_carries_on() -> None:
    leadership = FakeLeadership()
    gate, exporter, telemetry = make_gate(leadership)
    for t in (1.0, 2.0, 3.0, 4.0):
        await gate.consume(batch(t))
    leadership.set(True, last=2.0)  # the old leader delivered up to cycle 2
    await gate.settle()
    assert exporter.times == [3.0, 4.0]  # replayed at once, not at the next cycle
    await gate.consume(batch(5.0))
    await gate.settle()
    assert exporter.times == [3.0, 4.0, 5.0]
    assert leadership.recorded[-1] == 5.0 and leadership.recorded == sorted(leadership.recorded)
    assert telemetry.registry.get_sample_value("cni_pipeline_leader") == 1
    assert telemetry.registry.get_sample_value("cni_pipeline_leader_transitions_total") == 1
    assert telemetry.ready_text() == "ok: leader"
    assert repeats(telemetry) == 0  # released cleanly: nothing can repeat


async def test_a_cycle_is_recorded_only_once_its_exporters_delivered_it() -> None:
    leadership = FakeLeadership()
    exporter = QueueingExporter()
    assert isinstance(exporter, Delivering)
    gate, _, _ = make_gate(leadership, exporter)
    leadership.set(True)
    async with asyncio.timeout(10):  # the cycle path is not held up by the pending delivery
        await gate.consume(batch(1.0))
        await gate.consume(batch(2.0))
    for _ in range(20):
        await asyncio.sleep(0)
    assert exporter.times == [1.0, 2.0] and leadership.recorded == []
    exporter.send_all()
    async with asyncio.timeout(10):
        await gate.settle()
    assert leadership.recorded[-1] == 2.0 and exporter.sent == [1.0, 2.0]


async def test_keeps_only_the_last_cycles_and_logs_those_no_replica_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    leadership = FakeLeadership()
    gate, exporter, _ = make_gate(leadership)
    for t in range(1, 16):
        await gate.consume(batch(float(t)))
    leadership.set(True, last=2.0, clean=False)
    await gate.settle()
    assert exporter.times == [float(t) for t in range(16 - KEPT_CYCLES, 16)]
    assert "cycles after 2 up to 5 were not published" in caplog.text


@pytest.mark.parametrize(
    ("clean", "kept", "expected"),
    [
        (False, [1.0, 2.0, 3.0], 1),  # the dead leader may have delivered cycle 2 unrecorded
        (True, [1.0, 2.0, 3.0], 0),  # a release records the last delivered cycle first
        (False, [], 0),  # nothing replayed (a replica that just started): nothing to repeat
        (False, [1.0], 0),  # all it kept was recorded already: only new cycles follow
    ],
)
async def test_possible_repeats_counted_after_a_takeover_from_a_dead_leader(
    clean: bool, kept: list[float], expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    leadership = FakeLeadership()
    gate, exporter, telemetry = make_gate(leadership)
    for t in kept:
        await gate.consume(batch(t))
    leadership.set(True, last=1.0, clean=clean)
    await gate.consume(batch(4.0))
    await gate.settle()
    assert exporter.times == [t for t in kept if t > 1.0] + [4.0]
    assert repeats(telemetry) == expected
    assert ("cycle 2 may be published twice" in caplog.text) == bool(expected)


async def test_losing_the_lead_stops_exporting_and_a_new_term_starts_from_the_record() -> None:
    leadership = FakeLeadership()
    gate, exporter, telemetry = make_gate(leadership)
    leadership.set(True)
    await gate.consume(batch(1.0))
    leadership.set(False)
    await gate.consume(batch(2.0))
    await gate.consume(batch(3.0))
    assert exporter.times == [1.0]
    leadership.set(True, last=2.0)  # someone else led meanwhile and delivered cycle 2
    await gate.settle()
    assert exporter.times == [1.0, 3.0]
    assert telemetry.registry.get_sample_value("cni_pipeline_leader_transitions_total") == 3


async def test_the_exporter_helpers_queued_exporters_report_delivery() -> None:
    """awscloudwatch and otlp are QueuedExporters: the gate waits for their sends, not their
    queueing, before recording a cycle (tests/pipeline/test_exporterhelper.py: delivered())."""
    settings = ComponentSettings(
        id=ComponentID("awscloudwatch"),
        kind=Kind.EXPORTER,
        logger=logging.LoggerAdapter(LOG, {}),
        telemetry=Telemetry(),
        started_at=time.time(),
    )

    async def push(batch: Batch) -> None:
        return None

    assert isinstance(QueuedExporter(settings, push), Delivering)


# -- the service -----------------------------------------------------------------------------------

SERVICE = """
receivers:
  source: {batches: 3, values: [1]}
exporters:
  sink: {}
service:
  telemetry: {endpoint: "127.0.0.1:0"}
  leader_election: {enabled: true}
  pipelines:
    metrics: {receivers: [source], exporters: [sink]}
"""


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_service_gates_its_pipelines_and_records_before_releasing() -> None:
    config = load_config_text(textwrap.dedent(SERVICE), "t.yaml", test_registry(), {})
    leadership = FakeLeadership()
    service = Service(config, test_registry(), leadership=leadership)
    stop = asyncio.Event()
    run = asyncio.create_task(service.run(stop))
    try:
        async with asyncio.timeout(30):
            await leadership.running.wait()
            while service.server is None:
                await asyncio.sleep(0.01)
            sink = Sink.instances["sink"]
            # the test source reports no health of its own; a real receiver does each cycle
            service.telemetry.report_status(log_tag(Kind.RECEIVER, ComponentID("source")), True)
            await asyncio.sleep(0.1)
            assert sink.batches == []  # three cycles came, as standby: kept, not exported
            base = f"http://127.0.0.1:{service.server.port}"
            assert (
                await asyncio.to_thread(_get, base + "/readyz") == "ok: standby (leader: pod-b)\n"
            )
            leadership.set(True, last=0.0)  # cycle 0 was delivered by the previous leader
            while len(sink.batches) < 2:
                await asyncio.sleep(0.01)
            assert await asyncio.to_thread(_get, base + "/readyz") == "ok: leader\n"
            assert "cni_pipeline_leader 1.0" in await asyncio.to_thread(_get, base + "/metrics")
    finally:
        stop.set()
        await run
    assert [b.cycle.time for b in sink.batches] == [1.0, 2.0]
    assert leadership.recorded_at_release is not None and leadership.recorded_at_release[-1] == 2.0


async def test_enabled_without_a_leadership_is_an_error() -> None:
    config = load_config_text(textwrap.dedent(SERVICE), "t.yaml", test_registry(), {})
    with pytest.raises(PipelineError, match="service.leader_election.enabled is true"):
        await Service(config, test_registry()).run(asyncio.Event())
