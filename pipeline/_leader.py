"""Leader election, the engine's side: its config, the Leadership it is handed, the export gate.

Every replica discovers, scrapes and aggregates (a hot standby); only the leader exports. Who leads
is the application's business (``cni_pipeline.leader`` holds a Kubernetes Lease): the engine sees a
:class:`Leadership` and nothing of Kubernetes (tests/test_layering.py).

The graph puts an :class:`ExportGate` between the last processor and the exporters of each
pipeline. The gate keeps the last :data:`KEPT_CYCLES` batches. As leader it hands each batch to the
exporters and, once they have delivered it, calls ``record_delivered(cycle time)``, which the
elector writes into the Lease. On becoming leader it first exports the kept batches after the
cycle recorded there (each keeps its own cycle time), then carries on. So across a failover no
cycle is lost or published twice, except a cycle that a leader killed between delivering and
recording may repeat: when the Lease was taken over rather than released, the first replayed cycle
is counted in ``cni_pipeline_leader_possible_repeats_total``.

"Delivered" must mean sent, not queued: a leader that records a cycle its queue still holds and is
then killed loses that cycle for good (the new leader starts after it). An exporter that buffers
says when its sends are done through :class:`Delivering`; one without it (or with it absent) is
taken to have delivered once ``consume`` returns, which is true of exporters that send in
``consume`` or serve a scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._component import MetricsConsumer, wanted_series_of
from ._model import Batch, FamilySet, SeriesFilters
from ._telemetry import Telemetry
from ._units import Duration

#: How many cycles a gate keeps for a replay (the issue's "last 10 cycles"). A failover takes up to
#: lease_duration plus retry_period; cycles older than this many intervals are lost, and logged.
KEPT_CYCLES = 10

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, kw_only=True)
class LeaderElectionConfig:
    """``service.leader_election``: whether replicas elect one exporter, and the Lease they use."""

    enabled: bool = False
    lease_name: str = "cni-pipeline"
    #: "": the pod's namespace (POD_NAMESPACE, else the service-account namespace file), else
    #: kube-system (resolved by the application, which knows where it runs).
    lease_namespace: str = ""
    lease_duration: Duration = Duration(15)
    renew_deadline: Duration = Duration(10)
    retry_period: Duration = Duration(2)
    #: "": HOSTNAME (the pod name).
    identity: str = ""

    def validate(self) -> list[tuple[str, str]]:
        """Problems as (key, message), keys relative to ``service.leader_election``.

        client-go's rule: retry_period < renew_deadline < lease_duration, so a leader that cannot
        renew gives up before its Lease can expire for the others."""
        problems: list[tuple[str, str]] = []
        for key in ("lease_duration", "renew_deadline", "retry_period"):
            if getattr(self, key) <= 0:
                problems.append((key, "must be more than 0s"))
        if problems:
            return problems
        if self.renew_deadline >= self.lease_duration:
            problems.append(
                (
                    "renew_deadline",
                    f"must be shorter than lease_duration "
                    f"({self.renew_deadline} >= {self.lease_duration})",
                )
            )
        if self.retry_period >= self.renew_deadline:
            problems.append(
                (
                    "retry_period",
                    f"must be shorter than renew_deadline "
                    f"({self.retry_period} >= {self.renew_deadline})",
                )
            )
        if not _DNS_SUBDOMAIN.match(self.lease_name):
            problems.append(
                (
                    "lease_name",
                    f"{self.lease_name!r} is not a valid Kubernetes object "
                    "name (lower-case letters, digits, '-' and '.')",
                )
            )
        if self.lease_namespace and not _DNS_LABEL.match(self.lease_namespace):
            problems.append(
                (
                    "lease_namespace",
                    f"{self.lease_namespace!r} is not a valid "
                    "namespace name (lower-case letters, digits, '-')",
                )
            )
        return problems


class Leadership(Protocol):
    """Who leads. Built by the application (cni_pipeline) and handed to the Service.

    A Leadership may also have ``holder_identity() -> str | None`` (who holds the Lease, as last
    seen): ``/readyz`` on a standby then names the leader."""

    def is_leader(self) -> bool: ...

    def last_delivered(self) -> float | None:
        """The cycle time the previous or current leader recorded in the Lease, as read when this
        replica acquired it; None if never recorded."""
        ...

    def released_cleanly(self) -> bool:
        """True if the Lease this replica acquired had been released by its holder (a graceful
        hand-over) rather than left to expire (the holder died)."""
        ...

    def record_delivered(self, cycle_time: float) -> None:
        """Non-blocking: remember it; the elector writes it into the Lease on its next renew (and
        at once on release)."""
        ...

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire and renew until ``stop`` is set, then release the Lease if this replica holds
        it."""
        ...

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        """``callback(is_leader)`` on every change of ``is_leader()``, from the event loop."""
        ...


