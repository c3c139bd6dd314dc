"""Every config shipped in configs/ validates with no cluster, AWS or collector at hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from cni_pipeline.cli import main

_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted([*_DIR.glob("*.yaml"), *_DIR.glob("sharded/*.yaml")])


def test_the_configs_the_readme_names_exist():
    names = {p.name for p in CONFIGS}
    assert {"cloudwatch.yaml", "debug.yaml", "otlp.yaml", "prometheus.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates_offline(path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOSTNAME", "cni-pipeline-shard-1")  # a StatefulSet pod (the shard's)
    assert main(["validate", "--config", str(path), "--nodes", "5000"]) == 0
    assert f"{path}: valid" in capsys.readouterr().out
