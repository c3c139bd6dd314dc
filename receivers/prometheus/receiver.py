"""The ``prometheus`` receiver: its start, its shutdown and the cycle loop.

Unlike Prometheus there is no loop per target: the cycle is the unit, because the processor needs
every discovered target of a cycle at once, failed ones too, to aggregate the cluster correctly
(``docs/architecture.md``, "Cycles and time"). Each cycle syncs the scrape pool
(``_scrape_pool.py``) with the static and discovered targets, scrapes them all and hands one batch
downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Callable

from pipeline import (
    Batch,
    ComponentError,
    ComponentSettings,
    Cycle,
    Host,
    MetricsConsumer,
    Target,
    Ticker,
    wanted_series_of,
)

from ._http import ScrapeClient
from ._k8s_sd import KubernetesDiscovery
from ._scrape_pool import RequestOptions, ScrapePool
from ._self_metrics import CycleSummary, SelfMetrics
from ._sharding import resolve_shard
from ._target_log import TargetLog
from .config import PrometheusReceiverConfig

#: How long shutdown lets a cycle that is handing its batch downstream finish before cancelling.
CONSUME_GRACE = 10.0
#: Opening connections ahead of the first cycle stops this long before its tick.
CONNECT_AHEAD_MARGIN = 0.25


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
        self._shard = resolve_shard(config.sharding.shards, config.sharding.shard, os.environ,
                                    f"receivers.{settings.id}")
        self._static = config.targets()
        self._static_keys = frozenset(target.key for target in self._static)
        self._client = client or ScrapeClient(
            body_size_limit=int(config.body_size_limit), user_agent=config.user_agent,
            compression=config.enable_compression)
        self._metrics = SelfMetrics(settings)
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
            max_concurrency=self._concurrency(),
            count_all_samples=self.config.count_all_samples,
        )
        if self.config.kubernetes_sd is not None:
            self._discovery = KubernetesDiscovery(self.config.kubernetes_sd, self._log)
            await self._discovery.start()
        if self._shard.count > 1:
            self._log.info("shard %d of %d: scraping the targets whose pod UID (else address) "
                           "hashes to it", self._shard.index, self._shard.count)
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

    def _concurrency(self) -> int:
        """Scrapes in flight at once: ``max_concurrency``, and through the API server no more
        than ``kubernetes_sd.proxy_connections`` (each takes a connection to it)."""
        sd = self.config.kubernetes_sd
        if sd is not None and sd.mode == "apiserver_proxy":
            return min(self.config.max_concurrency, sd.proxy_connections)
        return self.config.max_concurrency

    async def run_cycle(self, cycle: Cycle) -> Batch:
        """One cycle: sync the pool, scrape everything, hand the batch on, record and log."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("run_cycle() before start()")
        self.settings.telemetry.tick(float(self.config.scrape_interval))
        await pool.sync(self._current_targets())
        scrapes = await pool.scrape_all(self._options_for())
        batch = Batch(cycle=cycle, targets=scrapes,
                      shard=(self._shard.index, self._shard.count))
        self._in_consume = True
        try:
            await self._next.consume(batch)
        except Exception:
            self._log.exception("next consumer failed on cycle %d", cycle.index)
        finally:
            self._in_consume = False
        duration = max(0.0, time.time() - cycle.time)
        summary = CycleSummary.of(scrapes)
        self._metrics.record(summary, duration)
        self._log.info(summary.line(cycle, duration))
        self._target_log.cycle(scrapes)
        self._report(summary)
        return batch

    def _current_targets(self) -> list[Target]:
        """Static targets first, then discovered ones (a key already static is skipped); with
        sharding, only this shard's."""
        targets = list(self._static)
        if self._discovery is not None:
            try:
                targets.extend(self._discovery.targets())
            except Exception:
                self._log.exception("kubernetes discovery failed to list targets")
        return self._shard.select(targets) if self._shard.count > 1 else targets

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
            self._host.report_status(healthy, message)
