"""Which replica exports: a Kubernetes Lease elector (``service.leader_election``).

The engine sees only a :class:`pipeline.service.Leadership`; this is the application's one, built
on a ``coordination.k8s.io/v1`` Lease as client-go's ``leaderelection`` does it, through the
official ``kubernetes`` client (its blocking calls run in a thread):

- Get the Lease; create it if missing (409 on create: another replica won).
- Held by another and not expired: wait ``retry_period``. Expiry is measured as client-go does,
  on OUR monotonic clock from when we last saw the record change (plus its
  ``leaseDurationSeconds``), so the replicas' wall clocks need not agree.
- Else update it with our ``holderIdentity``, ``acquireTime``, ``renewTime`` and
  ``leaseTransitions`` + 1, with the ``resourceVersion`` read (409 Conflict: lost the race).
- As leader, renew every ``retry_period``; with no successful renewal within ``renew_deadline``
  (shorter than ``lease_duration``), stop leading before the Lease could expire for the others.
- When stopped, release it: holder cleared, ``leaseDurationSeconds: 1``, so that a standby takes
  over on its next try instead of waiting for expiry (``released_cleanly()`` tells it so).

The cycle last delivered by the leader travels in the annotation :data:`ANNOTATION` (seconds
since the epoch), written on each renewal and on release; a new leader reads it when it acquires
(pipeline/_leader.py says what the engine does with it). The command imports this module only
when leader election is on: it brings the ``kubernetes`` client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import ApiClient, ApiException, Configuration, CoordinationV1Api
from urllib3.exceptions import HTTPError

from pipeline import ConfigError, register_secret
from pipeline.service import LeaderElectionConfig

#: The Lease annotation carrying the last delivered cycle time.
ANNOTATION = "cni-pipeline.io/last-delivered-cycle"
#: Where the kubelet mounts the pod's service account (token, ca.crt, namespace).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: client-go's JitterFactor for the acquire loop: a standby retries after retry_period * [1, 2.2).
_JITTER = 1.2
#: What a call can fail with besides an ApiException: no connection, a cut or late answer, and
#: (ValueError) a body the client cannot decode into its validated models.
_NETWORK_ERRORS = (HTTPError, OSError, ValueError)

logger = logging.getLogger("cni_pipeline.leader")


@dataclass(frozen=True)
class _Record:
    """What the Lease says about its holder (client-go's LeaderElectionRecord)."""

    holder: str
    duration: float
    acquire: datetime | None
    renew: datetime | None
    transitions: int


class KubernetesLease:
    """A :class:`pipeline.service.Leadership` on one Lease; see the module docstring."""

    def __init__(
        self,
        api: CoordinationV1Api,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock, self._wall = clock, wall_clock
        self._leading = False
        self._listeners: list[Callable[[bool], None]] = []
        self._observed: _Record | None = None
        self._observed_at = 0.0
        self._last_delivered: float | None = None
        self._released_cleanly = False
        self._to_record: float | None = None
        self._failing = False

    # -- Leadership ------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self._leading

    def last_delivered(self) -> float | None:
        return self._last_delivered

    def released_cleanly(self) -> bool:
        return self._released_cleanly

    def record_delivered(self, cycle_time: float) -> None:
        if self._to_record is None or cycle_time > self._to_record:
            self._to_record = cycle_time

    def holder_identity(self) -> str | None:
        """Who holds the Lease, as last seen (None: nobody, or not read yet)."""
        return (self._observed.holder or None) if self._observed is not None else None

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        self._listeners.append(callback)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                if self._leading:
                    await self._renew_until_lost(stop)
                elif await self._attempt(self.renew_deadline) != "ok":
                    await _sleep(stop, self.retry_period * (1 + _JITTER * random.random()))
        finally:
            if self._leading:
                await self._release()

    # -- the loops -------------------------------------------------------------------------------

    async def _renew_until_lost(self, stop: asyncio.Event) -> None:
        """Renew every retry_period; give up once renew_deadline passed without a success (or
        at once when another holds the Lease)."""
        last_ok = self._clock()
        while not stop.is_set():
            await _sleep(stop, self.retry_period)
            if stop.is_set():
                return
            started = self._clock()
            remaining = last_ok + self.renew_deadline - started
            outcome = await self._attempt(remaining) if remaining > 0 else "no time left"
            if outcome == "ok":
                last_ok = started  # the renewTime written is no earlier than this
                continue
            taken = outcome.startswith("held by")
            if taken or self._clock() >= last_ok + self.renew_deadline:
                why = outcome if taken else f"no renewal in {self.renew_deadline:g}s ({outcome})"
                logger.warning("lost the lease %s: %s", self._where, why)
                self._set_leading(False)
                return

    async def _attempt(self, budget: float) -> str:
        """One try to acquire or renew within ``budget`` seconds: "ok", "held by X", or what
        failed."""
        try:
            return await asyncio.wait_for(self._try_acquire_or_renew(budget), timeout=budget)
        except TimeoutError:
            return self._failed(f"no answer in {budget:.3g}s")

    async def _try_acquire_or_renew(self, budget: float) -> str:
        try:
            lease = await _call(
                self._api.read_namespaced_lease,
                self.name,
                self.namespace,
                _request_timeout=budget,
            )
        except ApiException as exc:
            if exc.status == 404:
                return await self._create(budget)
            return self._failed(_describe(exc))
        except _NETWORK_ERRORS as exc:
            return self._failed(_describe(exc))
        record = self._observe(lease)
        if record.holder and record.holder != self.identity and not self._expired():
            return self._recovered(f"held by {record.holder}")
        return await self._update(lease, record, budget)

    async def _create(self, budget: float) -> str:
        now = self._now()
        body = self._body(None, self._spec(acquire=now, renew=now, transitions=0))
        try:
            lease = await _call(
                self._api.create_namespaced_lease, self.namespace, body, _request_timeout=budget
            )
        except ApiException as exc:
            if exc.status == 409:  # another replica created it between our read and now
                logger.info("lease %s: lost the race to create it (409)", self._where)
                return self._recovered("held by the replica that created it")
            return self._failed(_describe(exc))
        except _NETWORK_ERRORS as exc:
            return self._failed(_describe(exc))
        self._observe(lease)
        self._won(last_delivered=None, cleanly=True)
        return self._recovered("ok")

    async def _update(self, lease: Any, record: _Record, budget: float) -> str:
        now = self._now()
        ours = record.holder == self.identity
        spec = self._spec(
            acquire=record.acquire if ours and record.acquire else now,
            renew=now,
            transitions=record.transitions if ours else record.transitions + 1,
        )
        body = self._body(lease, spec, record_delivered=self._leading)
        try:
            updated = await _call(
                self._api.replace_namespaced_lease,
                self.name,
                self.namespace,
                body,
                _request_timeout=budget,
            )
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote it since our read: it won the race
                logger.info("lease %s: lost the race to update it (409 Conflict)", self._where)
                return self._recovered("lost the race (409 Conflict)")
            return self._failed(_describe(exc))
        except _NETWORK_ERRORS as exc:
            return self._failed(_describe(exc))
        self._observe(updated)
        if not self._leading:
            last = _annotation(lease)
            if ours and self._to_record is not None:  # we led before and know what we delivered
                last = max(last or 0.0, self._to_record)
            # A hold of ours that we did not release: this replica gave up (or died) leading.
            self._won(last_delivered=last, cleanly=not record.holder)
        return self._recovered("ok")

    async def _release(self) -> None:
        """Hand the Lease over (holder cleared, 1s duration), with the last delivered cycle."""
        self._set_leading(False)
        try:
            lease = await _call(
                self._api.read_namespaced_lease,
                self.name,
                self.namespace,
                _request_timeout=self.renew_deadline,
            )
            record = _record(lease)
            if record.holder != self.identity:
                logger.warning(
                    "did not release the lease %s: %s holds it",
                    self._where,
                    record.holder or "nobody",
                )
                return
            now = self._now()
            spec = self._spec(acquire=now, renew=now, transitions=record.transitions)
            spec.update(holderIdentity="", leaseDurationSeconds=1)
            body = self._body(lease, spec, record_delivered=True)
            await _call(
                self._api.replace_namespaced_lease,
                self.name,
                self.namespace,
                body,
                _request_timeout=self.renew_deadline,
            )
        except (ApiException, *_NETWORK_ERRORS) as exc:
            logger.warning(
                "could not release the lease %s (it will expire): %s", self._where, _describe(exc)
            )
            return
        logger.info("released the lease %s", self._where)

    # -- state -----------------------------------------------------------------------------------

    def _observe(self, lease: Any) -> _Record:
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        return record

    def _expired(self) -> bool:
        assert self._observed is not None
        return self._clock() >= self._observed_at + self._observed.duration

    def _won(self, *, last_delivered: float | None, cleanly: bool) -> None:
        self._last_delivered, self._released_cleanly = last_delivered, cleanly
        self._to_record = None
        transitions = self._observed.transitions if self._observed else 0
        logger.info("became leader (lease %s, transitions %d)", self._where, transitions)
        self._set_leading(True)

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        for callback in list(self._listeners):
            try:
                callback(leading)
            except Exception:  # one broken listener must not stop the election
                logger.exception("leadership listener %r failed", callback)

    def _failed(self, why: str) -> str:
        if not self._failing:
            logger.warning("lease %s: cannot read or write it: %s", self._where, why)
        self._failing = True
        return why

    def _recovered(self, outcome: str) -> str:
        if self._failing:
            logger.info("lease %s: the API server answers again", self._where)
        self._failing = False
        return outcome

    def _spec(self, *, acquire: datetime, renew: datetime, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration)),
            "acquireTime": acquire,
            "renewTime": renew,
            "leaseTransitions": transitions,
        }

    def _body(
        self, read: Any, spec: dict[str, Any], *, record_delivered: bool = False
    ) -> dict[str, Any]:
        """A Lease to write: ``read``'s resourceVersion (which makes the update conditional),
        labels and annotations, plus the cycle to record when ``record_delivered``."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if read is not None:
            metadata["resourceVersion"] = read.metadata.resource_version
            for key in ("labels", "annotations"):
                if value := getattr(read.metadata, key):
                    metadata[key] = dict(value)
        if record_delivered and self._to_record is not None:
            metadata["annotations"] = {
                **metadata.get("annotations", {}),
                ANNOTATION: repr(self._to_record),
            }
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    def _now(self) -> datetime:
        now = datetime.fromtimestamp(self._wall(), UTC)
        # The client writes isoformat(), which drops a zero fraction; the API server's MicroTime
        # then refuses the body (it wants exactly six digits).
        return now.replace(microsecond=1) if now.microsecond == 0 else now

    @property
    def _where(self) -> str:
        return f"{self.namespace}/{self.name}"


async def _call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(method, *args, **kwargs)


def _record(lease: Any) -> _Record:
    spec = lease.spec
    return _Record(
        holder=spec.holder_identity or "",
        duration=float(spec.lease_duration_seconds or 0),
        acquire=spec.acquire_time,
        renew=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
    )


def _annotation(lease: Any) -> float | None:
    text = (lease.metadata.annotations or {}).get(ANNOTATION)
    try:
        return float(text) if text else None
    except ValueError:
        logger.warning("lease annotation %s=%r is not a time; ignored", ANNOTATION, text)
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):  # the Status' message says what was refused, and why
        try:
            message = json.loads(exc.body or "")["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.body or ""
        return f"{exc.status} {exc.reason}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking early when ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    except TimeoutError:
        pass


# -- building it from the config -----------------------------------------------------------------


def build_leadership(
    config: LeaderElectionConfig,
    environ: Mapping[str, str],
    *,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> KubernetesLease:
    """The elector for ``service.leader_election``: identity (else HOSTNAME, the pod name),
    namespace (else POD_NAMESPACE, else the service account's, else kube-system) and a client
    (the in-cluster service account, else a kubeconfig). Reads files; connects nowhere.

    Raises :class:`ConfigError` naming the key when no identity can be found, or naming the files
    when there is no Kubernetes configuration to use."""
    identity = config.identity or environ.get("HOSTNAME", "").strip()
    if not identity:
        why = "no identity for the Lease: set it, or set HOSTNAME (in a pod: the pod's name)"
        raise ConfigError("", [("service.leader_election.identity", why)])
    namespace = config.lease_namespace or _pod_namespace(environ, service_account_dir)
    api_client, where = _api_client(environ, service_account_dir)
    keys = getattr(api_client.configuration, "api_key", None) or {}
    register_secret(*(str(v).partition(" ")[2] or str(v) for v in keys.values() if v))
    if str(api_client.configuration.host).startswith("https") and not (
        api_client.configuration.verify_ssl
    ):
        logger.warning("leader election: %s has insecure-skip-tls-verify: the API server's "
                       "certificate is not verified", where)
    # The API server's audit log then says which replica wrote the Lease.
    api_client.user_agent = f"cni-pipeline-leader-election/{identity}"
    logger.info(
        "leader election on lease %s/%s as %s (Kubernetes configuration: %s)",
        namespace,
        config.lease_name,
        identity,
        where,
    )
    return KubernetesLease(
        CoordinationV1Api(api_client),
        namespace=namespace,
        name=config.lease_name,
        identity=identity,
        lease_duration=float(config.lease_duration),
        renew_deadline=float(config.renew_deadline),
        retry_period=float(config.retry_period),
    )


def _pod_namespace(environ: Mapping[str, str], service_account_dir: str) -> str:
    if namespace := environ.get("POD_NAMESPACE", "").strip():
        return namespace
    try:
        with open(os.path.join(service_account_dir, "namespace"), encoding="utf-8") as file:
            namespace = file.read().strip()
    except OSError:
        namespace = ""
    return namespace or "kube-system"


def _api_client(environ: Mapping[str, str], service_account_dir: str) -> tuple[ApiClient, str]:
    """In a pod, its service account (as client-go's loading rules: KUBERNETES_SERVICE_HOST and
    _PORT set, and the token mounted); else KUBECONFIG (``:``-separated) or ~/.kube/config."""
    from kubernetes.config import incluster_config, kube_config

    cfg = Configuration()
    token = os.path.join(service_account_dir, "token")
    key = "service.leader_election"
    in_cluster = environ.get("KUBERNETES_SERVICE_HOST") and environ.get("KUBERNETES_SERVICE_PORT")
    if in_cluster and os.path.isfile(token):
        loader = incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=token,
            cert_filename=os.path.join(service_account_dir, "ca.crt"),
            environ=environ,
        )
        try:
            loader.load_and_set(cfg)  # type: ignore[no-untyped-call]
        except Exception as exc:  # ConfigException, OSError: name the service account files
            raise ConfigError(
                "", [(key, f"in-cluster config {service_account_dir}: {exc}")]
            ) from exc
        return ApiClient(cfg), f"in-cluster service account ({service_account_dir})"
    paths = environ.get("KUBECONFIG") or "~/.kube/config"
    found = [os.path.expanduser(p) for p in paths.split(os.pathsep) if p]
    found = [p for p in found if os.path.isfile(p)]
    if not found:
        why = (
            f"no Kubernetes configuration: no token in {service_account_dir}, no kubeconfig {paths}"
        )
        raise ConfigError("", [(key, why)])
    shown = os.pathsep.join(found)
    try:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=shown, client_configuration=cfg, persist_config=False
        )
    except Exception as exc:  # ConfigException, yaml errors: name the file
        raise ConfigError("", [(key, f"kubeconfig {shown}: {exc!r}")]) from exc
    return ApiClient(cfg), f"kubeconfig {shown}"
