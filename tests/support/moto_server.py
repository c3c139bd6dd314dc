"""moto's server on loopback, and the environment that keeps boto3 on loopback.

``running_moto()`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 with a free port and
yields a :class:`Moto` handle with the endpoint and read-back helpers (GetMetricData /
ListMetrics: what a test asserts is what CloudWatch stored). ``aws_test_env(monkeypatch)`` sets
fake credentials and a region and disables IMDS, so nothing a test does can reach AWS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

#: Variables that could send boto3 elsewhere, cleared by aws_test_env.
_LEAKY_VARS = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_CLOUDWATCH", "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL_STS", "AWS_CLUSTER_ID", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
)


def aws_test_env(monkeypatch: pytest.MonkeyPatch, region: str = "us-west-2") -> None:
    """Fake credentials, a region, IMDS off, no profile or endpoint overrides from the host."""
    for var in _LEAKY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@dataclass
class Moto:
    endpoint: str
    region: str
    _server: Any

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint)

    def reset(self) -> None:
        """Forget everything stored (moto's reset API)."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def list_metrics(self, namespace: str) -> list[dict[str, Any]]:
        cw = self.client("cloudwatch")
        metrics: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Namespace": namespace}
        for _ in range(1000):  # bounded pagination
            page = cw.list_metrics(**kwargs)
            metrics.extend(page["Metrics"])
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        return metrics

    def series(
        self,
        namespace: str,
        name: str,
        dimensions: Sequence[tuple[str, str]],
        stat: str = "Sum",
        start: float | None = None,
        end: float | None = None,
        period: int = 60,
        unit: str | None = None,
    ) -> dict[float, float]:
        """One statistic of one metric per period, as ``{epoch seconds: value}``."""
        now = dt.datetime.now(dt.UTC)
        start_dt = dt.datetime.fromtimestamp(start, dt.UTC) if start else now - dt.timedelta(1)
        end_dt = dt.datetime.fromtimestamp(end, dt.UTC) if end else now + dt.timedelta(1)
        stat_query: dict[str, Any] = {
            "Metric": {
                "Namespace": namespace, "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions],
            },
            "Period": period, "Stat": stat,
        }
        if unit:
            stat_query["Unit"] = unit
        result = self.client("cloudwatch").get_metric_data(
            MetricDataQueries=[{"Id": "q", "MetricStat": stat_query}],
            StartTime=start_dt, EndTime=end_dt,
        )["MetricDataResults"][0]
        return {ts.timestamp(): value
                for ts, value in zip(result["Timestamps"], result["Values"], strict=True)}


@contextmanager
def running_moto(region: str = "us-west-2") -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Moto(endpoint=f"http://{host}:{port}", region=region, _server=server)
    finally:
        server.stop()
