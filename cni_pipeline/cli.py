"""The ``cni-pipeline`` command line.

Exit codes: 0 clean stop, 2 invalid config or usage, 1 any other failure to start.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

import yaml

from pipeline import ClusterShape, ConfigError, Duration, Kind, PipelineError, RegistryError
from pipeline.service import (
    EARLY_STOP,
    Config,
    Leadership,
    Registry,
    Reloader,
    Service,
    build_config,
    config_warnings,
    load_config,
    resolve_level,
    run_until_signal,
    setup_logging,
)

from .cloudwatch_cli import add_parsers as add_cloudwatch_parsers
from .cloudwatch_cli import run_alarms, run_dashboard
from .doctor import add_parser as add_doctor_parser
from .doctor import run_doctor
from .dropin import SOURCE as DROPIN_SOURCE
from .dropin import dropin_config_data
from .plan import pipeline_shape, planned_metrics

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: What a shell reports for a command killed by SIGPIPE (128 + 13), as `yes | head -1` does.
EXIT_BROKEN_PIPE = 141

logger = logging.getLogger("cni_pipeline")

EPILOG = """\
examples:
  cni-pipeline --config configs/cloudwatch.yaml     run until SIGTERM/SIGINT, then flush and exit 0
  cni-pipeline validate --config my.yaml --nodes 5000
                                                   check a config (no network call), plan its cost
  cni-pipeline components                          list registered receivers/processors/exporters
  cni-pipeline demo                                simulated fleet -> pipeline -> local CloudWatch
  cni-pipeline                                     drop-in mode: configured from the Go helper's
                                                   environment (USE_CLOUDWATCH, AWS_CLUSTER_ID, ...)

a minimal config:
  receivers:
    prometheus:
      scrape_interval: 30s
      static_targets: ["10.0.1.5:61678"]
  processors:
    cni_aggregate: {}
  exporters:
    debug: {}
  service:
    pipelines:
      metrics: {receivers: [prometheus], processors: [cni_aggregate], exporters: [debug]}
