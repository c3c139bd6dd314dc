"""Kubernetes discovery: the real ``kubernetes`` client against the test API server.

Every wait is bounded and well under a scrape interval: a change in the cluster must show in the
target set before the next cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import Duration, Target, validate_config
from receivers.prometheus._k8s_sd import KubernetesDiscovery, join_host_port
from receivers.prometheus._k8s_stores import node_attributes
from receivers.prometheus._kubeclient import DiscoveryError, load_client_configuration
from receivers.prometheus.config import KubernetesSDConfig, label_selector_problem
from tests.support.kube_apiserver import KubeAPIServer, MetricsEndpoint

NS = "kube-system"
#: Bounded wait for a change to reach the target set (a scrape interval is 30s by default).
SOON = 5.0
FAST = {"reconnect_backoff": Duration(0.05), "reconnect_backoff_max": Duration(0.5)}


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


@pytest.fixture
def logger() -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(logging.getLogger("test.k8s_sd"), {"component": "prometheus"})


@pytest.fixture
def make_discovery(
    logger: logging.LoggerAdapter[logging.Logger],
) -> Callable[..., KubernetesDiscovery]:
    """Construct (not start) a discovery; a test that starts one shuts it down itself."""

    def make(config: KubernetesSDConfig, **kwargs: Any) -> KubernetesDiscovery:
        return KubernetesDiscovery(config, logger, **kwargs)

    return make


@pytest.fixture
async def started(
    api: KubeAPIServer, tmp_path: Path, logger: logging.LoggerAdapter[logging.Logger]
) -> AsyncIterator[Callable[..., Any]]:
    """Start a discovery on ``api`` (kubeconfig written for it); shut down after the test."""
    made: list[KubernetesDiscovery] = []
    watches = 0

    async def start(**overrides: Any) -> KubernetesDiscovery:
        nonlocal watches
        fields = {"kubeconfig": str(api.write_kubeconfig(tmp_path / "kubeconfig")), **FAST,
                  **overrides}
        discovery = KubernetesDiscovery(KubernetesSDConfig(**fields), logger)
        made.append(discovery)
        await discovery.start()
        assert await discovery.wait_synced(SOON)
        # And watching: a fault a test injects next hits the watch, not the list before it.
        watches += 1 + bool(overrides.get("node_metadata"))
        assert await eventually(lambda: api.open_watches >= watches)
        return discovery

    yield start
    for discovery in made:
        await discovery.shutdown()


async def eventually(predicate: Callable[[], bool], timeout: float = SOON) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def pods_of(discovery: KubernetesDiscovery) -> list[str]:
    return [t.pod for t in discovery.targets()]


# --- config -----------------------------------------------------------------------------------


def test_default_config_is_the_aws_node_daemonset_and_valid() -> None:
    config = KubernetesSDConfig()
    assert (config.namespace, config.label_selector, config.port, config.path, config.mode,
            config.kubeconfig, config.node_metadata) == (
        "kube-system", "k8s-app=aws-node", 61678, "/metrics", "direct", "", False)
    assert list(validate_config(config)) == []


@pytest.mark.parametrize(("fields", "key"), [
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"path": "metrics"}, "path"),
    ({"mode": "proxy"}, "mode"),
    ({"scheme": "ftp"}, "scheme"),
    ({"namespace": "Kube_System"}, "namespace"),
    ({"label_selector": "k8s-app in aws-node"}, "label_selector"),
    ({"label_selector": "k8s-app=aws-node,,x"}, "label_selector"),
    ({"page_size": -1}, "page_size"),
    ({"watch_timeout": Duration(0.5)}, "watch_timeout"),
    ({"request_timeout": Duration(0)}, "request_timeout"),
    ({"reconnect_backoff": Duration(2), "reconnect_backoff_max": Duration(1)},
     "reconnect_backoff_max"),
])
def test_each_bad_field_is_reported_by_its_key(fields: dict[str, Any], key: str) -> None:
    problems = list(validate_config(KubernetesSDConfig(**fields)))
    assert [k for k, _ in problems] == [key], problems


@pytest.mark.parametrize("selector", [
    "", "k8s-app=aws-node", "k8s-app==aws-node", "app.kubernetes.io/name!=x",
    "k8s-app in (aws-node, aws-node-win)", "tier notin (a),k8s-app", "!legacy",
])
def test_valid_label_selectors(selector: str) -> None:
    assert label_selector_problem(selector) == ""


def test_construction_and_validation_touch_no_network(api: KubeAPIServer, tmp_path: Path,
                                                      make_discovery: Any) -> None:
    config = KubernetesSDConfig(kubeconfig=str(api.write_kubeconfig(tmp_path / "kc")))
    list(validate_config(config))
    discovery = make_discovery(config)
    assert discovery.targets() == [] and not discovery.synced
    assert discovery.request_options() == (None, {})
    assert api.requests == []


async def test_shutdown_is_safe_without_start_and_twice(make_discovery: Any) -> None:
    discovery = make_discovery(KubernetesSDConfig())
    await discovery.shutdown()
    await discovery.shutdown()
    assert await discovery.wait_synced(0.01) is False


# --- the target set ---------------------------------------------------------------------------


async def test_initial_list_keeps_only_scrapeable_pods(api: KubeAPIServer, started: Any) -> None:
    api.add_pod("aws-node-run", "127.0.0.11", "n1")
    api.add_pod("aws-node-pending", "", "n2", phase="Pending")
    api.add_pod("aws-node-noip", "", "n3")  # Running but no IP yet
    api.add_pod("aws-node-done", "127.0.0.14", "n4", phase="Succeeded")
    api.add_pod("aws-node-going", "127.0.0.15", "n5")
    api.delete_pod("aws-node-going", finalize=False)  # deletionTimestamp set, still there
    api.add_pod("aws-node-unready", "127.0.0.16", "n6", ready=False)
    api.add_pod("coredns-1", "127.0.0.17", "n1", labels={"k8s-app": "kube-dns"})
    api.add_pod("aws-node-other-ns", "127.0.0.18", "n1", namespace="default")

    discovery = await started()
    assert discovery.targets() == [
        Target(address="127.0.0.11:61678", url="http://127.0.0.11:61678/metrics",
               pod="aws-node-run", node="n1", namespace=NS),
        Target(address="127.0.0.16:61678", url="http://127.0.0.16:61678/metrics",
               pod="aws-node-unready", node="n6", namespace=NS),
    ]
    assert len(api.requests_of("list")) == 1
    assert api.requests_of("list")[0].query["labelSelector"] == "k8s-app=aws-node"


async def test_require_ready_drops_unready_pods(api: KubeAPIServer, started: Any) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.add_pod("aws-node-b", "127.0.0.12", "n2", ready=False)
    discovery = await started(require_ready=True)
    assert pods_of(discovery) == ["aws-node-a"]
    api.set_ready("aws-node-b", True)
    assert await eventually(lambda: pods_of(discovery) == ["aws-node-a", "aws-node-b"])


async def test_changes_reach_the_target_set_without_relisting(
    api: KubeAPIServer, started: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started()
    caplog.set_level(logging.INFO)

    api.add_pod("aws-node-b", "", "n2", phase="Pending")  # scheduled, not running
    api.add_pod("aws-node-c", "127.0.0.13", "n3")
    assert await eventually(lambda: pods_of(discovery) == ["aws-node-a", "aws-node-c"])

    api.set_phase("aws-node-b", "Running", ip="127.0.0.12")  # made ready
    assert await eventually(lambda: "aws-node-b" in pods_of(discovery))

    api.delete_pod("aws-node-a", finalize=False)  # terminating: no longer scraped
    assert await eventually(lambda: "aws-node-a" not in pods_of(discovery))
    api.delete_pod("aws-node-a")

    api.recreate_pod("aws-node-c", "aws-node-c2")  # a DaemonSet roll on the same node
    assert await eventually(lambda: pods_of(discovery) == ["aws-node-b", "aws-node-c2"])
    target = {t.pod: t for t in discovery.targets()}["aws-node-c2"]
    assert (target.address, target.node) == ("127.0.0.13:61678", "n3")

    api.recreate_pod("aws-node-b")  # same name, new uid (and a new IP)
    api.update_pod("aws-node-b", ip="127.0.0.22")
    assert await eventually(
        lambda: {t.pod: t.address for t in discovery.targets()}.get("aws-node-b")
        == "127.0.0.22:61678")

    assert len(api.requests_of("list")) == 1  # one list, then only the watch
    assert "kubernetes targets: 1 added, 0 removed" in caplog.text
    assert "0 added, 1 removed" in caplog.text


async def test_targets_list_is_cached_until_the_set_changes(api: KubeAPIServer,
                                                            started: Any) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started()
    first, second = discovery.targets(), discovery.targets()
    assert first == second and first is not second
    assert first[0] is second[0]  # not rebuilt
    api.add_pod("coredns-1", "127.0.0.13", "n1", labels={"k8s-app": "kube-dns"})
    api.update_pod("aws-node-a", ready=False)  # same target
    api.add_pod("aws-node-b", "127.0.0.12", "n2")
    assert await eventually(lambda: len(discovery.targets()) == 2)
    assert discovery.targets()[0] == first[0]


async def test_all_namespaces(api: KubeAPIServer, started: Any) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.add_pod("aws-node-b", "127.0.0.12", "n2", namespace="custom-cni")
    discovery = await started(namespace="")
    assert [(t.namespace, t.pod) for t in discovery.targets()] == [
        (NS, "aws-node-a"), ("custom-cni", "aws-node-b")]
    assert api.requests_of("list")[0].path == "/api/v1/pods"


async def test_paged_list(api: KubeAPIServer, started: Any) -> None:
    for i in range(7):
        api.add_pod(f"aws-node-{i}", f"127.0.0.{30 + i}", f"n{i}")
    discovery = await started(page_size=3)
    assert len(discovery.targets()) == 7
    assert [r.query.get("limit") for r in api.requests_of("list")] == ["3", "3", "3"]


# --- resourceVersion, bookmarks, 410, reconnects ----------------------------------------------


async def test_watch_resumes_from_the_list_version_with_bookmarks(api: KubeAPIServer,
                                                                   started: Any) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started()
    assert await eventually(lambda: len(api.requests_of("watch")) == 1)
    watch = api.requests_of("watch")[0]
    assert watch.query["resourceVersion"] == str(api.resource_version)  # the list's version
    assert watch.query["allowWatchBookmarks"] == "true"
    assert watch.query["labelSelector"] == "k8s-app=aws-node"
    assert int(watch.query["timeoutSeconds"]) >= 300
    assert discovery.resource_version == watch.query["resourceVersion"]


async def test_bookmarks_advance_the_version_and_spare_a_relist(api: KubeAPIServer,
                                                                started: Any) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started()
    listed = discovery.resource_version
    # Changes we do not select move the cluster's revision on; only a bookmark tells us.
    api.add_pod("coredns-1", "127.0.0.13", "n1", labels={"k8s-app": "kube-dns"})
    api.touch()
    assert discovery.resource_version == listed
    api.send_bookmark()
    bookmarked = str(api.resource_version)
    assert await eventually(lambda: discovery.resource_version == bookmarked)

    # The history is compacted past the list's version, but not past the bookmark's: the
    # reconnected watch resumes where the bookmark left it, with no 410 and no re-list.
    api.compact_history()
    api.drop_watches()
    assert await eventually(lambda: len(api.requests_of("watch")) == 2)
    api.add_pod("aws-node-b", "127.0.0.12", "n2")
    assert await eventually(lambda: pods_of(discovery) == ["aws-node-a", "aws-node-b"])
    assert api.requests_of("watch")[1].query["resourceVersion"] == bookmarked
    assert len(api.requests_of("list")) == 1


async def test_expired_watch_relists(api: KubeAPIServer, started: Any,
                                     caplog: pytest.LogCaptureFixture) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.add_pod("aws-node-b", "127.0.0.12", "n2")
    discovery = await started()
    assert await eventually(lambda: api.open_watches == 1)
    caplog.set_level(logging.INFO)

    done = threading.Event()

    def while_disconnected(record: Any) -> None:
        # While our watch is down, the history moves past our version and is compacted.
        if record.is_watch and not done.is_set():
            done.set()
            api.delete_pod("aws-node-a")
            api.add_pod("aws-node-c", "127.0.0.13", "n3")
            api.compact_history()

    api.before_request = while_disconnected
    api.fail_next("watch", 503, count=1)
    api.drop_watches()
    # The next watch gets an ERROR event with a 410 Status: list again, then watch again.
    assert await eventually(lambda: pods_of(discovery) == ["aws-node-b", "aws-node-c"])
    assert len(api.requests_of("list")) == 2
    assert "too old resource version" in caplog.text and "listing again" in caplog.text
    # Watching goes on from the new list's version.
    assert await eventually(lambda: api.open_watches == 1)
    api.add_pod("aws-node-d", "127.0.0.14", "n4")
    assert await eventually(lambda: "aws-node-d" in pods_of(discovery))
    assert len(api.requests_of("list")) == 2


async def test_410_status_on_a_watch_request_relists(api: KubeAPIServer, started: Any) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started()
    api.fail_next("watch", 410, message="too old resource version: 1 (5)")
    api.drop_watches(graceful=True)
    assert await eventually(lambda: len(api.requests_of("list")) == 2)
    api.add_pod("aws-node-b", "127.0.0.12", "n2")
    assert await eventually(lambda: pods_of(discovery) == ["aws-node-a", "aws-node-b"])


async def test_expired_continue_token_restarts_the_list_unpaged(api: KubeAPIServer,
                                                                started: Any) -> None:
    for i in range(5):
        api.add_pod(f"aws-node-{i}", f"127.0.0.{30 + i}", f"n{i}")
    compacted = threading.Event()

    def compact_between_pages(record: Any) -> None:
        if "continue" in record.query and not compacted.is_set():
            api.add_pod("aws-node-late", "127.0.0.40", "n9")
            api.compact_history()
            compacted.set()

    api.before_request = compact_between_pages
    discovery = await started(page_size=2)
    lists = api.requests_of("list")
    assert [(r.query.get("limit"), "continue" in r.query) for r in lists] == [
        ("2", False), ("2", True), (None, False)]
    assert len(pods_of(discovery)) == 6


async def test_clean_end_of_a_watch_reconnects_at_once_from_the_last_version(
    api: KubeAPIServer, started: Any
) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started()
    api.add_pod("aws-node-b", "127.0.0.12", "n2")
    assert await eventually(lambda: len(pods_of(discovery)) == 2)
    version = discovery.resource_version
    api.drop_watches(graceful=True)  # as when timeoutSeconds runs out
    assert await eventually(lambda: len(api.requests_of("watch")) == 2)
    assert api.requests_of("watch")[1].query["resourceVersion"] == version
    assert len(api.requests_of("list")) == 1
    assert discovery.reconnects == 0


async def test_dropped_streams_reconnect_with_backoff(
    api: KubeAPIServer, started: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started(reconnect_backoff=Duration(0.05),
                              reconnect_backoff_max=Duration(2))
    caplog.set_level(logging.WARNING)
    api.fail_next("watch", 500, count=3)
    api.drop_watches()  # cut mid-stream; then three refusals in a row
    assert await eventually(lambda: len(api.requests_of("watch")) == 5)
    api.add_pod("aws-node-b", "127.0.0.12", "n2")
    assert await eventually(lambda: pods_of(discovery) == ["aws-node-a", "aws-node-b"])
    times = [r.time for r in api.requests_of("watch")]
    assert len(times) == 5
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    # After the cut 0.05s, then 0.1, 0.2, 0.4 (each plus up to 25% jitter): never a hot loop.
    for gap, floor in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert gap >= floor * 0.95, gaps
    assert len(api.requests_of("list")) == 1  # the version was still good
    assert caplog.text.count("retrying in") == 4
    assert "injected 500 for watch" in caplog.text
    assert discovery.reconnects == 4


async def test_watch_events_split_across_chunks(api: KubeAPIServer, started: Any) -> None:
    api.split_events = True
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started()
    for i in range(5):
        api.add_pod(f"aws-node-{i}x", f"127.0.0.{50 + i}", f"n{i}")
    assert await eventually(lambda: len(pods_of(discovery)) == 6)


async def test_unreachable_api_server_does_not_block_start(
    tmp_path: Path, logger: logging.LoggerAdapter[logging.Logger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with KubeAPIServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kc")
    text = json.loads(kubeconfig.read_text())
    text["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    kubeconfig.write_text(json.dumps(text))
    discovery = KubernetesDiscovery(KubernetesSDConfig(kubeconfig=str(kubeconfig), **FAST),
                                    logger)
    caplog.set_level(logging.WARNING)
    try:
        await discovery.start()
        assert await discovery.wait_synced(0.3) is False
        assert discovery.targets() == []
        assert await eventually(lambda: "retrying in" in caplog.text)
        assert "Connection refused" in caplog.text or "ConnectionRefused" in caplog.text
    finally:
        started_at = time.monotonic()
        await discovery.shutdown()
        assert time.monotonic() - started_at < 3


async def test_shutdown_stops_a_quiet_watch_promptly(api: KubeAPIServer, started: Any) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    discovery = await started(node_metadata=True)
    assert await eventually(lambda: api.open_watches == 2)
    threads = [t for t in threading.enumerate() if t.name.startswith("k8s-sd-")]
    assert len(threads) >= 2
    begun = time.monotonic()
    await discovery.shutdown()
    assert time.monotonic() - begun < 3  # not the watch's timeout
    assert not any(t.is_alive() for t in threads)
    assert await eventually(lambda: api.open_watches == 0)
    await discovery.shutdown()


# --- node metadata ------------------------------------------------------------------------------


async def test_node_metadata_attributes(api: KubeAPIServer, started: Any) -> None:
    api.add_node("n1", zone="us-east-1a", instance_type="m5.large", nodegroup="ng-a")
    api.add_node("n2", labels={"failure-domain.beta.kubernetes.io/zone": "us-east-1b",
                               "beta.kubernetes.io/instance-type": "c5.xlarge",
                               "karpenter.sh/nodepool": "default"})
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.add_pod("aws-node-b", "127.0.0.12", "n2")
    discovery = await started(node_metadata=True)
    attrs = {t.pod: t.attributes for t in discovery.targets()}
    assert attrs == {
        "aws-node-a": (("instance_type", "m5.large"), ("nodegroup", "ng-a"),
                       ("zone", "us-east-1a")),
        "aws-node-b": (("instance_type", "c5.xlarge"), ("nodegroup", "default"),
                       ("zone", "us-east-1b")),
    }
    # A relabelled node, and a pod on a node we learn about later.
    api.set_node_labels("n1", {"eks.amazonaws.com/nodegroup": "ng-b"})
    assert await eventually(lambda: {t.pod: t.attribute("nodegroup")
                                     for t in discovery.targets()}["aws-node-a"] == "ng-b")
    api.add_pod("aws-node-c", "127.0.0.13", "n3")
    assert await eventually(lambda: "aws-node-c" in pods_of(discovery))
    api.add_node("n3", zone="us-east-1c")
    assert await eventually(lambda: {t.pod: t.attributes for t in discovery.targets()}[
        "aws-node-c"] == (("zone", "us-east-1c"),))
    assert api.requests_of("list", "nodes") and api.requests_of("watch", "nodes")


async def test_without_node_metadata_nodes_are_never_read(api: KubeAPIServer,
                                                          started: Any) -> None:
    api.add_node("n1", zone="us-east-1a")
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.deny("nodes", "list")
    api.deny("nodes", "watch")
    discovery = await started()
    assert discovery.targets()[0].attributes == ()
    assert not any("/nodes" in r.path for r in api.requests)


async def test_nodes_forbidden_still_discovers_pods(
    api: KubeAPIServer, tmp_path: Path, logger: logging.LoggerAdapter[logging.Logger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.deny("nodes", "list")
    caplog.set_level(logging.WARNING)
    discovery = KubernetesDiscovery(KubernetesSDConfig(
        kubeconfig=str(api.write_kubeconfig(tmp_path / "kc")), node_metadata=True, **FAST),
        logger)
    try:
        await discovery.start()
        assert await eventually(lambda: pods_of(discovery) == ["aws-node-a"])
        assert await discovery.wait_synced(0.2) is False  # nodes never listed
        assert await eventually(lambda: 'cannot list resource "nodes"' in caplog.text)
        assert "HTTP 403" in caplog.text
    finally:
        await discovery.shutdown()


def test_node_attributes_from_labels() -> None:
    assert node_attributes({}) == ()
    assert node_attributes({"topology.kubernetes.io/zone": "a",
                            "failure-domain.beta.kubernetes.io/zone": "old",
                            "alpha.eksctl.io/nodegroup-name": "ng"}) == (
        ("nodegroup", "ng"), ("zone", "a"))


# --- modes and the proxy ------------------------------------------------------------------------


@pytest.fixture
def aws_node() -> Iterator[tuple[str, int]]:
    """An aws-node metrics endpoint on its own loopback address, as a pod IP."""
    with MetricsEndpoint("127.0.0.31") as endpoint:
        yield endpoint.host, endpoint.port


def _fetch(url: str, context: ssl.SSLContext | None, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_direct_mode_scrapes_the_pod_ip(api: KubeAPIServer, started: Any,
                                              aws_node: tuple[str, int]) -> None:
    ip, port = aws_node
    api.add_pod("aws-node-a", ip, "n1", port=port)
    discovery = await started(port=port)
    (target,) = discovery.targets()
    assert target.url == f"http://{ip}:{port}/metrics" and target.address == f"{ip}:{port}"
    assert discovery.request_options() == (None, {})
    status, body = await asyncio.to_thread(_fetch, target.url, None, {})
    assert status == 200 and "awscni_eni_max 3" in body


@contextlib.asynccontextmanager
async def proxy_discovery(
    api: KubeAPIServer, aws_node: tuple[str, int], tmp_path: Path,
    logger: logging.LoggerAdapter[logging.Logger],
) -> AsyncIterator[KubernetesDiscovery]:
    """A synced proxy-mode discovery of one pod ``aws-node-a`` at ``aws_node`` on ``api``."""
    ip, port = aws_node
    api.add_pod("aws-node-a", ip, "n1", port=port)
    discovery = KubernetesDiscovery(KubernetesSDConfig(
        kubeconfig=str(api.write_kubeconfig(tmp_path / "kc")), mode="apiserver_proxy",
        port=port, **FAST), logger)
    try:
        await discovery.start()
        assert await discovery.wait_synced(SOON)
        yield discovery
    finally:
        await discovery.shutdown()


async def test_proxy_mode_scrapes_through_the_api_server(
    aws_node: tuple[str, int], tmp_path: Path, logger: logging.LoggerAdapter[logging.Logger],
) -> None:
    ip, port = aws_node
    with KubeAPIServer(token="proxy-token") as api:
        async with proxy_discovery(api, aws_node, tmp_path, logger) as discovery:
            (target,) = discovery.targets()
            assert target.address == f"{ip}:{port}"  # the resource is still the pod
            assert target.url == (
                f"{api.url}/api/v1/namespaces/{NS}/pods/aws-node-a:{port}/proxy/metrics")
            context, headers = discovery.request_options()
            assert context is None  # a plain-HTTP API server
            assert headers == {"Authorization": "Bearer proxy-token"}
            status, body = await asyncio.to_thread(_fetch, target.url, context, headers)
            assert status == 200 and "awscni_eni_max 3" in body and "# path /metrics" in body
            # The headers are what makes it work.
            assert (await asyncio.to_thread(_fetch, target.url, context, {}))[0] == 401


async def test_proxy_mode_over_tls_gives_a_verifying_context(
    aws_node: tuple[str, int], tmp_path: Path, logger: logging.LoggerAdapter[logging.Logger],
) -> None:
    with KubeAPIServer(token="tls-token", tls=True) as api:
        async with proxy_discovery(api, aws_node, tmp_path, logger) as discovery:
            (target,) = discovery.targets()
            context, headers = discovery.request_options()
            assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
            status, body = await asyncio.to_thread(_fetch, target.url, context, headers)
            assert status == 200 and "awscni_eni_max 3" in body
            # A default context does not trust the cluster's CA.
            with pytest.raises(urllib.error.URLError):
                await asyncio.to_thread(_fetch, target.url, ssl.create_default_context(),
                                        headers)


async def test_proxy_mode_https_scheme_and_ipv6(api: KubeAPIServer, started: Any) -> None:
    api.add_pod("aws-node-a", "fd00:ec2::7", "n1")
    discovery = await started(mode="apiserver_proxy", scheme="https")
    (target,) = discovery.targets()
    assert target.address == "[fd00:ec2::7]:61678"
    assert target.url.endswith(f"/namespaces/{NS}/pods/https:aws-node-a:61678/proxy/metrics")
    direct = await started(scheme="https", path="/m")
    assert direct.targets()[0].url == "https://[fd00:ec2::7]:61678/m"
    assert join_host_port("10.0.0.1", 1) == "10.0.0.1:1"


# --- where the configuration comes from ---------------------------------------------------------


async def test_explicit_kubeconfig_wins_over_kubeconfig_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: Any, api: KubeAPIServer,
    make_discovery: Any,
) -> None:
    api.add_pod("aws-node-mine", "127.0.0.11", "n1")
    with KubeAPIServer() as other:
        other.add_pod("aws-node-theirs", "127.0.0.12", "n1")
        monkeypatch.setenv("KUBECONFIG", str(other.write_kubeconfig(tmp_path / "env-kc")))
        discovery = await started()  # kubeconfig key -> api
        assert pods_of(discovery) == ["aws-node-mine"]
        assert discovery.source == f"kubeconfig {tmp_path / 'kubeconfig'}"
        from_env = make_discovery(KubernetesSDConfig(**FAST))
        try:
            await from_env.start()
            assert await from_env.wait_synced(SOON)
            assert pods_of(from_env) == ["aws-node-theirs"]
            assert from_env.source == f"kubeconfig {tmp_path / 'env-kc'}"
        finally:
            await from_env.shutdown()


def test_kubeconfig_env_lists_several_files(tmp_path: Path, api: KubeAPIServer) -> None:
    path = api.write_kubeconfig(tmp_path / "real")
    cfg, source = load_client_configuration(
        KubernetesSDConfig(), environ={"KUBECONFIG": f"{tmp_path / 'missing'}:{path}"})
    assert cfg.host == api.url and source == f"kubeconfig {path}"


async def test_in_cluster_config_beats_kubeconfig_env(
    tmp_path: Path, aws_node: tuple[str, int], logger: logging.LoggerAdapter[logging.Logger],
) -> None:
    ip, port = aws_node
    with KubeAPIServer(token="sa-token", tls=True) as api, KubeAPIServer() as other:
        api.add_pod("aws-node-in-cluster", ip, "n1", port=port)
        sa = api.write_service_account(tmp_path / "serviceaccount", "sa-token")
        environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                   "KUBERNETES_SERVICE_PORT": str(api.port),
                   "KUBECONFIG": str(other.write_kubeconfig(tmp_path / "kc"))}
        discovery = KubernetesDiscovery(
            KubernetesSDConfig(mode="apiserver_proxy", port=port, **FAST), logger,
            environ=environ, service_account_dir=str(sa))
        try:
            await discovery.start()
            assert await discovery.wait_synced(SOON)
            assert pods_of(discovery) == ["aws-node-in-cluster"]
            assert discovery.source.startswith("in-cluster service account")
            context, headers = discovery.request_options()
            assert headers == {"Authorization": "bearer sa-token"}
            status, _ = await asyncio.to_thread(_fetch, discovery.targets()[0].url, context,
                                                headers)
            assert status == 200
        finally:
            await discovery.shutdown()
        # Without the token file the service account is not used: KUBECONFIG is.
        (sa / "token").unlink()
        _, source = load_client_configuration(KubernetesSDConfig(), environ=environ,
                                              service_account_dir=str(sa))
        assert source == f"kubeconfig {tmp_path / 'kc'}"


_EXEC_PLUGIN = """
import datetime, json, sys
token = open(sys.argv[1]).read().strip()
# Expiring within the client's 5-minute skew: the client runs us again on every use.
expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token,
                             "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"""


