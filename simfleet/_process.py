"""``FleetProcess``: run a fleet as a child process tree, from tests, benches and the demo.

The fleet runs in its own processes so a benchmark can tell the fleet's CPU from the pipeline's,
and so thousands of sockets do not share the caller's event loop or file-descriptor budget.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ._client import FleetClient, FleetError

_STOP_GRACE = 5.0
_TERM_GRACE = 3.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class FleetProcess:
    """A simulated aws-node fleet: ``python -m simfleet serve ...`` and its workers.

    Use as a context manager, or call ``start()`` and ``stop()``. After ``start()``,
    ``addresses`` lists ``IP:PORT`` per node (node ``i`` is ``addresses[i]``), ``pids`` the
    fleet's processes (coordinator first) and ``client`` drives it.
    """

    def __init__(
        self,
        nodes: int,
        *,
        base_address: str = "127.20.0.1",
        port: int = 61678,
        page_bytes: int | None = None,
        seed: int = 0,
        counter_type_gauge: bool = False,
        start_time: float | None = None,
        processes: int | None = None,
        advance_every: float | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a fleet needs at least one node")
        self.nodes = nodes
        self.addresses: list[str] = []
        self.pids: list[int] = []
        self.control_url = ""
        self._args = _serve_args(nodes, base_address, port, page_bytes, seed, counter_type_gauge,
                                 start_time, processes, advance_every)
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._client: FleetClient | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "simfleet", "serve", *self._args, "--parent-pipe"]

    @property
    def client(self) -> FleetClient:
        if self._client is None:
            raise FleetError("the fleet is not started")
        return self._client

    def start(self, timeout: float = 30.0) -> None:
        """Start the fleet; returns when every node listens. Raises FleetError on failure."""
        if self._process is not None:
            raise FleetError("the fleet is already started")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env=env, start_new_session=True,  # its own process group: stop() signals the tree
        )
        try:
            announce = self._read_announce(timeout)
        except BaseException:
            self.stop()
            raise
        self.control_url = str(announce["control"])
        self.addresses = [str(address) for address in announce["addresses"]]
        self.pids = [int(pid) for pid in announce["pids"]]
        self._client = FleetClient(self.control_url)

    def _read_announce(self, timeout: float) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + timeout
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FleetError(f"fleet not ready after {timeout:g}s{self._stderr_tail()}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = process.wait()
                    raise FleetError(f"fleet exited with {code} before it was ready"
                                     f"{self._stderr_tail()}")
                buffer += chunk
        announce = json.loads(buffer.partition(b"\n")[0])
        assert isinstance(announce, dict)
        return announce

    def stderr_text(self) -> str:
        """Everything the fleet wrote to stderr so far (its log)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _stderr_tail(self) -> str:
        text = self.stderr_text().strip()
        return f":\n{text[-2000:]}" if text else ""

    def stop(self) -> None:
        """Stop the whole process tree; safe to call twice or without start()."""
        process = self._process
        if process is None:
            return
        self._client = None
        if process.stdin is not None:
            process.stdin.close()  # EOF: the coordinator stops its workers, then exits
        try:
            process.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(_TERM_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        self._kill_orphans(process.pid)
        if process.stdout is not None:
            process.stdout.close()
        self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _kill_orphans(self, group: int) -> None:
        """Workers outlive a coordinator only if it was killed; they are still in its group."""
        orphans = [pid for pid in self.pids[1:] if _alive_in_group(pid, group)]
        if not orphans:
            return
        _signal_group(group, signal.SIGKILL)
        deadline = time.monotonic() + _TERM_GRACE
        while any(_alive_in_group(pid, group) for pid in orphans) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> FleetProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _serve_args(
    nodes: int, base: str, port: int, page_bytes: int | None, seed: int,
    counter_type_gauge: bool, start_time: float | None, processes: int | None,
    advance_every: float | None,
) -> list[str]:
    args = ["--nodes", str(nodes), "--base", base, "--port", str(port), "--seed", str(seed)]
    if page_bytes:
        args += ["--page-bytes", str(page_bytes)]
    if counter_type_gauge:
        args.append("--counter-type-gauge")
    if start_time is not None:
        args += ["--start-time", repr(start_time)]
    if processes is not None:
        args += ["--processes", str(processes)]
    if advance_every is not None:
        args += ["--advance-every", repr(advance_every)]
    return args


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass


def process_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as gone: it has exited, only its entry is left)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return fields[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _alive_in_group(pid: int, group: int) -> bool:
    if not process_alive(pid):
        return False
    try:
        return os.getpgid(pid) == group
    except ProcessLookupError:
        return False
