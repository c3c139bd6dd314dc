"""Config of the ``prometheus`` receiver.

Defaults are the field defaults (named constants below, as the Collector's batch processor keeps
them). The engine's loader handles YAML, ``${env:}``, unknown keys, types, durations and sizes;
:meth:`PrometheusReceiverConfig.validate` checks only what crosses fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pipeline import ByteSize, ComponentConfig, Duration, Target
from pipeline.configtls import ClientTLSConfig

from ._http import USER_AGENT

DEFAULT_SCRAPE_INTERVAL = Duration(30.0)
DEFAULT_SCRAPE_TIMEOUT = Duration(10.0)
#: Scrapes in flight at once. aws-node pages are small, so a few hundred in flight cost little
#: memory and let a 5000-node cluster finish well inside the interval.
DEFAULT_MAX_CONCURRENCY = 512
DEFAULT_BODY_SIZE_LIMIT = ByteSize(10 * 1024 * 1024)
DEFAULT_PATH = "/metrics"

# kubernetes_sd
DEFAULT_NAMESPACE = "kube-system"
DEFAULT_LABEL_SELECTOR = "k8s-app=aws-node"
DEFAULT_PORT = 61678
#: Server-side watch timeout; each watch asks for a random value between this and twice it,
#: as client-go does, so that many replicas do not reconnect in step.
DEFAULT_WATCH_TIMEOUT = Duration(300.0)
DEFAULT_REQUEST_TIMEOUT = Duration(30.0)
DEFAULT_RECONNECT_BACKOFF = Duration(0.5)
DEFAULT_RECONNECT_BACKOFF_MAX = Duration(30.0)
#: Pods per list page; 0 lists in one response.
DEFAULT_PAGE_SIZE = 500
MODES = ("direct", "apiserver_proxy")
DEFAULT_PROXY_CONNECTIONS = 16
SCHEMES = ("http", "https")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = r"(?:[A-Za-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_LABEL_VALUE = r"(?:[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?"
_SELECTOR_REQUIREMENTS = (
    re.compile(rf"^\s*{_LABEL_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE}\s*$"),
    re.compile(rf"^\s*{_LABEL_KEY}\s+(in|notin)\s+\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\)\s*$"),
    re.compile(rf"^\s*!?\s*{_LABEL_KEY}\s*$"),
)


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
    #: ``apiserver_proxy`` only: scrapes in flight through the API server at once, so as many
    #: kept-alive TLS connections to it (client-go's HTTP/2 uses one; hundreds of HTTP/1.1
    #: connections would load the API server and pay a TLS handshake each).
    proxy_connections: int = DEFAULT_PROXY_CONNECTIONS

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.proxy_connections < 1:
            yield "proxy_connections", "must be at least 1"
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


@dataclass(frozen=True, kw_only=True)
class ShardingConfig:
    """Several replicas share the fleet: this one scrapes shard ``shard`` of ``shards`` (the
    targets whose pod UID, else address, hashes to it: Prometheus' hashmod). ``shard`` unset: the
    ordinal at the end of the pod's name (``HOSTNAME``, a StatefulSet's ``NAME-2``)."""

    shards: int = 1
    shard: int | None = None

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.shards < 1:
            yield "shards", "must be at least 1"
        elif self.shard is not None and not 0 <= self.shard < self.shards:
            yield "shard", f"must be from 0 to {self.shards - 1} (shards: {self.shards})"


@dataclass(frozen=True, kw_only=True)
class PrometheusReceiverConfig(ComponentConfig):
    """What to scrape and how.

    ``static_targets`` are ``host:port`` (meaning ``http://host:port/metrics``) or full
    ``http(s)://`` URLs; ``kubernetes_sd`` discovers aws-node pods. Either or both may be set.
    ``body_size_limit`` bounds a page both on the wire and decompressed. ``sample_limit`` fails a
    target whose page has more samples of the wanted families than this (0 = no limit), as
    Prometheus' ``sample_limit`` counts samples after metric relabelling.
    """

    scrape_interval: Duration = DEFAULT_SCRAPE_INTERVAL
    scrape_timeout: Duration = DEFAULT_SCRAPE_TIMEOUT
    static_targets: list[str] = field(default_factory=list)
    kubernetes_sd: KubernetesSDConfig | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    body_size_limit: ByteSize = DEFAULT_BODY_SIZE_LIMIT
    sample_limit: int = 0
    #: Ask targets for gzip'd pages (as Prometheus' ``enable_compression``): fewer bytes on the
    #: wire, more CPU here to inflate them.
    enable_compression: bool = True
    #: Count every sample line of each page (Prometheus' ``scrape_samples_scraped``), not only
    #: those of the families the pipeline reads. Off by default: the parser otherwise never reads
    #: the rest of the page, and counting it cost a fifth of a scrape's CPU (``_textparse.py``).
    count_all_samples: bool = False
    #: For targets scraped directly over https (static ``https://`` URLs, and pods with
    #: ``kubernetes_sd``'s ``scheme: https`` in direct mode; proxy mode uses the API server's own
    #: credentials), as Prometheus' ``tls_config``. Without it: the system's CAs.
    tls: ClientTLSConfig | None = None
    #: Sent as the User-Agent header.
    user_agent: str = USER_AGENT
    #: Scrape only this replica's share of the targets (see :class:`ShardingConfig`).
    sharding: ShardingConfig = field(default_factory=ShardingConfig)

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.scrape_interval <= 0:
            yield "scrape_interval", "must be positive"
        if self.scrape_timeout <= 0:
            yield "scrape_timeout", "must be positive"
        elif self.scrape_timeout > self.scrape_interval:
            yield ("scrape_timeout", f"({self.scrape_timeout}) must not exceed scrape_interval "
                   f"({self.scrape_interval})")
        if not self.static_targets and self.kubernetes_sd is None:
            yield "static_targets", "set static_targets or kubernetes_sd (or both)"
        yield from self._validate_static_targets()
        if self.max_concurrency < 1:
            yield "max_concurrency", "must be at least 1"
        if self.body_size_limit <= 0:
            yield "body_size_limit", "must be positive"
        if self.sample_limit < 0:
            yield "sample_limit", "must be 0 (no limit) or positive"
        if self.tls is not None and self.tls.insecure:
                yield "tls.insecure", "not used here: a target's http:// URL means plaintext"

    def _validate_static_targets(self) -> Iterable[tuple[str, str]]:
        seen: dict[str, int] = {}
        for index, text in enumerate(self.static_targets):
            key = f"static_targets[{index}]"
            try:
                target = static_target(text)
            except ValueError as exc:
                yield key, str(exc)
                continue
            if target.key in seen:
                yield key, f"{text!r} repeats static_targets[{seen[target.key]}]"
            seen.setdefault(target.key, index)

    def targets(self) -> list[Target]:
        """The static targets as :class:`pipeline.Target` (config already validated)."""
        return [static_target(text) for text in self.static_targets]


def static_target(text: str) -> Target:
    """A static target from ``host:port`` or a full URL; raises ``ValueError`` saying why not.

    The target's address is ``host:port`` (the scheme's default port filled in), its url the page.
    """
    text = text.strip()
    url = text if "://" in text else f"http://{text}{DEFAULT_PATH}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: the scheme must be http or https")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"{text!r}: no host (write host:port or a full URL)")
    if port is None:
        if "://" not in text:
            raise ValueError(f"{text!r}: no port (write host:port or a full URL)")
        port = 443 if parts.scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    if not parts.path:
        url = f"{parts.scheme}://{parts.netloc}{DEFAULT_PATH}"
    return Target(address=f"{shown}:{port}", url=url)
