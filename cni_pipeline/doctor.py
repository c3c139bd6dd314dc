"""``cni-pipeline doctor``: everything a config needs, checked one line at a time, with the fix
for what fails. It reads and asks; it never publishes a metric.

Each check says ``ok``, ``fail`` (with the fix) or ``skip`` (the config does not need it, or an
earlier failure makes it meaningless). Every network call has a short timeout, and a check that
raises becomes a ``fail`` line with the error's one line of text, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from exporters._aws_identity import resolve_region
from exporters.awscloudwatch import CloudWatchExporterConfig
from exporters.otlp import OtlpExporterConfig
from pipeline import ConfigError
from pipeline.service import Config, Registry
from receivers.aws_subnets import AwsSubnetsConfig
from receivers.prometheus import PrometheusReceiverConfig

from ._needs import Permission, kubernetes_permissions

EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True)
class Check:
    status: str  # ok, fail, skip
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<5}{self.name}: {self.detail}"
        return text + (f" — fix: {self.fix}" if self.fix else "")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    doctor = sub.add_parser(
        "doctor", parents=[common],
        help="check what a config needs (Kubernetes access and RBAC, aws-node pods and their "
        "metrics, AWS region, credentials and endpoints); publishes nothing; exit 0 or 1")
    doctor.add_argument("--config", metavar="FILE",
                        help="pipeline config (default: the drop-in pipeline from the environment)")
    doctor.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="for each network call (default 5)")


def run_doctor(args: argparse.Namespace, config: Config, registry: Registry) -> int:
    # The report is the output: the libraries' own warnings (IMDS, retries) would only repeat it.
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    doctor = Doctor(config, float(args.timeout))
    failed = False
    for check in doctor.checks():
        print(check.line(), flush=True)
        failed |= check.status == "fail"
    return EXIT_FAILED if failed else EXIT_OK


class Doctor:
    def __init__(self, config: Config, timeout: float) -> None:
        self.config = config
        self.timeout = timeout
        used = {rid for spec in config.pipelines for rid in spec.receivers}
        self.receivers = [config.receivers[r] for r in sorted(used, key=str)]
        exported = {eid for spec in config.pipelines for eid in spec.exporters}
        self.exporters = [config.exporters[e] for e in sorted(exported, key=str)]
        self.sd = [r.kubernetes_sd for r in self.receivers
                   if isinstance(r, PrometheusReceiverConfig) and r.kubernetes_sd is not None]
        self.subnets = [r for r in self.receivers if isinstance(r, AwsSubnetsConfig)]
        self.cloudwatch = [e for e in self.exporters if isinstance(e, CloudWatchExporterConfig)]
        self.otlp = [e for e in self.exporters if isinstance(e, OtlpExporterConfig)]
        self._api: Any = None

    def checks(self) -> Iterator[Check]:
        yield Check("ok", "config", f"{self.config.source}: {len(self.config.pipelines)} "
                                    "pipeline(s)")
        permissions = kubernetes_permissions(self.config)
        if permissions:
            yield from self._guard("kubernetes", self._kubernetes)
            if self._api is None:
                yield Check("skip", "rbac", "no Kubernetes API to ask")
            else:
                yield from self._guard("rbac", lambda: self._rbac(permissions))
                for sd in self.sd:
                    yield from self._guard("aws-node pods", partial(self._pods, sd))
        else:
            yield Check("skip", "kubernetes", "the config reads nothing from the Kubernetes API")
        yield from self._aws()

    def _guard(self, name: str, check: Callable[[], Iterator[Check]]) -> Iterator[Check]:
        try:
            yield from check()
        except Exception as exc:  # a check's own failure is a fail line, never a traceback
            yield Check("fail", name, f"{type(exc).__name__}: {_one_line(exc)}",
                        "see the error; rerun with --timeout larger if it timed out")

    # -- Kubernetes ------------------------------------------------------------------------------

    def _kubernetes(self) -> Iterator[Check]:
        from kubernetes.client import VersionApi

        from .leader import _api_client

        try:
            api, where = _api_client(os.environ, "/var/run/secrets/kubernetes.io/serviceaccount")
        except ConfigError as exc:  # naming the files it looked for
            yield Check("fail", "kubernetes credentials", exc.problems[0][1],
                        "run in the cluster with a service account, or set KUBECONFIG")
            return
        yield Check("ok", "kubernetes credentials", where)
        version = VersionApi(api).get_code(_request_timeout=self.timeout)
        self._api = api
        yield Check("ok", "kubernetes API", f"{api.configuration.host} answers "
                                            f"(Kubernetes {version.git_version})")

    def _rbac(self, permissions: list[Permission]) -> Iterator[Check]:
        from kubernetes.client import (
            AuthorizationV1Api,
            V1ResourceAttributes,
            V1SelfSubjectAccessReview,
            V1SelfSubjectAccessReviewSpec,
        )

        api = AuthorizationV1Api(self._api)
        for permission in permissions:
            review = V1SelfSubjectAccessReview(spec=V1SelfSubjectAccessReviewSpec(
                resource_attributes=V1ResourceAttributes(
                    verb=permission.verb, resource=permission.resource, group=permission.group,
                    namespace=permission.namespace or None,
                    subresource=permission.subresource or None,
                    name=permission.name or None)))
            answer = api.create_self_subject_access_review(review, _request_timeout=self.timeout)
            if answer.status is not None and answer.status.allowed:
                yield Check("ok", "rbac", str(permission))
            else:
                yield Check("fail", "rbac", f"{permission}: not allowed",
                            "grant it to the pod's service account (the Helm chart's RBAC does; "
                            "configs/kubernetes/rbac.yaml)")

    def _pods(self, sd: Any) -> Iterator[Check]:
        from kubernetes.client import CoreV1Api

        core = CoreV1Api(self._api)
        where = f"{sd.label_selector} in {sd.namespace or 'every namespace'}"
        if sd.namespace:
            pods = core.list_namespaced_pod(sd.namespace, label_selector=sd.label_selector,
                                            _request_timeout=self.timeout).items
        else:
            pods = core.list_pod_for_all_namespaces(label_selector=sd.label_selector,
                                                    _request_timeout=self.timeout).items
        running = [p for p in pods if p.status and p.status.phase == "Running"
                   and p.status.pod_ip]
        if not running:
            yield Check("fail", "aws-node pods", f"{len(pods)} found by {where}, none running",
                        "check kubernetes_sd.namespace and label_selector (aws-node: "
                        "kube-system, k8s-app=aws-node)")
            return
        yield Check("ok", "aws-node pods", f"{len(pods)} found by {where}, {len(running)} "
                                           "running")
        pod: Any = running[0]
        direct = self._scrape_direct(f"http://{pod.status.pod_ip}:{sd.port}{sd.path}")
        proxy = self._scrape_proxy(core, pod, sd)
        name = f"{pod.metadata.namespace}/{pod.metadata.name}"
        for mode, error in (("direct", direct), ("apiserver_proxy", proxy)):
            if error is None:
                yield Check("ok", f"scrape {mode}", f"{name} answered with metrics")
            else:
                chosen = mode == sd.mode
                yield Check("fail" if chosen else "skip", f"scrape {mode}", f"{name}: {error}",
                            _mode_fix(mode, direct, proxy) if chosen else "")

    def _scrape_direct(self, url: str) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = response.read(1 << 20).decode(errors="replace")
        except Exception as exc:
            return _one_line(exc)
        return None if "awscni_" in body else "answered, but with no awscni_ metrics"

    def _scrape_proxy(self, core: Any, pod: Any, sd: Any) -> str | None:
        try:
            body = core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod.metadata.name}:{sd.port}", pod.metadata.namespace, sd.path.lstrip("/"),
                _request_timeout=self.timeout)
        except Exception as exc:
            return _one_line(exc)
        return None if "awscni_" in str(body) else "answered, but with no awscni_ metrics"

    # -- AWS ---------------------------------------------------------------------------------------

    def _aws(self) -> Iterator[Check]:
        if not (self.cloudwatch or self.subnets):
            yield Check("skip", "aws", "the config calls no AWS API")
        else:
            yield from self._guard("aws", self._aws_checks)
        for otlp in self.otlp:
            yield self._otlp(otlp)

    def _aws_checks(self) -> Iterator[Check]:
        regions = [c.region for c in self.cloudwatch] + [r.region for r in self.subnets]
        configured = next((region for region in regions if region), "")
        region = resolve_region(configured)
        source = ("config" if configured else "AWS_REGION" if os.environ.get("AWS_REGION")
                  else "AWS_DEFAULT_REGION" if os.environ.get("AWS_DEFAULT_REGION")
                  else "the instance metadata service")
        if not region:
            yield Check("fail", "region", "not configured, AWS_REGION unset, IMDS unreachable",
                        "set the exporter's region or AWS_REGION")
            return
        yield Check("ok", "region", f"{region} (from {source})")
        for exporter in self.cloudwatch:
            cluster = exporter.cluster_id or os.environ.get("AWS_CLUSTER_ID", "")
            origin = "config" if exporter.cluster_id else "AWS_CLUSTER_ID"
            yield (Check("ok", "cluster ID", f"{cluster} (from {origin})") if cluster else
                   Check("ok", "cluster ID", "discovered at run time from the instance's tags "
                                             "(eks:cluster-name), else k8s-cluster"))
        import boto3

        session = boto3.session.Session(region_name=region)
        credentials = session.get_credentials()
        if credentials is None:
            yield Check("fail", "aws credentials", "none found by boto3's chain",
                        "IRSA (serviceAccount annotation), EKS Pod Identity, or an instance "
                        "profile; see the README's IAM policy section")
            return
        identity = session.client("sts", config=_config(self.timeout)).get_caller_identity()
        yield Check("ok", "aws credentials", f"{identity['Arn']} (from {credentials.method})")
        for exporter in self.cloudwatch:
            yield self._cloudwatch(session, exporter)
        for receiver in self.subnets:
            yield from self._ec2(session, receiver)

    def _cloudwatch(self, session: Any, exporter: CloudWatchExporterConfig) -> Check:
        client = session.client("cloudwatch", endpoint_url=exporter.endpoint_url or None,
                                config=_config(self.timeout))
        try:
            client.list_metrics(Namespace=exporter.namespace)
        except Exception as exc:
            return Check("fail", "cloudwatch", _one_line(exc),
                         "check the network path to CloudWatch (or endpoint_url) and "
                         "cloudwatch:ListMetrics / PutMetricData in the role")
        return Check("ok", "cloudwatch", f"reachable at {client.meta.endpoint_url}")

    def _ec2(self, session: Any, receiver: AwsSubnetsConfig) -> Iterator[Check]:
        from botocore.exceptions import ClientError

        ec2 = session.client("ec2", endpoint_url=receiver.endpoint_url or None,
                             config=_config(self.timeout))
        for call in ("describe_subnets", "describe_instances"):
            try:
                getattr(ec2, call)(DryRun=True)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "DryRunOperation":
                    yield Check("ok", "ec2 permissions", f"ec2:{_action(call)} allowed")
                    continue
                yield Check("fail", "ec2 permissions", f"ec2:{_action(call)}: {code}",
                            "add ec2:DescribeSubnets and ec2:DescribeInstances to the role")
            except Exception as exc:  # no answer at all: the endpoint, not the permission
                yield Check("fail", "ec2 permissions", f"ec2:{_action(call)}: {_one_line(exc)}",
                            "check the network path to EC2 (or the receiver's endpoint_url)")
                return
            else:
                yield Check("ok", "ec2 permissions", f"ec2:{_action(call)} allowed")

    def _otlp(self, exporter: OtlpExporterConfig) -> Check:
        endpoint = exporter.resolved_endpoint()
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        port = parts.port or (443 if parts.scheme == "https" else 4317)
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=self.timeout):
                pass
        except OSError as exc:
            return Check("fail", "otlp", f"{parts.hostname}:{port}: {_one_line(exc)}",
                         "check the collector's address and that it listens (endpoint)")
        return Check("ok", "otlp", f"{parts.hostname}:{port} accepts connections")


def _mode_fix(mode: str, direct: str | None, proxy: str | None) -> str:
    other = "apiserver_proxy" if mode == "direct" else "direct"
    if (proxy if other == "apiserver_proxy" else direct) is None:
        return f"set kubernetes_sd.mode: {other} (it works here)"
    if mode == "direct":
        return "open port 61678 from this pod to the nodes (a security group rule), or use " \
               "mode: apiserver_proxy with pods/proxy get"
    return "grant pods/proxy get, or use mode: direct"


def _action(call: str) -> str:
    return "".join(part.capitalize() for part in call.split("_"))


def _config(timeout: float) -> Any:
    from botocore.config import Config

    return Config(connect_timeout=timeout, read_timeout=timeout,
                  retries={"total_max_attempts": 1, "mode": "standard"})


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


__all__ = ["add_parser", "run_doctor"]
