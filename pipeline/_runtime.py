"""Running a config: telemetry endpoint, graph, signals, orderly stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ._component import ComponentID, ComponentSettings, Kind, log_tag
from ._config import Config, config_warnings
from ._errors import PipelineError
from ._gc import GcPolicy
from ._graph import GateFactory, Graph, Node, build_graph
from ._leader import Leadership, LeaderWatch
from ._logging import component_logger
from ._registry import Registry
from ._reload import Reloader, ReloadLoop
from ._telemetry import Telemetry, TelemetryServer
from ._units import parse_endpoint

logger = logging.getLogger("cni_pipeline")

#: Set by the command line's SIGTERM handler while it starts, before the loop has its own: the
#: service then stops at once (a pod deleted while starting), instead of the default kill.
EARLY_STOP = threading.Event()

#: At shutdown, how long the export gates may take to record the last delivered cycle, and the
#: elector to release the Lease, before we go without (the Lease then expires instead).
_LEADER_STOP_GRACE = 10.0


class _Host:
    """What one component instance sees of the service: a place to report its health.

    Reports are kept under kind and ID, so a receiver and an exporter of one type (both
    ``prometheus``) do not overwrite each other's health."""

    def __init__(self, telemetry: Telemetry, kind: Kind, component: ComponentID) -> None:
        self._telemetry = telemetry
        self._tag = log_tag(kind, component)

    def report_status(self, healthy: bool, message: str = "") -> None:
        self._telemetry.report_status(self._tag, healthy, message)


