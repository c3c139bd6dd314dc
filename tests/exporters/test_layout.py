"""Every exporter package has the one component shape: factory, config, the exporter itself."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import exporters
from pipeline import Kind

ROOT = Path(exporters.__file__).parent
PACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())


def test_the_four_exporters_are_found() -> None:
    assert PACKAGES == ["awscloudwatch", "debug", "otlp", "prometheus"]


@pytest.mark.parametrize("name", PACKAGES)
def test_exporter_package_has_the_component_shape(name: str) -> None:
    modules = {p.stem for p in (ROOT / name).glob("*.py")}
    assert {"__init__", "factory", "config", "exporter"} <= modules
    assert all(m.startswith("_") for m in modules - {"factory", "config", "exporter"})
    package = importlib.import_module(f"exporters.{name}")
    factory = package.factory
    assert factory.kind is Kind.EXPORTER and factory.type == name
    config_cls = type(factory.default_config())
    assert config_cls.__module__ == f"exporters.{name}.config"
    exporter_classes = [
        value for value in vars(importlib.import_module(f"exporters.{name}.exporter")).values()
        if isinstance(value, type) and value.__name__.endswith("Exporter")
        and value.__module__ == f"exporters.{name}.exporter"
    ]
    assert len(exporter_classes) == 1
    # The same names for the same things: <Type>Exporter, <Type>ExporterConfig, ...Factory.
    stem = exporter_classes[0].__name__
    assert config_cls.__name__ == f"{stem}Config"
    assert type(factory).__name__ == f"{stem}Factory"
    assert {stem, f"{stem}Config", f"{stem}Factory", "factory"} <= set(package.__all__)
    assert all(len((ROOT / name / f"{m}.py").read_text().splitlines()) <= 500 for m in modules)
