"""Reload in place, end to end: one real ``cni-pipeline`` process, its config file laid out as a
mounted ConfigMap (``config.yaml`` -> ``..data/config.yaml``, ``..data`` -> a timestamped
directory, swapped atomically), a simulated fleet and moto's CloudWatch read back.

Mid-run, without a restart: an exporter is added (SIGHUP), group_by changes (the file watch sees
the swap), the scrape interval changes, then a broken file arrives. Throughout, every cycle in
CloudWatch is there once, with the fleet's true gauge sum and, between consecutive cycles, its
true counter increase: no increase is lost or counted twice across a reload. The broken file is
logged and counted, and the pipeline runs on with the config it had.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simfleet import FleetProcess
from tests.support.moto_server import Moto, aws_test_env, running_moto
from tests.support.pipeline_process import (
    Mover,
    Replica,
    eventually,
    free_port,
    kill_survivors,
    start_pipeline,
)

STEP = 2.0  # the fleet moves every STEP seconds, half-way between ticks of 2 s and of 4 s
CLUSTER = "reload"
DIMS = [("CLUSTER_ID", CLUSTER)]
GAUGE, GAUGE_FAMILY = "assignIPAddresses", "awscni_assigned_ip_addresses"
COUNTER, COUNTER_FAMILY = "addReqCount", "awscni_add_ip_req_count"
CONFIG = """\
receivers:
  prometheus:
    scrape_interval: {interval}s
    scrape_timeout: 1s
    static_targets: [{targets}]
processors:
  cni_aggregate: {{group_by: {group_by}}}
exporters:
  awscloudwatch:
    endpoint_url: {endpoint}
    cluster_id: {cluster}
    flush_interval: 1s
  prometheus:
    endpoint: 127.0.0.1:{prom_port}
service:
  watch_config: {watch}
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: {exporters}}}
"""


class ConfigMapDir:
    """A directory laid out as the kubelet mounts a ConfigMap, updated as it updates one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        (root / "config.yaml").symlink_to("..data/config.yaml")
        self.version = 0

    @property
    def path(self) -> Path:
        return self.root / "config.yaml"

    def publish(self, text: str) -> None:
        """A new timestamped directory, then an atomic rename of the ``..data`` link onto it."""
        self.version += 1
        target = self.root / f"..2026_12_03_v{self.version}"
        target.mkdir()
        (target / "config.yaml").write_text(text)
        temporary = self.root / "..data_tmp"
        temporary.symlink_to(target.name)
        os.replace(temporary, self.root / "..data")


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    aws_test_env(monkeypatch, region="us-west-2")
    with running_moto(region="us-west-2") as server:
        yield server


