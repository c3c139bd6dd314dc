"""The stores discovery's reflectors feed: the scrapeable pods and the nodes' attributes.

Each store owns its map under its own lock. A reflector thread replaces a store's content after a
list and applies one change per watch event; after a change the store calls ``on_change`` (with
its lock released), which is how discovery knows to rebuild its target list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A node's target attributes: sorted ``(key, value)`` pairs.
NodeAttributes = tuple[tuple[str, str], ...]

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


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    uid: str
    node: str
    ip: str


def scrapeable_pod(obj: dict[str, Any], require_ready: bool) -> Pod | None:
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
    return Pod(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        node=(obj.get("spec") or {}).get("nodeName") or "",
        ip=ip,
    )


def node_attributes(labels: dict[str, str]) -> NodeAttributes:
    """A node's target attributes from its labels, as sorted ``(key, value)`` pairs; a key whose
    labels are all absent is left out."""
    attributes = []
    for key, candidates in NODE_ATTRIBUTE_LABELS.items():
        for label in candidates:
            if labels.get(label):
                attributes.append((key, labels[label]))
                break
    return tuple(sorted(attributes))


class PodStore:
    """The scrapeable pods, by ``namespace/name``; logs pods that come and go."""

    def __init__(
        self,
        require_ready: bool,
        logger: logging.LoggerAdapter[logging.Logger],
        on_change: Callable[[], None],
    ) -> None:
        self._require_ready = require_ready
        self._log = logger
        self._on_change = on_change
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}

    def pods(self) -> list[Pod]:
        with self._lock:
            return list(self._pods.values())

    def replace(self, items: list[dict[str, Any]]) -> None:
        pods = {}
        for obj in items:
            pod = scrapeable_pod(obj, self._require_ready)
            if pod is not None:
                pods[f"{pod.namespace}/{pod.name}"] = pod
        with self._lock:
            old = self._pods
            self._pods = pods
            added = sum(1 for k, p in pods.items() if old.get(k, _NO_POD).uid != p.uid)
            removed = sum(1 for k, p in old.items() if pods.get(k, _NO_POD).uid != p.uid)
            changed = added or removed or old != pods
            total = len(pods)
        if changed:
            self._on_change()
        if added or removed:
            self._log_change(added, removed, total)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        pod = None if kind == "DELETED" else scrapeable_pod(obj, self._require_ready)
        with self._lock:
            old = self._pods.get(key)
            if pod == old:
                return
            if pod is None:
                del self._pods[key]
            else:
                self._pods[key] = pod
            total = len(self._pods)
        self._on_change()
        replaced = old is not None and pod is not None and old.uid != pod.uid
        added = int(pod is not None and (old is None or replaced))
        removed = int(old is not None and (pod is None or replaced))
        if added or removed:
            self._log_change(added, removed, total)

    def _log_change(self, added: int, removed: int, total: int) -> None:
        self._log.info("kubernetes targets: %d added, %d removed, %d now", added, removed, total)


class NodeStore:
    """Each node's target attributes (from its labels), by node name."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeAttributes] = {}

    def attributes_by_node(self) -> dict[str, NodeAttributes]:
        with self._lock:
            return dict(self._nodes)

    def replace(self, items: list[dict[str, Any]]) -> None:
        nodes = {}
        for obj in items:
            meta = obj.get("metadata") or {}
            nodes[meta.get("name", "")] = node_attributes(meta.get("labels") or {})
        with self._lock:
            changed = nodes != self._nodes
            if changed:
                self._nodes = nodes
        if changed:
            self._on_change()

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        with self._lock:
            if kind == "DELETED":
                changed = self._nodes.pop(name, None) is not None
            else:
                attributes = node_attributes(meta.get("labels") or {})
                changed = self._nodes.get(name) != attributes
                if changed:
                    self._nodes[name] = attributes
        if changed:
            self._on_change()


_NO_POD = Pod(namespace="", name="", uid="", node="", ip="")
