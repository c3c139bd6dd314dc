"""Reloading the config in place: on SIGHUP, and when ``service.watch_config`` sees the file
change.

The file is polled (its resolved path, inode, size and modification time, every
:data:`WATCH_INTERVAL` seconds) rather than watched with inotify: the standard library has no
inotify, a poll sees a ConfigMap's atomic swap of its ``..data`` symlink as a change of the
resolved path, and two seconds of delay on a config change costs nothing.

A new config is loaded and validated in full before anything changes; one that does not
validate is logged (every problem, one line each) and counted in
``cni_pipeline_config_reloads_total{result="invalid"}``, and the pipeline runs on untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._config import Config
from ._errors import ConfigError
from ._telemetry import Telemetry

logger = logging.getLogger("cni_pipeline")

#: Seconds between two looks at a watched config file.
WATCH_INTERVAL = 2.0

FileState = tuple[str, int, int, int] | None


@dataclass(frozen=True)
class Reloader:
    """What the application gives the engine to reload: how to load the config again (raises
    :class:`ConfigError`), and the file to watch when ``service.watch_config`` is on."""

    load: Callable[[], Config]
    path: str
    interval: float = WATCH_INTERVAL


def file_state(path: str) -> FileState:
    """What changes when the file is rewritten, replaced or swapped behind a symlink."""
    try:
        real = os.path.realpath(path)
        stat = os.stat(real)
    except OSError:
        return None
    return real, stat.st_ino, stat.st_size, stat.st_mtime_ns


class _Reloadable(Protocol):
    """The part of :class:`pipeline.service.Service` a reload loop uses."""

    config: Config
    telemetry: Telemetry

    async def reload(self, config: Config) -> bool: ...


class ReloadLoop:
    """Runs reloads one at a time for a service (anything with ``config`` and ``reload``)."""

    def __init__(self, service: _Reloadable, reloader: Reloader) -> None:
        self._service = service
        self._reloader = reloader
        self._lock = asyncio.Lock()
        self._results = service.telemetry.counter(
            "config_reloads_total",
            "Config reloads by result: applied, unchanged (no component changed), invalid (the "
            "new file did not validate; the pipeline runs on), failed (a new component could "
            "not start; the service stops).",
            ["result"],
        )
        for result in ("applied", "unchanged", "invalid", "failed"):
            self._results.labels(result=result)

    async def reload(self, reason: str) -> None:
        """Load, validate and apply the file; a ``ConfigError`` leaves everything as it was.
        Any other failure (a component that cannot start) is raised: the service must stop."""
        async with self._lock:
            logger.info("reloading the config (%s) from %s", reason, self._reloader.path)
            try:
                config = await asyncio.to_thread(self._reloader.load)
            except ConfigError as exc:
                self._results.labels(result="invalid").inc()
                for line in exc.lines() + ([exc.note] if exc.note else []):
                    logger.error("config not reloaded: %s", line)
                logger.error("the running pipeline carries on with the config it had")
                return
            try:
                changed = await self._service.reload(config)
            except Exception:
                self._results.labels(result="failed").inc()
                raise
            self._results.labels(result="applied" if changed else "unchanged").inc()

    async def watch(self) -> None:
        """Reload when the file changes, while the running config has ``watch_config`` on."""
        last = file_state(self._reloader.path)
        while True:
            await asyncio.sleep(self._reloader.interval)
            if not self._service.config.service.watch_config:
                last = file_state(self._reloader.path)
                continue
            now = await asyncio.to_thread(file_state, self._reloader.path)
            if now != last and now is not None:
                last = now
                await self.reload("the file changed")
