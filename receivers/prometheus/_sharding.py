"""Sharding a fleet across replicas: each replica scrapes the targets whose stable hash mod the
shard count is its shard index (Prometheus' ``hashmod`` relabel action: the MD5 of the value, its
last eight bytes as a big-endian integer, mod the count).

The hashed value is the pod's UID (a target keeps its shard for its whole life, and a new pod on
a reused IP may land elsewhere), else the address (static targets). A target moves between shards
only when the count changes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline import ConfigError, Target

_ORDINAL = re.compile(r"-(\d+)$")


def shard_of(value: str, shards: int) -> int:
    """``value``'s shard among ``shards`` (Prometheus' hashmod)."""
    digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % shards


def shard_key(target: Target) -> str:
    return target.uid or target.address


@dataclass(frozen=True)
class Shard:
    """This replica's part of the fleet: shard ``index`` of ``count``."""

    index: int
    count: int

    def owns(self, target: Target) -> bool:
        return self.count == 1 or shard_of(shard_key(target), self.count) == self.index

    def select(self, targets: Iterable[Target]) -> list[Target]:
        return [target for target in targets if self.owns(target)]


def resolve_shard(shards: int, shard: int | None, environ: Mapping[str, str], where: str
                  ) -> Shard:
    """The shard index from the config, else from the ordinal ending the pod's name (``HOSTNAME``
    of a StatefulSet pod: ``cni-pipeline-shard-2`` is shard 2)."""
    if shard is None and shards > 1:
        hostname = environ.get("HOSTNAME", "")
        found = _ORDINAL.search(hostname)
        if found is None:
            raise ConfigError(where, [("sharding.shard", (
                f"not set, and HOSTNAME {hostname!r} does not end in an ordinal (-N, as a "
                "StatefulSet's pods do): set shard, or run the shards as a StatefulSet"))])
        shard = int(found.group(1))
        if shard >= shards:
            raise ConfigError(where, [("sharding.shard", (
                f"HOSTNAME {hostname!r} gives shard {shard}, but there are only {shards} "
                f"shards (0-{shards - 1}): the StatefulSet has more replicas than "
                "sharding.shards"))])
    return Shard(shard or 0, shards)