"""


def _positive_int(text: str) -> int:
    """argparse type: a whole number above 0 (a cluster of -1 nodes prices nothing useful)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _duration(text: str) -> str:
    """argparse type: a duration with a unit (``2s``), as in config files; kept as text."""
    try:
        seconds = Duration.from_config(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0s, got {text!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=["debug", "info", "warn", "error"],
        help="log level (default: config, else AWS_VPC_K8S_CNI_LOGLEVEL, else info)",
    )
    common.add_argument(
        "--log-format", choices=["text", "json"], help="log format (default: config, else text)"
    )
    parser = argparse.ArgumentParser(
        prog="cni-pipeline",
        parents=[common],
        description="Scrape aws-node (Amazon VPC CNI) metrics across an EKS cluster, aggregate "
        "them correctly and publish to CloudWatch, OTLP or Prometheus.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="pipeline config (YAML) to run")
    _add_override_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run a pipeline config (the default)")
    run.add_argument("--config", metavar="FILE", required=True)
    _add_override_flags(run)

    validate = sub.add_parser(
        "validate",
        parents=[common],
        help="check a config and show what it would publish; exit 0 or 2",
    )
    validate.add_argument("--config", metavar="FILE", required=True)
    shape = ClusterShape()
    validate.add_argument(
        "--nodes",
        type=_positive_int,
        default=shape.nodes,
        help=f"cluster size to plan for (default {shape.nodes})",
    )
    validate.add_argument(
        "--zones",
        type=_positive_int,
        default=shape.zones,
        help=f"availability zones (default {shape.zones})",
    )
    validate.add_argument(
        "--nodegroups",
        type=_positive_int,
        default=shape.nodegroups,
        help=f"node groups (default {shape.nodegroups})",
    )

    sub.add_parser("components", parents=[common], help="list registered components")
    sub.add_parser(
        "print-config",
        parents=[common],
        help="print the drop-in pipeline built from the Go helper's environment",
    )
    add_cloudwatch_parsers(sub, common)
    add_doctor_parser(sub, common)
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run the real pipeline on a simulated fleet and a local CloudWatch",
    )
    demo.add_argument(
        "--nodes", type=_positive_int, default=12, help="simulated aws-node pods (default 12)"
    )
    demo.add_argument("--cycles", type=_positive_int, default=4, help="cycles to run (default 4)")
    demo.add_argument(
        "--interval", type=_duration, default="2s", help="scrape interval, with a unit (default 2s)"
    )
    return parser


def _add_override_flags(parser: argparse.ArgumentParser) -> None:
    """Service settings from the command line, as the chart runs it (drop-in mode has no config
    to say them in); the flags win over service.leader_election's enabled and lease_name and
    service.watch_config."""
    parser.add_argument(
        "--leader-elect", action="store_true",
        help="run as one of several replicas: only the holder of a Kubernetes Lease exports "
        "(service.leader_election.enabled)")
    parser.add_argument(
        "--lease-name", metavar="NAME", default="",
        help="the Lease's name (default: service.leader_election.lease_name, cni-pipeline)")
    parser.add_argument(
        "--watch-config", action="store_true",
        help="reload the --config file in place when it changes, as SIGHUP does "
        "(service.watch_config)")


def with_overrides(config: Config, args: argparse.Namespace) -> Config:
    election = config.service.leader_election
    if getattr(args, "leader_elect", False):
        election = replace(election, enabled=True)
    if getattr(args, "lease_name", ""):
        election = replace(election, lease_name=args.lease_name)
    watch = config.service.watch_config or bool(getattr(args, "watch_config", False))
    if (election, watch) == (config.service.leader_election, config.service.watch_config):
        return config
    service = replace(config.service, leader_election=election, watch_config=watch)
    return replace(config, service=service)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as ``main`` reads it (the chart's tests read a pod's args with it)."""
    return _parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # SIGINT, or SIGTERM while starting: nothing to flush yet
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`cni-pipeline print-config | head -1`): as the Python docs
        # advise, point stdout at devnull so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or ("run" if args.config else "dropin")
    if command in ("run", "dropin") and argv is None:
        # Until the event loop installs its own handler, a SIGTERM (a pod deleted while it
        # starts) is a clean stop of what has not started yet, not a kill with status 143.
        signal.signal(signal.SIGTERM, lambda _signum, _frame: EARLY_STOP.set())
    try:
        registry = Registry.load()
    except RegistryError as exc:
        print(f"cni-pipeline: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    handlers = {
        "run": _cmd_run,
        "dropin": _cmd_run,
        "validate": _cmd_validate,
        "components": _cmd_components,
        "print-config": _cmd_print_config,
        "demo": _cmd_demo,
        "dashboard": _with_config(run_dashboard),
        "alarms": _with_config(run_alarms),
        "doctor": _with_config(run_doctor),
    }
    return handlers[command](args, registry)


def _load(args: argparse.Namespace, registry: Registry) -> Config:
    if getattr(args, "config", None):
        return load_config(args.config, registry)
    return build_config(dropin_config_data(os.environ), DROPIN_SOURCE, registry)


def _setup_logging(args: argparse.Namespace, config: Config | None) -> None:
    telemetry = config.service.telemetry if config else None
    # The Go helper's variable comes last, so that a drop-in Deployment keeps its log level.
    level = resolve_level(
        args.log_level,
        telemetry.log_level if telemetry else "",
        os.environ.get("AWS_VPC_K8S_CNI_LOGLEVEL"),
    )
    fmt = args.log_format or (telemetry.log_format if telemetry else "") or "text"
    setup_logging(level, fmt)


def _cmd_run(args: argparse.Namespace, registry: Registry) -> int:
    try:
        config = with_overrides(_load(args, registry), args)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_USAGE
    _setup_logging(args, config)
    if EARLY_STOP.is_set():
        logger.info("stopped before starting (SIGTERM)")
        return EXIT_OK
    try:
        leadership = _leadership(config)
    except ConfigError as exc:  # no identity for the Lease: a config problem, before anything runs
        _print_config_error(exc)
        return EXIT_USAGE
    try:
        service = Service(config, registry, leadership=leadership)
        asyncio.run(run_until_signal(service, _reloader(args, registry)))
    except ConfigError as exc:  # one only a component could check, when created (sharding)
        _print_config_error(exc)
        return EXIT_USAGE
    except (PipelineError, OSError) as exc:
        logger.error("cannot start: %s", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _reloader(args: argparse.Namespace, registry: Registry) -> Reloader | None:
    """SIGHUP and service.watch_config reload the --config file (with the same flags); drop-in
    mode has no file, and its environment cannot change under a running process."""
    path = getattr(args, "config", None)
    if not path:
        return None
    return Reloader(load=lambda: with_overrides(load_config(path, registry), args), path=path)


def _leadership(config: Config) -> Leadership | None:
    """The Kubernetes Lease elector (cni_pipeline/leader.py) when service.leader_election is on.

    Imported by name, when it is on only: it brings the kubernetes client, which a single
    replica does not need."""
    election = config.service.leader_election
    if not election.enabled:
        return None
    leader = importlib.import_module("cni_pipeline.leader")
    leadership: Leadership = leader.build_leadership(election, os.environ)
    return leadership


def _print_config_error(exc: ConfigError) -> None:
    print(
        f"cni-pipeline: invalid configuration ({len(exc.problems)} problem"
        f"{'s' if len(exc.problems) != 1 else ''}):",
        file=sys.stderr,
    )
    for line in exc.lines():
        print(f"  {line}", file=sys.stderr)
    if exc.note:
        print(f"  {exc.note}", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace, registry: Registry) -> int:
    try:
        config = load_config(args.config, registry)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_USAGE
    print(f"{config.source}: valid")
    for warning in config_warnings(config, registry):
        print(f"  warning: {warning}")
    for spec in config.pipelines:
        chain = " -> ".join(
            ", ".join(str(c) for c in group) or "-"
            for group in (spec.receivers, spec.processors, spec.exporters)
        )
        print(f"  pipeline {spec.id}: {chain}")
    for line in _plan(config, registry, args):
        print(line)
    return EXIT_OK


def _plan(config: Config, registry: Registry, args: argparse.Namespace) -> list[str]:
    """What each exporter would publish, from the planned metrics (no network)."""
    lines: list[str] = []
    for spec in config.pipelines:
        shape = pipeline_shape(config, registry, spec, args.nodes, args.zones, args.nodegroups)
        metrics = planned_metrics(config, registry, spec, shape)
        for cid in spec.exporters:
            hook = getattr(registry.get(Kind.EXPORTER, cid.type), "describe_plan", None)
            if hook is not None:
                for line in hook(config.exporters[cid], metrics, shape):
                    lines.append(f"  {cid}: {line}")
    return lines


def _cmd_components(args: argparse.Namespace, registry: Registry) -> int:
    entries = registry.entries()
    width = max((len(e.type) for e in entries), default=4)
    print(f"{'KIND':<10} {'TYPE':<{width}}  DISTRIBUTION")
    for entry in entries:
        status = f"  (broken: {entry.error})" if entry.error else ""
        print(f"{entry.kind:<10} {entry.type:<{width}}  {entry.distribution}{status}")
    return EXIT_OK


def _cmd_print_config(args: argparse.Namespace, registry: Registry) -> int:
    try:
        config = build_config(dropin_config_data(os.environ), DROPIN_SOURCE, registry)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_USAGE
    yaml.safe_dump(config.to_data(), sys.stdout, sort_keys=False)
    return EXIT_OK


def _with_config(
    run: Callable[[argparse.Namespace, Config, Registry], int],
) -> Callable[[argparse.Namespace, Registry], int]:
    """``dashboard`` / ``alarms`` / ``doctor``: the config (or the drop-in one), then the
    command."""

    def command(args: argparse.Namespace, registry: Registry) -> int:
        try:
            return run(args, _load(args, registry), registry)
        except ConfigError as exc:
            _print_config_error(exc)
            return EXIT_USAGE

    return command


def _cmd_demo(args: argparse.Namespace, registry: Registry) -> int:
    from .demo import run_demo  # imports moto's server and simfleet: only when asked for

    _setup_logging(args, None)
    try:
        status: int = run_demo(
            registry, nodes=args.nodes, cycles=args.cycles, interval=args.interval
        )
    except ConfigError as exc:  # the embedded config met a broken plugin: not the user's input
        print(f"cni-pipeline demo: cannot build the demo pipeline: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
