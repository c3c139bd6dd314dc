"""The README's examples work: every YAML example loads through the real config loader (a
fragment is laid into a minimal pipeline under the component its section documents), and every
`cni-pipeline ...` command line of its shell blocks parses with the real argument parser (and runs,
where that is cheap: --help, components, validate)."""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cni_pipeline.cli import _parser, main
from pipeline._config import build_config
from pipeline._registry import Registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SECTIONS = ("receivers", "processors", "exporters", "service")

_BLOCK = re.compile(r"^(#{2,4} [^\n]*)$|^( *)```(\w*)\n(.*?)^\2```", re.M | re.S)
_COMPONENT_HEADING = re.compile(r"^## `(\w+)` (receiver|processor|exporter)")
_KEY_HEADING = re.compile(r"^#### `(\w+)`")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int
    #: (kind plural, type) of the nearest "## `type` kind" heading above, if any.
    component: tuple[str, str] | None
    #: The key of the nearest "#### `key`" heading above, inside that component's section.
    key: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def _blocks() -> list[Block]:
    blocks = []
    component: tuple[str, str] | None = None
    key: str | None = None
    for match in _BLOCK.finditer(README):
        heading = match.group(1)
        if heading:
            if heading.startswith("## "):
                found = _COMPONENT_HEADING.match(heading)
                component = (found.group(2) + "s", found.group(1)) if found else None
                key = None
            elif heading.startswith("### "):
                key = None
            else:
                found_key = _KEY_HEADING.match(heading)
                key = found_key.group(1) if found_key else None
            continue
        line = README.count("\n", 0, match.start()) + 1
        blocks.append(
            Block(match.group(3), textwrap.dedent(match.group(4)), line, component, key)
        )
    return blocks


BLOCKS = _blocks()
YAML_BLOCKS = [b for b in BLOCKS if b.lang == "yaml"]

BASE: dict[str, Any] = {
    "receivers": {"prometheus": {"static_targets": ["127.0.0.1:61678"]}},
    "processors": {"cni_aggregate": {}},
    "exporters": {"debug": {}},
    "service": {
        "pipelines": {
            "metrics": {
                "receivers": ["prometheus"],
                "processors": ["cni_aggregate"],
                "exporters": ["debug"],
            }
        }
    },
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def as_config(block: Block) -> dict[str, Any] | None:
    """The block as a whole pipeline config; None for YAML that is not ours (Prometheus's)."""
    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and "scrape_configs" in data:
        return None  # a Prometheus server's config, shown beside ours
    if isinstance(data, dict) and "service" in data:
        return data  # a whole config: validated as written
    if isinstance(data, dict) and set(data) & set(SECTIONS):
        return _merge(BASE, data)
    assert block.component is not None, f"{block}: a fragment outside a component's section"
    plural, type_ = block.component
    if isinstance(data, list):  # the value of the key its "#### `key`" heading documents
        assert block.key, f"{block}: a list outside a key's section"
        data = {block.key: data}
    return _merge(BASE, {plural: {type_: data}})


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def test_the_readme_has_examples_to_check():
    assert len(YAML_BLOCKS) >= 15
    assert any("service" in (yaml.safe_load(b.text) or {}) for b in YAML_BLOCKS)


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=str)
def test_yaml_example_is_a_valid_config(block: Block, registry: Registry) -> None:
    data = as_config(block)
    if data is None:
        pytest.skip("not a cni-pipeline config")
    # a variable the example reads without a default stands for a secret the user sets
    env = {name: "example" for name in re.findall(r"\$\{env:(\w+)\}", block.text)}
    build_config(data, str(block), registry, env)  # raises ConfigError naming the key


def _commands() -> list[tuple[Block, list[str]]]:
    commands = []
    for block in BLOCKS:
        if block.lang != "sh":
            continue
        for line in block.text.splitlines():
            if re.match(r"\s*cni-pipeline\b", line):
                words = shlex.split(line, comments=True)
                commands.append((block, words[1:]))
    return commands


COMMANDS = _commands()


def test_the_readme_has_commands_to_check():
    assert any(argv[:1] == ["validate"] for _, argv in COMMANDS)


def _command_id(value: object) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize(("block", "argv"), COMMANDS, ids=_command_id)
def test_command_line_parses(block: Block, argv: list[str], capsys) -> None:
    parser = _parser()
    if argv == ["--help"]:
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 0 and "usage: cni-pipeline" in capsys.readouterr().out
        return
    args = parser.parse_args(argv)  # SystemExit(2) on a flag the parser does not know
    assert args is not None


def test_validate_and_components_commands_run(tmp_path: Path, capsys, monkeypatch) -> None:
    """`validate --config my.yaml` runs on a full example of the README (the first); configs/
    ones as they are. Every full example is loaded through the real loader above."""
    whole = next(b for b in YAML_BLOCKS if "service" in (yaml.safe_load(b.text) or {}))
    (tmp_path / "my.yaml").write_text(whole.text)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    ran = 0
    for _, argv in COMMANDS:
        if argv[:1] in (["validate"], ["components"]):
            assert main(argv) == 0, (argv, capsys.readouterr())
            ran += 1
    assert ran >= 2
