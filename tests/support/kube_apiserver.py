"""A small Kubernetes API server for tests, speaking the parts of the real API that discovery uses.

It is a real HTTP server on loopback (threaded, HTTP/1.1) that keeps a store of pods and nodes with
resourceVersions and an event history, and answers as kube-apiserver does (the behaviour follows
the API reference, "API Concepts", and the apiserver's cacher/etcd3 code, not what one client
happens to accept):

- ``GET /api/v1/namespaces/{ns}/pods`` and ``/api/v1/pods``: a ``PodList`` whose
  ``metadata.resourceVersion`` is the store's revision; ``labelSelector`` (equality and set-based)
  and ``fieldSelector`` are honoured; items carry no ``kind``/``apiVersion``, as in real lists.
  ``limit``/``continue`` page over a consistent snapshot; a continue token older than the compacted
  revision is answered ``410 Expired`` with a Status body (and an inconsistent continue token in
  the Status' metadata), as is ``resourceVersionMatch=Exact`` below the compacted revision.
- ``...?watch=1``: HTTP 200 with a chunked stream of one JSON event per line. ``resourceVersion``
  unset or ``0`` starts with synthetic ``ADDED`` events for the current objects; ``N`` replays the
  history after N, or, when N is older than the compacted revision, sends one ``ERROR`` event
  carrying a Status (code 410, reason ``Expired``, "too old resource version: N (M)") and ends
  the stream. An update that moves an object into or out of the selector is sent as ``ADDED`` /
  ``DELETED``, as the watch cache does. ``allowWatchBookmarks=true`` enables ``BOOKMARK`` events
  whose object holds only ``kind``, ``apiVersion`` and ``metadata.resourceVersion``: every
  ``bookmark_interval`` seconds, on :meth:`KubeAPIServer.send_bookmark`, and shortly before
  ``timeoutSeconds`` (an integer, as in the API) ends the stream. A watch whose client went away
  is torn down; a compaction does not take from open watches what they have not yet sent.
- ``GET /api/v1/nodes`` (list and watch) and ``/api/v1/nodes/{name}``, ``.../pods/{name}``.
- ``/api/v1/namespaces/{ns}/pods/[scheme:]{name}[:port]/proxy/{path}`` forwards a GET to the pod's
  IP and port. Only loopback pod IPs are proxied: tests give pods addresses in 127.0.0.0/8 where
  their test servers listen.
- ``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases`` (POST: create, ``409 AlreadyExists``
  when the name is taken) and ``.../leases/{name}`` (GET; PUT: replace, ``409 Conflict`` when the
  body's ``metadata.resourceVersion`` is not the stored one, ``404`` when there is none, as Leases
  are not created on update): what leader election uses. Bodies are checked as the API server
  decodes and validates them (MicroTime ``acquireTime``/``renewTime`` with exactly six fraction
  digits, ``leaseDurationSeconds`` > 0, ``leaseTransitions`` >= 0); times come back in UTC.
- ``/version``, ``/api``, ``/api/v1``, ``/apis`` (enough discovery for ``kubectl``), and a
  ``meta.k8s.io/v1`` Table when the Accept header asks for one (server-side printing, which
  ``kubectl get`` uses for its columns, in lists and watches). Status bodies for every error (401
  without the bearer token when one is set, 403 for verbs RBAC would refuse, 404, 400, 405).
- Optional TLS (a CA and a certificate for 127.0.0.1 made at start), and writers for a kubeconfig
  (token or exec credential plugin) and for an in-cluster service account directory.

Faults tests can inject: :meth:`compact_history` (410s), :meth:`drop_watches` (a stream cut without
its final chunk, or ended cleanly), :meth:`fail_next` (the next N requests of a verb answered with a
Status error), :meth:`fail_matching` (every request a predicate picks, e.g. one client's),
:meth:`deny` and ``permitted`` (403s, as RBAC gives), ``before_request`` (a hook run at the start of
every request, e.g. to compact between two pages of a list), and ``split_events`` (each event cut
across two chunks). :class:`MetricsEndpoint` is a stand-in aws-node endpoint for a pod IP in
127.0.0.0/8.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import http.client
import ipaddress
import json
import os
import re
import select as _select
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from tests.support.http_server import BackgroundHTTPServer

Obj = dict[str, Any]

DEFAULT_NAMESPACE = "kube-system"
DEFAULT_LABELS = {"k8s-app": "aws-node"}
AWS_NODE_PORT = 61678
#: How often a watch gets a bookmark when it asked for them (the real cacher: about a minute).
DEFAULT_BOOKMARK_INTERVAL = 60.0
#: A watch without timeoutSeconds ends after this long (the real server: 30-60 minutes).
DEFAULT_WATCH_TIMEOUT = 1800.0

_POD_FIELDS = {
    "metadata.name": lambda o: o["metadata"]["name"],
    "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
    "spec.nodeName": lambda o: o["spec"].get("nodeName", ""),
    "spec.hostNetwork": lambda o: str(bool(o["spec"].get("hostNetwork", False))).lower(),
    "status.phase": lambda o: o["status"].get("phase", ""),
    "status.podIP": lambda o: o["status"].get("podIP", ""),
}
_NODE_FIELDS = {
    "metadata.name": lambda o: o["metadata"]["name"],
    "spec.unschedulable": lambda o: str(bool(o["spec"].get("unschedulable", False))).lower(),
}
_FIELDS: dict[str, dict[str, Callable[[Obj], str]]] = {"pods": _POD_FIELDS, "nodes": _NODE_FIELDS}
_KINDS = {"pods": "Pod", "nodes": "Node"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, **extra: Any) -> Obj:
    """A ``metav1.Status`` failure, the body of every error response and ERROR watch event."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": extra.pop("metadata", {}),
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if extra:
        body["details"] = extra
    return body


class _APIError(Exception):
    def __init__(self, status: Obj) -> None:
        super().__init__(status["message"])
        self.status = status


# --- selectors --------------------------------------------------------------------------------

_SET_REQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


def _split_requirements(selector: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b=c`` is two requirements)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in selector:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


#: One requirement: (key, operator, values); operators "in", "notin", "exists", "!exists".
_Requirement = tuple[str, str, frozenset[str]]


def _label_requirement(req: str) -> _Requirement:
    if m := _SET_REQ.match(req):
        values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
        return m.group(1), m.group(2), values
    if m := _EQ_REQ.match(req):
        key, op, value = m.groups()
        return key, "notin" if op == "!=" else "in", frozenset({value})
    if m := _EXISTS_REQ.match(req):
        neg, key = m.groups()
        return key, "!exists" if neg else "exists", frozenset()
    raise ValueError(f"unable to parse requirement: {req.strip()!r}")


