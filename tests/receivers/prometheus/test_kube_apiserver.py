"""The test API server answers as kube-apiserver does.

Checked three ways: raw HTTP against what the API reference says (status codes, Status bodies,
chunked watch streams, BOOKMARK and ERROR events), the ``kubernetes`` client's own typed models
and ``Watch`` helper, and ``kubectl`` as an independent client.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.kube_apiserver import KubeAPIServer, MetricsEndpoint

NS = "kube-system"
PODS = f"/api/v1/namespaces/{NS}/pods"

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


def _get(server: KubeAPIServer, path: str, token: str | None = None,
         **query: Any) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path + ("?" + urlencode(query) if query else ""), headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(body)
    finally:
        conn.close()


def _watch_lines(server: KubeAPIServer, path: str, count: int | None = None,
                 **query: Any) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Read ``count`` events of a watch (or the whole, bounded stream); returns the response
    headers and the events."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path + "?" + urlencode({"watch": "1", **query}))
        resp = conn.getresponse()
        assert resp.status == 200
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if count is None:
            body = resp.read()  # http.client undoes the chunking; fails on a cut stream
            return headers, [json.loads(line) for line in body.splitlines() if line.strip()]
        events: list[dict[str, Any]] = []
        while len(events) < count:
            line = resp.readline()
            assert line, f"stream ended after {events}"
            if line.strip():
                events.append(json.loads(line))
        return headers, events
    finally:
        conn.close()


def _names(items: list[dict[str, Any]]) -> list[str]:
    return sorted(i["metadata"]["name"] for i in items)


# --- lists ------------------------------------------------------------------------------------


def test_list_is_a_pod_list_with_resource_version_and_selector(api: KubeAPIServer) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.add_pod("aws-node-b", "127.0.0.12", "n2")
    api.add_pod("coredns-1", "127.0.0.13", "n1", labels={"k8s-app": "kube-dns"})
    api.add_pod("other-ns", "127.0.0.14", "n1", namespace="default")

    status, headers, body = _get(api, PODS, labelSelector="k8s-app=aws-node")
    assert status == 200 and headers["content-type"] == "application/json"
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert body["metadata"]["resourceVersion"] == str(api.resource_version)
    assert _names(body["items"]) == ["aws-node-a", "aws-node-b"]
    # Items of a list carry no TypeMeta, as in real lists.
    assert all("kind" not in i and "apiVersion" not in i for i in body["items"])

    assert _names(_get(api, PODS)[2]["items"]) == ["aws-node-a", "aws-node-b", "coredns-1"]
    assert _names(_get(api, PODS, labelSelector="k8s-app in (kube-dns,x)")[2]["items"]) == [
        "coredns-1"]
    assert _names(_get(api, PODS, labelSelector="k8s-app!=aws-node")[2]["items"]) == [
        "coredns-1"]
    assert _names(_get(api, PODS, labelSelector="!k8s-app")[2]["items"]) == []
    assert _names(_get(api, "/api/v1/pods", labelSelector="k8s-app")[2]["items"]) == [
        "aws-node-a", "aws-node-b", "coredns-1", "other-ns"]
    assert _names(_get(api, PODS, fieldSelector="spec.nodeName=n2")[2]["items"]) == [
        "aws-node-b"]


def test_bad_selectors_are_400_with_a_status_body(api: KubeAPIServer) -> None:
    status, _, body = _get(api, PODS, labelSelector="k8s-app in aws-node")
    assert status == 400
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == 400 and body["reason"] == "BadRequest"
    status, _, body = _get(api, PODS, fieldSelector="spec.containers=x")
    assert status == 400 and "field label not supported: spec.containers" in body["message"]


def test_paging_is_a_consistent_snapshot(api: KubeAPIServer) -> None:
    for i in range(5):
        api.add_pod(f"aws-node-{i}", f"127.0.0.{20 + i}", f"n{i}")
    _, _, first = _get(api, PODS, limit=2)
    assert _names(first["items"]) == ["aws-node-0", "aws-node-1"]
    assert first["metadata"]["remainingItemCount"] == 3
    rv = first["metadata"]["resourceVersion"]

    api.delete_pod("aws-node-3")  # after the snapshot: the next pages must not see it
    api.add_pod("aws-node-9", "127.0.0.30", "n9")
    _, _, second = _get(api, PODS, limit=2, **{"continue": first["metadata"]["continue"]})
    _, _, third = _get(api, PODS, limit=2, **{"continue": second["metadata"]["continue"]})
    assert _names(second["items"]) == ["aws-node-2", "aws-node-3"]
    assert _names(third["items"]) == ["aws-node-4"]
    assert "continue" not in third["metadata"]
    assert second["metadata"]["resourceVersion"] == third["metadata"]["resourceVersion"] == rv


def test_expired_continue_token_is_410_expired_with_status(api: KubeAPIServer) -> None:
    for i in range(3):
        api.add_pod(f"aws-node-{i}", f"127.0.0.{20 + i}", f"n{i}")
    _, _, first = _get(api, PODS, limit=1)
    api.add_pod("late", "127.0.0.40", "n9")
    api.compact_history()
    status, _, body = _get(api, PODS, limit=1, **{"continue": first["metadata"]["continue"]})
    assert status == 410
    assert body["kind"] == "Status" and body["code"] == 410 and body["reason"] == "Expired"
    assert body["message"].startswith("The provided continue parameter is too old")
    # The inconsistent continuation the real server offers alongside.
    assert body["metadata"]["continue"]


def test_exact_list_below_compaction_is_410(api: KubeAPIServer) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    old = api.resource_version
    api.add_pod("aws-node-b", "127.0.0.12", "n1")
    status, _, body = _get(api, PODS, resourceVersion=old, resourceVersionMatch="Exact")
    assert status == 200 and _names(body["items"]) == ["aws-node-a"]
    api.compact_history()
    status, _, body = _get(api, PODS, resourceVersion=old, resourceVersionMatch="Exact")
    assert (status, body["code"], body["reason"]) == (410, 410, "Expired")
    assert body["message"] == "The resourceVersion for the provided list is too old."


def test_typed_client_models_read_the_objects(api: KubeAPIServer, tmp_path: Path) -> None:
    from kubernetes import client, config

    api.add_node("n1", zone="us-east-1a", instance_type="m5.large", nodegroup="ng")
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    cfg = client.Configuration()
    config.load_kube_config(str(api.write_kubeconfig(tmp_path / "kc")),
                            client_configuration=cfg, persist_config=False)
    with client.ApiClient(cfg) as api_client:
        core = client.CoreV1Api(api_client)
        pods = core.list_namespaced_pod(NS, label_selector="k8s-app=aws-node")
        node = core.read_node("n1")
        with pytest.raises(client.ApiException) as missing:
            core.read_namespaced_pod("nope", NS)
    pod = pods.items[0]
    assert pods.metadata.resource_version == str(api.resource_version)
    assert (pod.metadata.name, pod.status.phase, pod.status.pod_ip, pod.spec.node_name) == (
        "aws-node-a", "Running", "127.0.0.11", "n1")
    assert pod.spec.containers[0].ports[0].container_port == 61678
    assert node.metadata.labels["topology.kubernetes.io/zone"] == "us-east-1a"
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'pods "nope" not found'


# --- watches ----------------------------------------------------------------------------------


def test_watch_is_chunked_json_lines_with_initial_state(api: KubeAPIServer) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.add_pod("coredns-1", "127.0.0.13", "n1", labels={"k8s-app": "kube-dns"})
    headers, events = _watch_lines(api, PODS, 1, labelSelector="k8s-app=aws-node",
                                   timeoutSeconds=30)
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "application/json"
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "aws-node-a")]
    assert events[0]["object"]["kind"] == "Pod"  # watch objects carry TypeMeta


def test_watch_from_version_replays_history_and_selection_moves(api: KubeAPIServer) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    start = api.resource_version
    api.add_pod("aws-node-b", "", "n2", phase="Pending")
    api.set_phase("aws-node-b", "Running", ip="127.0.0.12")
    api.update_pod("aws-node-a", labels={"k8s-app": "something-else"})  # leaves the selection
    api.update_pod("aws-node-a", labels={"k8s-app": "aws-node"})  # comes back
    api.delete_pod("aws-node-b")
    _, events = _watch_lines(api, PODS, 6, labelSelector="k8s-app=aws-node",
                             resourceVersion=start, timeoutSeconds=30)
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [
        ("ADDED", "aws-node-b"), ("MODIFIED", "aws-node-b"),
        ("DELETED", "aws-node-a"), ("ADDED", "aws-node-a"),
        ("MODIFIED", "aws-node-b"), ("DELETED", "aws-node-b"),
    ]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[-1] == api.resource_version
    # Graceful deletion: the MODIFIED before DELETED sets deletionTimestamp.
    assert "deletionTimestamp" in events[-2]["object"]["metadata"]


def test_watch_too_old_is_an_error_event_with_a_410_status(api: KubeAPIServer) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    old = api.resource_version
    api.touch()
    compacted = api.compact_history()
    started = time.monotonic()
    headers, events = _watch_lines(api, PODS, resourceVersion=old, timeoutSeconds=30)
    assert time.monotonic() - started < 10  # the stream ends after the error, not at timeout
    assert headers["transfer-encoding"] == "chunked"
    assert events == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {old} ({compacted})",
        "reason": "Expired", "code": 410,
    }}]
    # From the compacted version itself nothing is missing: no error.
    threading.Timer(0.2, api.add_pod, ("aws-node-b", "127.0.0.12", "n1")).start()
    _, events = _watch_lines(api, PODS, 1, resourceVersion=compacted, timeoutSeconds=30)
    assert [e["type"] for e in events] == ["ADDED"]


def test_bookmarks_carry_only_the_resource_version(api: KubeAPIServer) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    start = api.resource_version
    api.add_pod("coredns-1", "127.0.0.13", "n1", labels={"k8s-app": "kube-dns"})
    threading.Timer(0.3, api.send_bookmark).start()
    _, events = _watch_lines(api, PODS, 1, labelSelector="k8s-app=aws-node",
                             resourceVersion=start, allowWatchBookmarks="true",
                             timeoutSeconds=30)
    # coredns is not selected: the first event is the bookmark, at the current version.
    assert events == [{"type": "BOOKMARK", "object": {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"resourceVersion": str(api.resource_version)},
    }}]
    # Without allowWatchBookmarks none are sent: the first event is the next change.
    def bookmark_then_add() -> None:
        api.send_bookmark()
        api.add_pod("aws-node-b", "127.0.0.12", "n1")

    threading.Timer(0.3, bookmark_then_add).start()
    _, events = _watch_lines(api, PODS, 1, resourceVersion=api.resource_version,
                             timeoutSeconds=30)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "aws-node-b")]


def test_watch_honours_timeout_seconds(api: KubeAPIServer) -> None:
    started = time.monotonic()
    _watch_lines(api, PODS, timeoutSeconds=1)  # reads to the final chunk
    assert 0.9 <= time.monotonic() - started < 8
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request("GET", PODS + "?watch=1&timeoutSeconds=1.5")
    resp = conn.getresponse()
    assert resp.status == 400 and json.loads(resp.read())["reason"] == "BadRequest"
    conn.close()


def test_dropped_watch_is_cut_without_the_final_chunk(api: KubeAPIServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request("GET", PODS + "?watch=1&timeoutSeconds=30")
    resp = conn.getresponse()
    assert api.wait_for(lambda: api.open_watches == 1)
    api.drop_watches()
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()


def test_client_watch_helper_reads_our_events_and_410(api: KubeAPIServer, tmp_path: Path) -> None:
    """The ``kubernetes`` package's own ``Watch`` (an independent reader of the stream):
    typed ADDED events, and an ApiException 410 once its one retry also hits the ERROR."""
    from kubernetes import client, config, watch

    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    cfg = client.Configuration()
    config.load_kube_config(str(api.write_kubeconfig(tmp_path / "kc")),
                            client_configuration=cfg, persist_config=False)
    with client.ApiClient(cfg) as api_client:
        core = client.CoreV1Api(api_client)
        events = list(watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=1))
        assert [(e["type"], e["object"].status.pod_ip) for e in events] == [
            ("ADDED", "127.0.0.11")]
        old = api.resource_version
        api.touch()
        api.compact_history()
        with pytest.raises(client.ApiException) as gone:
            for _ in watch.Watch().stream(core.list_namespaced_pod, NS,
                                         resource_version=str(old)):
                pass
    assert gone.value.status == 410
    assert "Expired: too old resource version" in str(gone.value.reason)


# --- errors, auth, proxy, nodes ---------------------------------------------------------------


def test_token_is_required_when_set() -> None:
    with KubeAPIServer(token="s3cret") as api:
        status, _, body = _get(api, PODS)
        assert (status, body["kind"], body["reason"], body["code"]) == (
            401, "Status", "Unauthorized", 401)
        assert _get(api, PODS, token="wrong")[0] == 401
        assert _get(api, PODS, token="s3cret")[0] == 200
        assert _get(api, "/version")[0] == 200  # public, as system:public-info-viewer
        api.set_token("rotated")
        assert _get(api, PODS, token="s3cret")[0] == 401


def test_denied_and_injected_failures(api: KubeAPIServer) -> None:
    api.deny("nodes", "list")
    status, _, body = _get(api, "/api/v1/nodes")
    assert status == 403 and body["reason"] == "Forbidden"
    assert 'cannot list resource "nodes"' in body["message"]
    api.fail_next("list", 503, count=2)
    assert [_get(api, PODS)[0] for _ in range(3)] == [503, 503, 200]
    status, _, body = _get(api, "/api/v1/namespaces/kube-system/pods/x/exec")
    assert status == 404 and body["kind"] == "Status"


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, int]]:
    with MetricsEndpoint("127.0.0.21") as endpoint:
        yield endpoint.host, endpoint.port


def test_pod_proxy_forwards_to_the_pod(api: KubeAPIServer,
                                       metrics_server: tuple[str, int]) -> None:
    ip, port = metrics_server
    api.add_pod("aws-node-a", ip, "n1", port=port)
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request("GET", f"{PODS}/aws-node-a:{port}/proxy/metrics?x=1")
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain")
    assert "awscni_eni_max 3" in body and "# path /metrics?x=1" in body
    # No port: the first container port, as the real server picks.
    assert _raw(api, f"{PODS}/aws-node-a/proxy/metrics")[0] == 200
    status, text = _raw(api, f"{PODS}/nope:{port}/proxy/metrics")
    assert status == 404 and json.loads(text)["message"] == 'pods "nope" not found'
    free = _free_port()
    status, text = _raw(api, f"{PODS}/aws-node-a:{free}/proxy/metrics")
    assert status == 503 and "error trying to reach service" in json.loads(text)["message"]


def _raw(api: KubeAPIServer, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.21", 0))
        return int(s.getsockname()[1])


def test_nodes_list_get_and_watch(api: KubeAPIServer) -> None:
    api.add_node("n1", zone="us-east-1a")
    start = api.resource_version
    api.set_node_labels("n1", {"eks.amazonaws.com/nodegroup": "ng-2"})
    _, _, listing = _get(api, "/api/v1/nodes")
    assert listing["kind"] == "NodeList" and _names(listing["items"]) == ["n1"]
    assert _get(api, "/api/v1/nodes/n1")[2]["metadata"]["labels"][
        "eks.amazonaws.com/nodegroup"] == "ng-2"
    _, events = _watch_lines(api, "/api/v1/nodes", 1, resourceVersion=start, timeoutSeconds=30)
    assert [(e["type"], e["object"]["kind"]) for e in events] == [("MODIFIED", "Node")]


# --- kubectl, an independent client ---------------------------------------------------------


def _kubectl(kubeconfig: Path, *args: str, timeout: float = 30) -> str:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir",
         str(kubeconfig.parent / "kube-cache"), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs_kubectl
def test_kubectl_lists_pods_and_nodes(api: KubeAPIServer, tmp_path: Path) -> None:
    api.add_node("n1", zone="us-east-1a", instance_type="m5.large")
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    api.add_pod("aws-node-b", "", "n1", phase="Pending")
    api.add_pod("coredns-1", "127.0.0.13", "n1", labels={"k8s-app": "kube-dns"})
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

    listing = json.loads(_kubectl(kubeconfig, "get", "pods", "-n", NS, "-o", "json",
                                  "-l", "k8s-app=aws-node"))
    assert [(p["metadata"]["name"], p["status"]["phase"], p["status"].get("podIP"))
            for p in listing["items"]] == [("aws-node-a", "Running", "127.0.0.11"),
                                           ("aws-node-b", "Pending", None)]
    # Default output is server-side printing (a Table), as the real server gives kubectl.
    table = _kubectl(kubeconfig, "get", "pods", "-n", NS, "-o", "wide").splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["aws-node-a"][1:3] == ["1/1", "Running"] and "127.0.0.11" in rows["aws-node-a"]
    assert rows["aws-node-b"][1:3] == ["0/1", "ContainerCreating"]
    nodes = _kubectl(kubeconfig, "get", "nodes", "-L", "topology.kubernetes.io/zone")
    assert "us-east-1a" in nodes.splitlines()[1]
    one = json.loads(_kubectl(kubeconfig, "get", "pod", "aws-node-a", "-n", NS, "-o", "json"))
    assert one["spec"]["nodeName"] == "n1"


@needs_kubectl
def test_kubectl_watch_sees_changes(api: KubeAPIServer, tmp_path: Path) -> None:
    api.add_pod("aws-node-a", "127.0.0.11", "n1")
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    assert KUBECTL is not None
    proc = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
         "get", "pods", "-n", NS, "--watch", "--output-watch-events", "--request-timeout=20s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    try:
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        assert api.wait_for(lambda: api.open_watches == 1, timeout=15), proc.stderr
        api.add_pod("aws-node-b", "", "n2", phase="Pending")
        api.set_phase("aws-node-b", "Running", ip="127.0.0.12")
        api.delete_pod("aws-node-a")
        assert api.wait_for(lambda: any(line.startswith("DELETED") for line in lines),
                            timeout=15), lines
    finally:
        proc.terminate()
        proc.wait(10)
    events = [(line.split()[0], line.split()[1], line.split()[3]) for line in lines[1:]]
    assert events == [
        ("ADDED", "aws-node-a", "Running"),
        ("ADDED", "aws-node-b", "ContainerCreating"),
        ("MODIFIED", "aws-node-b", "Running"),
        ("MODIFIED", "aws-node-a", "Terminating"),
        ("DELETED", "aws-node-a", "Terminating"),
    ]


@needs_kubectl
def test_kubectl_over_tls_with_token_and_proxy(tmp_path: Path,
                                               metrics_server: tuple[str, int]) -> None:
    ip, port = metrics_server
    with KubeAPIServer(token="t0ken", tls=True) as api:
        api.add_pod("aws-node-a", ip, "n1", port=port)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")  # CA data + token
        names = _kubectl(kubeconfig, "get", "pods", "-n", NS, "-o", "name")
        assert names.split() == ["pod/aws-node-a"]
        page = _kubectl(kubeconfig, "get", "--raw", f"{PODS}/aws-node-a:{port}/proxy/metrics")
        assert "awscni_eni_max 3" in page
        bad = api.write_kubeconfig(tmp_path / "bad", token="wrong")
        result = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(bad), "--cache-dir", str(tmp_path / "c2"),
             "get", "pods", "-n", NS], capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode != 0 and "provide credentials" in result.stderr