@runtime_checkable
class Delivering(Protocol):
    """An exporter that buffers (a sending queue, requests packed across cycles) and can tell when
    what it was handed has left it."""

    async def delivered(self) -> None:
        """Return once everything consumed before the call has been sent (or given up on)."""
        ...


def holder_of(leadership: Leadership) -> str | None:
    """The optional ``holder_identity()`` of a Leadership (see :class:`Leadership`)."""
    holder = getattr(leadership, "holder_identity", None)
    return holder() if callable(holder) else None


class LeaderWatch:
    """The service's view of its Leadership: self-metrics, the ``/readyz`` note, the gates.

    Self-metrics: ``cni_pipeline_leader`` (1 leading, 0 standby),
    ``cni_pipeline_leader_transitions_total`` (this replica's changes: became or stopped being
    leader), ``cni_pipeline_leader_possible_repeats_total{pipeline}`` (cycles replayed after a
    takeover that the dead leader may have published already)."""

    def __init__(
        self, leadership: Leadership, telemetry: Telemetry, logger: logging.Logger
    ) -> None:
        self.leadership = leadership
        self._logger = logger
        self._gates: list[ExportGate] = []
        self._leader = telemetry.gauge(
            "leader", "1 while this replica leads (exports), 0 while it stands by."
        )
        self._transitions = telemetry.counter(
            "leader_transitions_total", "Times this replica became or stopped being the leader."
        )
        self._repeats = telemetry.counter(
            "leader_possible_repeats_total",
            "Cycles replayed after taking over from a leader that died: it may have published "
            "them before it could record so.",
            ["pipeline"],
        )
        self._leader.set(1 if leadership.is_leader() else 0)
        leadership.add_listener(self._changed)
        telemetry.set_ready_note(self.ready_note)

    def gate(
        self, pipeline_id: str, next_consumer: MetricsConsumer, exporters: Sequence[object]
    ) -> ExportGate:
        """A gate for one pipeline, in front of ``next_consumer`` (its exporters' fan-out).

        A reload that rebuilds the pipeline gets a new gate, which replaces the old one and keeps
        its cycles (a standby that reloads still has them for a takeover)."""
        old = next((g for g in self._gates if g.pipeline_id == pipeline_id), None)
        gate = ExportGate(
            pipeline_id,
            next_consumer,
            self.leadership,
            exporters,
            self._repeats.labels(pipeline=pipeline_id),
            self._logger,
        )
        if old is not None:
            self._gates.remove(old)
            gate.keep_cycles_of(old)
        self._gates.append(gate)
        return gate

    def ready_note(self) -> str:
        if self.leadership.is_leader():
            return "leader"
        return f"standby (leader: {holder_of(self.leadership) or 'unknown'})"

    def _changed(self, leading: bool) -> None:
        self._leader.set(1 if leading else 0)
        self._transitions.inc()
        for gate in self._gates:
            gate.leadership_changed(leading)

    async def settle(self) -> None:
        """Let every gate record what its exporters delivered (at shutdown, before the release)."""
        await asyncio.gather(*(gate.settle() for gate in self._gates))


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class ExportGate:
    """Between a pipeline's last processor and its exporters: exports only while leading, keeps
    the last cycles for a replay, records what was delivered (see the module docstring)."""

    def __init__(
        self,
        pipeline_id: str,
        next_consumer: MetricsConsumer,
        leadership: Leadership,
        exporters: Sequence[object],
        possible_repeats: _Counter,
        logger: logging.Logger,
        keep: int = KEPT_CYCLES,
    ) -> None:
        self.pipeline_id = pipeline_id
        self.next = next_consumer
        self._leadership = leadership
        self._delivering = [e for e in exporters if isinstance(e, Delivering)]
        self._repeats = possible_repeats
        self._logger = logger
        self._kept: deque[Batch] = deque(maxlen=keep)
        self._lock = asyncio.Lock()  # one export at a time, in cycle order
        self._leading = False
        #: The last cycle time handed to the exporters in this term (or recorded before it).
        self._exported: float | None = None
        #: Takeover from a dead leader: the newest cycle kept before it, for the repeat count.
        self._unclean_until: float | None = None
        self._check_gap = False
        self._to_confirm: float | None = None
        self._confirmer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        if leadership.is_leader():  # built after the elector won: a takeover like any other
            self.leadership_changed(True)

    def keep_cycles_of(self, previous: ExportGate) -> None:
        """Take the cycles a replaced gate kept, and what it exported in its term."""
        self._kept.extend(previous._kept)
        if previous._exported is not None and (
            self._exported is None or previous._exported > self._exported
        ):
            self._exported = previous._exported

    # -- MetricsConsumer -----------------------------------------------------------------------

    async def consume(self, batch: Batch) -> None:
        self._kept.append(batch)
        if self._leading:
            async with self._lock:
                await self._catch_up()

    def wanted_families(self) -> FamilySet:
        return self.next.wanted_families()

    def wanted_series(self) -> SeriesFilters:
        return wanted_series_of(self.next)

    # -- leadership ----------------------------------------------------------------------------

    def leadership_changed(self, leading: bool) -> None:
        """Called from the event loop: on becoming leader, replay at once (not at the next
        cycle, which may be a whole interval away); on losing it, stop exporting."""
        if leading == self._leading:
            return
        self._leading = leading
        if not leading:
            self._to_confirm = None
            return
        self._exported = self._leadership.last_delivered()
        self._check_gap = self._exported is not None
        clean = self._leadership.released_cleanly()
        self._unclean_until = None if clean or not self._kept else self._kept[-1].cycle.time
        task = asyncio.get_running_loop().create_task(self._replay())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replay(self) -> None:
        async with self._lock:
            await self._catch_up()

    async def _catch_up(self) -> None:
        """Export, in order, every kept batch after the last one exported (or recorded)."""
        for batch in list(self._kept):
            if not (self._leading and self._leadership.is_leader()):
                return
            cycle_time = batch.cycle.time
            if self._exported is not None and cycle_time <= self._exported:
                continue
            self._note_takeover(batch)
            await self.next.consume(batch)
            self._exported = cycle_time
            self._confirm(cycle_time)

    def _note_takeover(self, batch: Batch) -> None:
        """Log and count what a takeover may cost: cycles no replica kept; a repeated cycle."""
        if self._check_gap:
            self._check_gap = False
            recorded = self._exported or 0.0
            if batch.cycle.previous > recorded:
                self._logger.warning(
                    "pipeline %s: cycles after %.0f up to %.0f were not published: the last "
                    "leader recorded no later cycle and this replica keeps only %d",
                    self.pipeline_id,
                    recorded,
                    batch.cycle.previous,
                    self._kept.maxlen,
                )
        if self._unclean_until is not None:
            if batch.cycle.time <= self._unclean_until:
                self._repeats.inc()
                self._logger.warning(
                    "pipeline %s: cycle %.0f may be published twice: the last leader died "
                    "without releasing the lease, possibly after delivering it",
                    self.pipeline_id,
                    batch.cycle.time,
                )
            self._unclean_until = None

    # -- delivery ------------------------------------------------------------------------------

    def _confirm(self, cycle_time: float) -> None:
        """Record ``cycle_time`` once delivered, off the cycle's path: waiting for a send would
        hold up the next cycle (and every cycle while a backend is down). One task waits at a
        time; it records the newest cycle exported before its wait began."""
        self._to_confirm = cycle_time
        if self._confirmer is None or self._confirmer.done():
            self._confirmer = asyncio.get_running_loop().create_task(self._confirm_loop())

    async def _confirm_loop(self) -> None:
        while self._to_confirm is not None:
            cycle_time, self._to_confirm = self._to_confirm, None
            await self._delivered()
            if self._leading and self._leadership.is_leader():
                self._leadership.record_delivered(cycle_time)

    async def _delivered(self) -> None:
        results = await asyncio.gather(
            *(e.delivered() for e in self._delivering), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                self._logger.error(
                    "pipeline %s: waiting for delivery failed: %r", self.pipeline_id, result
                )

    async def settle(self) -> None:
        """Wait for the replay and the confirmations under way (at shutdown, once the exporters
        have flushed, so the release carries the last delivered cycle)."""
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._confirmer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._confirmer
