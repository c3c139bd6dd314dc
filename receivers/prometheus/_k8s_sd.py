"""Kubernetes discovery of the aws-node pods the ``prometheus`` receiver scrapes.

The target set is kept current the way client-go's informers keep theirs: a reflector
(``_reflector.py``: list, then watch, list again on 410, back off on failures) per resource feeds
a store (``_k8s_stores.py``): the pods, and the nodes when ``node_metadata`` is on.

The ``kubernetes`` client is synchronous, so each reflector runs in its own daemon thread;
:meth:`KubernetesDiscovery.targets` returns a cached list rebuilt only when a store changed.
The client is imported and configured in :meth:`KubernetesDiscovery.start`
(``_kubeclient.py``), never at import or construction, so ``cni-pipeline validate`` makes no
network call (and does not pay the client's import time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pipeline import Target, register_secret

from ._k8s_stores import NodeAttributes, NodeStore, Pod, PodStore
from ._kubeclient import (
    SERVICE_ACCOUNT_DIR,
    DiscoveryError,
    api_server_ssl_context,
    load_client_configuration,
)
from ._reflector import Reflector, Store
from .config import KubernetesSDConfig

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, Configuration

#: How long shutdown waits for a list/watch thread to notice it is stopped.
JOIN_TIMEOUT = 5.0


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address (EKS runs IPv6 clusters)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        self._pods = PodStore(config.require_ready, logger, self._forget_targets)
        self._nodes = NodeStore(self._forget_targets)
        #: The targets of the stores' content, built when first asked after a change.
        self._targets: list[Target] | None = None
        self._stop = threading.Event()
        self._reflectors: list[Reflector] = []
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
        self._reflectors.append(self._reflector("pods", self._pod_lister(api), self._pods))
        if self._config.node_metadata:
            self._reflectors.append(self._reflector("nodes", api.list_node, self._nodes))
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
        register_secret(*_tokens_of(cfg))
        if self._api_host.startswith("https") and not cfg.verify_ssl:
            self._log.warning("%s: insecure-skip-tls-verify: the API server's certificate is not "
                              "verified (anyone on the path can read the token)", self.source)
        if self._config.mode == "apiserver_proxy":
            try:
                self._ssl = api_server_ssl_context(cfg)
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

    def _reflector(self, resource: str, call: Callable[..., Any], store: Store) -> Reflector:
        where = self._config.namespace or "all namespaces"
        what = f"kubernetes {resource}" + (f" in {where}" if resource == "pods" else "")
        return Reflector(resource, what, call, store, self._config, self._log, self._stop,
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
                nodes = self._nodes.attributes_by_node() if self._config.node_metadata else {}
                self._targets = sorted((self._target(p, nodes) for p in self._pods.pods()),
                                       key=lambda t: t.key)
            return list(self._targets)

    def _forget_targets(self) -> None:
        """A store changed (called from a reflector thread): rebuild the targets when next asked."""
        with self._lock:
            self._targets = None

    def _target(self, pod: Pod, nodes: Mapping[str, NodeAttributes]) -> Target:
        port = self._config.port
        address = join_host_port(pod.ip, port)
        if self._config.mode == "apiserver_proxy":
            name = f"https:{pod.name}:{port}" if self._config.scheme == "https" else (
                f"{pod.name}:{port}")
            url = (f"{self._api_host}/api/v1/namespaces/{pod.namespace}/pods/{name}/proxy"
                   f"{self._config.path}")
        else:
            url = f"{self._config.scheme}://{address}{self._config.path}"
        attributes = nodes.get(pod.node, ())
        return Target(address=address, url=url, pod=pod.name, node=pod.node,
                      namespace=pod.namespace, attributes=attributes, uid=pod.uid)

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
        if headers:  # a refreshed token too: never written out, even if a server echoes it
            register_secret(headers["Authorization"].partition(" ")[2])
        return self._ssl, headers

    @property
    def resource_version(self) -> str:
        """The pods' resourceVersion the watch resumes from (advanced by events and bookmarks)."""
        return self._reflectors[0].resource_version if self._reflectors else ""

    @property
    def reconnects(self) -> int:
        """Failed list/watch requests retried after a backoff, all resources."""
        return sum(r.reconnects for r in self._reflectors)


def _tokens_of(cfg: Any) -> list[str]:
    """The bearer tokens a client configuration holds (``api_key``: ``{"authorization": "Bearer
    X"}``), to register as secrets."""
    keys = getattr(cfg, "api_key", None) or {}
    return [str(value).partition(" ")[2] or str(value) for value in keys.values() if value]
