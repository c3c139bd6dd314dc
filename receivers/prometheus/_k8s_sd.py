"""Kubernetes discovery of the aws-node pods the ``prometheus`` receiver scrapes.

The target set is kept current the way client-go's Reflector keeps an informer's store: one
list, then a watch from the list's resourceVersion with bookmarks, so a cycle never re-lists.

- A watch that ends cleanly (the server's ``timeoutSeconds``) is reopened at once from the last
  resourceVersion seen; bookmarks advance that version while nothing we select changes, so a
  reopened watch does not fall out of the server's history window.
- ``410 Gone`` (an ERROR event with a Status of code 410 in the stream, or the HTTP status of a
  request) means that version is no longer served: list again, then watch from the new version.
  A paged list whose continue token expired between two pages starts over unpaged, as client-go's
  pager does.
- Any other failure (a dropped stream, a refused connection, a 5xx, a 403) is retried with
  exponential backoff and logged at warning; the target set keeps its last known content
  meanwhile, which is still the best knowledge of the cluster there is.

The ``kubernetes`` client is synchronous, so each list/watch loop runs in its own daemon thread
(pods, and nodes when ``node_metadata`` is on); the target map lives under a lock and
:meth:`KubernetesDiscovery.targets` returns a cached list rebuilt only when the set changed.
The client is imported and configured in :meth:`KubernetesDiscovery.start`, never at import or
construction, so ``cni-pipeline validate`` makes no network call (and does not pay the client's
import time).

We call the generated API methods with ``_preload_content=False`` and read the JSON ourselves
instead of using ``kubernetes.watch.Watch``: its handling of BOOKMARK and ERROR events has
changed between the client releases we accept (bookmarks' resourceVersion used to be ignored;
a 410 is first retried with the same, expired version), and it builds a typed model for every
event. Reading the stream ourselves keeps the whole list/watch/410 protocol in one place, as
client-go's Reflector does. Raw JSON also skips building model objects for every pod of a list,
of which we need six fields: ``bench/bench_k8s_sd.py`` decodes a list of 2000 aws-node pods
(3.2 MB) three to four times faster this way (0.3-0.5 s against 1.3-2.2 s as a typed
``V1PodList`` on a shared 2-core machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pipeline import ComponentError, Duration, Target

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, Configuration

DEFAULT_NAMESPACE = "kube-system"
DEFAULT_LABEL_SELECTOR = "k8s-app=aws-node"
DEFAULT_PORT = 61678
DEFAULT_PATH = "/metrics"
#: Server-side watch timeout; each watch asks for a random value between this and twice it,
#: as client-go does, so that many replicas do not reconnect in step.
DEFAULT_WATCH_TIMEOUT = Duration(300.0)
DEFAULT_REQUEST_TIMEOUT = Duration(30.0)
DEFAULT_RECONNECT_BACKOFF = Duration(0.5)
DEFAULT_RECONNECT_BACKOFF_MAX = Duration(30.0)
#: Pods per list page; 0 lists in one response.
DEFAULT_PAGE_SIZE = 500
#: Where the kubelet mounts the pod's service account (token, ca.crt, namespace).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: A watch that ends cleanly this soon without any event counts as a failure for backoff, so a
#: server (or proxy) that closes every watch at once is not hammered in a tight loop.
SHORT_WATCH = 1.0
#: How long shutdown waits for a list/watch thread to notice it is stopped.
JOIN_TIMEOUT = 5.0

MODES = ("direct", "apiserver_proxy")
SCHEMES = ("http", "https")

#: Node labels that give a target's attributes, first match wins: the well-known labels, then
#: their deprecated beta names, then what eksctl and Karpenter set on nodes outside EKS managed
#: node groups.
NODE_ATTRIBUTE_LABELS: dict[str, tuple[str, ...]] = {
    "zone": ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"),
    "instance_type": ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"),
    "nodegroup": (
        "eks.amazonaws.com/nodegroup", "alpha.eksctl.io/nodegroup-name", "karpenter.sh/nodepool",
    ),
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = r"(?:[A-Za-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_LABEL_VALUE = r"(?:[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?"
_SELECTOR_REQUIREMENTS = (
    re.compile(rf"^\s*{_LABEL_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE}\s*$"),
    re.compile(rf"^\s*{_LABEL_KEY}\s+(in|notin)\s+\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\)\s*$"),
    re.compile(rf"^\s*!?\s*{_LABEL_KEY}\s*$"),
)


class DiscoveryError(ComponentError):
    """Discovery cannot start: no usable Kubernetes configuration (the message names the file)."""


@dataclass(frozen=True, kw_only=True)
class KubernetesSDConfig:
    """``receivers.prometheus.kubernetes_sd``: which pods to scrape and how to reach them.

    ``namespace`` empty means all namespaces. ``mode: direct`` scrapes
    ``SCHEME://POD_IP:PORT/PATH``; ``apiserver_proxy`` goes through the API server's
    ``pods/proxy`` subresource, as the Go cni-metrics-helper does, for clusters whose security
    groups block node ports from pods (it costs API server load, so ``direct`` is the default).
    Credentials: an explicit ``kubeconfig`` (with ``context``) wins; else the in-cluster service
    account; else ``KUBECONFIG`` / ``~/.kube/config``. ``node_metadata`` watches nodes too, so
    each target carries its node's zone, instance type and node group. ``require_ready`` also
    drops pods whose Ready condition is false (by default an unready aws-node is still scraped:
    its metrics are what explains why it is unready).
    """

    namespace: str = DEFAULT_NAMESPACE
    label_selector: str = DEFAULT_LABEL_SELECTOR
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    mode: Literal["direct", "apiserver_proxy"] = "direct"
    kubeconfig: str = ""
    context: str = ""
    node_metadata: bool = False
    scheme: Literal["http", "https"] = "http"
    require_ready: bool = False
    page_size: int = DEFAULT_PAGE_SIZE
    watch_timeout: Duration = DEFAULT_WATCH_TIMEOUT
    request_timeout: Duration = DEFAULT_REQUEST_TIMEOUT
    reconnect_backoff: Duration = DEFAULT_RECONNECT_BACKOFF
    reconnect_backoff_max: Duration = DEFAULT_RECONNECT_BACKOFF_MAX

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.namespace and not _DNS_LABEL.match(self.namespace):
            yield "namespace", f'"{self.namespace}" is not a valid namespace name'
        problem = label_selector_problem(self.label_selector)
        if problem:
            yield "label_selector", problem
        if not 1 <= self.port <= 65535:
            yield "port", f"must be between 1 and 65535, not {self.port}"
        if not self.path.startswith("/"):
            yield "path", f'must start with "/", not "{self.path}"'
        if self.mode not in MODES:
            yield "mode", f'must be "direct" or "apiserver_proxy", not "{self.mode}"'
        if self.scheme not in SCHEMES:
            yield "scheme", f'must be "http" or "https", not "{self.scheme}"'
        if self.page_size < 0:
            yield "page_size", "must not be negative (0 lists in one response)"
        if self.watch_timeout < 1:
            yield "watch_timeout", "must be at least 1s"
        if self.request_timeout <= 0:
            yield "request_timeout", "must be positive"
        if self.reconnect_backoff <= 0:
            yield "reconnect_backoff", "must be positive"
        elif self.reconnect_backoff_max < self.reconnect_backoff:
            yield ("reconnect_backoff_max",
                   f"({self.reconnect_backoff_max}) must be greater or equal to "
                   f"reconnect_backoff ({self.reconnect_backoff})")


def label_selector_problem(selector: str) -> str:
    """Why ``selector`` is not a label selector the API server accepts, or ``""``."""
    depth = 0
    requirement: list[str] = []
    requirements: list[str] = []
    for ch in selector:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            requirements.append("".join(requirement))
            requirement = []
        else:
            requirement.append(ch)
    requirements.append("".join(requirement))
    for req in requirements:
        if not req.strip():
            if selector.strip():
                return f'"{selector}" has an empty requirement'
            continue
        if not any(p.match(req) for p in _SELECTOR_REQUIREMENTS):
            return f'"{req.strip()}" is not a valid label selector requirement'
    return ""


# --- pods and nodes as discovery needs them ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pod:
    namespace: str
    name: str
    uid: str
    node: str
    ip: str


def _scrapeable_pod(obj: dict[str, Any], require_ready: bool) -> _Pod | None:
    """The pod if it can be scraped now: Running, with a pod IP, not being deleted (and Ready,
    when asked)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    ip = status.get("podIP") or ""
    if status.get("phase") != "Running" or not ip or meta.get("deletionTimestamp"):
        return None
    if require_ready and not any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    ):
        return None
    return _Pod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        node=(obj.get("spec") or {}).get("nodeName") or "",
        ip=ip,
    )