async def test_exec_plugin_token_rotation_reaches_requests_and_headers(
    tmp_path: Path, logger: logging.LoggerAdapter[logging.Logger],
) -> None:
    """A kubeconfig whose user runs a credential plugin, as ``aws eks get-token`` does: when the
    token rotates, both the watch and the proxy headers use the new one."""
    plugin = tmp_path / "get-token.py"
    plugin.write_text(_EXEC_PLUGIN)
    token_file = tmp_path / "token"
    token_file.write_text("token-1")
    with KubeAPIServer(token="token-1") as api:
        api.add_pod("aws-node-a", "127.0.0.11", "n1")
        kubeconfig = api.write_kubeconfig(
            tmp_path / "kc", exec_command=[sys.executable, str(plugin), str(token_file)])
        discovery = KubernetesDiscovery(KubernetesSDConfig(
            kubeconfig=str(kubeconfig), mode="apiserver_proxy", **FAST), logger)
        try:
            await discovery.start()
            assert await discovery.wait_synced(SOON)
            assert discovery.request_options()[1] == {"Authorization": "Bearer token-1"}
            token_file.write_text("token-2")
            api.set_token("token-2")
            assert discovery.request_options()[1] == {"Authorization": "Bearer token-2"}
            api.drop_watches()  # the reconnect must authenticate with the new token
            api.add_pod("aws-node-b", "127.0.0.12", "n2")
            assert await eventually(lambda: len(pods_of(discovery)) == 2)
        finally:
            await discovery.shutdown()


