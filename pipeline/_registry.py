"""The component registry: factories found through entry points.

Built-in components are registered by entry point exactly like third-party ones, so the engine holds
no list of components. As in pluggy's ``load_setuptools_entrypoints``: each entry point's name must
equal its factory's ``type``, a type claimed twice is an error naming both distributions, and a
plugin that fails to import is remembered with its error (reported when it is used, and by
``cni-pipeline components``) instead of taking every other component down with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ._component import Factory, Kind
from ._errors import RegistryError


@dataclass(frozen=True, slots=True)
class Registration:
    kind: Kind
    type: str
    distribution: str
    factory: Factory | None
    error: str = ""


class Registry:
    """Factories by kind and type, built once per run (CLI) and passed down; tests build theirs."""

    def __init__(self) -> None:
        self._entries: dict[tuple[Kind, str], Registration] = {}

    @classmethod
    def load(cls) -> Registry:
        """Read the three ``cni_pipeline.*`` entry-point groups of every installed distribution."""
        registry = cls()
        for kind in Kind:
            for ep in entry_points(group=kind.entry_point_group):
                registry._load_entry_point(kind, ep)
        return registry

    def _load_entry_point(self, kind: Kind, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        try:
            factory = ep.load()
        except Exception as exc:  # any import error of a plugin is that plugin's problem
            self._add(
                Registration(
                    kind,
                    ep.name,
                    dist,
                    None,
                    f"cannot load {ep.value!r}: {type(exc).__name__}: {exc}",
                )
            )
            return
        self.register(kind, factory, distribution=dist, name=ep.name)

    def register(
        self, kind: Kind, factory: Any, *, distribution: str = "", name: str | None = None
    ) -> None:
        type_ = getattr(factory, "type", None)
        where = f"{kind.entry_point_group}:{name or type_} ({distribution or 'not installed'})"
        if not isinstance(type_, str) or not type_:
            raise RegistryError(f"{where}: the factory has no 'type'")
        if name is not None and type_ != name:
            raise RegistryError(
                f"{where}: the entry point is named {name!r} but its factory's type is {type_!r}"
            )
        factory_kind = getattr(factory, "kind", kind)
        if factory_kind != kind:
            raise RegistryError(f"{where}: a {factory_kind} factory registered as a {kind}")
        for attr in ("default_config", "create"):
            if not callable(getattr(factory, attr, None)):
                raise RegistryError(f"{where}: the factory has no {attr}()")
        self._add(Registration(kind, type_, distribution, factory))

    def _add(self, entry: Registration) -> None:
        key = (entry.kind, entry.type)
        existing = self._entries.get(key)
        if existing is not None:
            raise RegistryError(
                f"{entry.kind} type {entry.type!r} is registered twice: by "
                f"{existing.distribution or 'a direct registration'} and by "
                f"{entry.distribution or 'a direct registration'}"
            )
        self._entries[key] = entry

    def get(self, kind: Kind, type_: str) -> Factory | None:
        entry = self._entries.get((kind, type_))
        if entry is None:
            return None
        if entry.factory is None:
            raise RegistryError(f"{kind} {type_!r} from {entry.distribution}: {entry.error}")
        return entry.factory

    def types(self, kind: Kind) -> list[str]:
        return sorted(t for k, t in self._entries if k == kind)

    def entries(self) -> list[Registration]:
        order = list(Kind)
        return sorted(self._entries.values(), key=lambda e: (order.index(e.kind), e.type))
