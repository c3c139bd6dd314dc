"""Three shards and a gateway publish exactly what one replica publishes, end to end.

Real processes on one simulated 300-node fleet: a single replica (``prometheus ->
cni_aggregate -> awscloudwatch``, cluster ``single``) and the sharded layout of
configs/sharded/ (three ``prometheus{sharding} -> cni_aggregate{output: partials} -> otlp``
shards, and a gateway ``otlp -> cni_combine -> awscloudwatch``, cluster ``sharded``), both into
moto's CloudWatch, read back with GetMetricData. Along the way a node restarts, a node grows a
new counter series, a node starts failing (its last values carried as stale, in both), and
shard 1 is stopped (SIGSTOP) for two cycles and continued.

Every metric of every cycle must be the same in both clusters, to the bit, except while shard 1
was stopped: then the gateway publishes at its deadline with shard 1's last gauges carried (so a
gauge is shards 0 and 2 now plus shard 1 as it last reported, checked against the fleet's
truth), and shard 1's counter increases arrive with its next report: over the window every
counter's total is the single replica's, never lost, never twice.

The fleet moves half-way between ticks, so every process scrapes the same state for a cycle.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from receivers.prometheus._sharding import shard_of
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

NODES = 300
SHARDS = 3
INTERVAL = 4.0
SOON = 45.0
NAMESPACE = "Kubernetes"
GAUGE_FAMILY = "awscni_assigned_ip_addresses"
FAILING = 9
COUNTERS = ("addReqCount", "delReqCount", "ec2ApiReqCount", "reconcileCount")

SCRAPE = """\
  prometheus:
    scrape_interval: {interval}s
    scrape_timeout: 1500ms
    static_targets: [{targets}]
"""
CLOUDWATCH = """\
  awscloudwatch:
    endpoint_url: {endpoint}
    cluster_id: {cluster}
    flush_interval: 3s
"""
TELEMETRY = """\
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
"""
SINGLE = ("receivers:\n" + SCRAPE + "processors:\n  cni_aggregate: {{}}\nexporters:\n"
          + CLOUDWATCH + "service:\n" + TELEMETRY
          + "  pipelines:\n    metrics: {{receivers: [prometheus], processors: [cni_aggregate], "
          "exporters: [awscloudwatch]}}\n")
SHARD = ("receivers:\n" + SCRAPE + "    sharding: {{shards: " + str(SHARDS) + "}}\n"
         "processors:\n  cni_aggregate: {{output: partials}}\n"
         "exporters:\n  otlp:\n    endpoint: 127.0.0.1:{grpc}\n    tls: {{insecure: true}}\n"
         "    temporality: delta\n"
         "service:\n" + TELEMETRY
         + "  pipelines:\n    metrics: {{receivers: [prometheus], processors: [cni_aggregate], "
         "exporters: [otlp]}}\n")
GATEWAY = ("receivers:\n  otlp:\n    protocols:\n      grpc: {{endpoint: \"127.0.0.1:{grpc}\"}}\n"
           "processors:\n  cni_combine: {{}}\nexporters:\n" + CLOUDWATCH + "service:\n"
           + TELEMETRY + "  pipelines:\n    metrics: {{receivers: [otlp], processors: "
           "[cni_combine], exporters: [awscloudwatch]}}\n")


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    aws_test_env(monkeypatch, region="us-west-2")
    with running_moto(region="us-west-2") as server:
        yield server


def mid_interval(interval: float = INTERVAL) -> float:
    """Sleep to just after the next move (half-way between ticks, far from either); return
    the tick that follows, the first cycle to scrape what is done now."""
    now = time.time()
    due = (now // interval) * interval + interval / 2 + 0.3
    if due <= now:
        due += interval
    time.sleep(due - now)
    return due - interval / 2 - 0.3 + interval


def test_three_shards_and_a_gateway_equal_one_replica(moto: Moto, tmp_path: Path) -> None:
    fleet = FleetProcess(NODES, base_address="127.49.0.1", seed=23,
                         start_time=time.time() - 3600)
    processes: list[Replica] = []
    grpc = free_port()

    def start(name: str, template: str, env: dict[str, str] | None = None,
              cluster: str = "") -> Replica:
        port = free_port()
        config = tmp_path / f"{name}.yaml"
        config.write_text(template.format(
            interval=int(INTERVAL), targets=", ".join(f'"{a}"' for a in fleet.addresses),
            endpoint=moto.endpoint, cluster=cluster, port=port, grpc=grpc))
        process = start_pipeline(name, ["--config", str(config)], tmp_path / f"{name}.log",
                                 port, env)
        processes.append(process)
        return process

    fleet.start()
    mover = Mover(fleet, INTERVAL).start()
    client = fleet.client
    try:
        gateway = start("gateway", GATEWAY, cluster="sharded")
        eventually(lambda: gateway.readyz().startswith("ok"), "the gateway listens", processes)
        single = start("single", SINGLE, cluster="single")
        shards = [start(f"cni-pipeline-shard-{i}", SHARD,
                        {"HOSTNAME": f"cni-pipeline-shard-{i}"}) for i in range(SHARDS)]
        eventually(lambda: gateway.metric("cni_pipeline_combine_cycles_total") >= 2
                   and single.metric("cni_pipeline_cycles_total") >= 2,
                   "both layouts publish", processes, SOON)
        begin = mid_interval()          # from here on both count every increase
        client.restart(5)
        mid_interval()
        client.add_counter(7, "awscni_ec2api_req_count", 3.0, {"fn": "NewCall"})
        mid_interval()
        client.set_failure(FAILING, "http_500")
        mid_interval()
        stopped_from = mid_interval()
        shards[1].process.send_signal(signal.SIGSTOP)
        mid_interval()
        resumed = mid_interval()        # the first tick shard 1 scrapes on time again
        shards[1].process.send_signal(signal.SIGCONT)
        mid_interval()
        mid_interval()
        end = mid_interval() - INTERVAL
        time.sleep(1.0)
        for process in [*shards, gateway, single]:   # shards first: their last sends land
            process.stop(signal.SIGTERM)  # the exporters flush what they hold
    finally:
        mover.stopped.set()
        kill_survivors(processes, SOON)
        fleet.stop()

    for process in processes:
        assert process.process.returncode == 0, process.output()[-3000:]
    assert "without shard(s) 1 of 3" in gateway.output()
    check(moto, mover, fleet.addresses, begin, end, stopped_from, resumed)


def series(moto: Moto, name: str, cluster: str, begin: float, end: float) -> dict[float, float]:
    """One metric's datapoints of the run, per second (a short range: moto works per period)."""
    return moto.series(NAMESPACE, name, [("CLUSTER_ID", cluster)], start=begin - INTERVAL,
                       end=end + INTERVAL, period=1)


