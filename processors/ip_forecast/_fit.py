"""The trend fit behind a forecast: a Theil-Sen slope over a window of (time, value) points.

Theil-Sen (the median of the slopes between every pair of points) is used instead of least
squares because a forecast must not jump on one odd cycle: a single spike moves a least-squares
slope in proportion to its size, while it changes the median of pairwise slopes by at most a
step (its breakdown point is about 29 %: nearly a third of the points may be wild before the fit
follows them). The statistics are a few lines on a handful of points, so no library is used.

Cost: a window is thinned to at most :data:`MAX_POINTS` points first (evenly over time, keeping
the newest), so a fit is at most 1,830 pairwise slopes whatever the interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

#: Points a fit looks at; a 1 h window at 30 s holds 120, thinned to every other one.
MAX_POINTS = 61

Point = tuple[float, float]  # (UTC seconds, value)


def thin(points: Sequence[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most ``limit`` of ``points`` (sorted by time), evenly spaced, the newest always kept."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[len(points) - 1 - round(i * step)] for i in range(limit - 1, -1, -1)]


def theil_sen_slope(points: Sequence[Point]) -> float | None:
    """The median slope (value per second) over every pair of points with distinct times; None
    for fewer than two distinct times."""
    slopes = [
        (v2 - v1) / (t2 - t1)
        for i, (t1, v1) in enumerate(points)
        for t2, v2 in points[i + 1 :]
        if t2 != t1
    ]
    return median(slopes) if slopes else None
