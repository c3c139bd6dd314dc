"""The import rule of docs/architecture.md, checked by reading every import statement.

Imports inside functions count too (a lazy ``import boto3`` is still a dependency), so the source
is parsed with ``ast`` instead of importing it and looking at ``sys.modules``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPONENT_PACKAGES = ("receivers", "processors", "exporters")
#: What the engine may never import: components, the application, the simulated fleet, and the
#: clients that only some components need.
ENGINE_FORBIDDEN = (
    *COMPONENT_PACKAGES,
    "cni_pipeline",
    "simfleet",
    "boto3",
    "botocore",
    "kubernetes",
    "moto",
)
#: Public modules of the engine a component may import besides ``pipeline`` itself.
ENGINE_PUBLIC = ("pipeline", "pipeline.exporterhelper", "pipeline.configtls")
#: Shared helpers that live beside the components using them (not components themselves).
SHARED_HELPERS = {"exporters._aws_identity"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in ``path``, relative ones resolved."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    return imports_in(path.read_text(), package, str(path))


def imports_in(source: str, package: str, filename: str = "<test>") -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from pipeline import service` imports pipeline.service
                yield node.lineno, f"{base}.{alias.name}"


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _is_under(module: str, roots: tuple[str, ...] | set[str]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    """The checker itself: an import inside a function, and a relative one, are both found."""
    source = "def f():\n    import boto3\n    from . import _model\n"
    found = {name for _, name in imports_in(source, "pipeline")}
    assert "boto3" in found
    assert "pipeline._model" in found


@pytest.mark.parametrize("path", _sources("pipeline"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_engine_imports_no_component_and_no_client(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for line, name in imports_of(path)
        if _is_under(name, ENGINE_FORBIDDEN)
    ]
    assert not bad, "\n".join(bad)


def _component_sources() -> list[Path]:
    return [p for package in COMPONENT_PACKAGES for p in _sources(package)]


@pytest.mark.parametrize("path", _component_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_component_imports_only_the_engine_s_public_names(path: Path) -> None:
    own = _module_name(path).split(".")[:2]  # e.g. receivers.prometheus
    own_package = ".".join(own)
    bad = []
    for line, name in imports_of(path):
        if _is_under(name, {"cni_pipeline", "simfleet"}):
            bad.append(f"{path.relative_to(ROOT)}:{line}: imports the application: {name}")
        elif name.startswith("pipeline.") and not _is_under(name, ENGINE_PUBLIC[1:]):
            # `from pipeline import X` yields pipeline.X; X must be a name, not a private module
            if name.count(".") == 1 and not name.split(".")[1].startswith("_"):
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line}: imports the engine's private {name}")
        elif _is_under(name, COMPONENT_PACKAGES) and "." in name:  # bare `exporters` holds nothing
            if _is_under(name, {own_package}) or _is_under(name, SHARED_HELPERS):
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line}: imports another component: {name}")
    assert not bad, "\n".join(bad)


def test_the_application_runs_the_engine_through_its_public_faces() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports the engine's private {name}"
        for path in _sources("cni_pipeline")
        for line, name in imports_of(path)
        if name.startswith("pipeline._")
    ]
    assert not bad, "\n".join(bad)
