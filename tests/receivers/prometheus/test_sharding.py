"""Sharding the fleet across replicas (``receivers.prometheus.sharding``): Prometheus' own
``hashmod`` (a real Prometheus server, relabelling) decides the same shards as we do; every target
is in exactly one shard; the shard index comes from a StatefulSet pod's ordinal; a receiver
scrapes only its shard."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import ConfigError, Target, validate_config
from receivers.prometheus import factory
from receivers.prometheus._sharding import Shard, resolve_shard, shard_of
from receivers.prometheus.config import PrometheusReceiverConfig, ShardingConfig
from tests.receivers.prometheus.test_receiver import (
    RecordingConsumer,
    RecordingHost,
    config,
    serve_page,
    settings,
)
from tests.support.pipeline_process import ROOT
from tests.support.prom_server import PromServer, missing_reason

ADDRESSES = [f"10.0.{i // 250}.{i % 250 + 1}:61678" for i in range(40)]


@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_the_same_shards_as_prometheus_hashmod(tmp_path: Path) -> None:
    """Prometheus keeps, for shard 1 of 3, exactly the targets we put in shard 1."""
    relabel = [
        {"source_labels": ["__address__"], "modulus": 3, "target_label": "__tmp_shard",
         "action": "hashmod"},
        {"source_labels": ["__tmp_shard"], "regex": "1", "action": "keep"},
    ]
    with PromServer(ADDRESSES, tmp_path, relabel_configs=relabel) as prometheus:
        deadline = time.monotonic() + 30  # the scrape manager takes its targets in a few seconds
        active: list[dict[str, Any]] = []
        while not active and time.monotonic() < deadline:
            time.sleep(0.2)
            active = prometheus.api("targets")["activeTargets"]
        kept = {t["discoveredLabels"]["__address__"] for t in active}
    assert kept == {a for a in ADDRESSES if shard_of(a, 3) == 1}
    assert 0 < len(kept) < len(ADDRESSES)


def test_every_target_is_in_exactly_one_shard() -> None:
    targets = [Target(address=a, pod=f"aws-node-{i}", uid=f"uid-{i}")
               for i, a in enumerate(ADDRESSES)]
    shards = [Shard(i, 4).select(targets) for i in range(4)]
    assert sorted(t.key for shard in shards for t in shard) == sorted(t.key for t in targets)
    assert all(shards)  # 40 targets: none of 4 shards is empty
    # The pod's UID is hashed, not its address: a pod moved to another IP keeps its shard.
    moved = Target(address="10.9.9.9:61678", pod="aws-node-3", uid="uid-3")
    assert [Shard(i, 4).owns(moved) for i in range(4)] == [
        Shard(i, 4).owns(targets[3]) for i in range(4)]


def test_the_shard_index_from_a_statefulset_pod_name() -> None:
    assert resolve_shard(3, None, {"HOSTNAME": "cni-pipeline-shard-2"}, "r") == Shard(2, 3)
    assert resolve_shard(3, 0, {"HOSTNAME": "cni-pipeline-shard-2"}, "r") == Shard(0, 3)
    assert resolve_shard(1, None, {}, "r") == Shard(0, 1)
    with pytest.raises(ConfigError, match="does not end in an ordinal"):
        resolve_shard(3, None, {"HOSTNAME": "cni-pipeline-7d9f"}, "receivers.prometheus")
    with pytest.raises(ConfigError, match="gives shard 5, but there are only 3 shards"):
        resolve_shard(3, None, {"HOSTNAME": "shard-5"}, "receivers.prometheus")


def test_sharding_config_problems_name_their_key() -> None:
    def problems(**fields: int) -> list[str]:
        cfg = PrometheusReceiverConfig(static_targets=["127.0.0.1:1"],
                                       sharding=ShardingConfig(**fields))
        return [key for key, _ in validate_config(cfg)]

    assert problems(shards=0) == ["sharding.shards"]
    assert problems(shards=3, shard=3) == ["sharding.shard"]
    assert problems(shards=3, shard=2) == []


def test_a_shard_without_an_index_is_a_config_error_at_start(tmp_path: Path) -> None:
    path = tmp_path / "shard.yaml"
    path.write_text("""
receivers:
  prometheus: {static_targets: ["127.0.0.1:9"], sharding: {shards: 3}}
processors: {cni_aggregate: {}}
exporters: {debug: {}}
service:
  telemetry: {endpoint: ""}
  pipelines: {metrics: {receivers: [prometheus], processors: [cni_aggregate], exporters: [debug]}}
""")
    result = subprocess.run(
        [sys.executable, "-m", "cni_pipeline", "--config", str(path)], cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOSTNAME": "laptop"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "receivers.prometheus: sharding.shard: not set, and HOSTNAME 'laptop'" in result.stderr


async def test_a_receiver_scrapes_only_its_shard() -> None:
    servers = [await serve_page(f"127.0.0.{i}", "page") for i in range(60, 72)]
    addresses = [f"127.0.0.{i}:{s.sockets[0].getsockname()[1]}"
                 for i, s in zip(range(60, 72), servers, strict=True)]
    try:
        seen: list[set[str]] = []
        for index in range(3):
            consumer = RecordingConsumer()
            sharded = PrometheusReceiverConfig(
                **{**config(addresses).__dict__,
                   "sharding": ShardingConfig(shards=3, shard=index)})
            receiver = factory.create(settings(), sharded, consumer)
            await receiver.start(RecordingHost())
            try:
                await consumer.wait_for(1)
            finally:
                await receiver.shutdown()
            scraped = {s.target.address for s in consumer.batches[0].targets}
            assert all(s.health.up for s in consumer.batches[0].targets)
            assert scraped == {a for a in addresses if shard_of(a, 3) == index}
            seen.append(scraped)
        assert set().union(*seen) == set(addresses) and sum(map(len, seen)) == len(addresses)
    finally:
        for server in servers:
            server.close()
        await asyncio.sleep(0)