def test_errors_name_the_kubeconfig_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(DiscoveryError, match=f"kubeconfig {missing}: no such file"):
        load_client_configuration(KubernetesSDConfig(kubeconfig=str(missing)))

    bad = tmp_path / "bad.yaml"
    bad.write_text("clusters: [this is: not: yaml")
    with pytest.raises(DiscoveryError, match=f"kubeconfig {bad}: "):
        load_client_configuration(KubernetesSDConfig(kubeconfig=str(bad)))

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(DiscoveryError, match=f"kubeconfig {empty}: "):
        load_client_configuration(KubernetesSDConfig(kubeconfig=str(empty)))

    no_context = tmp_path / "no-context.yaml"
    no_context.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [],
                                      "users": [], "contexts": []}))
    with pytest.raises(DiscoveryError, match=f"kubeconfig {no_context}: .*current-context"):
        load_client_configuration(KubernetesSDConfig(kubeconfig=str(no_context)))

    with pytest.raises(DiscoveryError, match="KUBECONFIG=/nowhere/kc"):
        load_client_configuration(KubernetesSDConfig(), environ={"KUBECONFIG": "/nowhere/kc"})


async def test_start_fails_with_the_file_named(
    tmp_path: Path, logger: logging.LoggerAdapter[logging.Logger]
) -> None:
    missing = tmp_path / "nope"
    discovery = KubernetesDiscovery(KubernetesSDConfig(kubeconfig=str(missing)), logger)
    with pytest.raises(DiscoveryError, match=str(missing)):
        await discovery.start()
    assert not discovery.synced
    await discovery.shutdown()


