"""Saying what is wrong with a bad line of a metrics page: found on a second, slower pass only
once the fast pass has failed (a good page never comes here), so that a broken target's error
names its line number and the fault.
"""

from __future__ import annotations

import re

from pipeline import ParseError

from ._tokens import _FLOAT, _LABEL_NAME, _LABEL_VALUE, _NAME, _VALUE


def _line_number(text: str, line_start: int) -> int:
    """1-based number of the line starting at ``line_start`` of a framed page."""
    return text.count("\n", 0, line_start)


def _raise_first_bad(text: str, pattern: re.Pattern[str]) -> None:
    """Find the first line ``pattern`` captures as bad, this time with its position, and raise a
    ParseError that says what is wrong with it."""
    for match in pattern.finditer(text):
        bad = match[4]
        if bad:
            line_start = match.start() + 1
            line = text[line_start : text.find("\n", line_start)]
            raise ParseError(_diagnose(bad), _line_number(text, line_start), line)
    raise AssertionError("no bad line on the second pass")  # pragma: no cover


# --- diagnosis of a malformed line (slow path, only on error) -----------------------------------

_NAME_RE = re.compile(_NAME)
_LABEL_NAME_RE = re.compile(rf"{_LABEL_NAME}\Z")
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE)
_VALUE_RE = re.compile(rf"(?:{_VALUE})\Z")
_FLOAT_RE = re.compile(rf"{_FLOAT}\Z")
_LABEL_NAME_TOKEN = re.compile(r"[^=,}\s]*")


def _diagnose(line: str) -> str:
    """Say what is wrong with a sample line the grammar refused (leading blanks removed)."""
    name = _NAME_RE.match(line)
    if name is None:
        return "invalid metric name"
    at = _skip_blanks(line, name.end())
    if line.startswith("{", at):
        problem, at = _diagnose_labels(line, at + 1)
        if problem:
            return problem
    elif at == name.end() and at < len(line):
        return f"invalid character {line[at]!r} in metric name"
    tokens = line[at:].split()
    if not tokens or tokens[0].startswith("#"):
        return "missing value"
    if not _VALUE_RE.match(tokens[0]):
        return f"invalid value {tokens[0]!r}"
    if len(tokens) > 1 and not tokens[1].startswith("#"):
        if not _FLOAT_RE.match(tokens[1]):
            return f"invalid timestamp {tokens[1]!r}"
        if len(tokens) > 2 and not tokens[2].startswith("#"):
            return f"unexpected text after timestamp: {tokens[2]!r}"
    return "invalid sample line"


def _diagnose_labels(line: str, at: int) -> tuple[str, int]:
    """Walk a label block from just after its ``{``; return (problem or "", index after ``}``)."""
    while True:
        at = _skip_blanks(line, at)
        if at >= len(line):
            return "unterminated label block", at
        if line[at] == "}":
            return "", at + 1
        token = _LABEL_NAME_TOKEN.match(line, at)
        label = token.group() if token else ""
        if not _LABEL_NAME_RE.match(label):
            return f"invalid label name {label!r}", at
        at = _skip_blanks(line, at + len(label))
        if not line.startswith("=", at):
            return f"expected '=' after label name {label!r}", at
        at = _skip_blanks(line, at + 1)
        if not line.startswith('"', at):
            return f"value of label {label!r} is not quoted", at
        value = _LABEL_VALUE_RE.match(line, at)
        if value is None:
            return f"unterminated value of label {label!r}", at
        at = _skip_blanks(line, value.end())
        if line.startswith(",", at):
            at += 1
        elif not line.startswith("}", at):
            if at >= len(line):
                return "unterminated label block", at
            return f"expected ',' or '}}' after label {label!r}", at


def _skip_blanks(line: str, at: int) -> int:
    while at < len(line) and line[at] in " \t":
        at += 1
    return at
