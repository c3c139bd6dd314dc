"""The ``dashboard`` and ``alarms`` commands: arguments, output and ``--apply``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from pipeline import ConfigError
from pipeline.service import Config, Registry

from ._cloudwatch import CloudWatchTarget, cloudwatch_targets
from .alarms import Thresholds, cloudformation, recommended_alarms
from .dashboard import dashboard_body
from .grafana import grafana_dashboards

EXIT_OK, EXIT_FAILURE = 0, 1


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", metavar="FILE",
                       help="pipeline config (default: the drop-in pipeline from the environment)")
    where.add_argument("--cluster-id", default="",
                       help="CLUSTER_ID dimension (default: config, else AWS_CLUSTER_ID)")
    where.add_argument("--region", default="", help="default: config, else AWS_REGION")
    where.add_argument("--apply", action="store_true",
                       help="put it into CloudWatch (the config's region and endpoint)")

    dashboard = sub.add_parser(
        "dashboard", parents=[common, where],
        help="print (or --apply) a CloudWatch dashboard for what the config publishes")
    dashboard.add_argument("--name", default="",
                           help="dashboard name (default cni-pipeline-CLUSTER_ID)")
    dashboard.add_argument(
        "--format", choices=["cloudwatch", "grafana"], default="cloudwatch",
        help="cloudwatch: the PutDashboard body; grafana: a Grafana dashboard (JSON model) over "
        "a Prometheus data source, for the config's prometheus exporter")

    alarms = sub.add_parser(
        "alarms", parents=[common, where],
        help="print (or --apply) the recommended CloudWatch alarms for what the config publishes")
    defaults = Thresholds()
    for flag, dest, text in (
        ("--ip-utilization", "ip_utilization", "percent of max IPs assigned"),
        ("--subnet-min-available", "subnet_min_available", "free IPs in the fullest subnet"),
        ("--forecast-hours", "forecast_hours", "hours until exhaustion"),
        ("--ipamd-errors", "ipamd_errors", "ipamd errors per 5 minutes"),
        ("--api-errors", "api_errors", "AWS API errors per 5 minutes"),
        ("--nodes-missing", "nodes_missing", "aws-node pods not reporting"),
    ):
        default = getattr(defaults, dest)
        alarms.add_argument(flag, dest=dest, type=float, default=default,
                            help=f"alarm threshold: {text} (default {default:g})")
    alarms.add_argument("--evaluation-periods", type=int, default=defaults.evaluation_periods,
                        help="5-minute periods in breach before the alarm fires")
    alarms.add_argument("--prefix", default="", help="alarm name prefix "
                        "(default cni-pipeline-CLUSTER_ID)")
    alarms.add_argument("--alarm-action", action="append", default=[], metavar="ARN",
                        help="an action (SNS topic ARN) for the alarms; repeatable")
    alarms.add_argument("--format", choices=["json", "cloudformation"], default="json",
                        help="json: the PutMetricAlarm requests; cloudformation: a template")


def _targets(args: argparse.Namespace, config: Config, registry: Registry
             ) -> list[CloudWatchTarget]:
    return cloudwatch_targets(config, registry, os.environ, args.cluster_id, args.region)


def run_dashboard(args: argparse.Namespace, config: Config, registry: Registry) -> int:
    if args.format == "grafana":
        if args.apply:
            raise ConfigError("--apply", [("", "puts CloudWatch dashboards only; import the "
                                          "Grafana JSON in Grafana (Dashboards > New > Import)")])
        boards = grafana_dashboards(config, registry)
        print(json.dumps(boards[0] if len(boards) == 1 else boards, indent=2))
        return EXIT_OK
    targets = _targets(args, config, registry)
    status = EXIT_OK
    for target in targets:
        body = dashboard_body(target)
        name = args.name or f"cni-pipeline-{target.cluster_id}"
        if len(targets) > 1:  # one dashboard per CloudWatch exporter
            name += f"-{target.exporter.replace('/', '-')}"
        if not args.apply:
            print(json.dumps(body, indent=2))
            continue
        status |= _put(target.client().put_dashboard,
                       {"DashboardName": name, "DashboardBody": json.dumps(body)},
                       f"dashboard {name} ({len(body['widgets'])} widgets)", target.region)
    return status


def run_alarms(args: argparse.Namespace, config: Config, registry: Registry) -> int:
    thresholds = Thresholds(
        ip_utilization=args.ip_utilization, subnet_min_available=args.subnet_min_available,
        forecast_hours=args.forecast_hours, ipamd_errors=args.ipamd_errors,
        api_errors=args.api_errors, nodes_missing=args.nodes_missing,
        evaluation_periods=args.evaluation_periods)
    status = EXIT_OK
    for target in _targets(args, config, registry):
        plan = recommended_alarms(target, thresholds, args.prefix, tuple(args.alarm_action))
        for line in plan.skipped:
            print(f"skipped {line}", file=sys.stderr)
        if not args.apply:
            out = cloudformation(plan) if args.format == "cloudformation" else plan.alarms
            print(json.dumps(out, indent=2))
            continue
        client = target.client()
        for alarm in plan.alarms:
            status |= _put(client.put_metric_alarm, alarm, f"alarm {alarm['AlarmName']}",
                           target.region)
    return status


def _put(method: Callable[..., Any], request: dict[str, Any], what: str, region: str) -> int:
    try:
        method(**request)
    except Exception as exc:  # botocore's errors: one line naming the failure, not a traceback
        print(f"cni-pipeline: {what}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{what} put in {region}")
    return EXIT_OK


__all__ = ["add_parsers", "run_alarms", "run_dashboard"]
