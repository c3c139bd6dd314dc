"""``python -m simfleet`` (console script ``cni-simfleet``): run a simulated aws-node fleet.

Manual run::

    python -m simfleet --nodes 20 --page-bytes 40000 --advance-every 30s
    curl -s http://127.20.0.1:61678/metrics | head
    curl -s -XPOST http://127.0.0.1:PORT/set_failure -d '{"node": 3, "mode": "http_500"}'

It prints one JSON line on stdout when every node listens (``{"control": URL, "addresses":
[...], "pids": [...]}``), a readable summary on stderr, and serves until Ctrl-C or SIGTERM.
``serve`` is the default subcommand; ``worker`` is internal (the coordinator starts it).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Sequence

from ._coordinator import ServeOptions, serve
from ._server import node_ip
from ._worker import ShardOptions, run_worker

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``30s``, ``500ms``, ``5m``, ``1h`` or a bare number of seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30s, 500ms, 5m)")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return seconds


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_page_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default="127.20.0.1",
                        help="address of node 0; node i listens on base + i (default %(default)s)")
    parser.add_argument("--port", type=int, default=61678,
                        help="port on every node address; 0 picks one per node (default 61678)")
    parser.add_argument("--page-bytes", type=_positive_int, default=None,
                        help="pad every page to about this size with families the pipeline "
                             "ignores (e.g. 40000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every node's state")
    parser.add_argument("--counter-type-gauge", action="store_true",
                        help="type awscni_add_ip_req_count as gauge, as some aws-node versions do")
    parser.add_argument("--start-time", type=float, default=None,
                        help="process_start_time_seconds of every node (default: seeded, in "
                             "the past)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cni-simfleet", description="Simulated aws-node fleet on loopback addresses.")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("serve", help="run a fleet (the default)")
    run.add_argument("--nodes", type=_positive_int, required=True, help="number of nodes")
    _add_page_options(run)
    run.add_argument("--processes", type=_positive_int, default=None,
                     help="serving processes (default: one per 4000 nodes)")
    run.add_argument("--control", type=_host_port, default=("127.0.0.1", 0),
                     help="control API HOST:PORT (default 127.0.0.1:0, announced on stdout)")
    run.add_argument("--advance-every", type=parse_duration, default=None,
                     help="advance every node periodically, e.g. 30s")
    run.add_argument("--parent-pipe", action="store_true",
                     help="stop when stdin reaches EOF (used by FleetProcess)")
    worker = commands.add_parser("worker", help="internal: one slice of a fleet")
    worker.add_argument("--first", type=int, required=True)
    worker.add_argument("--count", type=_positive_int, required=True)
    worker.add_argument("--now", type=float, required=True)
    _add_page_options(worker)
    return parser


def _shard_options(args: argparse.Namespace, now: float) -> ShardOptions:
    return ShardOptions(base=args.base, port=args.port, page_bytes=args.page_bytes,
                        seed=args.seed, counter_type_gauge=args.counter_type_gauge,
                        start_time=args.start_time, now=now)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "worker", "-h", "--help"):
        argv.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for index in (0, (args.count if args.command == "worker" else args.nodes) - 1):
            node_ip(args.base, index)  # every node on loopback, or refuse to start
    except ValueError as exc:
        parser.error(f"--base {args.base}: {exc}")
    try:
        if args.command == "worker":
            options = _shard_options(args, args.now)
            return asyncio.run(run_worker(args.first, args.count, options))
        serve_options = ServeOptions(
            nodes=args.nodes, shard=_shard_options(args, time.time()), processes=args.processes,
            control_host=args.control[0], control_port=args.control[1],
            advance_every=args.advance_every, parent_pipe=args.parent_pipe,
        )
        return asyncio.run(serve(serve_options))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
