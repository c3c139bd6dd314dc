"""The Kubernetes Lease elector (cni_pipeline/leader.py): real electors, the real ``kubernetes``
client, the test API server's Leases (which decode and validate bodies as kube-apiserver does).

Durations are short so that a failover takes seconds; every wait is bounded by a generous
deadline, and what is asserted is order and state (who leads, what the Lease says), not timing.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration, CoordinationV1Api

from cni_pipeline.leader import ANNOTATION, KubernetesLease, build_leadership
from pipeline import ConfigError, Duration
from pipeline.service import LeaderElectionConfig, Leadership
from tests.support.kube_apiserver import KubeAPIServer, RequestRecord

NS = "monitoring"
LEASE = "cni-pipeline"
#: Fast enough for tests, and with room between renew_deadline and lease_duration: a leader that
#: cannot renew gives up about 2s before its Lease expires for the others.
FAST: dict[str, Any] = {
    "lease_duration": Duration(3),
    "renew_deadline": Duration(1),
    "retry_period": Duration(0.2),
}
#: The bound on any wait (a failover here takes lease_duration plus a retry or two).
SOON = 15.0


@pytest.fixture(autouse=True)
def _no_ambient_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing here may find the machine's own cluster config by accident."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))


@pytest.fixture
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


async def eventually(predicate: Callable[[], bool], timeout: float = SOON) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def renew_time(api: KubeAPIServer) -> str:
    """The stored Lease's renewTime ("" while there is none)."""
    try:
        return str(api.lease(LEASE, NS)["spec"].get("renewTime", ""))
    except KeyError:
        return ""


def from_agent(identity: str) -> Callable[[RequestRecord], bool]:
    """The requests of one replica (its User-Agent names it)."""
    return lambda record: record.headers.get("User-Agent", "").endswith(f"/{identity}")


@dataclass
class Replica:
    """One elector running in a task, and what its listener saw: (leading, monotonic, wall)."""

    elector: KubernetesLease
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    changes: list[tuple[bool, float, float]] = field(default_factory=list)

    def start(self) -> Replica:
        self.elector.add_listener(
            lambda leading: self.changes.append((leading, time.monotonic(), time.time()))
        )
        self.task = asyncio.create_task(self.elector.run(self.stop))
        return self

    async def halt(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, SOON)


@pytest.fixture
async def replicas(api: KubeAPIServer, tmp_path: Path) -> AsyncIterator[Callable[..., Replica]]:
    """Start electors on ``api`` as the command builds them (build_leadership, a kubeconfig)."""
    started: list[Replica] = []
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

    def start(identity: str, server: str = "", **durations: Duration) -> Replica:
        path = kubeconfig
        if server:  # this replica reaches the API server another way (a relay)
            path = tmp_path / f"kubeconfig-{identity}"
            config = json.loads(kubeconfig.read_text())
            config["clusters"][0]["cluster"]["server"] = server
            path.write_text(json.dumps(config))
        election = LeaderElectionConfig(enabled=True, lease_name=LEASE, **{**FAST, **durations})
        env = {"HOSTNAME": identity, "POD_NAMESPACE": NS, "KUBECONFIG": str(path)}
        replica = Replica(build_leadership(election, env, service_account_dir=str(tmp_path)))
        started.append(replica.start())
        return replica

    yield start
    for replica in started:
        replica.stop.set()
    await asyncio.gather(*(r.task for r in started if r.task is not None), return_exceptions=True)


