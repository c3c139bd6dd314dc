"""The list-watch loop that keeps one resource's store current, as client-go's Reflector does.

One list, then a watch from the list's resourceVersion with bookmarks, so a cycle never re-lists.

- A watch that ends cleanly (the server's ``timeoutSeconds``) is reopened at once from the last
  resourceVersion seen; bookmarks advance that version while nothing we select changes, so a
  reopened watch does not fall out of the server's history window.
- ``410 Gone`` (an ERROR event with a Status of code 410 in the stream, or the HTTP status of a
  request) means that version is no longer served: list again, then watch from the new version.
  A paged list whose continue token expired between two pages starts over unpaged, as client-go's
  pager does.
- Any other failure (a dropped stream, a refused connection, a 5xx, a 403) is retried with
  exponential backoff and logged at warning; the store keeps its last known content meanwhile,
  which is still the best knowledge of the cluster there is.

The generated API methods are called with ``_preload_content=False`` and the JSON read here
instead of through ``kubernetes.watch.Watch``: its handling of BOOKMARK and ERROR events has
changed between the client releases we accept (bookmarks' resourceVersion used to be ignored;
a 410 is first retried with the same, expired version), and it builds a typed model for every
event. Reading the stream here keeps the whole list/watch/410 protocol in one place. Raw JSON
also skips building model objects for every object of a list, of which discovery needs a few
fields: several times faster for a large list (``bench/bench_k8s_sd.py`` measures both).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .config import KubernetesSDConfig

#: A watch that ends cleanly this soon without any event counts as a failure for backoff, so a
#: server (or proxy) that closes every watch at once is not hammered in a tight loop.
SHORT_WATCH = 1.0


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


class Store(Protocol):
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


class Reflector:
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
        store: Store,
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
        #: Watch events seen (a watch that saw none and ended at once counts as a failure).
        self.events = 0
        #: Failed requests retried after a backoff.
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