def _matches(requirement: _Requirement, labels: dict[str, str]) -> bool:
    key, op, values = requirement
    if op == "in":
        return key in labels and labels[key] in values
    if op == "notin":  # as in Kubernetes, an absent key satisfies "!=" and "notin"
        return labels.get(key) not in values
    return (key in labels) == (op == "exists")


def parse_label_selector(selector: str) -> Callable[[dict[str, str]], bool]:
    """Compile a label selector as kube-apiserver accepts it; ``ValueError`` if it is malformed."""
    requirements = [_label_requirement(req) for req in _split_requirements(selector)]
    return lambda labels: all(_matches(r, labels) for r in requirements)


def parse_field_selector(resource: str, selector: str) -> Callable[[Obj], bool]:
    """Compile a field selector; unknown field labels are refused as the real server does."""
    requirements: list[tuple[Callable[[Obj], str], bool, str]] = []
    fields = _FIELDS[resource]
    for req in _split_requirements(selector):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", req)
        if not m:
            raise ValueError(f"invalid selector: {req.strip()!r}")
        name, op, value = m.groups()
        getter = fields.get(name)
        if getter is None:
            raise ValueError(f"field label not supported: {name}")
        requirements.append((getter, op != "!=", value))
    return lambda obj: all((get(obj) == value) == equal for get, equal, value in requirements)


# --- store ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Event:
    rv: int
    resource: str
    type: str  # ADDED / MODIFIED / DELETED
    obj: Obj
    prev: Obj | None