def node_attributes(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A node's target attributes from its labels, as sorted ``(key, value)`` pairs; a key whose
    labels are all absent is left out."""
    attributes = []
    for key, candidates in NODE_ATTRIBUTE_LABELS.items():
        for label in candidates:
            if labels.get(label):
                attributes.append((key, labels[label]))
                break
    return tuple(sorted(attributes))


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address (EKS runs IPv6 clusters)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- client configuration ---------------------------------------------------------------------


def load_client_configuration(
    config: KubernetesSDConfig,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> tuple[Configuration, str]:
    """The ``kubernetes`` client configuration and a phrase naming where it came from.

    An explicit ``kubeconfig`` wins; else the in-cluster service account (when
    ``KUBERNETES_SERVICE_HOST``/``_PORT`` are set and the token file exists, as client-go's
    loading rules have it); else ``KUBECONFIG`` (``:``-separated files) or ``~/.kube/config``.
    Reads files (and may run a kubeconfig's exec credential plugin); connects nowhere.
    Raises :class:`DiscoveryError` naming the file when it is missing or bad.
    """
    from kubernetes.client import Configuration
    from kubernetes.config import incluster_config

    env = os.environ if environ is None else environ
    cfg = Configuration()
    if config.kubeconfig:
        path = os.path.expanduser(config.kubeconfig)
        if not os.path.isfile(path):
            raise DiscoveryError(f"kubeconfig {path}: no such file")
        _load_kubeconfig(path, path, config.context, cfg)
        return cfg, f"kubeconfig {path}"
    token_file = os.path.join(service_account_dir, "token")
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT") and (
        os.path.isfile(token_file)
    ):
        loader = incluster_config.InClusterConfigLoader(
            token_filename=token_file,
            cert_filename=os.path.join(service_account_dir, "ca.crt"),
            environ=env,
        )
        try:
            loader.load_and_set(cfg)
        except Exception as exc:  # ConfigException, OSError: name the service account files
            raise DiscoveryError(f"in-cluster config from {service_account_dir}: {exc}") from exc
        return cfg, f"in-cluster service account ({service_account_dir})"
    paths = env.get("KUBECONFIG") or "~/.kube/config"
    existing = [os.path.expanduser(p) for p in paths.split(os.pathsep) if p]
    existing = [p for p in existing if os.path.isfile(p)]
    if not existing:
        where = f"KUBECONFIG={paths}" if env.get("KUBECONFIG") else "~/.kube/config"
        raise DiscoveryError(
            f"no Kubernetes configuration: not in a cluster (KUBERNETES_SERVICE_HOST unset or no "
            f"token in {service_account_dir}) and no kubeconfig file at {where}; "
            "set kubernetes_sd.kubeconfig or KUBECONFIG"
        )
    shown = os.pathsep.join(existing)
    _load_kubeconfig(os.pathsep.join(existing), shown, config.context, cfg)
    return cfg, f"kubeconfig {shown}"


def _load_kubeconfig(paths: str, shown: str, context: str, cfg: Configuration) -> None:
    from kubernetes.config import kube_config

    unset = cfg.host  # the client's placeholder until a cluster's server is loaded
    try:
        # persist_config=False: never write refreshed credentials back into the user's file.
        kube_config.load_kube_config(
            config_file=paths, context=context or None, client_configuration=cfg,
            persist_config=False,
        )
    except Exception as exc:  # ConfigException, yaml errors, KeyError/TypeError on odd shapes
        raise DiscoveryError(f"kubeconfig {shown}: {type(exc).__name__}: {exc}") from exc
    if not cfg.host or cfg.host == unset:
        raise DiscoveryError(f"kubeconfig {shown}: the cluster has no server address")


def _ssl_context(cfg: Configuration) -> ssl.SSLContext | None:
    """TLS for requests that go to the API server the way the client's own do: its CA (or the
    system's), its client certificate, and no verification if the kubeconfig says
    ``insecure-skip-tls-verify``. ``None`` for a plain-HTTP server (e.g. ``kubectl proxy``)."""
    if not str(cfg.host).startswith("https"):
        return None
    if cfg.verify_ssl:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return ctx


# --- the list/watch loop ----------------------------------------------------------------------


class _Expired(Exception):
    """The resourceVersion we hold is no longer served (410): list again."""


class _WatchError(Exception):
    """An ERROR event other than 410, carrying the Status."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.code = status.get("code")
        super().__init__(
            f"watch error {status.get('code')} {status.get('reason', '')}: "
            f"{status.get('message', '')}"
        )


class _Backoff:
    """Exponential backoff: ``initial * 2**n`` capped at ``maximum``, plus up to 25% jitter so
    replicas that lost the API server together do not come back in step."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._initial = initial
        self._maximum = maximum
        self._attempt = 0

    def next(self) -> float:
        delay = min(self._maximum, self._initial * 2.0 ** min(self._attempt, 30))
        self._attempt += 1
        return delay + random.uniform(0, delay / 4)

    def reset(self) -> None:
        self._attempt = 0


class _Store(Protocol):
    """What a reflector feeds: the full set after a list, then one change per watch event."""

    def replace(self, items: list[dict[str, Any]]) -> None: ...

    def apply(self, kind: str, obj: dict[str, Any]) -> None: ...


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed request: the Status message of an API error, else the
    exception (urllib3's MaxRetryError nests the socket error; show the innermost)."""
    if isinstance(exc, _Expired | _WatchError):
        return str(exc)
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    if isinstance(status, int) and status:
        message = ""
        if body:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                message = json.loads(body).get("message", "")
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}: {message or body or ''}".strip()
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return f"{type(exc).__name__}: {exc}"


class _Reflector:
    """Keeps one resource's store current: list, then watch from the list's resourceVersion.

    ``list_call`` is a generated ``CoreV1Api`` list method with its namespace and selector bound.
    Runs in its own thread (:meth:`run`) until ``stop`` is set; :meth:`interrupt` cuts the
    request in flight so shutdown does not wait out a quiet watch.
    """

    def __init__(
        self,
        resource: str,
        what: str,
        list_call: Callable[..., Any],
        store: _Store,
        config: KubernetesSDConfig,
        logger: logging.LoggerAdapter[logging.Logger],
        stop: threading.Event,
        on_synced: Callable[[], None],
    ) -> None:
        self.resource = resource
        self.what = what
        self._list_call = list_call
        self._store = store
        self._config = config
        self._log = logger
        self._stop = stop
        self._on_synced = on_synced
        self._lock = threading.Lock()
        self._response: Any = None
        self.resource_version = ""
        self.synced = False
        self.lists = 0
        self.watches = 0
        self.events = 0
        self.reconnects = 0

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = _Backoff(self._config.reconnect_backoff, self._config.reconnect_backoff_max)
        need_list = True
        expired_in_row = 0
        while not self._stop.is_set():
            seen = self.events
            try:
                if need_list:
                    self._list()
                    need_list = False
                started = time.monotonic()
                self._watch()
                if self.events == seen and time.monotonic() - started < SHORT_WATCH:
                    raise ConnectionError("watch closed at once without an event")
                self._log.debug("%s: watch ended; resuming from %s", self.what,
                                self.resource_version)
                backoff.reset()
                expired_in_row = 0
            except Exception as exc:
                if self._stop.is_set():
                    break
                if self.events != seen:
                    backoff.reset()  # the watch worked for a while before it failed
                if isinstance(exc, _Expired) or _is_gone(exc):
                    need_list = True
                    expired_in_row = 0 if self.events != seen else expired_in_row + 1
                    self._log.info("%s: %s; listing again", self.what, describe_error(exc))
                    if expired_in_row <= 1:
                        continue  # the usual case: list again at once
                delay = backoff.next()
                self.reconnects += 1
                self._log.warning(
                    "%s: %s; retrying in %.1fs", self.what, describe_error(exc), delay
                )
                self._stop.wait(delay)

    def _list(self) -> None:
        """List every page; a continue token that expired between pages restarts the list
        without paging (a consistent snapshot matters more than paging)."""
        items: list[dict[str, Any]] = []
        limit = self._config.page_size
        token = ""
        while True:
            kwargs: dict[str, Any] = {}
            if limit:
                kwargs["limit"] = limit
            if token:
                kwargs["_continue"] = token
            try:
                body = self._request(kwargs)
            except Exception as exc:
                if token and _is_gone(exc):
                    self._log.info("%s: list page expired; listing again without paging",
                                   self.what)
                    items, limit, token = [], 0, ""
                    continue
                raise
            items.extend(body.get("items") or ())
            metadata = body.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                break
        self._store.replace(items)
        self.resource_version = str(metadata.get("resourceVersion") or "")
        self.lists += 1
        if not self.synced:
            self.synced = True
            self._on_synced()

    def _request(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        timeout = float(self._config.request_timeout)
        resp = self._open(_request_timeout=(timeout, timeout), **kwargs)
        try:
            data = resp.data
        finally:
            self._release(resp)
        body: dict[str, Any] = json.loads(data)
        return body

    def _watch(self) -> None:
        """Watch from ``resource_version`` until the stream ends."""
        timeout = int(self._config.watch_timeout * random.uniform(1.0, 2.0))
        read_timeout = timeout + float(self._config.request_timeout)
        resp = self._open(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _request_timeout=(float(self._config.request_timeout), read_timeout),
        )
        self.watches += 1
        try:
            for line in _lines(resp):
                self._on_event(json.loads(line))
        finally:
            self._release(resp)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired(f"410 {obj.get('reason', 'Gone')}: "
                               f"{obj.get('message') or 'resourceVersion expired'}")
            raise _WatchError(obj)
        self.events += 1
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._store.apply(kind, obj)
        elif kind != "BOOKMARK":
            self._log.debug("%s: ignoring watch event of type %r", self.what, kind)
            return
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)

    # --- requests that shutdown can cut ---------------------------------------------------------

    def _open(self, **kwargs: Any) -> Any:
        resp = self._list_call(_preload_content=False, **kwargs)
        with self._lock:
            self._response = resp
        if self._stop.is_set():  # shutdown came between our check and the request
            self._release(resp)
            raise ConnectionAbortedError("discovery is shutting down")
        return resp

    def _release(self, resp: Any) -> None:
        """Done with a response. One read to its end has already gone back to the pool; one we
        stopped reading (an ERROR event, a bad line) must be closed, or the next request on
        that connection would read the rest of this one."""
        with self._lock:
            if self._response is resp:
                self._response = None
        with contextlib.suppress(Exception):
            resp.close()
        with contextlib.suppress(Exception):
            resp.release_conn()

    def interrupt(self) -> None:
        """Wake a thread blocked reading the response in flight (from another thread)."""
        with self._lock:
            resp = self._response
        if resp is None:
            return
        with contextlib.suppress(Exception):
            resp.shutdown()  # urllib3 >= 2.3: shuts the socket's read side down
        with contextlib.suppress(Exception):
            resp.close()


def _is_gone(exc: BaseException) -> bool:
    return getattr(exc, "status", None) == 410


def _lines(resp: Any) -> Iterator[bytes]:
    """The lines of a chunked watch body as they arrive; an event may span chunks."""
    pending = bytearray()
    for chunk in resp.stream(amt=None, decode_content=True):
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line = bytes(pending[:end])
            del pending[: end + 1]
            if line.strip():
                yield line
    if pending.strip():
        yield bytes(pending)


# --- discovery --------------------------------------------------------------------------------


class _PodStore:
    def __init__(self, discovery: KubernetesDiscovery) -> None:
        self._d = discovery

    def replace(self, items: list[dict[str, Any]]) -> None:
        self._d._replace_pods(items)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        self._d._apply_pod(kind, obj)


class _NodeStore:
    def __init__(self, discovery: KubernetesDiscovery) -> None:
        self._d = discovery

    def replace(self, items: list[dict[str, Any]]) -> None:
        self._d._replace_nodes(items)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        self._d._apply_node(kind, obj)


class KubernetesDiscovery:
    """The scrapeable aws-node pods, kept current by list + watch in background threads.

    ``start`` loads the client configuration (raising :class:`DiscoveryError` naming the
    kubeconfig when it is missing or bad), starts the threads and returns; ``wait_synced``
    waits for the first full listing; ``targets`` is cheap and may be called every cycle;
    ``request_options`` gives the scraper the TLS context and headers that proxy mode needs;
    ``shutdown`` stops the threads and is safe without ``start`` and twice.
    """

    def __init__(
        self,
        config: KubernetesSDConfig,
        logger: logging.LoggerAdapter[logging.Logger],
        *,
        environ: Mapping[str, str] | None = None,
        service_account_dir: str = SERVICE_ACCOUNT_DIR,
    ) -> None:
        self._config = config
        self._log = logger
        self._environ = environ
        self._service_account_dir = service_account_dir
        self._lock = threading.Lock()
        self._pods: dict[str, _Pod] = {}
        self._nodes: dict[str, tuple[tuple[str, str], ...]] = {}
        self._targets: list[Target] | None = None
        self._stop = threading.Event()
        self._reflectors: list[_Reflector] = []
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced_event: asyncio.Event | None = None
        self._client_config: Configuration | None = None
        self._api_client: ApiClient | None = None
        self._auth_lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None
        self._api_host = ""
        self._started = False
        self._closed = False
        self.source = ""

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._synced_event = asyncio.Event()
        # Off the event loop: the kubeconfig may run an exec credential plugin, and the first
        # import of the client's API module takes a second or more.
        api = await asyncio.to_thread(self._prepare)
        self._reflectors.append(self._reflector("pods", self._pod_lister(api), _PodStore(self)))
        if self._config.node_metadata:
            self._reflectors.append(self._reflector("nodes", api.list_node, _NodeStore(self)))
        self._log.info(
            "kubernetes discovery: %s pods in %s (%s) through %s, mode %s",
            self._config.label_selector or "all", self._config.namespace or "all namespaces",
            self._api_host, self.source, self._config.mode,
        )
        for reflector in self._reflectors:
            thread = threading.Thread(
                target=reflector.run, name=f"k8s-sd-{reflector.resource}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _prepare(self) -> Any:
        """Load the client configuration and build the API client (reads files, connects
        nowhere); returns the ``CoreV1Api``."""
        cfg, self.source = load_client_configuration(
            self._config, environ=self._environ, service_account_dir=self._service_account_dir
        )
        from kubernetes.client import ApiClient, CoreV1Api

        self._client_config = cfg
        self._api_host = str(cfg.host).rstrip("/")
        if self._config.mode == "apiserver_proxy":
            try:
                self._ssl = _ssl_context(cfg)
            except (OSError, ssl.SSLError) as exc:
                raise DiscoveryError(f"{self.source}: TLS settings: {exc}") from exc
            if getattr(cfg, "tls_server_name", None):
                self._log.warning("%s: tls-server-name is not applied to scrapes through the "
                                  "API server proxy; they verify the server's own name",
                                  self.source)
        self._api_client = ApiClient(cfg)
        return CoreV1Api(self._api_client)

    def _pod_lister(self, api: Any) -> Callable[..., Any]:
        selector = self._config.label_selector
        namespace = self._config.namespace

        def list_pods(**kwargs: Any) -> Any:
            if selector:
                kwargs["label_selector"] = selector
            if namespace:
                return api.list_namespaced_pod(namespace, **kwargs)
            return api.list_pod_for_all_namespaces(**kwargs)

        return list_pods

    def _reflector(self, resource: str, call: Callable[..., Any], store: _Store) -> _Reflector:
        where = self._config.namespace or "all namespaces"
        what = f"kubernetes {resource}" + (f" in {where}" if resource == "pods" else "")
        return _Reflector(resource, what, call, store, self._config, self._log, self._stop,
                          self._notify_synced)

    async def wait_synced(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first full listing; ``False`` if it did not
        come (or discovery was not started)."""
        if self.synced:
            return True
        if self._synced_event is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced_event.wait(), timeout)
        return self.synced

    @property
    def synced(self) -> bool:
        """The pods (and, with ``node_metadata``, the nodes) have been listed at least once."""
        return bool(self._reflectors) and all(r.synced for r in self._reflectors)

    def _notify_synced(self) -> None:
        if not self.synced or self._loop is None or self._synced_event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._synced_event.set)

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for reflector in self._reflectors:
            reflector.interrupt()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT)
            if thread.is_alive():
                self._log.warning("%s did not stop within %gs", thread.name, JOIN_TIMEOUT)
        if self._api_client is not None:
            with contextlib.suppress(Exception):
                self._api_client.close()

    # --- what the scraper asks ----------------------------------------------------------------

    def targets(self) -> list[Target]:
        """The scrapeable targets now, sorted by key (a copy of a list cached until the set
        changes)."""
        with self._lock:
            if self._targets is None:
                self._targets = sorted((self._target(p) for p in self._pods.values()),
                                       key=lambda t: t.key)
            return list(self._targets)

    def _target(self, pod: _Pod) -> Target:
        port = self._config.port
        address = join_host_port(pod.ip, port)
        if self._config.mode == "apiserver_proxy":
            name = f"https:{pod.name}:{port}" if self._config.scheme == "https" else (
                f"{pod.name}:{port}")
            url = (f"{self._api_host}/api/v1/namespaces/{pod.namespace}/pods/{name}/proxy"
                   f"{self._config.path}")
        else:
            url = f"{self._config.scheme}://{address}{self._config.path}"
        attributes = self._nodes.get(pod.node, ()) if self._config.node_metadata else ()
        return Target(address=address, url=url, pod=pod.name, node=pod.node,
                      namespace=pod.namespace, attributes=attributes)

    def request_options(self) -> tuple[ssl.SSLContext | None, dict[str, str]]:
        """TLS context and headers for scraping the targets' URLs.

        In proxy mode: the API server's TLS settings and its ``Authorization`` header, read
        fresh on every call (the client's refresh hook re-reads a rotated in-cluster token each
        minute, and re-runs a kubeconfig's exec plugin, e.g. ``aws eks get-token``, once its
        token is within five minutes of expiry: that one call then waits for the plugin). In
        direct mode: ``(None, {})``; pods are scraped with the receiver's own settings.
        """
        cfg = self._client_config
        if self._config.mode != "apiserver_proxy" or cfg is None:
            return None, {}
        with self._auth_lock:
            auth = cfg.auth_settings().get("BearerToken")
        headers = {"Authorization": str(auth["value"])} if auth and auth.get("value") else {}
        return self._ssl, headers

    @property
    def resource_version(self) -> str:
        """The pods' resourceVersion the watch resumes from (advanced by events and bookmarks)."""
        return self._reflectors[0].resource_version if self._reflectors else ""

    def stats(self) -> dict[str, int]:
        """Counts of lists, watches and failed requests per resource (for self-telemetry)."""
        out: dict[str, int] = {}
        for r in self._reflectors:
            out[f"{r.resource}_lists"] = r.lists
            out[f"{r.resource}_watches"] = r.watches
            out[f"{r.resource}_events"] = r.events
            out[f"{r.resource}_reconnects"] = r.reconnects
        return out

    # --- store updates (from the reflector threads) ---------------------------------------------

    def _replace_pods(self, items: list[dict[str, Any]]) -> None:
        pods = {}
        for obj in items:
            pod = _scrapeable_pod(obj, self._config.require_ready)
            if pod is not None:
                pods[f"{pod.namespace}/{pod.name}"] = pod
        with self._lock:
            old = self._pods
            self._pods = pods
            added = sum(1 for k, p in pods.items() if old.get(k, _NO_POD).uid != p.uid)
            removed = sum(1 for k, p in old.items() if pods.get(k, _NO_POD).uid != p.uid)
            changed = added or removed or old != pods
            if changed:
                self._targets = None
            total = len(pods)
        if added or removed:
            self._log_change(added, removed, total)

    def _apply_pod(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        pod = None if kind == "DELETED" else _scrapeable_pod(obj, self._config.require_ready)
        with self._lock:
            old = self._pods.get(key)
            if pod == old:
                return
            if pod is None:
                del self._pods[key]
            else:
                self._pods[key] = pod
            self._targets = None
            total = len(self._pods)
        replaced = old is not None and pod is not None and old.uid != pod.uid
        added = int(pod is not None and (old is None or replaced))
        removed = int(old is not None and (pod is None or replaced))
        if added or removed:
            self._log_change(added, removed, total)

    def _log_change(self, added: int, removed: int, total: int) -> None:
        self._log.info("kubernetes targets: %d added, %d removed, %d now", added, removed, total)

    def _replace_nodes(self, items: list[dict[str, Any]]) -> None:
        nodes = {}
        for obj in items:
            meta = obj.get("metadata") or {}
            nodes[meta.get("name", "")] = node_attributes(meta.get("labels") or {})
        with self._lock:
            if nodes != self._nodes:
                self._nodes = nodes
                self._targets = None

    def _apply_node(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        with self._lock:
            if kind == "DELETED":
                if self._nodes.pop(name, None) is not None:
                    self._targets = None
                return
            attributes = node_attributes(meta.get("labels") or {})
            if self._nodes.get(name) != attributes:
                self._nodes[name] = attributes
                self._targets = None


_NO_POD = _Pod(namespace="", name="", uid="", node="", ip="")
