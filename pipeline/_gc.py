"""The garbage-collector policy of a running service.

Almost everything a cycle allocates is freed by reference counting; the cyclic collector only has
reference cycles to find. But with a 5,000-target batch alive, its automatic full passes walk
hundreds of thousands of containers several times a cycle: measured with ``bench/bench_cycle.py
--gc default|manual``, 0.9 s of collector time per 5,000-target cycle, against ~0.013 s when the
objects that live for the whole run are frozen after start and cycles are collected on a timer.
So: freeze what start built, turn automatic collection off, and collect on a schedule (or sooner
when allocations pile up), from the event loop between callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

logger = logging.getLogger("cni_pipeline")

#: Seconds between collections; cyclic garbage is bounded by what a run makes in this time.
COLLECT_EVERY = 30.0
#: Collect sooner when this many container objects were allocated since the last collection.
COLLECT_AFTER_ALLOCATIONS = 2_000_000
_POLL = 1.0


class GcPolicy:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._was_enabled = gc.isenabled()

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.disable()
        self._task = asyncio.create_task(self._loop(), name="gc-policy")

    async def _loop(self) -> None:
        waited = 0.0
        while True:
            await asyncio.sleep(_POLL)
            waited += _POLL
            if waited >= COLLECT_EVERY or gc.get_count()[0] >= COLLECT_AFTER_ALLOCATIONS:
                gc.collect()
                waited = 0.0

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