class Service:
    """One running pipeline service; ``run`` returns once ``stop`` is set and all has stopped.

    With a ``leadership`` (service.leader_election, built by the application), each pipeline
    exports only while this replica leads (see pipeline/_leader.py)."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        telemetry: Telemetry | None = None,
        leadership: Leadership | None = None,
    ):
        self.config = config
        self.registry = registry
        self.telemetry = telemetry or Telemetry()
        self.started_at = time.time()
        self.graph: Graph | None = None
        self.server: TelemetryServer | None = None
        self.gc = GcPolicy()
        self.leadership = leadership
        self.leader_watch: LeaderWatch | None = None
        self._leader_stop = asyncio.Event()
        self._leader_task: asyncio.Task[None] | None = None

    def _settings(self, cid: ComponentID, kind: Kind) -> ComponentSettings:
        return ComponentSettings(
            id=cid,
            kind=kind,
            logger=component_logger(cid, kind),
            telemetry=self.telemetry,
            started_at=self.started_at,
        )

    def _start_telemetry_server(self) -> None:
        endpoint = self.config.service.telemetry.endpoint
        if not endpoint:
            return
        host, port = parse_endpoint(endpoint)  # validated with the config
        try:
            self.server = TelemetryServer(self.telemetry, host, port)
        except OSError as exc:
            raise OSError(f"service.telemetry.endpoint {endpoint}: cannot listen: {exc}") from exc
        self.server.start()
        logger.info(
            "self-telemetry on http://%s:%d (/metrics, /healthz, /readyz)", host, self.server.port
        )

    async def start(self) -> None:
        self.telemetry.unhealthy_after = float(self.config.service.telemetry.unhealthy_after)
        self._start_telemetry_server()
        pending = {
            log_tag(Kind.RECEIVER, cid)
            for cid in self.config.receivers
            if any(cid in p.receivers for p in self.config.pipelines)
        }
        self.telemetry.expect_reports(pending)
        self.graph = build_graph(
            self.config, self.registry, self._settings, self.telemetry, logger, self._gates()
        )
        for warning in config_warnings(self.config, self.registry):
            logger.warning("%s", warning)
        await self.graph.start_all(lambda node: _Host(self.telemetry, node.kind, node.id), logger)
        self.gc.start()
        self._start_leadership()
        logger.info(
            "pipeline started: %d pipeline(s) from %s",
            len(self.config.pipelines),
            self.config.source,
        )

    async def reload(self, config: Config) -> bool:
        """Apply a new, already validated config in place; False if nothing changed.

        What did not change keeps running with its state (see :func:`build_graph`). The rest is
        replaced in an order that never feeds a batch twice: the receivers that go stop first,
        then the processors and exporters that go (exporters flush); a new processor of the
        same ID in the same pipeline takes over its predecessor's state (the optional
        ``take_over(previous)``, as ``cni_aggregate`` keeps its counters' baselines); then the
        new components start, downstream first. A component that fails to start stops the
        service, as at start. ``service.telemetry.endpoint`` and ``service.leader_election``
        are read at start only: a change to them is logged and waits for a restart."""
        if self.graph is None:
            raise PipelineError("reload before start")
        old_config, old_graph = self.config, self.graph
        self._warn_restart_only(old_config, config)
        graph = build_graph(
            config, self.registry, self._settings, self.telemetry, logger, self._gates(),
            previous=old_graph,
        )
        gone = [n for n in old_graph.nodes() if not any(n is m for m in graph.nodes())]
        if not gone and len(graph.nodes()) == len(old_graph.nodes()):
            self.config = config
            logger.info("config reloaded from %s: no component changed", config.source)
            return False
        for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER):  # upstream first
            for node in (n for n in gone if n.kind is kind):
                await old_graph.stop(node, logger)
        _hand_over_state(graph, gone)
        self.config, self.graph = config, graph
        self.telemetry.unhealthy_after = float(config.service.telemetry.unhealthy_after)
        for warning in config_warnings(config, self.registry):
            logger.warning("%s", warning)
        await graph.start_all(lambda node: _Host(self.telemetry, node.kind, node.id), logger)
        started = [n for n in graph.nodes() if not any(n is m for m in old_graph.nodes())]
        logger.info(
            "config reloaded from %s: %d component(s) kept, %d stopped, %d started",
            config.source, len(graph.nodes()) - len(started), len(gone), len(started),
        )
        return True

    @staticmethod
    def _warn_restart_only(old: Config, new: Config) -> None:
        for key, before, after in (
            ("service.telemetry.endpoint", old.service.telemetry.endpoint,
             new.service.telemetry.endpoint),
            ("service.leader_election", old.service.leader_election,
             new.service.leader_election),
        ):
            if before != after:
                logger.warning("%s changed: it takes effect at the next restart", key)

    async def shutdown(self) -> None:
        await self.gc.stop()
        if self.graph is not None:
            await self.graph.shutdown_all(logger)
        await self._stop_leadership()
        if self.server is not None:
            self.server.stop()
            self.server = None

    # -- leader election ------------------------------------------------------------------------

    def _gates(self) -> GateFactory | None:
        """The export gates' factory when a Leadership was given (else pipelines export)."""
        if self.leadership is None:
            if self.config.service.leader_election.enabled:
                raise PipelineError(
                    f"{self.config.source}: service.leader_election.enabled is true, but the "
                    "application gave the service no Leadership to follow"
                )
            return None
        if self.leader_watch is None:  # one watch for the service's life, reloads included
            self.leader_watch = LeaderWatch(self.leadership, self.telemetry, logger)
        return self.leader_watch.gate

    def _start_leadership(self) -> None:
        """Elect once everything runs: the gates keep cycles that come before the first win, and
        replay them then."""
        if self.leadership is None:
            return
        self._leader_task = asyncio.create_task(
            self.leadership.run(self._leader_stop), name="leader-election"
        )
        self._leader_task.add_done_callback(_log_leader_end)

    async def _stop_leadership(self) -> None:
        """After the exporters have flushed: record the last delivered cycles, then release."""
        if self.leader_watch is not None:
            try:
                async with asyncio.timeout(_LEADER_STOP_GRACE):
                    await self.leader_watch.settle()
            except TimeoutError:
                logger.warning("the last delivered cycles could not be recorded in time")
        if self._leader_task is None:
            return
        self._leader_stop.set()
        done, _ = await asyncio.wait({self._leader_task}, timeout=_LEADER_STOP_GRACE)
        if not done:
            logger.warning(
                "leader election did not stop in %.0fs; the lease will expire", _LEADER_STOP_GRACE
            )
            self._leader_task.cancel()
        self._leader_task = None

    async def run(
        self, stop: asyncio.Event, started: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Start (``started`` instead, if given: it must call :meth:`start`), run until
        ``stop`` is set, then shut down in order."""
        try:
            await (started or self.start)()
            await stop.wait()
            logger.info("stopping: flushing exporters")
        finally:
            await self.shutdown()
        logger.info("stopped")


def _hand_over_state(graph: Graph, gone: list[Node]) -> None:
    """Each new processor whose pipeline had one of the same ID takes over its state, if it can
    (``take_over(previous)``: counters then continue exactly across the reload)."""
    for node in graph.processors:
        take_over = getattr(node.component, "take_over", None)
        if take_over is None:
            continue
        previous = next(
            (g for g in gone if g.kind is Kind.PROCESSOR and g.id == node.id
             and g.pipeline == node.pipeline),
            None,
        )
        if previous is not None and type(previous.component) is type(node.component):
            take_over(previous.component)


def _log_leader_end(task: asyncio.Task[None]) -> None:
    """The elector ends only when asked to: say so loudly if it died (this replica then never
    leads again, while still looking ready)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "leader election failed; this replica stands by for good", exc_info=task.exception()
        )


async def run_until_signal(service: Service, reloader: Reloader | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop in order (exporters flush what they hold).

    With a ``reloader``, SIGHUP reloads the config in place, and so does a change of the file
    while ``service.watch_config`` is on (pipeline/_reload.py). A reload whose new components
    cannot start stops the service and raises here, as a failed start does."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if EARLY_STOP.is_set():  # a SIGTERM came before the handler above
        stop.set()
    failures: list[BaseException] = []
    tasks: set[asyncio.Task[None]] = set()

    def spawn(work: Coroutine[Any, Any, None], name: str) -> None:
        task = loop.create_task(work, name=name)
        tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                logger.error("config reload failed; stopping", exc_info=finished.exception())
                failures.append(finished.exception())  # type: ignore[arg-type]
                stop.set()

        task.add_done_callback(done)

    async def serve() -> None:
        await service.start()
        if reloader is not None:
            reloads = ReloadLoop(service, reloader)
            loop.add_signal_handler(
                signal.SIGHUP, lambda: spawn(reloads.reload("SIGHUP"), "reload")
            )
            spawn(reloads.watch(), "config-watch")

    try:
        await service.run(stop, started=serve)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise failures[0]
