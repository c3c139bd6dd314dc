"""The Prometheus text format's tokens and sample lines as regular expressions, shared by the
parser's grammars (:mod:`._grammar`) and the diagnosis of a bad line (:mod:`._textparse_errors`).
"""

from __future__ import annotations

import re

# Line regexes start at the newline before their line and stop before the newline after it (left
# for the next match to start at).

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_NAME_END = r"(?![a-zA-Z0-9_:])"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_FLOAT = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
# Go's strconv.ParseFloat as Prometheus' parseFloat uses it (no hex, no "_"), plus a signed NaN,
# which Python's float() also reads: every string this matches, float() reads.
_VALUE = rf"{_FLOAT}|[+-]?(?i:inf(?:inity)?|nan)"
# Label values in "unrolled loop" form (a run of plain characters, then (escape, run)*): far
# faster in sre than an alternation per character.
_LABEL_VALUE = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_LABEL = rf"{_LABEL_NAME}[ \t]*=[ \t]*{_LABEL_VALUE}"
_LABELS = rf"\{{[ \t]*(?:{_LABEL}(?:[ \t]*,[ \t]*{_LABEL})*[ \t]*,?[ \t]*)?\}}"
#: A series as client libraries write it: no blanks, no escapes in label values.
_CANONICAL_LABELS = (
    rf'\{{(?:{_LABEL_NAME}="[^"\\\n]*"(?:,{_LABEL_NAME}="[^"\\\n]*")*,?)?\}}'
)
#: What may follow a sample's value.
_VALUE_TAIL = rf"(?:[ \t]+{_FLOAT})?(?:[ \t]+#[^\n]*)?[ \t]*"
_TAIL = re.compile(rf"[ \t]*({_VALUE}){_VALUE_TAIL}")
_SAMPLE_LINE_TEMPLATE = (
    r"({name}(?:[ \t]*{labels})?)(?:(?<=\}})[ \t]*|[ \t]+)({value}){tail}(?=\n)"
)


def _full_sample(name: str) -> str:
    """A sample line's series (with ``name``, whose group captures the key), value (a group),
    optional timestamp (integer milliseconds, or OpenMetrics float seconds) and exemplar."""
    return _SAMPLE_LINE_TEMPLATE.format(name=name, labels=_LABELS, value=_VALUE, tail=_VALUE_TAIL)


_SAMPLE_LINE = re.compile(rf"[ \t]*{_full_sample(f'({_NAME})')}")
_TYPE_LINE = re.compile(rf"\n[ \t]*#[ \t]+TYPE[ \t]+({_NAME})[ \t]+([a-z]+)")
#: Starts of the lines that are not sample lines: blank lines and comments.
_NOT_SAMPLE = re.compile(r"\n[ \t]*+(?=[\n#])")
