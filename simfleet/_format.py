"""Prometheus text-format rendering helpers that match client_golang byte for byte.

aws-node renders its page with client_golang, which writes floats with Go's
``strconv.FormatFloat(v, 'g', -1, 64)``: shortest round-trip digits, switching to exponent form
when the decimal exponent is below -4 or at least 6 (``7.710456e+06``, ``1.5550271644e+09``).
Python's ``repr`` picks other thresholds, so the fleet formats values itself: scrapers see the
same text a real node sends, including ``NaN`` and ``+Inf``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

_INT_FAST_LIMIT = 1e6  # integers below this print as plain digits in Go's 'g' format


_cache: dict[float, str] = {}
_CACHE_LIMIT = 200_000


def format_value(value: float) -> str:
    """Format ``value`` as Go's ``strconv.FormatFloat(value, 'g', -1, 64)`` does.

    Pages repeat the same values (small counts, NaN quantiles) thousands of times per advance of
    a large fleet, so formatted values are memoized: rendering is the fleet's main CPU cost.
    """
    text = _cache.get(value)
    if text is None:
        text = _format_uncached(value)
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[value] = text
    return text


def _format_uncached(value: float) -> str:
    if value != value:
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if -_INT_FAST_LIMIT < value < _INT_FAST_LIMIT and value == int(value):
        return str(int(value))  # the hot path: counters and small gauges
    return _format_general(value)


def _format_general(value: float) -> str:
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    point = len(int_part) + (int(exp_text) if exp_text else 0)  # value = 0.DIGITS * 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        tail = "." + digits[1:] if len(digits) > 1 else ""
        exp_sign = "-" if exponent < 0 else "+"
        return f"{sign}{digits[0]}{tail}e{exp_sign}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def escape_label_value(value: str) -> str:
    """Escape a label value as the text format requires (backslash, quote, newline)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    """Escape HELP text (backslash and newline only, as client_golang does)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def label_body(labels: Mapping[str, str]) -> str:
    """``k1="v1",k2="v2"`` with names sorted, as client_golang orders label pairs."""
    return _label_body(tuple(sorted(labels.items())))


def series_text(family: str, labels: Mapping[str, str] | None = None) -> str:
    """The series exactly as it appears on the page: ``family{labels}`` or bare ``family``."""
    if not labels:
        return family
    return f"{family}{{{_label_body(tuple(sorted(labels.items())))}}}"


@functools.lru_cache(maxsize=1 << 16)  # thousands of nodes share the same label sets
def _label_body(items: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in items)
