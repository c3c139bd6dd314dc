"""The scrape pool and the receiver's cycle loop.

As in Prometheus' ``scrape/scrape.go``: a pool keyed by target identity keeps per-target state
between cycles (:class:`TargetState`, the health Prometheus keeps in ``scrape/target.go``);
``sync`` diffs the target set by :attr:`pipeline.Target.key`, and targets that left are dropped
with their state and their idle connections. Each cycle scrapes every target concurrently, each
scrape cut at its own timeout, and one target's failure stays with that target: every exception
inside a scrape is caught and classified, so it can never cancel the others.

Unlike Prometheus there is no loop per target: the cycle is the unit (DESIGN.md, "Cycles and
time"), because the processor needs every discovered target of a cycle at once, failed ones too,
to aggregate the cluster correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
    Cycle,
    ErrorClass,
    FamilySet,
    Host,
    MetricsConsumer,
    ParseError,
    Sample,
    ScrapeError,
    SeriesFilters,
    Target,
    TargetHealth,
    TargetScrape,
    Ticker,
    wanted_series_of,
)

from ._http import ScrapeClient, netloc_key
from ._k8s_sd import KubernetesDiscovery
from ._textparse import ParsedPage, page_parser
from .config import PrometheusReceiverConfig

#: TLS context and extra headers for one target's requests.
RequestOptions = tuple[ssl.SSLContext | None, Mapping[str, str] | None]
NO_OPTIONS: RequestOptions = (None, None)

#: Parses one page for the pool's wanted families (see :func:`page_parser`).
ParseFunc = Callable[[bytes], ParsedPage]

#: How long shutdown lets a cycle that is handing its batch downstream finish before cancelling.
CONSUME_GRACE = 10.0
#: Opening connections ahead of the first cycle stops this long before its tick.
CONNECT_AHEAD_MARGIN = 0.25
CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class TargetState:
    """What the pool remembers about a target between cycles."""

    target: Target
    #: Start time (UTC seconds) of the latest successful scrape.
    last_success: float | None = None
    last_scrape: float | None = None
    last_duration: float = 0.0
    last_error_class: ErrorClass | None = None
    last_error: str = ""
    consecutive_failures: int = 0
    #: :func:`target_url` of ``target``, kept so the hot path does not rebuild it every scrape.
    url: str = ""

    def __post_init__(self) -> None:
        self.url = target_url(self.target)

    @property
    def up(self) -> bool:
        return self.last_scrape is not None and self.last_error_class is None


class ScrapePool:
    """The targets of one receiver and their state; scrapes them all each cycle."""

    def __init__(
        self,
        client: ScrapeClient,
        *,
        timeout: float,
        wanted: FamilySet,
        sample_limit: int = 0,
        max_concurrency: int = 512,
        count_all_samples: bool = False,
        series: SeriesFilters | None = None,
        parse: ParseFunc | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.wanted = wanted
        self.sample_limit = sample_limit
        self.max_concurrency = max(1, max_concurrency)
        self._parse = parse or page_parser(wanted, count_all=count_all_samples, series=series)
        self._clock = clock
        self._states: dict[str, TargetState] = {}

    @property
    def states(self) -> Mapping[str, TargetState]:
        return self._states

    async def sync(self, targets: Iterable[Target]) -> list[Target]:
        """Make the pool's targets exactly ``targets`` (first of each key wins, order kept).

        A known key keeps its state (its :class:`Target` is replaced, so changed attributes show);
        a key that left loses its state and the idle connections to its host, unless another
        target still uses that host (the API server, in proxy mode). Returns the targets dropped.
        """
        old = self._states
        new: dict[str, TargetState] = {}
        for target in targets:
            if target.key in new:
                continue
            state = old.get(target.key)
            if state is None:
                state = TargetState(target)
            elif state.target is not target:
                state.target = target
                state.url = target_url(target)
            new[target.key] = state
        self._states = new
        gone = [state.target for key, state in old.items() if key not in new]
        if gone:
            in_use = {_host_key(state.target) for state in new.values()}
            for host in {_host_key(target) for target in gone} - in_use:
                await self.client.close_host(host)
        return gone

    async def scrape_all(
        self, options: Callable[[Target], RequestOptions] = lambda _target: NO_OPTIONS
    ) -> tuple[TargetScrape, ...]:
        """Scrape every target once, at most ``max_concurrency`` at a time, in pool order."""
        states = list(self._states.values())
        results: list[TargetScrape | None] = [None] * len(states)
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(states):
                index = next_index
                next_index += 1
                state = states[index]
                results[index] = await self.scrape(state, options(state.target))

        workers = min(len(states), self.max_concurrency)
        await asyncio.gather(*(worker() for _ in range(workers)))
        return tuple(result for result in results if result is not None)

    async def connect_all(
        self, timeout: float,
        options: Callable[[Target], RequestOptions] = lambda _target: NO_OPTIONS,
    ) -> tuple[int, int]:
        """Open a connection to every target that has none idle, at most ``max_concurrency`` at
        a time, within ``timeout`` seconds in all; (targets ready, targets not).

        Opening a connection costs about twice a warm scrape here (asyncio's connection setup:
        ~180 µs of CPU each); done before the first tick, the first cycle costs what every
        other one does (``bench/bench_cycle.py``'s cold cycle).
        """
        states = list(self._states.values())
        ready = 0
        limit = asyncio.Semaphore(self.max_concurrency)

        async def connect(state: TargetState) -> None:
            nonlocal ready
            async with limit:
                opened = await self.client.open(state.url, self.timeout,
                                                ssl=options(state.target)[0])
            ready += opened  # (not `ready += await ...`: that reads `ready` before awaiting)

        tasks = [asyncio.ensure_future(connect(state)) for state in states]
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)
        finally:  # at the timeout, or when shutdown cancels us: none is left behind
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return ready, len(states) - ready

    async def scrape(
        self, state: TargetState, options: RequestOptions = NO_OPTIONS
    ) -> TargetScrape:
        """Scrape one target and record the outcome in its state; never raises (but cancels)."""
        target = state.target
        started = self._clock()
        t0 = time.perf_counter()
        try:
            page = await self._fetch_and_parse(target, state.url, options)
        except ScrapeError as exc:
            return self._failed(state, started, t0, exc.error_class, exc.reason)
        except Exception as exc:  # a bug or an unforeseen error: still this target's alone
            return self._failed(state, started, t0, _classify(exc), _describe(exc))
        duration = time.perf_counter() - t0
        state.last_success = state.last_scrape = started
        state.last_duration = duration
        state.last_error_class = None
        state.last_error = ""
        state.consecutive_failures = 0
        return TargetScrape(
            target=target,
            health=TargetHealth(up=True, scraped_at=started, duration=duration,
                                last_success=started, samples=page.samples),
            families=_frozen(page.families),
            process_start_time=page.process_start_time,
            duplicates=page.duplicates,
        )

    async def _fetch_and_parse(
        self, target: Target, url: str, options: RequestOptions
    ) -> ParsedPage:
        tls, headers = options
        body = await self.client.get(url, self.timeout, ssl=tls, headers=headers)
        try:
            page = self._parse(body)
        except ParseError as exc:
            raise exc.for_target(target.key) from None
        except Exception as exc:
            raise ScrapeError(target.key, ErrorClass.PARSE, _describe(exc)) from exc
        if self.sample_limit:
            kept = sum(map(len, page.families.values()))
            if kept > self.sample_limit:
                raise ScrapeError(target.key, ErrorClass.SAMPLE_LIMIT,
                                  f"{kept} samples exceed sample_limit {self.sample_limit}")
        return page

    def _failed(
        self, state: TargetState, started: float, t0: float, error_class: ErrorClass, error: str
    ) -> TargetScrape:
        duration = time.perf_counter() - t0
        state.last_scrape = started
        state.last_duration = duration
        state.last_error_class = error_class
        state.last_error = error
        state.consecutive_failures += 1
        health = TargetHealth(up=False, scraped_at=started, duration=duration,
                              last_success=state.last_success, error_class=error_class,
                              error=error)
        return TargetScrape(target=state.target, health=health)

    async def close(self) -> None:
        self._states = {}
        await self.client.aclose()


def _frozen(families: dict[str, list[Sample]]) -> dict[str, tuple[Sample, ...]]:
    """The samples of each family as a tuple, which is what keeps a cycle cheap to hold.

    Why: a cycle's batch lives until the next one replaces it, long enough for the cyclic
    garbage collector's full collections (one or two a cycle on a large fleet) to walk every
    container in it. A list is walked every time, item by item; a tuple of strings and floats is
    untracked the first time the collector meets it, and its samples with it. As lists, a
    5,000-target batch was a hundred thousand lists and 450,000 samples for each full collection
    to walk: the collector took 0.86-0.91 s of a 5,000-target cycle, 0.52-0.60 s with tuples
    (``bench/bench_cycle.py``, ``gc s``). Copying costs about 1 µs a target.
    """
    return dict(zip(families, map(tuple, families.values()), strict=True))


def target_url(target: Target) -> str:
    return target.url or f"http://{target.address}/metrics"


def _host_key(target: Target) -> str:
    try:
        return netloc_key(target_url(target))
    except ValueError:
        return target.address


def _classify(exc: Exception) -> ErrorClass:
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT
    if isinstance(exc, OSError):
        return ErrorClass.CONNECT
    return ErrorClass.PARSE


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _SelfMetrics:
    """The receiver's self-metrics, every one labelled with the receiver's ID."""

    def __init__(self, settings: ComponentSettings) -> None:
        telemetry = settings.telemetry
        self.receiver = receiver = str(settings.id)
        r = ("receiver",)
        self.cycles = telemetry.counter("cycles_total", "Scrape cycles run.", r).labels(receiver)
        self.cycle_duration = telemetry.histogram(
            "cycle_duration_seconds",
            "Time from a cycle's tick to its batch being handed downstream.",
            r, CYCLE_BUCKETS,
        ).labels(receiver)
        self.overruns = telemetry.counter(
            "cycle_overruns_total", "Cycle ticks skipped because a cycle ran late.", r
        ).labels(receiver)
        self.discovered = telemetry.gauge(
            "targets_discovered", "Targets of the latest cycle.", r).labels(receiver)
        self.up = telemetry.gauge(
            "targets_up", "Targets scraped successfully in the latest cycle.", r).labels(receiver)
        self.failures = telemetry.counter(
            "scrape_failures_total", "Failed target scrapes, by error class.",
            ("receiver", "error_class"))
        self.scraped = telemetry.counter(
            "samples_scraped_total",
            "Sample lines read from target pages: the wanted lines, or every line with "
            "count_all_samples.", r).labels(receiver)
        self.kept = telemetry.counter(
            "samples_kept_total", "Samples of wanted families handed downstream.", r
        ).labels(receiver)
        self.parse_errors = telemetry.counter(
            "parse_errors_total", "Target pages that failed to parse.", r).labels(receiver)
        self.duplicates = telemetry.counter(
            "duplicate_series_total", "Repeated series lines dropped from target pages.", r
        ).labels(receiver)


@dataclass(frozen=True, slots=True)
class CycleSummary:
    """The numbers of one cycle, as logged and recorded."""

    discovered: int
    up: int
    failed_by_class: Mapping[str, int]
    samples_scraped: int
    samples_kept: int
    duplicates: int

    @classmethod
    def of(cls, scrapes: Sequence[TargetScrape]) -> CycleSummary:
        failed: Counter[str] = Counter()
        up = scraped = kept = duplicates = 0
        for scrape in scrapes:
            health = scrape.health
            if health.up:
                up += 1
                scraped += health.samples
                kept += sum(map(len, scrape.families.values()))
                duplicates += scrape.duplicates
            else:
                failed[str(health.error_class)] += 1
        return cls(len(scrapes), up, dict(sorted(failed.items())), scraped, kept, duplicates)

    @property
    def failed(self) -> int:
        return self.discovered - self.up

    def line(self, cycle: Cycle, duration: float) -> str:
        when = datetime.fromtimestamp(cycle.time, UTC)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
        if when.microsecond:
            stamp += f".{when.microsecond // 1000:03d}"
        classes = ", ".join(f"{name}={count}" for name, count in self.failed_by_class.items())
        failed = f"failed={self.failed}" + (f" ({classes})" if classes else "")
        return (f"cycle {cycle.index} @{stamp}Z: targets discovered={self.discovered} "
                f"scraped={self.up} {failed} samples kept={self.samples_kept} in {duration:.3f}s")


#: A target that keeps failing is warned about again this often (seconds), not every cycle.
FAILING_REPEAT = 300.0
#: At most this many targets are named per cycle at warning level; the rest are counted.
FAILING_NAMED_PER_CYCLE = 20


def describe_target(target: Target) -> str:
    """``10.0.1.5:61678 (pod kube-system/aws-node-x on node ip-10-0-1-5)``: what an operator
    needs to find the failing pod."""
    where = []
    if target.pod:
        where.append(f"pod {target.namespace}/{target.pod}" if target.namespace else
                     f"pod {target.pod}")
    if target.node:
        where.append(f"on node {target.node}")
    return f"{target.address} ({' '.join(where)})" if where else target.address


class TargetLog:
    """Logs targets that start failing (warning), recover (info) and keep failing (a warning
    every :data:`FAILING_REPEAT` seconds; debug every cycle), so a failing fleet is visible
    without one line per target per cycle."""

    def __init__(
        self, log: logging.LoggerAdapter[logging.Logger], clock: Callable[[], float] = time.time
    ) -> None:
        self._log = log
        self._clock = clock
        #: target key -> (failing since, last warned, failed scrapes so far)
        self._failing: dict[str, tuple[float, float, int]] = {}

    def cycle(self, scrapes: Sequence[TargetScrape]) -> None:
        now = self._clock()
        named = skipped = 0
        seen: set[str] = set()
        for scrape in scrapes:
            key, health = scrape.target.key, scrape.health
            seen.add(key)
            entry = self._failing.get(key)
            if health.up:
                if entry is not None:
                    del self._failing[key]
                    self._log.info("target %s recovered after %.0fs (%d failed scrape(s))",
                                   describe_target(scrape.target), now - entry[0], entry[2])
                continue
            why = f"{health.error_class}: {health.error}"
            since, warned, count = entry if entry is not None else (now, 0.0, 0)
            due = entry is None or now - warned >= FAILING_REPEAT
            if due and named < FAILING_NAMED_PER_CYCLE:
                named += 1
                warned = now
                state = "failing" if entry is None else f"still failing after {now - since:.0f}s"
                self._log.warning("target %s %s: %s", describe_target(scrape.target), state, why)
            else:
                skipped += due
                self._log.debug("target %s failed: %s", describe_target(scrape.target), why)
            self._failing[key] = (since, warned, count + 1)
        if skipped:
            self._log.warning("%d more target(s) failing, not named here (debug level names "
                              "each failure)", skipped)
        for key in set(self._failing) - seen:  # gone from discovery: nothing left to report
            del self._failing[key]


class PrometheusReceiver:
    """Scrapes the static and discovered targets every ``scrape_interval`` and hands each cycle's
    :class:`pipeline.Batch` to the next consumer.

    ``start`` starts discovery and one background task running the cycle loop and returns.
    ``shutdown`` is safe without ``start`` and twice: it lets a batch already being handed
    downstream arrive (up to :data:`CONSUME_GRACE`), cancels the rest, then stops discovery and
    closes connections.
    """

    def __init__(
        self,
        settings: ComponentSettings,
        config: PrometheusReceiverConfig,
        next_consumer: MetricsConsumer,
        *,
        client: ScrapeClient | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self._next = next_consumer
        self._log = settings.logger
        self._static = config.targets()
        self._static_keys = frozenset(target.key for target in self._static)
        self._client = client or ScrapeClient(
            body_size_limit=int(config.body_size_limit), user_agent=config.user_agent,
            compression=config.enable_compression)
        self._metrics = _SelfMetrics(settings)
        self._target_log = TargetLog(self._log)
        #: The TLS context of ``config.tls``, made at start (where its files are).
        self._tls: ssl.SSLContext | None = None
        self._pool: ScrapePool | None = None
        self._discovery: KubernetesDiscovery | None = None
        self._host: Host | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_consume = False
        self._shut_down = False

    @property
    def pool(self) -> ScrapePool | None:
        return self._pool

    async def start(self, host: Host) -> None:
        if self._task is not None or self._shut_down:
            return
        self._host = host
        if self.config.tls is not None:
            try:
                self._tls = self.config.tls.ssl_context()
            except ComponentError as exc:
                raise ComponentError(str(exc), str(self.settings.id)) from exc
            if self.config.tls.insecure_skip_verify:
                self._log.warning("tls.insecure_skip_verify: https targets are not verified")
        self._pool = ScrapePool(
            self._client,
            timeout=float(self.config.scrape_timeout),
            wanted=self._next.wanted_families(),
            series=wanted_series_of(self._next),
            sample_limit=self.config.sample_limit,
            max_concurrency=self.config.max_concurrency,
            count_all_samples=self.config.count_all_samples,
        )
        if self.config.kubernetes_sd is not None:
            self._discovery = KubernetesDiscovery(self.config.kubernetes_sd, self._log)
            await self._discovery.start()
        self._task = asyncio.create_task(self._run(), name=f"{self.settings.id} cycles")

    async def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        self._stopping = True
        task = self._task
        if task is not None:
            if not self._in_consume:
                task.cancel()
            done, _ = await asyncio.wait({task}, timeout=CONSUME_GRACE)
            if not done:
                task.cancel()
                await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                self._log.error("cycle loop failed", exc_info=task.exception())
        if self._discovery is not None:
            await self._discovery.shutdown()
        if self._pool is not None:
            await self._pool.close()
        else:
            await self._client.aclose()

    # -- the cycle loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        ticker = Ticker(float(self.config.scrape_interval), started=self.settings.started_at)
        await self._wait_for_discovery()
        try:
            await self._connect_ahead(ticker.next_due())
        except Exception:  # an optimisation only: the cycles open what is missing
            self._log.exception("opening connections ahead of the first cycle failed")
        skipped = 0
        while not self._stopping:
            cycle = await ticker.next()
            if ticker.skipped > skipped:
                lost, skipped = ticker.skipped - skipped, ticker.skipped
                self._metrics.overruns.inc(lost)
                self._log.warning("cycle %d ran late: %d tick(s) skipped", cycle.index, lost)
            try:
                await self.run_cycle(cycle)
            except Exception:
                # A bug in one cycle must not end the receiver; the next tick tries again.
                self._log.exception("cycle %d failed", cycle.index)

    async def _wait_for_discovery(self) -> None:
        """Before the first cycle, wait (bounded) for discovery's first full listing, so the first
        batch is not an empty cluster."""
        discovery = self._discovery
        if discovery is None or discovery.synced:
            return
        timeout = max(float(self.config.scrape_interval), 10.0)
        try:
            synced = await discovery.wait_synced(timeout)
        except Exception:
            self._log.exception("waiting for kubernetes discovery failed")
            synced = False
        if not synced:
            self._log.warning(
                "kubernetes discovery not synced after %gs; scraping the targets known so far",
                timeout)

    async def _connect_ahead(self, first_tick: float) -> None:
        """Use the wait for the first tick to open the targets' connections (see
        :meth:`ScrapePool.connect_all`), stopping short of the tick."""
        pool = self._pool
        budget = first_tick - time.time() - CONNECT_AHEAD_MARGIN
        if pool is None or budget <= 0:
            return
        await pool.sync(self._current_targets())
        if not pool.states:
            return
        began = time.monotonic()
        ready, failed = await pool.connect_all(budget, self._options_for())
        self._log.info("connected to %d of %d targets ahead of the first cycle in %.2fs",
                       ready, ready + failed, time.monotonic() - began)

    async def run_cycle(self, cycle: Cycle) -> Batch:
        """One cycle: sync the pool, scrape everything, hand the batch on, record and log."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("run_cycle() before start()")
        self.settings.telemetry.tick(float(self.config.scrape_interval))
        await pool.sync(self._current_targets())
        scrapes = await pool.scrape_all(self._options_for())
        batch = Batch(cycle=cycle, targets=scrapes)
        self._in_consume = True
        try:
            await self._next.consume(batch)
        except Exception:
            self._log.exception("next consumer failed on cycle %d", cycle.index)
        finally:
            self._in_consume = False
        duration = max(0.0, time.time() - cycle.time)
        summary = CycleSummary.of(scrapes)
        self._record(summary, duration)
        self._log.info(summary.line(cycle, duration))
        self._target_log.cycle(scrapes)
        self._report(summary)
        return batch

    def _current_targets(self) -> list[Target]:
        """Static targets first, then discovered ones (a key already static is skipped)."""
        targets = list(self._static)
        if self._discovery is not None:
            try:
                targets.extend(self._discovery.targets())
            except Exception:
                self._log.exception("kubernetes discovery failed to list targets")
        return targets

    def _options_for(self) -> Callable[[Target], RequestOptions]:
        """Per target: the receiver's own TLS settings (``tls``), or in proxy mode the API
        server's credentials for discovered targets."""
        own: RequestOptions = (self._tls, None)
        if self._discovery is None:
            return lambda _target: own
        tls, headers = self._discovery.request_options()
        if tls is None and not headers:  # direct mode: pods are scraped like static targets
            return lambda _target: own
        discovered: RequestOptions = (tls, headers or None)
        static = self._static_keys
        return lambda target: own if target.key in static else discovered

    def _record(self, summary: CycleSummary, duration: float) -> None:
        m = self._metrics
        m.cycles.inc()
        m.cycle_duration.observe(duration)
        m.discovered.set(summary.discovered)
        m.up.set(summary.up)
        for error_class, count in summary.failed_by_class.items():
            m.failures.labels(m.receiver, error_class).inc(count)
        m.parse_errors.inc(summary.failed_by_class.get(str(ErrorClass.PARSE), 0))
        m.scraped.inc(summary.samples_scraped)
        m.kept.inc(summary.samples_kept)
        m.duplicates.inc(summary.duplicates)

    def _report(self, summary: CycleSummary) -> None:
        if self._host is None:
            return
        if self._discovery is not None and not self._discovery.synced:
            healthy, message = False, "kubernetes discovery has not synced"
        elif summary.discovered and not summary.up:
            classes = ", ".join(f"{k}={v}" for k, v in summary.failed_by_class.items())
            healthy, message = False, f"all {summary.discovered} targets failed ({classes})"
        else:
            healthy, message = True, f"{summary.up}/{summary.discovered} targets up"
        with contextlib.suppress(Exception):
            self._host.report_status(self.settings.id, healthy, message)