def check(moto: Moto, mover: Mover, addresses: list[str], begin: float, end: float,
          stopped_from: float, resumed: float) -> None:
    names = sorted({m["MetricName"] for m in moto.list_metrics(NAMESPACE)
                    if {"Name": "CLUSTER_ID", "Value": "single"} in m["Dimensions"]})
    assert len(names) >= 15 and set(COUNTERS) <= set(names), names
    window = {stopped_from + INTERVAL * i for i in range(round((resumed - stopped_from)
                                                               / INTERVAL) + 1)}
    ticks = [begin + INTERVAL * i for i in range(round((end - begin) / INTERVAL) + 1)]
    assert len(ticks) >= 9
    compared = 0
    for name in names:
        single = series(moto, name, "single", begin, end)
        sharded = series(moto, name, "sharded", begin, end)
        for tick in ticks:
            assert tick in single and tick in sharded, (name, tick, sorted(sharded))
            if tick not in window:
                assert sharded[tick] == single[tick], (name, tick)
                compared += 1
        if name in COUNTERS:  # over the window, every increase once
            assert sum(sharded[t] for t in window) == sum(single[t] for t in window), name
    assert compared >= len(names) * (len(ticks) - len(window))

    # While shard 1 was away: its nodes' gauges as they last reported, the others' as now
    # (node 9, failing, is carried as stale by both layouts).
    mine = [n for n, a in enumerate(addresses) if shard_of(a, SHARDS) == 1 and n != FAILING]
    assert mine
    sharded = series(moto, "assignIPAddresses", "sharded", begin, end)
    single = series(moto, "assignIPAddresses", "single", begin, end)
    last_seen = stopped_from - INTERVAL
    for tick in sorted(window - {resumed}):
        now, then = mover.state_at(tick), mover.state_at(last_seen)
        assert now is not None and then is not None
        assert sharded[tick] == (single[tick] - now.gauge_sum(GAUGE_FAMILY, mine)
                                 + then.gauge_sum(GAUGE_FAMILY, mine)), tick


# -- two gateways, one leader ------------------------------------------------------------------

HA_INTERVAL = 3.0
HA_SHARD = ("receivers:\n" + SCRAPE + "    sharding: {{shards: 2}}\n"
            "processors:\n  cni_aggregate: {{output: partials}}\n"
            "exporters:\n"
            "  otlp/a: {{endpoint: \"127.0.0.1:{grpc_a}\", tls: {{insecure: true}}}}\n"
            "  otlp/b: {{endpoint: \"127.0.0.1:{grpc_b}\", tls: {{insecure: true}}}}\n"
            "service:\n" + TELEMETRY
            + "  pipelines:\n    metrics: {{receivers: [prometheus], processors: [cni_aggregate], "
            "exporters: [otlp/a, otlp/b]}}\n")
HA_GATEWAY = GATEWAY.replace("flush_interval: 3s", "flush_interval: 10m") + """\
  leader_election:
    lease_duration: 3s
    renew_deadline: 2s
    retry_period: 500ms
"""