@dataclass
class RequestRecord:
    """One request the server answered: what tests assert clients sent."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    time: float
    #: The decoded JSON body of a POST or PUT.
    body: Obj | None = None

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "") in ("1", "true", "True")


@dataclass(eq=False)
class _Watch:
    select: _Selector
    cursor: int = 0
    table: bool = False
    include: str = "Metadata"
    columns_sent: bool = False
    drop: str = ""  # "", "abort" or "end"
    bookmarks_sent: int = 0

    @property
    def resource(self) -> str:
        return self.select.resource


class _Selector:
    def __init__(self, resource: str, namespace: str, query: dict[str, str]) -> None:
        self.resource = resource
        self.namespace = namespace
        try:
            self._labels = parse_label_selector(query.get("labelSelector", ""))
            self._fields = parse_field_selector(resource, query.get("fieldSelector", ""))
        except ValueError as exc:
            raise _APIError(status_body(400, "BadRequest", str(exc))) from exc

    def __call__(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace and meta.get("namespace", "") != self.namespace:
            return False
        return self._labels(meta.get("labels") or {}) and self._fields(obj)


def _encode_continue(rv: int, start: str) -> str:
    # The real token: base64 of {"v":"meta.k8s.io/v1","rv":N,"start":"key\u0000"}.
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("bad version")
        return int(data["rv"]), str(data["start"]).rstrip("\x00")
    except (ValueError, KeyError, TypeError) as exc:
        raise _APIError(
            status_body(400, "BadRequest", f"continue key is not valid: {exc}")
        ) from exc


class _QuietServer(ThreadingHTTPServer):
    """A client going away mid-exchange (a pipeline stopped, a scrape cut at its timeout, a TLS
    connection aborted) is routine for this server, not a traceback on stderr; anything else
    still is."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class KubeAPIServer:
    """The test API server; see the module docstring for what it speaks.

    Use as a context manager (or :meth:`start` / :meth:`stop`). The store methods may be called
    from any thread; every change gets the next resourceVersion and wakes the watches.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        tls: bool = False,
        bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
        split_events: bool = False,
        version: str = "v1.31.2",
    ) -> None:
        self._cond = threading.Condition()
        self._rv = 1
        self._compacted = 0
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {
            "pods": {}, "nodes": {}, "leases": {}
        }
        self._failing: tuple[Callable[[RequestRecord], bool], Obj] | None = None
        self._history: list[_Event] = []
        self._watches: list[_Watch] = []
        self._bookmark_generation = 0
        self._failures: dict[str, list[Obj]] = {}
        self._denied: set[tuple[str, str]] = set()
        #: When set, only these (resource, verb) pairs are allowed, as under RBAC: e.g.
        #: {("pods", "list"), ("pods", "watch"), ("pods/proxy", "get")}.
        self.permitted: set[tuple[str, str]] | None = None
        self._token = token
        self._tls = tls
        self.bookmark_interval = bookmark_interval
        #: Send every watch event as two chunks, cut inside the JSON, so that clients must
        #: join chunks into lines (nothing guarantees an event arrives in one read).
        self.split_events = split_events
        self.version = version
        self.requests: list[RequestRecord] = []
        #: Requests answered through pods/proxy, and the response body bytes they carried (what
        #: passed through the API server: bench/bench_proxy.py reads them).
        self.proxied_requests = 0
        self.proxied_bytes = 0
        #: Called at the start of every request with its record (from the handler's thread).
        self.before_request: Callable[[RequestRecord], None] | None = None
        #: ENIConfig objects (crd.k8s.amazonaws.com/v1alpha1) served as a list; None: the CRD is
        #: not installed (404).
        self.eniconfigs: list[Obj] | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="kube-apiserver-")
        self.ca_file: Path | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> KubeAPIServer:
        server = self

        class Handler(_Handler):
            api = server

        httpd = _QuietServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        if self._tls:
            httpd.socket = self._tls_context().wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="kube-apiserver", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            for watch in self._watches:
                watch.drop = "end"
            self._cond.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
        self._tmp.cleanup()

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    # --- TLS and kubeconfig ---------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        cert, key, ca = make_certificates(Path(self._tmp.name))
        self.ca_file = ca
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx

    def set_token(self, token: str | None) -> None:
        """Accept only this bearer token from now on (a rotation: the old one is refused)."""
        self._token = token

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        *,
        token: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        context: str = "test",
        exec_command: list[str] | None = None,
        insecure_skip_tls_verify: bool = False,
    ) -> Path:
        """Write a kubeconfig for this server (JSON, which YAML readers accept).

        The user authenticates with ``token`` (default: the server's token) or, with
        ``exec_command``, through a client.authentication.k8s.io/v1 exec plugin, as
        ``aws eks get-token`` does.
        """
        cluster: Obj = {"server": self.url}
        if self._tls and self.ca_file is not None and not insecure_skip_tls_verify:
            cluster["certificate-authority-data"] = base64.b64encode(
                self.ca_file.read_bytes()
            ).decode()
        if insecure_skip_tls_verify:
            cluster["insecure-skip-tls-verify"] = True
        user: Obj = {}
        if exec_command:
            user["exec"] = {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": exec_command[0],
                "args": exec_command[1:],
                "interactiveMode": "Never",
            }
        elif (token or self._token) is not None:
            user["token"] = token or self._token
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": user}],
            "contexts": [
                {"name": context,
                 "context": {"cluster": context, "user": context, "namespace": namespace}}
            ],
            "current-context": context,
        }
        out = Path(path)
        out.write_text(json.dumps(config, indent=2))
        return out

    def write_service_account(self, directory: str | os.PathLike[str], token: str) -> Path:
        """Lay out what the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "token").write_text(token)
        (out / "namespace").write_text(DEFAULT_NAMESPACE)
        if self.ca_file is not None:
            (out / "ca.crt").write_bytes(self.ca_file.read_bytes())
        return out

    # --- store: nodes -------------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        ip: str = "",
        zone: str = "",
        instance_type: str = "",
        nodegroup: str = "",
        instance_id: str = "",
    ) -> Obj:
        all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
        if zone:
            all_labels["topology.kubernetes.io/zone"] = zone
        if instance_type:
            all_labels["node.kubernetes.io/instance-type"] = instance_type
        if nodegroup:
            all_labels["eks.amazonaws.com/nodegroup"] = nodegroup
        all_labels.update(labels or {})
        node: Obj = {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "labels": all_labels,
            },
            "spec": {"providerID": f"aws:///{zone or 'us-east-1a'}/"
                                   f"{instance_id or 'i-' + uuid.uuid4().hex[:17]}"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": ip}] if ip else [],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastTransitionTime": _now()}],
                "nodeInfo": {
                    "architecture": "amd64", "bootID": str(uuid.uuid4()),
                    "containerRuntimeVersion": "containerd://1.7.22",
                    "kernelVersion": "6.1.112-122.189.amzn2023.x86_64",
                    "kubeProxyVersion": self.version, "kubeletVersion": self.version,
                    "machineID": uuid.uuid4().hex, "operatingSystem": "linux",
                    "osImage": "Amazon Linux 2023.6.20241010", "systemUUID": str(uuid.uuid4()),
                },
            },
        }
        return self._commit("nodes", "", name, node)

    def set_node_labels(self, name: str, labels: dict[str, str]) -> Obj:
        node = self._get("nodes", "", name)
        node["metadata"]["labels"].update(labels)
        return self._commit("nodes", "", name, node)

    def delete_node(self, name: str) -> Obj:
        return self._commit("nodes", "", name, None)

    # --- store: pods --------------------------------------------------------------------------

    def add_pod(
        self,
        name: str,
        ip: str = "",
        node: str = "",
        *,
        namespace: str = DEFAULT_NAMESPACE,
        phase: str = "Running",
        ready: bool = True,
        labels: dict[str, str] | None = None,
        port: int = AWS_NODE_PORT,
    ) -> Obj:
        """Add a pod (by default an aws-node pod: label ``k8s-app=aws-node``, host network)."""
        pod: Obj = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "generateName": "aws-node-",
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "labels": dict(DEFAULT_LABELS if labels is None else labels),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                     "name": "aws-node", "uid": "ds-aws-node",
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {
                "nodeName": node,
                "hostNetwork": True,
                "serviceAccountName": "aws-node",
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 10,
                "containers": [{
                    "name": "aws-node",
                    "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.18.0",
                    "ports": [{"containerPort": port, "name": "metrics", "protocol": "TCP"}],
                }],
            },
            "status": {},
        }
        _set_pod_status(pod, phase=phase, ip=ip, ready=ready)
        return self._commit("pods", namespace, name, pod)

    def update_pod(
        self,
        name: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        phase: str | None = None,
        ip: str | None = None,
        ready: bool | None = None,
        labels: dict[str, str] | None = None,
    ) -> Obj:
        pod = self._get("pods", namespace, name)
        status = pod["status"]
        _set_pod_status(
            pod,
            phase=status.get("phase", "Pending") if phase is None else phase,
            ip=status.get("podIP", "") if ip is None else ip,
            ready=_pod_ready(pod) if ready is None else ready,
        )
        if labels is not None:
            pod["metadata"]["labels"] = dict(labels)
        return self._commit("pods", namespace, name, pod)

    def set_phase(
        self, name: str, phase: str, ip: str | None = None, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Obj:
        return self.update_pod(name, namespace=namespace, phase=phase, ip=ip,
                               ready=phase == "Running")

    def set_ready(self, name: str, ready: bool, *, namespace: str = DEFAULT_NAMESPACE) -> Obj:
        return self.update_pod(name, namespace=namespace, ready=ready)

    def delete_pod(
        self, name: str, *, namespace: str = DEFAULT_NAMESPACE, finalize: bool = True
    ) -> Obj:
        """Delete gracefully as the API does: first set ``deletionTimestamp`` (a MODIFIED event),
        then, unless ``finalize`` is false (the kubelet has not confirmed yet), remove it
        (a DELETED event carrying the object's last state)."""
        pod = self._get("pods", namespace, name)
        if "deletionTimestamp" not in pod["metadata"]:
            pod["metadata"]["deletionTimestamp"] = _now()
            pod["metadata"]["deletionGracePeriodSeconds"] = 10
            pod = self._commit("pods", namespace, name, pod)
        if finalize:
            return self._commit("pods", namespace, name, None)
        return pod

    def recreate_pod(
        self,
        name: str,
        new_name: str | None = None,
        *,
        ip: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> Obj:
        """Delete a pod and create its replacement on the same node (a DaemonSet roll: a new name,
        or the same name with a new uid when ``new_name`` is not given)."""
        old = self._get("pods", namespace, name)
        self.delete_pod(name, namespace=namespace)
        port = old["spec"]["containers"][0]["ports"][0]["containerPort"]
        return self.add_pod(
            new_name or name,
            old["status"].get("podIP", "") if ip is None else ip,
            old["spec"].get("nodeName", ""),
            namespace=namespace,
            labels=old["metadata"].get("labels") or {},
            port=port,
        )

    def pod(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> Obj:
        return self._get("pods", namespace, name)

    # --- store: leases (coordination.k8s.io/v1) -------------------------------------------------

    def lease(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> Obj:
        """The stored Lease, as a GET returns it (``KeyError`` if there is none)."""
        return self._get("leases", namespace, name)

    def set_lease(
        self,
        name: str,
        spec: Obj,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        annotations: dict[str, str] | None = None,
    ) -> Obj:
        """Create or replace a Lease as another client would (unconditionally): a new
        resourceVersion, so a client holding the old one gets 409 Conflict on its update."""
        meta: Obj = {"name": name, "namespace": namespace}
        if annotations is not None:
            meta["annotations"] = dict(annotations)
        body: Obj = {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": meta,
                     "spec": spec}
        with self._cond:
            if (namespace, name) in self._objects["leases"]:
                return self.replace_lease(namespace, name, body)
            return self.create_lease(namespace, body)

    def create_lease(self, namespace: str, body: Any) -> Obj:
        """``POST .../leases``: 409 AlreadyExists when the name is taken."""
        lease = _lease_from_body(body, namespace)
        name = lease["metadata"]["name"]
        if "resourceVersion" in lease["metadata"]:  # etcd3 store.Create refuses it, as a 500
            raise _APIError(status_body(
                500, "InternalError",
                "Internal error occurred: resourceVersion should not be set on objects to be "
                "created",
            ))
        with self._cond:
            if (namespace, name) in self._objects["leases"]:
                raise _APIError(status_body(
                    409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists',
                    name=name, group=LEASE_GROUP, kind="leases",
                ))
            lease["metadata"]["uid"] = str(uuid.uuid4())
            lease["metadata"]["creationTimestamp"] = _now()
            return self._commit("leases", namespace, name, lease)

    def replace_lease(self, namespace: str, name: str, body: Any) -> Obj:
        """``PUT .../leases/{name}``: optimistic concurrency on ``metadata.resourceVersion``
        (409 Conflict when stale; none given is an unconditional update, which Leases allow);
        404 when there is no such Lease; an update that changes nothing keeps the version."""
        lease = _lease_from_body(body, namespace, name)
        with self._cond:
            current = self._objects["leases"].get((namespace, name))
            if current is None:
                raise _lease_not_found(name)
            stored = current["metadata"]
            wanted = lease["metadata"].pop("resourceVersion", "")
            if wanted and wanted != stored["resourceVersion"]:
                raise _APIError(status_body(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the '
                    "object has been modified; please apply your changes to the latest version "
                    "and try again",
                    name=name, group=LEASE_GROUP, kind="leases",
                ))
            lease["metadata"]["uid"] = stored["uid"]
            lease["metadata"]["creationTimestamp"] = stored["creationTimestamp"]
            unchanged = lease["spec"] == current["spec"] and all(
                lease["metadata"].get(k) == stored.get(k) for k in ("labels", "annotations")
            )
            if unchanged:
                return copy.deepcopy(current)
            return self._commit("leases", namespace, name, lease)

    # --- faults -------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def touch(self) -> int:
        """Advance the revision without changing a pod or node (another resource changed)."""
        with self._cond:
            self._rv += 1
            self._cond.notify_all()
            return self._rv

    def compact_history(self) -> int:
        """Forget the event history up to now (etcd compaction): new watches and continue tokens
        from an older resourceVersion get 410 Expired. Open watches keep what they have not yet
        sent, as the watch cache hands each watcher its own buffer. Returns the revision."""
        with self._cond:
            self._compacted = self._rv
            keep_after = min([w.cursor for w in self._watches], default=self._rv)
            self._history = [e for e in self._history if e.rv > keep_after]
            return self._compacted

    def drop_watches(self, *, graceful: bool = False) -> int:
        """Cut every open watch stream: abruptly (the connection closes without the final chunk,
        as when a load balancer or the network drops it) or, with ``graceful``, by ending the
        response as a server-side timeout does. Returns how many were open."""
        with self._cond:
            for watch in self._watches:
                watch.drop = "end" if graceful else "abort"
            self._cond.notify_all()
            return len(self._watches)

    def send_bookmark(self) -> None:
        """Send a BOOKMARK at the current revision to every watch that allowed bookmarks."""
        with self._cond:
            self._bookmark_generation += 1
            self._cond.notify_all()

    def fail_next(
        self, verb: str, code: int = 500, *, count: int = 1, message: str = ""
    ) -> None:
        """Answer the next ``count`` requests of ``verb`` (list, watch, get, proxy) with a Status
        error of this code."""
        reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                   410: "Expired", 429: "TooManyRequests", 500: "InternalError",
                   503: "ServiceUnavailable", 504: "Timeout"}
        body = status_body(code, reasons.get(code, "InternalError"),
                           message or f"injected {code} for {verb}")
        with self._cond:
            self._failures.setdefault(verb, []).extend(copy.deepcopy(body) for _ in range(count))

    def access_review(self, body: Obj) -> Obj:
        """Answer a SelfSubjectAccessReview as RBAC would under :meth:`deny` and ``permitted``
        (``resource`` with its subresource: ``pods/proxy``)."""
        attrs = body.get("spec", {}).get("resourceAttributes", {})
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]
        verb = attrs.get("verb", "")
        refused = (resource, verb) in self._denied or (
            self.permitted is not None and (resource, verb) not in self.permitted)
        status = {"allowed": not refused}
        if refused:
            status["reason"] = f'no RBAC rule allows {verb} on {resource}'
        return {**body, "status": status}

    def deny(self, resource: str, verb: str) -> None:
        """Refuse ``verb`` on ``resource`` with 403, as RBAC does for a missing rule."""
        self._denied.add((resource, verb))

    def allow(self, resource: str, verb: str) -> None:
        self._denied.discard((resource, verb))

    def fail_matching(
        self, predicate: Callable[[RequestRecord], bool] | None, code: int = 500
    ) -> None:
        """Answer every request ``predicate`` picks (say, one client's, by its User-Agent) with a
        Status error of this code, until called with ``None``."""
        reason = "ServiceUnavailable" if code == 503 else "InternalError"
        with self._cond:
            self._failing = None if predicate is None else (
                predicate, status_body(code, reason, f"injected {code}"))

    def _check_failing(self, record: RequestRecord) -> None:
        with self._cond:
            failing = self._failing
        if failing is not None and failing[0](record):
            raise _APIError(copy.deepcopy(failing[1]))

    @property
    def open_watches(self) -> int:
        with self._cond:
            return len(self._watches)

    def requests_of(self, verb: str, resource: str = "pods") -> list[RequestRecord]:
        """The recorded list or watch requests for a resource, oldest first."""
        suffix = f"/{resource}"
        with self._cond:
            return [r for r in self.requests
                    if r.method == "GET" and r.path.endswith(suffix)
                    and r.is_watch == (verb == "watch")]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until it holds or ``timeout`` passes (tests' bounded waits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # --- internals used by the handler --------------------------------------------------------

    def _get(self, resource: str, namespace: str, name: str) -> Obj:
        with self._cond:
            obj = self._objects[resource].get((namespace, name))
            if obj is None:
                raise KeyError(f"{resource} {namespace}/{name} not found")
            return copy.deepcopy(obj)

    def _commit(self, resource: str, namespace: str, name: str, new: Obj | None) -> Obj:
        with self._cond:
            key = (namespace, name)
            prev = self._objects[resource].get(key)
            self._rv += 1
            if new is None:
                if prev is None:
                    raise KeyError(f"{resource} {namespace}/{name} not found")
                obj = copy.deepcopy(prev)
                kind = "DELETED"
                del self._objects[resource][key]
            else:
                obj = copy.deepcopy(new)
                kind = "ADDED" if prev is None else "MODIFIED"
                self._objects[resource][key] = obj
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._history.append(_Event(self._rv, resource, kind, copy.deepcopy(obj), prev))
            self._cond.notify_all()
            return copy.deepcopy(obj)

    def _check_fault(self, verb: str, resource: str, namespace: str,
                     rbac_verb: str = "") -> None:
        with self._cond:
            queue = self._failures.get(verb)
            if queue:
                raise _APIError(queue.pop(0))
        verb = rbac_verb or verb
        refused = (resource, verb) in self._denied or (
            self.permitted is not None and (resource, verb) not in self.permitted)
        if refused:
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            raise _APIError(status_body(
                403, "Forbidden",
                f'{resource} is forbidden: User "system:serviceaccount:kube-system:cni-pipeline" '
                f'cannot {verb} resource "{resource}" in API group '
                f'"{_GROUPS.get(resource, "")}"{where}',
                kind=resource,
            ))

    def _authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and value.strip() == self._token

    def _state_at(self, resource: str, rv: int) -> dict[tuple[str, str], Obj]:
        """The store as it was at revision ``rv`` (undoing later history); caller holds the lock
        and has checked that ``rv`` is not older than the compacted revision."""
        state = dict(self._objects[resource])
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.resource != resource:
                continue
            meta = event.obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            if event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return state

    def list_objects(self, resource: str, namespace: str, query: dict[str, str]) -> Obj:
        select = _Selector(resource, namespace, query)
        limit = int(query.get("limit") or 0)
        token = query.get("continue", "")
        with self._cond:
            if token:
                rv, start = _decode_continue(token)
                if rv < self._compacted:
                    raise _APIError(status_body(
                        410, "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter, "
                        "or use the continue token in this response to retrieve the remainder "
                        "of the results. Continuing with the provided token results in an "
                        "inconsistent list - objects that were created, modified, or deleted "
                        "between the time the first chunk was returned and now may show up in "
                        "the list.",
                        metadata={"continue": _encode_continue(self._rv, start)},
                    ))
                state = self._state_at(resource, rv)
            else:
                rv, start = self._rv, ""
                wanted = query.get("resourceVersion", "")
                if query.get("resourceVersionMatch") == "Exact" and wanted:
                    rv = int(wanted)
                    if rv < self._compacted:
                        raise _APIError(status_body(
                            410, "Expired", "The resourceVersion for the provided list is too old."
                        ))
                    state = self._state_at(resource, rv)
                else:
                    state = self._objects[resource]
            keys = sorted(k for k, obj in state.items() if select(obj))
            keys = [k for k in keys if f"{k[0]}/{k[1]}" > start] if start else keys
            page = keys[:limit] if limit else keys
            items = []
            for key in page:
                item = copy.deepcopy(state[key])
                item.pop("kind", None)  # list items carry no TypeMeta
                item.pop("apiVersion", None)
                items.append(item)
            metadata: Obj = {"resourceVersion": str(rv)}
            if limit and len(keys) > limit:
                last = page[-1]
                metadata["continue"] = _encode_continue(rv, f"{last[0]}/{last[1]}")
                metadata["remainingItemCount"] = len(keys) - limit
        return {"kind": f"{_KINDS[resource]}List", "apiVersion": "v1", "metadata": metadata,
                "items": items}

    def get_object(self, resource: str, namespace: str, name: str) -> Obj:
        with self._cond:
            obj = self._objects[resource].get((namespace, name))
            if obj is None:
                raise _APIError(status_body(
                    404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource
                ))
            return copy.deepcopy(obj)

    def _watch_start(self, watch: _Watch, rv_param: str) -> tuple[list[Obj], Obj | None]:
        """Register the watch at its starting revision (in one step, so that no compaction
        falls between) and return the initial events, or an ERROR Status if expired."""
        select = watch.select
        with self._cond:
            if rv_param in ("", "0"):
                state = self._objects[select.resource]
                initial = [copy.deepcopy(state[k]) for k in sorted(state) if select(state[k])]
                watch.cursor = self._rv
                self._watches.append(watch)
                return initial, None
            try:
                rv = int(rv_param)
            except ValueError:
                raise _APIError(status_body(
                    400, "BadRequest", f'resourceVersion: Invalid value: "{rv_param}"'
                )) from None
            if rv < self._compacted:
                return [], status_body(
                    410, "Expired", f"too old resource version: {rv} ({self._compacted})"
                )
            watch.cursor = rv
            self._watches.append(watch)
            return [], None

    def _watch_events(
        self, watch: _Watch, bookmarks: bool, wake_at: float
    ) -> tuple[list[Obj], bool]:
        """Block until there is something to send or ``wake_at``; return the events after the
        watch's cursor (which moves to the current revision) and whether a bookmark was asked
        for."""
        select, cursor = watch.select, watch.cursor
        with self._cond:
            while True:
                pending = self._history and self._history[-1].rv > cursor
                wants_bookmark = bookmarks and watch.bookmarks_sent < self._bookmark_generation
                if pending or wants_bookmark or watch.drop or time.monotonic() >= wake_at:
                    break
                self._cond.wait(max(0.0, min(0.25, wake_at - time.monotonic())))
            events = []
            first = bisect.bisect_right(self._history, cursor, key=lambda e: e.rv)
            for event in self._history[first:]:
                if event.resource != select.resource:
                    continue
                translated = _translate(event, select)
                if translated is not None:
                    events.append(translated)
            if wants_bookmark:
                watch.bookmarks_sent = self._bookmark_generation
            watch.cursor = max(cursor, self._rv)
            return events, wants_bookmark

    def _unregister(self, watch: _Watch) -> None:
        with self._cond:
            with contextlib.suppress(ValueError):
                self._watches.remove(watch)


def _translate(event: _Event, select: _Selector) -> Obj | None:
    """An event as a selecting watch sees it: entering the selection is ADDED, leaving it is
    DELETED (carrying the new state), as kube-apiserver's watch cache does."""
    now, before = select(event.obj), select(event.prev)
    if event.type == "DELETED":
        kind = "DELETED" if before else None
    elif now and before:
        kind = "MODIFIED"
    elif now:
        kind = "ADDED"
    elif before:
        kind = "DELETED"
    else:
        kind = None
    return None if kind is None else {"type": kind, "object": event.obj}


def _pod_ready(pod: Obj) -> bool:
    for cond in pod["status"].get("conditions", []):
        if cond["type"] == "Ready":
            return bool(cond["status"] == "True")
    return False


def _set_pod_status(pod: Obj, *, phase: str, ip: str, ready: bool) -> None:
    ready = ready and phase == "Running"
    container = pod["spec"]["containers"][0]
    if phase == "Running":
        state: Obj = {"running": {"startedAt": _now()}}
    elif phase in ("Succeeded", "Failed"):
        state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                "reason": "Completed" if phase == "Succeeded" else "Error"}}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    flag = "True" if ready else "False"
    status: Obj = {
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
            {"type": "Initialized", "status": "True", "lastTransitionTime": _now()},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": _now()},
            {"type": "Ready", "status": flag, "lastTransitionTime": _now()},
        ],
        "containerStatuses": [{
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": ready,
            "started": phase == "Running",
            "restartCount": 0,
            "state": state,
        }],
        "qosClass": "Burstable",
        "startTime": _now(),
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
        status["hostIP"] = ip  # aws-node runs on the host network
        status["hostIPs"] = [{"ip": ip}]
    pod["status"] = status


# --- server-side printing (what `kubectl get` asks for) ---------------------------------------


def _wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def _column(name: str, description: str, priority: int = 0, fmt: str = "") -> Obj:
    return {"name": name, "type": "string", "format": fmt, "description": description,
            "priority": priority}


_POD_COLUMNS = [
    _column("Name", "Name must be unique within a namespace.", fmt="name"),
    _column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _column("Status", "The aggregate status of the containers in this pod."),
    _column("Restarts", "The number of times the containers in this pod have been restarted."),
    _column("Age", "CreationTimestamp is a timestamp representing the server time when this "
                   "object was created."),
    _column("IP", "IP address allocated to the pod.", 1),
    _column("Node", "Name of the Node this pod is scheduled on.", 1),
]
_NODE_COLUMNS = [
    _column("Name", "Name must be unique within a namespace.", fmt="name"),
    _column("Status", "The status of the node"),
    _column("Roles", "The roles of the node"),
    _column("Age", "CreationTimestamp is a timestamp representing the server time when this "
                   "object was created."),
    _column("Version", "Kubelet Version reported by the node."),
    _column("Internal-IP", "List of addresses reachable to the node.", 1),
]


def _age(obj: Obj) -> str:
    created = datetime.strptime(obj["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    seconds = int((datetime.now(UTC) - created.replace(tzinfo=UTC)).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _pod_cells(pod: Obj) -> list[Any]:
    statuses = pod["status"].get("containerStatuses", [])
    ready = sum(1 for c in statuses if c.get("ready"))
    reason = pod["status"].get("phase", "Unknown")
    for c in statuses:
        waiting = c.get("state", {}).get("waiting")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    return [pod["metadata"]["name"], f"{ready}/{len(pod['spec']['containers'])}", reason,
            str(restarts), _age(pod), pod["status"].get("podIP") or "<none>",
            pod["spec"].get("nodeName") or "<none>"]


def _node_cells(node: Obj) -> list[Any]:
    ready = any(c["type"] == "Ready" and c["status"] == "True"
                for c in node["status"].get("conditions", []))
    internal = [a["address"] for a in node["status"].get("addresses", [])
                if a["type"] == "InternalIP"]
    return [node["metadata"]["name"], "Ready" if ready else "NotReady", "<none>", _age(node),
            node["status"].get("nodeInfo", {}).get("kubeletVersion", ""),
            internal[0] if internal else "<none>"]


def _table(resource: str, items: list[Obj], metadata: Obj, include: str,
           columns: bool = True) -> Obj:
    """A ``meta.k8s.io/v1`` Table of the objects, as kube-apiserver prints them for kubectl."""
    rows = []
    for item in items:
        row: Obj = {"cells": _pod_cells(item) if resource == "pods" else _node_cells(item)}
        if include == "Object":
            row["object"] = {"kind": _KINDS[resource], "apiVersion": "v1", **{
                k: v for k, v in item.items() if k not in ("kind", "apiVersion")}}
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": item["metadata"]}
        rows.append(row)
    table: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
                  "rows": rows}
    if columns:
        table["columnDefinitions"] = _POD_COLUMNS if resource == "pods" else _NODE_COLUMNS
    return table


# --- leases -----------------------------------------------------------------------------------

LEASE_GROUP = "coordination.k8s.io"
LEASE_API_VERSION = f"{LEASE_GROUP}/v1"
_GROUPS = {"leases": LEASE_GROUP}
_LEASE_GROUP_INFO: Obj = {
    "name": LEASE_GROUP,
    "versions": [{"groupVersion": LEASE_API_VERSION, "version": "v1"}],
    "preferredVersion": {"groupVersion": LEASE_API_VERSION, "version": "v1"},
}
_LEASE_RESOURCE_LIST: Obj = {
    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": LEASE_API_VERSION,
    "resources": [{"name": "leases", "singularName": "lease", "namespaced": True, "kind": "Lease",
                   "verbs": ["create", "get", "update"]}],
}
#: metav1.MicroTime as the API server parses it (time.Parse with RFC3339Micro): exactly six
#: fraction digits, then Z or an offset.
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_LEASE_SPEC = ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime",
               "leaseTransitions", "strategy", "preferredHolder")


def _lease_not_found(name: str) -> _APIError:
    return _APIError(status_body(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found',
                                 name=name, group=LEASE_GROUP, kind="leases"))


def _lease_from_body(body: Any, namespace: str, url_name: str = "") -> Obj:
    """A Lease as the API server decodes and validates a request body (400 for what cannot be
    decoded, 422 Invalid for what fails validation); unknown fields are dropped."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
        raise _APIError(status_body(400, "BadRequest", "the body of the request was in an "
                                                       "unknown format"))
    if body.get("kind", "Lease") != "Lease" or body.get("apiVersion",
                                                        LEASE_API_VERSION) != LEASE_API_VERSION:
        raise _APIError(status_body(
            400, "BadRequest", f"Lease in version \"v1\" cannot be handled as a Lease: expected "
            f"{LEASE_API_VERSION}, Kind=Lease, got {body.get('apiVersion')}, "
            f"Kind={body.get('kind')}"))
    meta = body.get("metadata") or {}
    name = meta.get("name", "")
    if url_name and name != url_name:
        raise _APIError(status_body(
            400, "BadRequest",
            f"the name of the object ({name}) does not match the name on the URL ({url_name})"))
    if meta.get("namespace", namespace) != namespace:
        raise _APIError(status_body(400, "BadRequest", "the namespace of the provided object "
                                                       "does not match the namespace sent on the "
                                                       "request"))
    spec = {k: v for k, v in (body.get("spec") or {}).items() if k in _LEASE_SPEC}
    for key in ("acquireTime", "renewTime"):
        if spec.get(key) is not None:
            spec[key] = _micro_time(spec[key])
    causes = _lease_problems(name, spec)
    if causes:
        raise _APIError(status_body(
            422, "Invalid", f'Lease.coordination.k8s.io "{name}" is invalid: '
            + ", ".join(f"{c['field']}: {c['message']}" for c in causes),
            name=name, group=LEASE_GROUP, kind="Lease", causes=causes))
    kept = {k: meta[k] for k in ("labels", "annotations", "resourceVersion") if meta.get(k)}
    return {"kind": "Lease", "apiVersion": LEASE_API_VERSION,
            "metadata": {"name": name, "namespace": namespace, **kept}, "spec": spec}


def _micro_time(value: Any) -> str:
    if not isinstance(value, str) or not _MICRO_TIME.match(value):
        raise _APIError(status_body(
            400, "BadRequest", f'Lease in version "v1" cannot be handled as a Lease: parsing time '
            f'"{value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse'))
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease_problems(name: str, spec: Obj) -> list[Obj]:
    """The validation causes (field, message) of the API server's ValidateLease."""
    causes: list[Obj] = []

    def invalid(field: str, value: Any, message: str, reason: str = "FieldValueInvalid") -> None:
        causes.append({"reason": reason, "field": field,
                       "message": f"Invalid value: {json.dumps(value)}: {message}"})

    if not name:
        causes.append({"reason": "FieldValueRequired", "field": "metadata.name",
                       "message": "Required value: name or generateName is required"})
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0")
    return causes


# --- HTTP -------------------------------------------------------------------------------------

_NS_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
_NS_POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")
_POD_PROXY = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/proxy(/.*)?$")
_NODE = re.compile(r"^/api/v1/nodes/([^/]+)$")
#: SelfSubjectAccessReview: "may I?", answered from the same deny / permitted rules.
_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
_NS_LEASES = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases$")
_NS_LEASE = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases/([^/]+)$")


class _Handler(BaseHTTPRequestHandler):
    api: KubeAPIServer
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-test"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass  # tests read self.api.requests instead of stderr noise

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        record = RequestRecord("GET", parts.path, query, dict(self.headers.items()),
                               time.monotonic())
        with self.api._cond:
            self.api.requests.append(record)
        try:
            if self.api.before_request is not None:
                self.api.before_request(record)
            self.api._check_failing(record)
            self._route(parts.path, query)
        except _APIError as exc:
            self._send_json(exc.status["code"], exc.status)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _unsupported(self) -> None:
        self._send_json(405, status_body(405, "MethodNotAllowed",
                                         "the server does not allow this method on the requested "
                                         "resource"))

    do_PATCH = do_DELETE = _unsupported  # noqa: N815 - stdlib's names

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        self._write("POST")

    def do_PUT(self) -> None:  # noqa: N802 - stdlib's name
        self._write("PUT")

    def _write(self, method: str) -> None:
        """POST and PUT: Leases only (anything else is 405, as before Leases were served)."""
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        record = RequestRecord(method, parts.path, query, dict(self.headers.items()),
                               time.monotonic())
        with self.api._cond:
            self.api.requests.append(record)
        try:
            try:
                record.body = json.loads(raw) if raw else None
            except ValueError as exc:
                raise _APIError(status_body(400, "BadRequest", f"invalid body: {exc}")) from exc
            if self.api.before_request is not None:
                self.api.before_request(record)
            self.api._check_failing(record)
            if not self.api._authorized(self.headers.get("Authorization")):
                raise _APIError(status_body(401, "Unauthorized", "Unauthorized"))
            if method == "POST" and parts.path == _ACCESS_REVIEWS:
                self._send_json(201, self.api.access_review(record.body or {}))
            elif method == "POST" and (m := _NS_LEASES.match(parts.path)):
                self.api._check_fault("create", "leases", m.group(1))
                self._send_json(201, self.api.create_lease(m.group(1), record.body))
            elif method == "PUT" and (m := _NS_LEASE.match(parts.path)):
                self.api._check_fault("update", "leases", m.group(1))
                self._send_json(200, self.api.replace_lease(m.group(1), m.group(2), record.body))
            else:
                self._unsupported()
        except _APIError as exc:
            self._send_json(exc.status["code"], exc.status)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(self, path: str, query: dict[str, str]) -> None:
        if path in ("/version", "/version/"):  # the client's VersionApi asks with the slash
            self._send_json(200, self._version())
            return
        if not self.api._authorized(self.headers.get("Authorization")):
            raise _APIError(status_body(401, "Unauthorized", "Unauthorized"))
        watching = query.get("watch", "") in ("1", "true", "True")
        if path == "/api":
            self._send_json(200, {
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.api.port}"}
                ],
            })
        elif path == "/apis":
            self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": [_LEASE_GROUP_INFO]})
        elif path == f"/apis/{LEASE_GROUP}":
            self._send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **_LEASE_GROUP_INFO})
        elif path == f"/apis/{LEASE_API_VERSION}":
            self._send_json(200, _LEASE_RESOURCE_LIST)
        elif path == "/api/v1":
            self._send_json(200, _RESOURCE_LIST)
        elif m := _NS_PODS.match(path):
            self._collection("pods", m.group(1), query, watching)
        elif path == "/api/v1/pods":
            self._collection("pods", "", query, watching)
        elif path == "/api/v1/nodes":
            self._collection("nodes", "", query, watching)
        elif path == "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs":
            # Custom networking's ENIConfigs: a plain list; 404 while the CRD is "not installed".
            if self.api.eniconfigs is None:
                raise _APIError(status_body(404, "NotFound", "the server could not find the "
                                                              "requested resource"))
            self._send_json(200, {"apiVersion": "crd.k8s.amazonaws.com/v1alpha1",
                                  "kind": "ENIConfigList", "metadata": {"resourceVersion": "1"},
                                  "items": self.api.eniconfigs})
        elif m := _POD_PROXY.match(path):
            self._proxy(m.group(1), m.group(2), m.group(3) or "/", query)
        elif m := _NS_POD.match(path):
            self.api._check_fault("get", "pods", m.group(1))
            self._send_json(200, self.api.get_object("pods", m.group(1), m.group(2)))
        elif m := _NODE.match(path):
            self.api._check_fault("get", "nodes", "")
            self._send_json(200, self.api.get_object("nodes", "", m.group(1)))
        elif m := _NS_LEASE.match(path):
            self.api._check_fault("get", "leases", m.group(1))
            try:
                self._send_json(200, self.api.lease(m.group(2), m.group(1)))
            except KeyError:
                raise _lease_not_found(m.group(2)) from None
        else:
            raise _APIError(status_body(404, "NotFound", "the server could not find the "
                                                         "requested resource"))

    def _version(self) -> Obj:
        major, minor = self.api.version.lstrip("v").split(".")[:2]
        return {"major": major, "minor": minor, "gitVersion": self.api.version,
                "gitCommit": "0" * 40, "gitTreeState": "clean",
                "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.22.8", "compiler": "gc",
                "platform": "linux/amd64"}

    def _collection(self, resource: str, namespace: str, query: dict[str, str],
                    watching: bool) -> None:
        verb = "watch" if watching else "list"
        self.api._check_fault(verb, resource, namespace)
        table = _wants_table(self.headers.get("Accept", ""))
        include = query.get("includeObject", "Metadata")
        if watching:
            self._watch(resource, namespace, query, table=table, include=include)
            return
        listing = self.api.list_objects(resource, namespace, query)
        if table:
            listing = _table(resource, listing["items"], listing["metadata"], include)
        self._send_json(200, listing)

    # --- watch ----------------------------------------------------------------------------------

    def _watch(self, resource: str, namespace: str, query: dict[str, str], *, table: bool,
               include: str) -> None:
        select = _Selector(resource, namespace, query)
        bookmarks = query.get("allowWatchBookmarks", "") in ("1", "true", "True")
        try:  # an integer, as in the API (int64); "1.5" is refused there too
            timeout = float(int(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT))
        except ValueError:
            raise _APIError(status_body(400, "BadRequest", "timeoutSeconds: Invalid value: "
                                        f'"{query["timeoutSeconds"]}"')) from None
        watch = _Watch(select, table=table, include=include)
        initial, expired = self.api._watch_start(watch, query.get("resourceVersion", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if expired is not None:
            # Past authn/authz the real server answers 200 and reports the error as one event.
            self._event({"type": "ERROR", "object": expired})
            self._end_stream()
            return
        try:
            for obj in initial:
                self._event({"type": "ADDED", "object": obj}, watch)
            self._stream(watch, bookmarks, timeout)
        except OSError:
            pass  # the client went away
        finally:
            self.api._unregister(watch)

    def _stream(self, watch: _Watch, bookmarks: bool, timeout: float) -> None:
        start = time.monotonic()
        deadline = start + timeout
        # The cacher sends a bookmark shortly before the watch's deadline, so that a client
        # restarting the watch resumes from a fresh revision.
        final_bookmark = deadline - min(2.0, timeout / 4)
        next_bookmark = start + self.api.bookmark_interval
        final_sent = False
        while True:
            wake = min(deadline, next_bookmark, final_bookmark if not final_sent else deadline,
                       time.monotonic() + 0.2)
            events, asked = self.api._watch_events(watch, bookmarks, wake)
            for event in events:
                self._event(event, watch)
            now = time.monotonic()
            if self._client_gone():
                return  # as the real server cancels a watch whose client disconnected
            if watch.drop == "abort":
                self._abort()
                return
            if watch.drop == "end" or now >= deadline:
                self._end_stream()
                return
            due = now >= next_bookmark or (not final_sent and now >= final_bookmark)
            if bookmarks and (asked or due):
                self._event({"type": "BOOKMARK", "object": {
                    "kind": _KINDS[watch.resource], "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(watch.cursor)},
                }})
            if now >= next_bookmark:
                next_bookmark = now + self.api.bookmark_interval
            if now >= final_bookmark:
                final_sent = True

    def _event(self, event: Obj, watch: _Watch | None = None) -> None:
        if watch is not None and watch.table and event["type"] in ("ADDED", "MODIFIED",
                                                                    "DELETED"):
            # Server-side printing: each object becomes a one-row Table; only the first event
            # carries the column definitions.
            obj = event["object"]
            table = _table(watch.resource, [obj], {"resourceVersion": obj["metadata"][
                "resourceVersion"]}, watch.include, columns=not watch.columns_sent)
            watch.columns_sent = True
            event = {"type": event["type"], "object": table}
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        if self.api.split_events and len(data) > 2:
            cut = len(data) // 2
            self._chunk(data[:cut])
            self._chunk(data[cut:])
        else:
            self._chunk(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """A watch client sends nothing after its request, so a readable socket means it
        closed (EOF, or TLS's close_notify before it)."""
        try:
            readable, _, _ = _select.select([self.connection], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _end_stream(self) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _abort(self) -> None:
        """Close the connection in the middle of the chunked body."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # --- pods/proxy -----------------------------------------------------------------------------

    def _proxy(self, namespace: str, spec: str, rest: str, query: dict[str, str]) -> None:
        # fail_next("proxy") faults; RBAC sees a proxied GET as "get" on pods/proxy.
        self.api._check_fault("proxy", "pods/proxy", namespace, rbac_verb="get")
        # The official client sends "name:port" percent-encoded ("name%3A61678"), as it may.
        scheme, name, port = _split_scheme_name_port(unquote(spec))
        pod = self.api.get_object("pods", namespace, name)
        ip = pod["status"].get("podIP", "")
        if not ip:
            raise _APIError(status_body(400, "BadRequest", "address not allowed"))
        if not port:
            port = str(pod["spec"]["containers"][0]["ports"][0]["containerPort"])
        if scheme == "https" or not ipaddress.ip_address(ip).is_loopback:
            # Refuse rather than reach anything off this machine (or speak TLS to a test pod).
            raise _APIError(status_body(503, "ServiceUnavailable",
                                        f"test API server proxies only http to loopback, "
                                        f"not {scheme}://{ip}:{port}"))
        target = rest + ("?" + urlencode(query) if query else "")
        conn = http.client.HTTPConnection(ip, int(port), timeout=10)
        try:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("accept", "accept-encoding", "user-agent")}
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except OSError as exc:
            raise _APIError(status_body(
                503, "ServiceUnavailable",
                f"error trying to reach service: dial tcp {ip}:{port}: {exc}",
            )) from exc
        finally:
            conn.close()
        self.send_response(resp.status)
        for name_, value in resp.getheaders():
            if name_.lower() in ("content-type", "content-encoding"):
                self.send_header(name_, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.api.proxied_requests += 1
        self.api.proxied_bytes += len(body)

    def _send_json(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)


def _split_scheme_name_port(spec: str) -> tuple[str, str, str]:
    """``name``, ``name:port`` or ``scheme:name:port`` (scheme http or https), as the API parses
    the pods/proxy name."""
    parts = spec.split(":")
    if len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, (name, port) = "", parts
    elif len(parts) == 3 and parts[0] in ("http", "https"):
        scheme, name, port = parts
    else:
        raise _APIError(status_body(400, "BadRequest", f"invalid request {spec!r}"))
    if not name or (port and not port.isdigit()):
        raise _APIError(status_body(400, "BadRequest", f"invalid request {spec!r}"))
    return scheme or "http", name, port


_RESOURCE_LIST: Obj = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
         "verbs": ["get", "list", "watch"], "shortNames": ["no"]},
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "list", "watch"], "shortNames": ["po"], "categories": ["all"]},
        {"name": "pods/proxy", "singularName": "", "namespaced": True,
         "kind": "PodProxyOptions", "verbs": ["create", "delete", "get", "patch", "update"]},
    ],
}


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost (files: cert, key, CA)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("kubernetes-test-ca"))
        .issuer_name(name("kubernetes-test-ca")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("kube-apiserver"))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    ca_file = directory / "ca.crt"
    cert_file.write_bytes(cert.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    return cert_file, key_file, ca_file


class MetricsEndpoint(BackgroundHTTPServer):
    """A stand-in aws-node metrics endpoint on a loopback address (a test pod's IP): answers
    every GET with a one-line page that echoes the path it was asked for."""

    def __init__(self, host: str = "127.0.0.31") -> None:
        super().__init__(_MetricsHandler, host, name="metrics-endpoint")


class _MetricsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        body = f"awscni_eni_max 3\n# path {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass
