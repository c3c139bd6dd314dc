"""The data that flows through a pipeline.

One type, :class:`Batch`, travels from receivers through processors to exporters, as pdata does in
the OpenTelemetry Collector. A receiver fills ``targets`` (what it scraped, one entry per discovered
target, failed ones included); an aggregating processor adds ``metrics`` (the cluster-level values
exporters publish). Everything is frozen: a consumer never changes a batch it was handed, so the
fan-out can give one batch to every branch without copying it.

The scrape hot path keeps samples as plain ``(series_text, value)`` tuples: ``series_text`` is the
raw text of the series as the target sent it (``name{label="v",...}``), which is stable for a given
series on a given target and so serves as the key of per-series state. Labels are parsed only when a
consumer needs them (:func:`pipeline.parse_series`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

#: One sample: the raw series text (metric name and label block) and its value.
Sample = tuple[str, float]

#: Families a consumer wants parsed: a set of family names, or ``None`` for every family.
FamilySet = frozenset[str] | None

#: Which lines of a wanted family a consumer reads, judged by series text (``name{labels}`` as
#: the page writes it, the line's own name with any ``_sum``/``_count``/``_bucket`` suffix). A
#: receiver calls it once per distinct series text, remembers the answer, and skips the lines
#: it refuses without reading their values.
SeriesFilter = Callable[[str], bool]
#: Filters by family name; a wanted family without one has all its lines read.
SeriesFilters = Mapping[str, SeriesFilter]


class ErrorClass(StrEnum):
    """Why a scrape failed: the classes of docs/data-model.md, in self-metrics and health."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    HTTP_STATUS = "http_status"
    PARSE = "parse"
    BODY_TOO_LARGE = "body_too_large"
    SAMPLE_LIMIT = "sample_limit"


@dataclass(frozen=True, slots=True)
class Target:
    """A scrape target: the resource all of its series belong to.

    ``address`` is ``host:port``; ``pod``/``node``/``namespace`` are set when the target was
    discovered from Kubernetes; ``attributes`` holds extra resource attributes (for example the
    node's zone, instance type and node group) as sorted ``(key, value)`` pairs so a target is
    hashable.
    """

    address: str
    url: str = ""
    pod: str = ""
    node: str = ""
    namespace: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    #: The pod's UID when discovered from Kubernetes (what sharding hashes: stable for the pod's
    #: life); not part of the key, nor of equality.
    uid: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        """Identity of the target across cycles: its address plus the pod, when known.

        A pod re-created on the same IP is a new target (its counters start afresh).
        """
        return f"{self.address}/{self.pod}" if self.pod else self.address

    def attribute(self, name: str, default: str = "") -> str:
        for key, value in self.attributes:
            if key == name:
                return value
        return default

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """The outcome of a target's latest scrape, as Prometheus keeps it per target.

    ``last_success`` is the start time of the latest successful scrape (``None`` if never).
    ``samples`` counts every sample line the page had, wanted or not.
    """

    up: bool
    scraped_at: float
    duration: float = 0.0
    last_success: float | None = None
    error_class: ErrorClass | None = None
    error: str = ""
    samples: int = 0


class Page(Mapping[str, list[Sample]]):
    """The samples a target's page held of the wanted families, flat: the *page form*.

    ``series`` (their texts) and ``numbers`` (their values) hold the lines in order, one entry
    each (not ``values``: that is the mapping's method); ``runs`` says whose they
    are: ``(family, count)`` pairs, each family once, covering the lines in order (the first
    ``count`` lines are the first family's, and so on). Families whose lines were interleaved on
    the page are grouped, each in the order of its first line, its lines in page order.

    Why flat: the parser appends each line's text and value as it reads it, and the aggregator
    takes the two tuples as they are, comparing them with the target's last page in C (the same
    texts: the same layout) instead of re-flattening a dict of per-family lists on every scrape.
    Tuples of strings and floats are also what the cyclic garbage collector stops walking after
    one look, which keeps a large fleet's batch cheap to hold (``bench/bench_cycle.py``).

    For everyone else a page reads as a mapping ``family -> [(series_text, value), ...]`` (a new
    list on each lookup), which is what exporters and plugins that read raw samples use. Immutable
    by convention: it holds tuples only, and nothing here changes them.
    """

    __slots__ = ("series", "numbers", "runs")

    def __init__(self, series: tuple[str, ...] = (), numbers: tuple[float, ...] = (),
                 runs: tuple[tuple[str, int], ...] = ()) -> None:
        self.series = series
        self.numbers = numbers
        self.runs = runs

    @classmethod
    def of(cls, families: Mapping[str, Iterable[Sample]]) -> Page:
        """The page form of ``family -> samples`` (families without samples are left out)."""
        if isinstance(families, Page):
            return families
        series: list[str] = []
        numbers: list[float] = []
        runs: list[tuple[str, int]] = []
        for family, samples in families.items():
            before = len(series)
            for text, value in samples:
                series.append(text)
                numbers.append(value)
            if len(series) > before:
                runs.append((family, len(series) - before))
        return cls(tuple(series), tuple(numbers), tuple(runs))

    @classmethod
    def from_lines(cls, series: list[str], numbers: list[float],
                   starts: list[tuple[str, int]]) -> Page:
        """The page of lines read in order, ``starts`` holding ``(family, index of its first
        line)`` wherever the family changes. A family that comes back later (a page that
        interleaves families, which the text format forbids but readers tolerate) is regrouped."""
        if not starts:
            return cls()
        ends = [start for _, start in starts[1:]]
        ends.append(len(series))
        runs = [(family, end - start) for (family, start), end in zip(starts, ends, strict=True)]
        if len({family for family, _ in runs}) == len(runs):
            return cls(tuple(series), tuple(numbers), tuple(runs))
        grouped: dict[str, list[Sample]] = {}
        for (family, start), end in zip(starts, ends, strict=True):
            grouped.setdefault(family, []).extend(
                zip(series[start:end], numbers[start:end], strict=True))
        return cls.of(grouped)

    def __getitem__(self, family: str) -> list[Sample]:
        start = 0
        for name, count in self.runs:
            if name == family:
                end = start + count
                return list(zip(self.series[start:end], self.numbers[start:end], strict=True))
            start += count
        raise KeyError(family)

    def __iter__(self) -> Iterator[str]:
        return (family for family, _ in self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __repr__(self) -> str:
        return f"Page({dict(self.items())!r})"


#: A page without samples (of a target down, or with none of the wanted families).
EMPTY_PAGE = Page()


def _empty_page() -> Page:
    return EMPTY_PAGE


@dataclass(frozen=True, slots=True)
class TargetScrape:
    """One target's part of a cycle: its health and, when up, the samples of the wanted families.

    ``families`` is the page form (:class:`Page`) of those samples: read as a mapping, it maps a
    family name to its samples. A summary's or histogram's ``_sum``, ``_count`` and ``_bucket``
    lines are filed under the family name they belong to; the series text keeps the full line
    name. Any mapping of family to samples may be passed; it is kept in the page form.
    ``process_start_time`` is the target's ``process_start_time_seconds`` when the page has one.
    ``duplicates`` counts series lines that repeated an earlier line of the same page (the first
    one is kept).
    """

    target: Target
    health: TargetHealth
    families: Page = field(default_factory=_empty_page)
    process_start_time: float | None = None
    duplicates: int = 0

    def __post_init__(self) -> None:
        if type(self.families) is not Page:
            object.__setattr__(self, "families", Page.of(self.families))


#: The names :attr:`Metric.unit` takes: CloudWatch's StandardUnit values (PutMetricData refuses
#: anything else; the other exporters map them to their own).
METRIC_UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
})


class MetricKind(StrEnum):
    """How an aggregated value is to be read downstream."""

    GAUGE = "gauge"
    #: The increase over the cycle (delta temporality).
    COUNTER = "counter"
    DISTRIBUTION = "distribution"


