"""The one way sums over targets are taken here."""

from __future__ import annotations

import math
from collections.abc import Sequence


def exact_sum(values: Sequence[float]) -> float:
    """``math.fsum`` (exactly rounded, so independent of target order), without its
    OverflowError: past float's range (a node reporting ~1e308) the halves are summed and the
    sum doubled, still exactly, giving +-inf when the total itself is out of range, so one
    absurd value cannot fail the whole cycle's aggregation (the exporters drop what is not
    finite, saying so)."""
    try:
        return math.fsum(values)
    except OverflowError:
        return math.fsum([value * 0.5 for value in values]) * 2.0
