"""The scrape pool: the receiver's targets, their state between cycles, and one cycle's scrapes.

As in Prometheus' ``scrape/scrape.go``: a pool keyed by target identity keeps per-target state
between cycles (:class:`TargetState`, the health Prometheus keeps in ``scrape/target.go``);
``sync`` diffs the target set by :attr:`pipeline.Target.key`, and targets that left are dropped
with their state and their idle connections. Each cycle scrapes every target concurrently, each
scrape cut at its own timeout, and one target's failure stays with that target: every exception
inside a scrape is caught and classified, so it can never cancel the others.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pipeline import (
    ErrorClass,
    FamilySet,
    ParseError,
    ScrapeError,
    SeriesFilters,
    Target,
    TargetHealth,
    TargetScrape,
)

from ._http import ScrapeClient, describe_exception, netloc_key
from ._textparse import PageMemo, PageParser, ParsedPage, page_parser

#: TLS context and extra headers for one target's requests.
RequestOptions = tuple[ssl.SSLContext | None, Mapping[str, str] | None]
NO_OPTIONS: RequestOptions = (None, None)



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
    #: What its last page looked like, for reading the next one (see :class:`PageMemo`).
    memo: PageMemo = field(default_factory=PageMemo)

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
        parse: PageParser | None = None,
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

        Opening a connection costs about twice a warm scrape (asyncio's connection setup); done
        before the first tick, the first cycle costs what every other one does
        (``bench/bench_cycle.py``'s cold cycle shows it).
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
            page = await self._fetch_and_parse(target, state, options)
        except ScrapeError as exc:
            return self._failed(state, started, t0, exc.error_class, exc.reason)
        except Exception as exc:  # a bug or an unforeseen error: still this target's alone
            return self._failed(state, started, t0, _classify(exc), describe_exception(exc))
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
            families=page.families,
            process_start_time=page.process_start_time,
            duplicates=page.duplicates,
        )

    async def _fetch_and_parse(
        self, target: Target, state: TargetState, options: RequestOptions
    ) -> ParsedPage:
        tls, headers = options
        body = await self.client.get(state.url, self.timeout, ssl=tls, headers=headers)
        try:
            page = self._parse(body, state.memo)
        except ParseError as exc:
            raise exc.for_target(target.key) from None
        except Exception as exc:
            raise ScrapeError(target.key, ErrorClass.PARSE, describe_exception(exc)) from exc
        if self.sample_limit:
            kept = len(page.families.series)
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