@dataclass(frozen=True, slots=True)
class Distribution:
    """Bucket counts of one cycle: ``counts[i]`` observations fell at or below ``bounds[i]``
    and above ``bounds[i-1]``; the last count is the overflow above the last bound."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum: float = 0.0
    count: float = 0.0


@dataclass(frozen=True, slots=True)
class Metric:
    """One aggregated value of a cycle.

    ``attributes`` are the group-by dimensions, ``()`` for the cluster-wide value. ``unit`` uses
    CloudWatch's unit names (``Count``, ``Milliseconds``, ``Percent``). ``derived`` marks values
    computed from other metrics (available IPs, utilisation, coverage), which the CloudWatch
    exporter sends only when asked.

    What exporters name and describe a metric by travels with it, so that no exporter keeps a
    table of a processor's output names: ``description`` says what the value of one cycle is
    (for a counter, what it counts; an exporter serving running totals frames it so);
    ``source`` is the scraped family the value aggregates ("" for values computed from others,
    and for self-metrics); ``quantile`` the summary quantile it reads, if any. A processor shares
    these objects between cycles (they come from its rules), so they cost nothing per cycle.
    """

    name: str
    kind: MetricKind
    value: float
    unit: str = "Count"
    attributes: tuple[tuple[str, str], ...] = ()
    derived: bool = False
    description: str = ""
    distribution: Distribution | None = None
    source: str = ""
    quantile: float | None = None


@dataclass(frozen=True, slots=True)
class Cycle:
    """A scheduled cycle: ``time`` is its tick (aligned to wall-clock multiples of the interval,
    UTC seconds), ``previous`` the tick before it (further back when ticks were skipped),
    ``index`` counts cycles from 0, ``started`` is when the pipeline started (the window a newly
    started target is judged against), ``interval`` the schedule's interval (0: unknown)."""

    time: float
    previous: float
    index: int = 0
    started: float = 0.0
    interval: float = 0.0


@dataclass(frozen=True, slots=True)
class Batch:
    """What one cycle hands downstream: every discovered target and, after aggregation, metrics.

    ``shard`` says which part of the fleet ``targets`` are: shard ``index`` of ``count`` when
    several replicas share the fleet (a receiver's ``sharding``), ``(0, 1)`` for all of it. An
    aggregating processor that publishes partials for a gateway to combine stamps them with it.
    """

    cycle: Cycle
    targets: tuple[TargetScrape, ...] = ()
    metrics: tuple[Metric, ...] = ()
    shard: tuple[int, int] = (0, 1)

    def with_metrics(self, metrics: Sequence[Metric]) -> Batch:
        return dataclasses.replace(self, metrics=self.metrics + tuple(metrics))


_UNESCAPE = {"n": "\n", "\\": "\\", '"': '"'}
#: A label of a block without escapes (so no value holds a quote): one C-level findall reads the
#: whole block, against a Python step per character below (a tenth of the time).
_PLAIN_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"([^"]*)"')


def parse_series(series: str) -> tuple[str, dict[str, str]]:
    """Split a series text ``name{a="x",b="y"}`` into its name and labels (escapes undone).

    Cheap enough for occasional use; the hot path caches results by series text.
    """
    brace = series.find("{")
    if brace < 0:
        return series.strip(), {}
    name = series[:brace].strip()
    if "\\" not in series:
        return name, dict(_PLAIN_LABEL.findall(series, brace))
    labels: dict[str, str] = {}
    text = series[brace + 1 :]
    i = 0
    end = len(text)
    while i < end:
        while i < end and text[i] in " \t,":
            i += 1
        if i >= end or text[i] == "}":
            break
        eq = text.index("=", i)
        key = text[i:eq].strip()
        i = text.index('"', eq) + 1
        chars: list[str] = []
        while text[i] != '"':
            ch = text[i]
            if ch == "\\":
                i += 1
                nxt = text[i]
                # The exposition format escapes only \\, \" and \n; any other backslash stays.
                chars.append(_UNESCAPE.get(nxt, "\\" + nxt))
            else:
                chars.append(ch)
            i += 1
        labels[key] = "".join(chars)
        i += 1
    return name, labels
