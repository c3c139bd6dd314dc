"""``pipeline.parse_series``: both of its paths (escape-free blocks by regex, others by the
character walk) give back exactly the labels a series text was written from."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import parse_series

LABEL_NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
#: Any text a label value may hold, escapes included; and one that needs none.
ANY_VALUE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
PLAIN_VALUE = st.text(st.characters(blacklist_categories=("Cs",),
                                    blacklist_characters='\\"\n'), max_size=20)
BLANKS = st.sampled_from(["", " ", "\t", " \t "])


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series_text(name: str, labels: dict[str, str], blank: str, trailing_comma: bool) -> str:
    pairs = [f'{key}{blank}={blank}"{escape(value)}"' for key, value in labels.items()]
    body = f"{blank},{blank}".join(pairs) + ("," if trailing_comma and pairs else "")
    return f"{name}{{{blank}{body}{blank}}}"


@settings(max_examples=300, derandomize=True)
@given(labels=st.dictionaries(LABEL_NAMES, ANY_VALUE, max_size=5), blank=BLANKS,
       trailing_comma=st.booleans())
def test_labels_come_back_with_escapes_undone(labels: dict[str, str], blank: str,
                                              trailing_comma: bool) -> None:
    text = series_text("metric_name", labels, blank, trailing_comma)
    assert parse_series(text) == ("metric_name", labels)


@settings(max_examples=300, derandomize=True)
@given(labels=st.dictionaries(LABEL_NAMES, PLAIN_VALUE, max_size=5), blank=BLANKS)
def test_values_that_look_like_labels_stay_values(labels: dict[str, str], blank: str) -> None:
    # The escape-free path reads values holding "=", "," and "{" as values, not as labels.
    tricky = {key: f"{value}x=y,{{a}}" for key, value in labels.items()}
    text = series_text("m", tricky, blank, trailing_comma=False)
    assert "\\" not in text
    assert parse_series(text) == ("m", tricky)


def test_no_labels() -> None:
    assert parse_series("up") == ("up", {})
    assert parse_series("up{}") == ("up", {})
    assert parse_series('x{a="C:\\\\dir",b="say \\"hi\\"\\n"}') == (
        "x", {"a": "C:\\dir", "b": 'say "hi"\n'})