def test_the_wrong_context_is_named(tmp_path: Path, api: KubeAPIServer) -> None:
    path = api.write_kubeconfig(tmp_path / "kc")
    with pytest.raises(DiscoveryError, match=f"kubeconfig {path}: .*staging"):
        load_client_configuration(KubernetesSDConfig(kubeconfig=str(path), context="staging"))
    cfg, _ = load_client_configuration(KubernetesSDConfig(kubeconfig=str(path), context="test"))
    assert cfg.host == api.url


# --- the Helm chart's RBAC ---------------------------------------------------------------------
# tests/charts checks that the chart grants exactly what a config's discovery reads; here the API
# server allows only that, and discovery (and scraping through the proxy) still works.


@pytest.mark.parametrize(("mode", "node_metadata"), [
    ("direct", False), ("apiserver_proxy", False), ("direct", True),
])
async def test_the_charts_rbac_is_enough(
    mode: str, node_metadata: bool, api: KubeAPIServer, aws_node: tuple[str, int], started: Any,
) -> None:
    import yaml

    from scripts.render_manifests import render
    from tests.charts.kube_objects import granted, parse

    sd = {"mode": mode, "node_metadata": node_metadata}
    config = {"receivers": {"prometheus": {"kubernetes_sd": sd}},
              "processors": {"cni_aggregate": {}}, "exporters": {"debug": {}},
              "service": {"pipelines": {"metrics": {"receivers": ["prometheus"],
                                                    "processors": ["cni_aggregate"],
                                                    "exporters": ["debug"]}}}}
    objects = parse(render({"config": yaml.safe_dump(config)}))
    # The test API server checks (resource, verb); the pods are in the namespace the Role is in.
    api.permitted = {(resource, verb) for _, resource, verb in granted(objects)}
    ip, port = aws_node
    api.add_node("n1", zone="us-east-1a")
    api.add_pod("aws-node-a", ip, "n1", port=port)
    discovery = await started(mode=mode, node_metadata=node_metadata, port=port)
    (target,) = discovery.targets()
    assert target.attributes == ((("zone", "us-east-1a"),) if node_metadata else ())
    context, headers = discovery.request_options()
    status, body = await asyncio.to_thread(_fetch, target.url, context, headers)
    assert status == 200 and "awscni_eni_max" in body
    if mode == "apiserver_proxy":
        api.permitted -= {("pods/proxy", "get")}
        status, body = await asyncio.to_thread(_fetch, target.url, context, headers)
        assert status == 403 and json.loads(body)["reason"] == "Forbidden"
