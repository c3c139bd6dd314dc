"""requirements.lock covers what pyproject.toml asks for: every requirement of the runtime
dependencies, of every extra and of the build system is pinned with == to a version that satisfies
it, with at least one sha256, so `pip install --require-hashes -r requirements.lock` installs all
of it. A dependency added to (or narrowed in) pyproject.toml without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"

_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    line: int
    spec: str  # what stands before the options, e.g. "boto3==1.43.11"
    hashes: int


def parse_lock(text: str) -> dict[str, Pin]:
    """Canonical name -> Pin, from pip-compile's format (backslash continuations, `#` comments)."""
    pins: dict[str, Pin] = {}
    logical: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not logical:
            start = number
        if line.endswith("\\"):
            logical.append(line[:-1])
            continue
        logical.append(line)
        entry = " ".join(logical).strip()
        logical = []
        if entry:
            spec = entry.split(" --", 1)[0].strip()
            name = re.split(r"[\s\[<>=!~;@]", spec, maxsplit=1)[0]
            pins[canonicalize_name(name)] = Pin(start, spec, len(_HASH.findall(entry)))
    return pins


def required(pyproject: dict[str, Any]) -> list[tuple[str, Requirement]]:
    """(where, requirement) for the runtime dependencies, every extra and the build system,
    the project's own name (an extra naming another extra) left out."""
    project = pyproject["project"]
    own = canonicalize_name(project["name"])
    groups = {"dependencies": project.get("dependencies", [])}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        groups[f"optional-dependencies.{extra}"] = reqs
    groups["build-system.requires"] = pyproject.get("build-system", {}).get("requires", [])
    return [
        (where, req)
        for where, reqs in groups.items()
        for req in map(Requirement, reqs)
        if canonicalize_name(req.name) != own
    ]


def lock_problems(pyproject: dict[str, Any], lock_text: str, lock_name: str) -> list[str]:
    """One line per problem; empty when the lock covers pyproject."""
    pins = parse_lock(lock_text)
    problems = []
    for name, pin in sorted(pins.items()):
        if not re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", pin.spec):
            problems.append(f"{lock_name}:{pin.line}: {pin.spec!r} is not pinned with ==")
        if pin.hashes == 0:
            problems.append(f"{lock_name}:{pin.line}: {name} has no --hash")
    for where, req in required(pyproject):
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"pyproject.toml {where}: {req} is not in {lock_name}")
            continue
        version = pin.spec.partition("==")[2]
        if version and not req.specifier.contains(version, prereleases=True):
            problems.append(
                f"pyproject.toml {where}: {req} does not allow {lock_name}'s {pin.spec}"
            )
    return problems


def _explain(problems: list[str]) -> str:
    return "\n".join([*problems, "the lock is out of date: run `make lock` and commit it"])


def test_the_lock_covers_pyproject():
    pyproject = tomllib.loads(PYPROJECT.read_text())
    problems = lock_problems(pyproject, LOCK.read_text(), LOCK.name)
    assert not problems, _explain(problems)


def test_the_lock_pins_pip_and_the_build_backend():
    # make install takes pip from the lock and builds the editable project with no isolation.
    pins = parse_lock(LOCK.read_text())
    assert {"pip", "setuptools"} <= pins.keys()
    assert "cni-pipeline" not in pins  # the project itself: installed with --no-deps, no hash


_PYPROJECT = {
    "build-system": {"requires": ["setuptools>=77"]},
    "project": {
        "name": "demo-project",
        "dependencies": ["boto3>=1.43,<1.44"],
        "optional-dependencies": {"dev": ["demo-project[extra]", "pytest>=8"]},
    },
}
_HASHES = " \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("lock", "expected"),
    [
        (f"boto3==1.43.11{_HASHES}\npytest==9.2.0{_HASHES}\nsetuptools==84.2.1{_HASHES}\n", []),
        (
            f"boto3==1.43.11{_HASHES}\nsetuptools==84.2.1{_HASHES}\n",
            ["pyproject.toml optional-dependencies.dev: pytest>=8 is not in t.lock"],
        ),
        (
            f"boto3==1.44.0{_HASHES}\npytest==9.2.0{_HASHES}\nsetuptools==84.2.1{_HASHES}\n",
            ["pyproject.toml dependencies: boto3<1.44,>=1.43 does not allow t.lock's "
             "boto3==1.44.0"],
        ),
        (
            f"boto3==1.43.11\n    # via demo-project\npytest>=9{_HASHES}\n"
            f"setuptools==84.2.1{_HASHES}\n",
            ["t.lock:1: boto3 has no --hash", "t.lock:3: 'pytest>=9' is not pinned with =="],
        ),
    ],
    ids=["complete", "missing", "outside-specifier", "unhashed-unpinned"],
)
def test_lock_problems_name_what_is_wrong(lock: str, expected: list[str]):
    assert lock_problems(_PYPROJECT, lock, "t.lock") == expected


def test_the_failure_message_says_how_to_fix_it():
    assert _explain(["x"]).endswith("run `make lock` and commit it")
