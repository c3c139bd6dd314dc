"""The ``aws_subnets`` receiver: every ``collection_interval``, which subnets the cluster uses and
how many IP addresses each has left, as metrics for the exporters (pods fail to start when a
subnet runs dry, whatever the nodes' own headroom)."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from pipeline import (
    Batch,
    ComponentSettings,
    Cycle,
    Host,
    MetricsConsumer,
    Ticker,
)

from ._metrics import subnet_metrics
from ._sources import (
    Subnet,
    describe_subnets,
    ec2_client,
    eniconfig_subnets,
    instance_ids,
    instance_subnets,
    kubernetes_apis,
    node_provider_ids,
)
from .config import AwsSubnetsConfig


class AwsSubnetsReceiver:
    def __init__(self, settings: ComponentSettings, config: AwsSubnetsConfig,
                 next_consumer: MetricsConsumer) -> None:
        self.settings = settings
        self.config = config
        self._next = next_consumer
        self._log = settings.logger
        self._host: Host | None = None
        self._task: asyncio.Task[None] | None = None
        self._ec2: Any = None
        self._kube: tuple[Any, Any] | None = None
        self._watched: tuple[str, ...] = ()

    def wanted_families(self) -> frozenset[str]:
        return frozenset()

    async def start(self, host: Host) -> None:
        if self._task is not None:
            return
        self._host = host
        self._task = asyncio.create_task(self._run(), name=f"{self.settings.id} collections")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        interval = float(self.config.collection_interval)
        now = time.time()
        # The first collection at once (no reason to wait up to an interval for the first
        # number), stamped to the second; then on aligned ticks.
        await self._collect(Cycle(time=math.floor(now), previous=math.floor(now) - interval,
                                  started=self.settings.started_at))
        ticker = Ticker(interval, started=self.settings.started_at)
        while True:
            await self._collect(await ticker.next())

    async def _collect(self, cycle: Cycle) -> None:
        try:
            subnets = await asyncio.to_thread(self._subnets)
        except Exception as exc:  # boto3 / kubernetes errors: this collection fails, not the loop
            self._report(False, f"subnet capacity not collected: {type(exc).__name__}: {exc}")
            return
        self._report(True, "")
        if subnets:
            await self._next.consume(Batch(cycle=cycle, metrics=tuple(subnet_metrics(subnets))))

    def _subnets(self) -> list[Subnet]:
        """Blocking: which subnets, then DescribeSubnets (in a worker thread)."""
        if self._ec2 is None:
            self._ec2 = ec2_client(self.config.region, self.config.endpoint_url)
        wanted = set(self.config.subnet_ids)
        if self.config.from_nodes or self.config.from_eniconfigs:
            core, custom = self._kubernetes()
            if self.config.from_nodes:
                ids = instance_ids(node_provider_ids(core))
                if ids:
                    wanted |= instance_subnets(self._ec2, ids)
            if self.config.from_eniconfigs:
                wanted |= set(eniconfig_subnets(custom, self._log))
        watched = tuple(sorted(wanted))
        if watched != self._watched:
            self._watched = watched
            self._log.info("watching %d subnet(s): %s", len(watched), ", ".join(watched) or "none")
        return describe_subnets(self._ec2, watched) if watched else []

    def _kubernetes(self) -> tuple[Any, Any]:
        if self._kube is None:
            self._kube = kubernetes_apis(self.config.kubeconfig)
        return self._kube

    def _report(self, healthy: bool, message: str) -> None:
        if not healthy:
            self._log.warning("%s", message)
        if self._host is not None:
            self._host.report_status(healthy, message)