class Relay:
    """A TCP relay to the API server that can be cut: the replica behind it loses the server (no
    answer on open connections, connections refused after)."""

    def __init__(self, port: int) -> None:
        self._upstream = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="relay").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def cut(self) -> None:
        for sock in [self._listener, *self._sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass


# --- who leads --------------------------------------------------------------------------------


async def test_two_replicas_exactly_one_leads(
    api: KubeAPIServer, replicas: Callable[..., Replica], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "cni_pipeline.leader")
    a, b = replicas("pod-a"), replicas("pod-b")
    assert await eventually(lambda: a.elector.is_leader() or b.elector.is_leader())
    leader, standby = (a, b) if a.elector.is_leader() else (b, a)
    # Through many renewals and retries, never both, never neither.
    deadline = time.monotonic() + 10 * FAST["retry_period"]
    while time.monotonic() < deadline:
        assert leader.elector.is_leader() and not standby.elector.is_leader()
        await asyncio.sleep(0.02)
    lease = api.lease(LEASE, NS)
    assert lease["spec"]["holderIdentity"] == leader.elector.identity
    assert lease["spec"]["leaseDurationSeconds"] == 3
    assert lease["spec"]["leaseTransitions"] == 0  # created by the winner
    assert standby.elector.holder_identity() == leader.elector.identity
    # The first holder took over from nobody: nothing can have been published twice.
    assert leader.elector.released_cleanly() and leader.elector.last_delivered() is None
    assert f"became leader (lease {NS}/{LEASE}, transitions 0)" in caplog.messages
    # The loser of the create race got 409 AlreadyExists or found the Lease held, and carried on.
    assert standby.task is not None and not standby.task.done()


async def test_renewals_advance_and_keep_microtime(api: KubeAPIServer) -> None:
    """Renewals move renewTime and keep acquireTime; a wall clock on a whole second still writes
    a MicroTime the API server accepts (the client's isoformat() drops a zero fraction)."""
    config = Configuration()
    config.host = api.url
    whole_seconds = iter(range(1_800_000_000, 1_900_000_000))
    elector = KubernetesLease(
        CoordinationV1Api(ApiClient(config)),
        namespace=NS,
        name=LEASE,
        identity="pod-a",
        lease_duration=3,
        renew_deadline=1,
        retry_period=0.1,
        wall_clock=lambda: float(next(whole_seconds)),
    )
    replica = Replica(elector).start()
    # Two renewals after the create.
    assert await eventually(lambda: renew_time(api) > "2027-01-15T08:00:02")
    await replica.halt()
    spec = api.lease(LEASE, NS)["spec"]
    assert spec["renewTime"].endswith(".000001Z")
    assert replica.changes[0][0] is True and replica.changes[-1][0] is False


# --- failover ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "unreachable"])
async def test_a_leader_that_cannot_renew_stops_before_the_other_takes_over(
    api: KubeAPIServer,
    replicas: Callable[..., Replica],
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "cni_pipeline.leader")
    relay = Relay(api.port)
    a = replicas("pod-a", server=relay.url)
    assert await eventually(a.elector.is_leader)
    b = replicas("pod-b")
    assert await eventually(lambda: b.elector.holder_identity() == "pod-a")
    a.elector.record_delivered(1_700_000_030.0)
    assert await eventually(
        lambda: (
            api.lease(LEASE, NS)["metadata"].get("annotations", {}).get(ANNOTATION)
            == "1700000030.0"
        )
    )
    lease_at_stop: list[dict[str, Any]] = []
    a.elector.add_listener(lambda leading: lease_at_stop.append(api.lease(LEASE, NS)))

    if fault == "500":
        api.fail_matching(from_agent("pod-a"))
    else:
        relay.cut()

    assert await eventually(b.elector.is_leader)
    a_stopped = [(t, wall) for leading, t, wall in a.changes if not leading]
    b_started = [t for leading, t, _ in b.changes if leading]
    assert a_stopped and b_started
    assert a_stopped[0][0] < b_started[0]  # never two leaders
    # And A gave up while its Lease was still valid for the others (renew_deadline < duration).
    spec = lease_at_stop[0]["spec"]
    assert spec["holderIdentity"] == "pod-a"
    renewed = calendar.timegm(time.strptime(spec["renewTime"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert a_stopped[0][1] < renewed + 1 + spec["leaseDurationSeconds"]
    # B took over a Lease that expired: the last delivered cycle came through the annotation,
    # and the first cycle it replays may repeat.
    assert not b.elector.released_cleanly()
    assert b.elector.last_delivered() == 1_700_000_030.0
    assert api.lease(LEASE, NS)["spec"]["leaseTransitions"] == 1
    lost = f"lost the lease {NS}/{LEASE}: no renewal in 1s"
    assert any(m.startswith(lost) for m in caplog.messages)
    assert not a.elector.is_leader()


async def test_release_hands_over_at_once_with_the_last_delivered_cycle(
    api: KubeAPIServer, replicas: Callable[..., Replica], caplog: pytest.LogCaptureFixture
) -> None:
    """A Lease of 60s: the standby takes over within SOON only because it was released."""
    caplog.set_level(logging.INFO, "cni_pipeline.leader")
    slow = {"lease_duration": Duration(60), "renew_deadline": Duration(10)}
    a = replicas("pod-a", **slow)
    assert await eventually(a.elector.is_leader)
    b = replicas("pod-b", **slow)
    assert await eventually(lambda: b.elector.holder_identity() == "pod-a")
    a.elector.record_delivered(1_700_000_060.0)
    a.elector.record_delivered(1_700_000_030.0)  # an older cycle confirmed late: kept the newest

    await a.halt()
    released = api.lease(LEASE, NS)
    assert released["spec"]["holderIdentity"] == ""
    assert released["spec"]["leaseDurationSeconds"] == 1
    assert released["metadata"]["annotations"][ANNOTATION] == "1700000060.0"
    assert a.changes[-1][0] is False and f"released the lease {NS}/{LEASE}" in caplog.messages

    assert await eventually(b.elector.is_leader)
    assert b.elector.released_cleanly()
    assert b.elector.last_delivered() == 1_700_000_060.0
    lease = api.lease(LEASE, NS)
    assert lease["spec"]["holderIdentity"] == "pod-b"
    assert lease["spec"]["leaseDurationSeconds"] == 60
    assert lease["spec"]["leaseTransitions"] == 1
    # B renews with the annotation it found until it records a cycle of its own.
    b.elector.record_delivered(1_700_000_090.0)
    assert await eventually(
        lambda: api.lease(LEASE, NS)["metadata"]["annotations"][ANNOTATION] == "1700000090.0"
    )


async def test_restart_on_an_unreleased_lease_of_its_own(
    api: KubeAPIServer, replicas: Callable[..., Replica]
) -> None:
    """A StatefulSet pod restarted under the same name finds its own hold: it takes it back at
    once, but cannot know it released it (it may have died between delivering and recording)."""
    api.set_lease(
        LEASE,
        {
            "holderIdentity": "pod-a",
            "leaseDurationSeconds": 60,
            "leaseTransitions": 4,
            "acquireTime": "2026-12-01T10:00:00.000001Z",
            "renewTime": "2026-12-01T10:00:00.000001Z",
        },
        namespace=NS,
        annotations={ANNOTATION: "1700000000.0"},
    )
    a = replicas("pod-a")
    assert await eventually(a.elector.is_leader, timeout=5)
    assert not a.elector.released_cleanly()
    assert a.elector.last_delivered() == 1_700_000_000.0
    spec = api.lease(LEASE, NS)["spec"]
    assert spec["leaseTransitions"] == 4 and spec["acquireTime"] == "2026-12-01T10:00:00.000001Z"


# --- races ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def direct_elector(api: KubeAPIServer, identity: str, clock: FakeClock) -> KubernetesLease:
    config = Configuration()
    config.host = api.url
    client = ApiClient(config)
    client.user_agent = f"test/{identity}"
    return KubernetesLease(
        CoordinationV1Api(client),
        namespace=NS,
        name=LEASE,
        identity=identity,
        lease_duration=3,
        renew_deadline=1,
        retry_period=0.05,
        clock=clock,
    )


async def test_expiry_is_measured_on_our_clock_and_a_stale_update_loses_the_race(
    api: KubeAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Lease another holder left unrenewed is taken only once leaseDurationSeconds passed on
    OUR clock since we saw it change (its renewTime, years ago, does not count); if someone
    writes it between our read and our update, the update is a 409 Conflict: lost, no error."""
    caplog.set_level(logging.INFO, "cni_pipeline.leader")
    api.set_lease(
        LEASE,
        {
            "holderIdentity": "old",
            "leaseDurationSeconds": 5,
            "leaseTransitions": 2,
            "acquireTime": "2020-01-01T00:00:00.000001Z",
            "renewTime": "2020-01-01T00:00:00.000001Z",
        },
        namespace=NS,
    )
    clock = FakeClock()
    replica = Replica(direct_elector(api, "pod-a", clock)).start()

    def a_gets() -> list[RequestRecord]:
        return [r for r in api.requests if from_agent("pod-a")(r) and r.method == "GET"]

    assert await eventually(lambda: len(a_gets()) >= 3)
    assert not replica.elector.is_leader()  # 5s have not passed on its clock
    assert not any(r.method == "PUT" for r in api.requests if from_agent("pod-a")(r))

    def someone_else_writes_first(record: RequestRecord) -> None:
        if record.method == "PUT" and from_agent("pod-a")(record):
            api.before_request = None
            api.set_lease(
                LEASE,
                {
                    "holderIdentity": "pod-c",
                    "leaseDurationSeconds": 5,
                    "leaseTransitions": 3,
                    "acquireTime": "2026-12-03T00:00:00.000001Z",
                    "renewTime": "2026-12-03T00:00:00.000001Z",
                },
                namespace=NS,
            )

    api.before_request = someone_else_writes_first
    clock.now += 5  # now expired, as A sees it
    assert await eventually(
        lambda: f"lease {NS}/{LEASE}: lost the race to update it (409 Conflict)" in caplog.messages
    )
    seen = len(a_gets())
    assert await eventually(lambda: len(a_gets()) >= seen + 3)  # still trying, as a standby
    assert not replica.elector.is_leader()
    assert replica.elector.holder_identity() == "pod-c"
    assert replica.task is not None and not replica.task.done()
    assert api.lease(LEASE, NS)["spec"]["holderIdentity"] == "pod-c"
    await replica.halt()
    assert api.lease(LEASE, NS)["spec"]["holderIdentity"] == "pod-c"  # not ours to release


async def test_a_create_race_lost_is_a_standby_not_an_error(api: KubeAPIServer) -> None:
    clock = FakeClock()

    def another_creates_first(record: RequestRecord) -> None:
        if record.method == "POST":
            api.before_request = None
            api.set_lease(
                LEASE,
                {
                    "holderIdentity": "pod-b",
                    "leaseDurationSeconds": 3,
                    "renewTime": "2026-12-03T00:00:00.000001Z",
                },
                namespace=NS,
            )

    api.before_request = another_creates_first
    replica = Replica(direct_elector(api, "pod-a", clock)).start()
    assert await eventually(lambda: replica.elector.holder_identity() == "pod-b")
    posts = [r for r in api.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].body is not None
    assert posts[0].body["spec"]["holderIdentity"] == "pod-a"
    assert not replica.elector.is_leader() and replica.changes == []
    await replica.halt()


# --- building it --------------------------------------------------------------------------------


def test_identity_is_required(tmp_path: Path, api: KubeAPIServer) -> None:
    kubeconfig = str(api.write_kubeconfig(tmp_path / "kc"))
    with pytest.raises(ConfigError) as caught:
        build_leadership(
            LeaderElectionConfig(enabled=True),
            {"KUBECONFIG": kubeconfig},
            service_account_dir=str(tmp_path),
        )
    assert caught.value.problems[0][0] == "service.leader_election.identity"
    named = build_leadership(
        LeaderElectionConfig(enabled=True, identity="me"),
        {"HOSTNAME": "pod-x", "KUBECONFIG": kubeconfig},
        service_account_dir=str(tmp_path),
    )
    assert named.identity == "me"


def test_namespace_defaults(tmp_path: Path, api: KubeAPIServer) -> None:
    env = {"HOSTNAME": "pod-x", "KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kc"))}
    sa_dir = tmp_path / "sa"
    sa_dir.mkdir()

    def namespace(config: LeaderElectionConfig, **extra: str) -> str:
        return build_leadership(config, {**env, **extra}, service_account_dir=str(sa_dir)).namespace

    on = LeaderElectionConfig(enabled=True)
    assert namespace(on) == "kube-system"
    (sa_dir / "namespace").write_text("from-sa\n")
    assert namespace(on) == "from-sa"
    assert namespace(on, POD_NAMESPACE="from-env") == "from-env"
    assert (
        namespace(
            LeaderElectionConfig(enabled=True, lease_namespace="set"), POD_NAMESPACE="from-env"
        )
        == "set"
    )


def test_no_kubernetes_configuration_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_leadership(
            LeaderElectionConfig(enabled=True),
            {"HOSTNAME": "p", "KUBECONFIG": str(tmp_path / "none")},
            service_account_dir=str(tmp_path),
        )
    key, message = caught.value.problems[0]
    assert key == "service.leader_election" and str(tmp_path / "none") in message


async def test_in_cluster_service_account_over_tls(tmp_path: Path) -> None:
    """In a pod: the mounted token and CA, the pod's namespace from the service account."""
    with KubeAPIServer(tls=True, token="sa-token") as api:
        sa_dir = api.write_service_account(tmp_path / "sa", "sa-token")
        env = {
            "HOSTNAME": "pod-a",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(api.port),
        }
        elector = build_leadership(
            LeaderElectionConfig(enabled=True, **FAST), env, service_account_dir=str(sa_dir)
        )
        replica = Replica(elector).start()
        assert await eventually(elector.is_leader)
        await replica.halt()
        assert api.lease(LEASE, "kube-system")["spec"]["holderIdentity"] == ""
        tokens = {r.headers.get("authorization", "").lower() for r in api.requests}
        assert tokens == {"bearer sa-token"}  # the mounted token, on every request


def test_it_is_a_leadership() -> None:
    """The engine's protocol, as the Service takes it (mypy checks the assignment)."""
    config = Configuration()
    elector: Leadership = KubernetesLease(
        CoordinationV1Api(ApiClient(config)),
        namespace=NS,
        name=LEASE,
        identity="a",
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
    )
    assert not elector.is_leader() and elector.last_delivered() is None
