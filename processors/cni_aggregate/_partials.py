"""The partial form: what a shard publishes so a gateway can combine shards exactly.

A shard (``cni_aggregate`` with ``output: partials``) aggregates its share of the fleet as one
replica would, but publishes, for each metric, what combining needs rather than the final value.
Everything travels as ordinary metrics whose point attributes carry the rest (keys under
``cni.``), so any OTLP hop in between passes it unchanged:

- ``cni.op``: how shards combine: ``sum`` (gauge sums and counter increases), ``avg`` (a sum
  with ``cni.n``, the samples it is over), ``max``, ``min``, ``count`` (targets), ``coverage``
  (targets reporting / stale / failed). Capacity metrics are not sent: the gateway works them
  out from the combined gauges, as a single replica does.
- ``cni.rest``: a sum is sent *exactly*, as the value plus the floats that remain (see
  :func:`exact_parts`), so the gateway's sum of every shard's parts rounds once, to the very
  value one replica's ``math.fsum`` over every target gives. Integer sums have no rest.
- ``cni.source``, ``cni.quantile``: the metric's source family and quantile (names some exporters
  build from them).
- ``cni.shard``, ``cni.shards``, ``cni.interval``: which shard of how many, on what schedule.

The group-by dimensions stay as they are beside them; the gateway strips every ``cni.`` key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from pipeline import Batch, Metric

from ._exact_sum import exact_sum

PREFIX = "cni."
OP = "cni.op"
REST = "cni.rest"
N = "cni.n"
SOURCE = "cni.source"
QUANTILE = "cni.quantile"
SHARD = "cni.shard"
SHARDS = "cni.shards"
INTERVAL = "cni.interval"

SUM, AVG, MAX, MIN, COUNT, COVERAGE = "sum", "avg", "max", "min", "count", "coverage"
OPERATIONS = frozenset({SUM, AVG, MAX, MIN, COUNT, COVERAGE})

Attributes = tuple[tuple[str, str], ...]


def exact_parts(values: Sequence[float]) -> tuple[float, ...]:
    """Floats whose exact sum is the exact sum of ``values``, the largest first (its rounded
    value, what ``math.fsum`` returns).

    Each step takes the exactly rounded remainder (``math.fsum`` of the values minus the parts so
    far), so it stops when the remainder is exactly zero: at once for sums of integers, within a
    few steps otherwise (each gains 53 bits). C-level ``fsum`` passes rather than a Python loop
    per value: this runs for every summed rule of every block of a shard's cycle.
    """
    total = exact_sum(values)
    if not math.isfinite(total):
        return (total,)
    parts = [total]
    rest = list(values)
    while True:
        rest.append(-parts[-1])
        try:
            remainder = math.fsum(rest)
        except OverflowError:   # values near float's limit: the rounded sum is all we send
            break
        if remainder == 0.0:
            break
        parts.append(remainder)
    return tuple(parts)


def partial(metric: Metric, op: str, rest: Sequence[float] = (), n: int | None = None
            ) -> Metric:
    """``metric`` (a final value of one block) as a partial: its attributes gain ``op`` and
    what combining it needs."""
    marks: list[tuple[str, str]] = [(OP, op)]
    if rest:
        marks.append((REST, " ".join(map(repr, rest))))
    if n is not None:
        marks.append((N, str(n)))
    if metric.source:
        marks.append((SOURCE, metric.source))
    if metric.quantile is not None:
        marks.append((QUANTILE, repr(metric.quantile)))
    return replace(metric, attributes=metric.attributes + tuple(marks))


def stamp(metrics: Sequence[Metric], batch: Batch) -> list[Metric]:
    """The shard's partials, each marked with the shard, the shard count and the interval."""
    index, count = batch.shard
    marks = ((SHARD, str(index)), (SHARDS, str(count)), (INTERVAL, repr(batch.cycle.interval)))
    return [replace(metric, attributes=metric.attributes + marks) for metric in metrics]


def split_marks(attributes: Attributes) -> tuple[Attributes, dict[str, str]]:
    """(the group-by dimensions, the ``cni.`` marks) of a received partial's attributes."""
    dims: list[tuple[str, str]] = []
    marks: dict[str, str] = {}
    for key, value in attributes:
        if key.startswith(PREFIX):
            marks[key] = value
        else:
            dims.append((key, value))
    return tuple(dims), marks
