"""The parts of a scrape URL the HTTP client needs, parsed once per URL and cached: scheme,
host, port, the idle-pool key, the Host header and the request target."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class URL:
    """The parts of a URL the client needs, parsed once per URL (see :func:`split_url`)."""

    scheme: str
    host: str
    port: int
    #: ``scheme://host:port``: the key of the idle-connection pool.
    key: str
    #: The Host header value.
    authority: str
    #: Path and query, as sent on the request line.
    target: str


@lru_cache(maxsize=8192)
def split_url(url: str) -> URL:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in URL {url!r}")
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default_port else f"{shown}:{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return URL(scheme, host, port, f"{scheme}://{shown}:{port}", authority, target)


def netloc_key(url: str) -> str:
    """The idle-pool key of a URL (``scheme://host:port``), as :meth:`ScrapeClient.close_host`
    takes it. Callers that only know ``host:port`` may pass that instead."""
    return split_url(url).key
