"""A consumer and a host that record what a component hands them (consumertest's sink)."""

from __future__ import annotations

from pipeline import Batch


class RecordingSink:
    """Keeps every batch; reads no scraped family."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)

    def wanted_families(self) -> frozenset[str]:
        return frozenset()


class RecordingHost:
    """Keeps every (healthy, message) a component reports."""

    def __init__(self) -> None:
        self.statuses: list[tuple[bool, str]] = []

    def report_status(self, healthy: bool, message: str = "") -> None:
        self.statuses.append((healthy, message))
