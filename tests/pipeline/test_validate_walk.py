"""The engine walks nested configs: each one's ``validate`` is called once, its keys prefixed
with the path to it, through dataclass fields and list items."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline import ComponentConfig, validate_config


@dataclass(frozen=True)
class Leaf:
    size: int = 1

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.size < 1:
            yield "size", "must be at least 1"
        if self.size > 100:
            yield "", "too big"


@dataclass(frozen=True)
class Plain:  # no validate of its own: still walked into
    leaf: Leaf = field(default_factory=Leaf)


@dataclass(frozen=True, kw_only=True)
class Top(ComponentConfig):
    tls: Leaf = field(default_factory=Leaf)
    rules: tuple[Leaf, ...] = ()
    nested: Plain = field(default_factory=Plain)
    optional: Leaf | None = None
    name: str = "x"

    def validate(self) -> Iterable[tuple[str, str]]:
        if not self.name:
            yield "name", "must not be empty"


def test_a_valid_tree_has_no_problems() -> None:
    assert validate_config(Top()) == []


def test_every_nested_problem_is_found_once_with_its_path() -> None:
    config = Top(tls=Leaf(size=0), rules=(Leaf(), Leaf(size=500)), nested=Plain(Leaf(size=-1)),
                 optional=Leaf(size=0), name="")
    assert sorted(validate_config(config)) == sorted([
        ("tls.size", "must be at least 1"),
        ("rules[1]", "too big"),
        ("nested.leaf.size", "must be at least 1"),
        ("optional.size", "must be at least 1"),
        ("name", "must not be empty"),
    ])