def wait_until_mid_step() -> None:
    """Sleep to a point 1 s past a tick of 2 s (so past every 4 s tick too, or 1 s before one)."""
    now = time.time()
    target = (now // STEP) * STEP + STEP / 2
    time.sleep(target - now if target > now else target + STEP - now)


def test_reload_in_place_keeps_every_increase(moto: Moto, tmp_path: Path) -> None:
    fleet = FleetProcess(4, base_address="127.44.0.1", seed=13, start_time=time.time() - 3600)
    port, prom_port = free_port(), free_port()
    files = ConfigMapDir(tmp_path / "config")
    replicas: list[Replica] = []

    def config(*, interval: int = 2, group_by: str = "[]", exporters: str = "[awscloudwatch]",
               watch: str = "false") -> str:
        return CONFIG.format(
            interval=interval, targets=", ".join(f'"{a}"' for a in fleet.addresses),
            group_by=group_by, endpoint=moto.endpoint, cluster=CLUSTER, prom_port=prom_port,
            watch=watch, port=port, exporters=exporters)

    def reloads(result: str) -> float:
        return pipeline.metric(f'cni_pipeline_config_reloads_total{{result="{result}"}}')

    fleet.start()
    mover = Mover(fleet, STEP).start()
    try:
        files.publish(config())
        pipeline = start_pipeline("pipeline", ["--config", str(files.path)],
                                  tmp_path / "pipeline.log", port)
        replicas.append(pipeline)
        eventually(lambda: pipeline.readyz() == "ok", "the pipeline is ready", replicas)
        time.sleep(3 * STEP)

        # 1. An exporter added, by SIGHUP (the watch is off in this config).
        assert pipeline.get_from(prom_port, "/") == ""  # not served before the reload adds it
        wait_until_mid_step()
        files.publish(config(exporters="[awscloudwatch, prometheus]", watch="true"))
        pipeline.process.send_signal(signal.SIGHUP)
        eventually(lambda: reloads("applied") == 1, "the SIGHUP reload", replicas)
        eventually(lambda: "awscni_assigned_ip_addresses" in pipeline.get_from(prom_port, "/"),
                   "the added prometheus exporter serves", replicas)
        time.sleep(3 * STEP)

        # 2. group_by changed: the file watch sees the ConfigMap swap by itself.
        wait_until_mid_step()
        files.publish(config(exporters="[awscloudwatch, prometheus]", watch="true",
                             group_by="[instance_type]"))
        eventually(lambda: reloads("applied") == 2, "the watched reload (group_by)", replicas)
        time.sleep(3 * STEP)

        # 3. The interval doubled.
        wait_until_mid_step()
        files.publish(config(exporters="[awscloudwatch, prometheus]", watch="true",
                             group_by="[instance_type]", interval=4))
        eventually(lambda: reloads("applied") == 3, "the watched reload (interval)", replicas)
        interval_changed = time.time()
        time.sleep(4 * STEP)

        # 4. A broken file: logged and counted; the pipeline runs on untouched.
        files.publish(config(watch="true").replace("scrape_timeout: 1s", "scrape_timeout: 9s"))
        eventually(lambda: reloads("invalid") == 1, "the broken file is refused", replicas)
        time.sleep(3 * STEP)
        assert reloads("applied") == 3
        assert pipeline.process.poll() is None
        pipeline.stop(signal.SIGTERM)
    finally:
        mover.stopped.set()
        kill_survivors(replicas)
        fleet.stop()

    log = pipeline.output()
    assert pipeline.process.returncode == 0, log[-3000:]
    assert "scrape_timeout: (9s) must not exceed scrape_interval (2s)" in log
    assert "the running pipeline carries on with the config it had" in log
    assert "config reloaded from" in log and "kept" in log
    grouped = {tuple(sorted(d["Name"] for d in m["Dimensions"]))
               for m in moto.list_metrics("Kubernetes") if m["MetricName"] == GAUGE}
    assert ("CLUSTER_ID", "instance_type") in grouped
    check_exact_throughout(moto, mover, interval_changed)


def check_exact_throughout(moto: Moto, mover: Mover, interval_changed: float) -> None:
    copies = moto.series("Kubernetes", GAUGE, DIMS, stat="SampleCount", period=1)
    gauges = moto.series("Kubernetes", GAUGE, DIMS, stat="Sum", period=1)
    counters = moto.series("Kubernetes", COUNTER, DIMS, stat="Sum", period=1)
    ticks = sorted(copies)
    assert len(ticks) >= 14, ticks
    assert all(copies[t] == 1 for t in ticks), {t: c for t, c in copies.items() if c != 1}
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    # 2 s cycles, then 4 s ones; a reload that lands mid-scrape may cost one cycle's datum (its
    # increase is then in the next cycle's): at most one such gap per reload.
    assert sum(1 for gap in gaps if gap not in (2.0, 4.0)) + sum(
        1 for a, gap in zip(ticks, gaps, strict=False) if gap == 4.0 and a < interval_changed - 4
    ) <= 3, gaps
    assert all(gap == 4.0 for a, gap in zip(ticks, gaps, strict=False) if a > interval_changed + 4)
    checked = 0
    for previous, tick in zip(ticks, ticks[1:], strict=False):
        now, before = mover.state_at(tick), mover.state_at(previous)
        if now is None or before is None:
            continue
        assert gauges[tick] == pytest.approx(now.gauge_sum(GAUGE_FAMILY)), tick
        assert counters[tick] == pytest.approx(now.counter_increase(COUNTER_FAMILY, before)), (
            f"cycle {tick}: the increase since cycle {previous}")
        checked += 1
    assert checked >= len(ticks) - 4, f"only {checked} of {len(ticks)} cycles could be checked"