def test_two_gateways_one_leader_killed_every_cycle_once_and_exact(moto: Moto,
                                                                   tmp_path: Path) -> None:
    """Two shards send every partial to both gateways; the leading gateway is SIGKILLed and the
    standby, which combined every cycle too, takes over: every cycle is in CloudWatch once (a
    repeat only if the standby counted it), each equal to one replica's, to the bit."""
    from tests.support.kube_apiserver import KubeAPIServer

    api = KubeAPIServer().start()
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    fleet = FleetProcess(60, base_address="127.51.0.1", seed=5, start_time=time.time() - 3600)
    processes: list[Replica] = []
    grpc = {"a": free_port(), "b": free_port()}

    def start(name: str, template: str, env: dict[str, str], cluster: str = "",
              args: tuple[str, ...] = ()) -> Replica:
        port = free_port()
        config = tmp_path / f"{name}.yaml"
        config.write_text(template.format(
            interval=int(HA_INTERVAL), targets=", ".join(f'"{a}"' for a in fleet.addresses),
            endpoint=moto.endpoint, cluster=cluster, port=port, grpc=grpc.get(name[-1], 0),
            grpc_a=grpc["a"], grpc_b=grpc["b"]))
        process = start_pipeline(name, ["--config", str(config), *args],
                                 tmp_path / f"{name}.log", port, env)
        processes.append(process)
        return process

    lease_env = {"POD_NAMESPACE": "monitoring", "KUBECONFIG": str(kubeconfig)}
    fleet.start()
    mover = Mover(fleet, HA_INTERVAL).start()
    try:
        gateway_a = start("gateway-a", HA_GATEWAY, {"HOSTNAME": "gateway-a", **lease_env},
                          "ha", ("--leader-elect",))
        eventually(lambda: gateway_a.readyz() == "ok: leader", "gateway-a leads", processes,
                   SOON)
        gateway_b = start("gateway-b", HA_GATEWAY, {"HOSTNAME": "gateway-b", **lease_env},
                          "ha", ("--leader-elect",))
        eventually(lambda: gateway_b.readyz().startswith("ok: standby"), "gateway-b stands by",
                   processes, SOON)
        single = start("single", SINGLE, {}, "single")
        for i in range(2):
            start(f"cni-pipeline-shard-{i}", HA_SHARD, {"HOSTNAME": f"cni-pipeline-shard-{i}"})
        eventually(lambda: gateway_b.metric("cni_pipeline_combine_cycles_total") >= 2
                   and single.metric("cni_pipeline_cycles_total") >= 2,
                   "both layouts publish", processes, SOON)
        begin = mid_interval(HA_INTERVAL)
        for _ in range(3):
            mid_interval(HA_INTERVAL)
        gateway_a.process.kill()
        gateway_a.process.wait(timeout=SOON)
        eventually(lambda: gateway_b.readyz() == "ok: leader", "gateway-b takes over",
                   processes, SOON)
        for _ in range(3):
            mid_interval(HA_INTERVAL)
        end = mid_interval(HA_INTERVAL) - 2 * HA_INTERVAL
        repeats = gateway_b.metric("cni_pipeline_leader_possible_repeats_total")
        for process in processes[1:]:
            process.stop(signal.SIGTERM)
    finally:
        mover.stopped.set()
        kill_survivors(processes, SOON)
        fleet.stop()
        api.stop()

    for process in processes[1:]:
        assert process.process.returncode == 0, process.output()[-3000:]
    ticks = [begin + HA_INTERVAL * i for i in range(round((end - begin) / HA_INTERVAL) + 1)]
    assert len(ticks) >= 6
    names = sorted({m["MetricName"] for m in moto.list_metrics(NAMESPACE)
                    if {"Name": "CLUSTER_ID", "Value": "single"} in m["Dimensions"]})
    assert len(names) >= 15
    copies = moto.series(NAMESPACE, "assignIPAddresses", [("CLUSTER_ID", "ha")],
                         stat="SampleCount", start=begin - HA_INTERVAL, end=end + HA_INTERVAL,
                         period=1)
    assert all(copies.get(t) in (1.0, 2.0) for t in ticks), copies
    twice = [t for t in ticks if copies[t] == 2]
    assert len(twice) <= min(1, repeats), (twice, repeats)
    for name in names:
        single_values = moto.series(NAMESPACE, name, [("CLUSTER_ID", "single")],
                                    start=begin - HA_INTERVAL, end=end + HA_INTERVAL, period=1)
        ha = moto.series(NAMESPACE, name, [("CLUSTER_ID", "ha")], start=begin - HA_INTERVAL,
                         end=end + HA_INTERVAL, period=1)
        for tick in ticks:
            assert ha[tick] == copies[tick] * single_values[tick], (name, tick)

